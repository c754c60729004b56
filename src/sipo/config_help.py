"""``sipo config [PRESET] [key=value ...]``: every config key with its value and a one-line description.

The lines are generated from the config tree itself: the keys are the fields of :class:`sipo.config.PipelineConfig`
and its nested dataclasses, the descriptions are the docstrings written under each field (read from the source with
:mod:`ast`), so a new key shows up here as soon as it exists, and a test fails if it has no description. A key with
a closed set of values lists them from its :class:`sipo.config.Choice` enum, and ``methods``, ``eval.judge`` and
``data.source`` list the names registered now (:func:`key_choices`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

from omegaconf import MISSING

from sipo import config as config_module


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in ``cls``'s source (fields without one are left out)."""
    tree = ast.parse(inspect.getsource(cls)).body[0]
    body = tree.body if isinstance(tree, ast.ClassDef) else []
    docs = {}
    for node, following in zip(body, [*body[1:], None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                and isinstance(following.value.value, str):
            docs[node.target.id] = following.value.value
    return docs


def first_sentence(text: str) -> str:
    """The docstring's first sentence on one line (reST markup ``code`` made plain)."""
    flat = " ".join(text.replace("``", "`").split())
    match = _SENTENCE_END.search(flat)
    return flat[:match.start() + 1] if match else flat


_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(])")


def _nested_type(cls: type, field: dataclasses.Field) -> type | None:
    hints = inspect.get_annotations(cls, eval_str=True, globals=vars(config_module))
    kind = hints.get(field.name)
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def iter_keys(cls: type = config_module.PipelineConfig, prefix: str = "") -> Iterator[tuple[str, type, str, bool]]:
    """(dotted key, owning dataclass, field name, is a section) for every field of the tree, depth first."""
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        nested = _nested_type(cls, field)
        yield key, cls, field.name, nested is not None
        if nested is not None:
            yield from iter_keys(nested, key + ".")


def key_choices(owner: type, name: str) -> tuple[str, ...] | None:
    """The values field ``name`` of section ``owner`` takes: its enum's, the names in its registry (methods,
    judges and data sources, including ones registered at run time), or None for an open value."""
    choices = config_module.field_choices(owner, name)
    if choices is not None:
        return choices.values()
    if (owner, name) == (config_module.PipelineConfig, "methods"):
        from sipo.methods import METHODS

        return METHODS.names()
    if (owner, name) == (config_module.EvalStageConfig, "judge"):
        from sipo.judges import JUDGES

        return JUDGES.names()
    if (owner, name) == (config_module.DataConfig, "source"):
        from sipo.data import SOURCES

        return tuple(SOURCES)
    return None


def _value(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part) if dataclasses.is_dataclass(obj) else obj[part]
    return obj


def _show(value: Any) -> str:
    if value is MISSING or value == MISSING:
        return "???  (required)"
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, list):
        value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return json.dumps(value, ensure_ascii=False)


def _defaults() -> Any:
    """The built-in defaults (required keys left MISSING)."""
    return config_module.PipelineConfig()


def config_lines(cfg: Any | None = None) -> list[str]:
    """One line per leaf key: ``key: value  # description`` (plus ``[default: …]`` when the preset changed it),
    and one ``# key: description`` header per section."""
    defaults = _defaults()
    shown = cfg if cfg is not None else defaults
    lines = []
    for key, owner, name, section in iter_keys():
        doc = first_sentence(field_docs(owner).get(name, ""))
        if section:
            lines.append(f"# {key}: {doc}")
            continue
        value = _value(shown, key)
        line = f"{key}: {_show(value)}  # {doc}"
        choices = key_choices(owner, name)
        if choices is not None:
            line += f" [choices: {', '.join(choices)}]"
        try:
            default = _value(defaults, key)
        except (KeyError, AttributeError):  # pragma: no cover - every key has a default
            default = value
        if cfg is not None and _show(default) != _show(value):
            line += f" [default: {_show(default)}]"
        lines.append(line)
        if name == "models" and owner is config_module.RewardModelConfig:
            for sub_key, sub_owner, sub_name, _ in iter_keys(config_module.RewardModelSpec, key + "[]."):
                sub_doc = first_sentence(field_docs(sub_owner).get(sub_name, ""))
                lines.append(f"  {sub_key}  # {sub_doc}")
    return lines


def undocumented_keys() -> list[str]:
    """Config keys whose field has no docstring (a test keeps this empty)."""
    keys = [key for key, owner, name, _ in iter_keys() if name not in field_docs(owner)]
    keys += [f"eval.reward_model.models[].{name}" for _, owner, name, _ in iter_keys(config_module.RewardModelSpec)
             if name not in field_docs(owner)]
    return keys
