"""The run layout: what a run builds and where each model lives, by name and folder. The ground floor.

Every layer (stages, methods, judges, the API, export, the report) names adapters and finds their folders through
these functions, and this module imports nothing above :mod:`sipo.config`, :mod:`sipo.artifacts` (and, lazily, the
model loader), so no module reaches up into the stages for a name.

- ``r<k>_<objective>``: an objective's adapter after ``k`` realignments (0: the round-1 DPO adapter), in
  ``dpo/<objective>/`` or ``r<k>/realign/<objective>/``;
- ``soup_r<k>_<weights>``: the LoRA soup of the round-``k`` adapters at a weight vector;
- ``<method>_<weights>``: a baseline's adapter trained for a weight vector, in ``<method>/<weights>/``;
- the base model: ``sft/model/`` when the run builds it, else ``model.name_or_path``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sipo.artifacts import RunDir
from sipo.config import PipelineConfig, data_specs, weights_tag


def needs_sft_stage(cfg: PipelineConfig) -> bool:
    """Whether the run builds its base model (a random model, or ``sft.enabled``)."""
    return cfg.sft.enabled or cfg.model.name_or_path == "random"


def needs_label_stage(cfg: PipelineConfig) -> bool:
    """One dataset per objective (``data.path`` a mapping): labels must be filled before conflicts exist."""
    return data_specs(cfg) is not None


def base_model_path(cfg: PipelineConfig, run_dir: RunDir) -> str:
    """The model every adapter is trained on: the sft stage's output, or the configured model."""
    if needs_sft_stage(cfg):
        return str(run_dir.path("sft", "model"))
    from sipo.models.loading import resolve_model_source  # lazy: sipo.models imports torch

    return resolve_model_source(cfg.model)


def adapter_name(objective: str, round_: int) -> str:
    """peft adapter name of an objective's policy after ``round_`` (0: the round-1 DPO adapter)."""
    return f"r{round_}_{objective}"


def adapter_dir(run_dir: RunDir, objective: str, round_: int) -> Path:
    """Folder of an objective's adapter after ``round_`` realignments (0: the DPO adapter)."""
    if round_ == 0:
        return run_dir.path("dpo", objective)
    return run_dir.path(f"r{round_}/realign", objective)


def objective_adapters(cfg: PipelineConfig, run_dir: RunDir, round_: int) -> dict[str, Path]:
    """Adapter-bank name -> folder of every objective's adapter after ``round_`` realignments (0: DPO)."""
    return {adapter_name(o, round_): adapter_dir(run_dir, o, round_) for o in cfg.objectives}


def soup_name(weights: Mapping[str, float], round_: int) -> str:
    """peft adapter name of the soup of round-``round_`` adapters at ``weights``."""
    return f"soup_r{round_}_" + weights_tag(weights).replace(".", "p")


def baseline_adapter_name(method: str, weights: Mapping[str, float]) -> str:
    """Adapter-bank name of a baseline's adapter trained for ``weights``."""
    return f"{method}_" + weights_tag(weights).replace(".", "p")


def baseline_adapter_dir(run_dir: RunDir, method: str, weights: Mapping[str, float]) -> Path:
    """Folder of a baseline's adapter trained for ``weights``: ``<method>/<weights>/``."""
    return run_dir.path(method, weights_tag(weights))
