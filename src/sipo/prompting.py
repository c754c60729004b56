"""Review and rewrite prompts as data, and the parsers for what the model writes back.

Templates live in ``sipo/templates/*.jinja`` (or any path given in the config) and are rendered with the
objectives' names and descriptions, so nothing about "correctness and verbosity" is baked into code. The rendered
text is the *user* turn; the model's chat template (``model.prompt_template``) is applied only when tokenizing.

The parsers are total: any string (or garbage) maps to a cleaned string, ``""`` meaning "nothing usable", and
idempotent: parsing a parsed text changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import jinja2

from sipo.conversation import readable
from sipo.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "templates"

# Lines a small model may emit when it runs on into a new turn of the template.
_STOP_MARKERS = re.compile(
    r"^\s*(question|response|review|rewrite|improved response|user|assistant|beginning of conversation)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
# The plain template writes both turns on one line (``... USER: {prompt} ASSISTANT:``), so a run-on into a new
# conversation turn can also start mid-line; these upper-case markers end the text wherever they appear.
_TURN_MARKERS = re.compile(r"\b(?:USER|ASSISTANT|BEGINNING OF CONVERSATION)\s*:")
_LEADING_LABEL = re.compile(r"^\s*(review|rewrite|improved response|response|rewritten response)\s*:\s*", re.IGNORECASE)


def template_files(cfg) -> dict[str, Path]:
    """The review and rewrite templates as the files they are read from (a path, else the packaged template), by
    config key; a template that is not found is left out (the input checks report it)."""
    files = {}
    for key, name in (("review.template", cfg.review.template), ("rewrite.template", cfg.rewrite.template)):
        for candidate in (Path(name), TEMPLATE_DIR / name):  # the order in which _load_template looks for it
            if candidate.is_file():
                files[key] = candidate
                break
    return files


def check_templates(cfg) -> None:
    """Load both templates once (found, and valid jinja); raises ConfigError."""
    _load_template(cfg.review.template)
    _load_template(cfg.rewrite.template)


@lru_cache(maxsize=16)
def _load_template(name_or_path: str) -> jinja2.Template:
    path = Path(name_or_path)
    if not path.is_file():
        path = TEMPLATE_DIR / name_or_path
    if not path.is_file():
        raise ConfigError(f"prompt template not found: {name_or_path} (looked in {TEMPLATE_DIR} too)")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})") from None
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None


def join_words(words: Sequence[str]) -> str:
    """``["a"]`` -> ``a``; ``["a", "b"]`` -> ``a and b``; ``["a", "b", "c"]`` -> ``a, b and c``."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _objective_vars(objectives: Sequence[str], descriptions: Mapping[str, str]) -> dict:
    adjectives = [ADJECTIVES.get(o, o) for o in objectives]
    return {
        "objectives": [{"name": o, "description": descriptions.get(o, o)} for o in objectives],
        "objective_list": join_words(adjectives),
    }


ADJECTIVES = {
    "correctness": "correct",
    "verbosity": "verbose",
    "coherence": "coherent",
    "helpfulness": "helpful",
    "complexity": "complex",
    "safer": "safe",
    "better": "helpful",
    "harmlessness": "harmless",
}
"""How an objective reads after "more ..." in the templates; unknown names are used as they are."""


def render(template: str, **variables) -> str:
    try:
        return _load_template(template).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"prompt template {template}: {exc.message}") from None


def review_prompt(prompt: str, response: str, objectives: Sequence[str], descriptions: Mapping[str, str],
                  template: str = "review.jinja") -> str:
    """The user turn asking the reviewer to suggest improvements of ``response`` on every objective (a multi-turn
    prompt is quoted as ``User:`` / ``Assistant:`` paragraphs)."""
    return render(template, prompt=readable(prompt), response=response, **_objective_vars(objectives, descriptions))


def rewrite_prompt(prompt: str, response: str, review: str, objectives: Sequence[str],
                   descriptions: Mapping[str, str], template: str = "rewrite.jinja") -> str:
    """The user turn asking for a rewrite of ``response`` that follows ``review``."""
    return render(template, prompt=readable(prompt), response=response, review=review,
                  **_objective_vars(objectives, descriptions))


def _clean(text: object, *, keep_newlines: bool = False) -> str:
    if not isinstance(text, str):
        return ""
    # One notion of a line break everywhere (str.splitlines: also \r, \x0b, \x1c, \u2028, ...), so that a stop
    # marker is cut in the first pass, not only after keep_newlines rewrote the breaks as "\n".
    text = "\n".join(text.replace("\x00", "").splitlines())
    previous = None
    while text != previous:  # "Review: Rewritten response: ..." loses both labels: parsing twice changes nothing
        previous, text = text, _LEADING_LABEL.sub("", text.strip(), count=1)
    for marker in (_STOP_MARKERS, _TURN_MARKERS):
        match = marker.search(text)
        if match:
            text = text[: match.start()]
    if keep_newlines:
        lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return re.sub(r"\s+", " ", text).strip()


def parse_review(text: object) -> str:
    """The review's suggestions, without an echoed label or a run-on into a new template turn; ``""`` if none."""
    return _clean(text)


def parse_rewrite(text: object) -> str:
    """The rewritten response (line breaks kept); ``""`` if the model produced nothing usable."""
    return _clean(text, keep_newlines=True)
