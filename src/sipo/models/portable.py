"""Adapters that load from anywhere.

peft records the base model of an adapter in ``adapter_config.json`` (``base_model_name_or_path``) as the path the
base was loaded from; a run started with a relative ``run_dir`` would write ``runs/x/sft/model``, which
``AutoPeftModelForCausalLM.from_pretrained`` then reads relative to the *current* folder (or as a hub id) and fails
from anywhere else. Every adapter sipo writes therefore names its base by an absolute path when the base is a local
folder, and by its hub id otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from sipo.artifacts import atomic_write_text


def portable_base_name(base: str | Path) -> str:
    """The absolute path of a local base-model folder, else ``base`` unchanged (a hub id)."""
    local = Path(str(base)).expanduser()
    return str(local.resolve()) if local.exists() else str(base)


def set_adapter_base(adapter_dir: str | Path, base: str | Path) -> None:
    """Rewrite ``adapter_config.json`` of a saved adapter so that its base model is :func:`portable_base_name`."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = portable_base_name(base)
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
