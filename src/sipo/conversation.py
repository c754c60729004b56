"""Multi-turn prompts that keep their turns through every stage.

Records carry a prompt as one string (it is hashed into ``prompt_id``, used as a key and written to JSONL), so a
conversation is stored as a string too: a one-turn conversation (a single user message) is just that message's
text, exactly as before, and a longer one is :data:`MARKER` followed by the JSON list of its messages. Nothing is
flattened: :func:`sipo.models.loading.format_prompt` renders the turns with the model's chat template (or the plain
template, one ``USER:`` / ``ASSISTANT:`` per turn), and :func:`readable` gives the text that the review and rewrite
templates quote.

Example::

    prompt = encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "Name a colour."}])
    decode(prompt)[-1]["content"]   # 'Name a colour.'
    encode([{"role": "user", "content": "Hi"}])   # 'Hi'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

MARKER = "<sipo:messages>"
"""Start of an encoded multi-turn prompt (no real prompt starts with it)."""
ROLES = ("system", "user", "assistant")

Message = dict[str, str]

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def check_messages(messages: Any, what: str = "messages") -> list[Message]:
    """``messages`` as a list of ``{role, content}`` dicts; ValueError (naming ``what``) if it is not one."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{role, content}} messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"{what}[{i}] must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"{what}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"{what}[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return checked


def encode(messages: Sequence[Mapping[str, str]]) -> str:
    """The prompt string of a conversation that ends with a user turn (see the module docstring)."""
    checked = check_messages(list(messages))
    if checked[-1]["role"] != "user":
        raise ValueError("a prompt must end with a user message")
    if len(checked) == 1:
        return checked[0]["content"]
    return MARKER + json.dumps(checked, ensure_ascii=False, separators=(",", ":"))


def decode(prompt: str) -> list[Message] | None:
    """The messages of an encoded multi-turn prompt; None for a plain (one-turn) prompt."""
    if not prompt.startswith(MARKER):
        return None
    return check_messages(json.loads(prompt[len(MARKER):]), "encoded prompt")


def to_messages(prompt: str) -> list[Message]:
    """Every prompt as a list of messages (a plain prompt is one user message)."""
    return decode(prompt) or [{"role": "user", "content": prompt}]


def readable(prompt: str) -> str:
    """The prompt as text a reader (or a reviewer model) understands: plain prompts unchanged, conversations as
    ``User: ...`` / ``Assistant: ...`` paragraphs."""
    messages = decode(prompt)
    if messages is None:
        return prompt
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def render_plain(prompt: str) -> str:
    """The paper's plain template extended to several turns: ``BEGINNING OF CONVERSATION: USER: ... ASSISTANT: ...
    USER: ... ASSISTANT:`` (a system message goes first as ``SYSTEM: ...``). One user turn gives exactly
    ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``."""
    parts = ["BEGINNING OF CONVERSATION:"]
    for message in to_messages(prompt):
        parts.append(f"{message['role'].upper()}: {message['content']}")
    parts.append("ASSISTANT:")
    return " ".join(parts)


def transcript_messages(text: str) -> list[Message] | None:
    """The turns of an Anthropic HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``), or None when
    ``text`` is not one (nothing but whitespace before the first turn, and at least two turns)."""
    parts = _HH_TURN.split(text)
    if len(parts) < 5 or parts[0].strip():
        return None
    return [{"role": _HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def prompt_from_text(text: str) -> str:
    """A prompt string as sipo stores it: an HH-RLHF transcript that ends with an empty ``Assistant:`` turn (the
    prompt of a TRL explicit-prompt row made from HH) is split into its turns and encoded, so it gets the same
    ``prompt_id`` as the prompt of the whole transcripts; any other text is a one-turn prompt, kept as it is."""
    messages = transcript_messages(text)
    if messages is None or messages[-1]["role"] != "assistant" or messages[-1]["content"]:
        return text
    messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user" or not all(m["content"] for m in messages):
        return text
    return encode(messages)


def as_prompt(value: Any, what: str = "prompt") -> str:
    """The stored prompt string of a prompt given as text (see :func:`prompt_from_text`) or as a list of messages
    ending with a user turn; ValueError (naming ``what``) for anything else."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{what} is empty")
        return prompt_from_text(value)
    if isinstance(value, (list, tuple)):
        try:
            return encode(check_messages(list(value), what))
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith(what) else f"{what}: {message}") from None
    raise ValueError(f"{what} must be a string or a list of {{role, content}} messages")
