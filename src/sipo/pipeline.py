"""The stage graph of a run, fingerprints, and the orchestrator that skips finished stages.

Each stage has an id (``prepare``, ``dpo``, ``r1/sample``, ...), the config sections that affect it, and the
stages whose outputs it reads. Its *fingerprint* hashes those config values and the upstream fingerprints, so
changing one stage's settings re-runs that stage and everything downstream of it, and nothing else. A stage is
skipped iff its ``manifest.json`` exists and holds the same fingerprint.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sipo.artifacts import RunDir, atomic_write_text, stable_hash
from sipo.config import PipelineConfig, save_config, to_dict
from sipo.distributed import barrier, init_processes, warn_if_launch_lost_processes
from sipo.errors import ConfigError, RunDirError
from sipo.logging_utils import process_rank
from sipo.preflight import check_inputs
from sipo.stage import StageContext, StageSpec, needs_label_stage, needs_sft_stage  # noqa: F401 (re-exported)
from sipo.stages.registry import ROUND_STAGES, STAGES

logger = logging.getLogger(__name__)

STAGE_NAMES = STAGES.names()

# Config keys (dotted) that define the run as a whole: a run directory holding another value is refused.
IDENTITY_KEYS = ("objectives", "data.source", "model.name_or_path")


def _spec(name: str, round_: int | None, cfg: PipelineConfig, upstream: tuple[str, ...]) -> StageSpec:
    definition = STAGES[name]
    return StageSpec(name, round_, definition.keys(cfg), upstream, definition.exclude)


def plan(cfg: PipelineConfig) -> list[StageSpec]:
    """The stages of this config, in the registry's order: prepare, sft (when the run builds its base model), dpo,
    the optional stages that the configured methods train (their ``trains``; ``label`` also only with one dataset
    per objective), the self-improvement rounds, the baselines' stages, evaluate and report."""
    from sipo.methods import METHODS

    needed = {name for method in cfg.methods for name in METHODS.choose(method, "methods").trains}
    stages: list[StageSpec] = []
    base_upstream: tuple[str, ...] = ()
    for definition in STAGES.values():
        name = definition.name
        if definition.when is not None and not definition.when(cfg):
            continue
        if definition.optional and name not in needed:
            continue
        if definition.per_round:
            if name == ROUND_STAGES[0]:
                stages += _rounds(cfg, [s.id for s in stages])
            continue
        if name == "prepare":
            upstream: tuple[str, ...] = ()
        elif name == "sft":
            upstream = ("prepare",)
            base_upstream = ("sft",)
        elif name == "dpo":
            upstream = ("prepare", *base_upstream)
        elif name == "evaluate":
            upstream = ("prepare", *base_upstream, *(s.id for s in stages if STAGES[s.name].makes_adapters))
        elif name == "report":
            upstream = ("evaluate",)
        else:  # a stage that the round-1 adapters feed (label, dpo_lw, modpo)
            upstream = ("prepare", "dpo", *base_upstream)
        stages.append(_spec(name, None, cfg, upstream))
    return stages


def _rounds(cfg: PipelineConfig, before: list[str]) -> list[StageSpec]:
    """Every self-improvement round: round 1 reads what the stages before it wrote (the pairs, the conflicting
    prompts, the DPO adapters), round k the adapters of round k-1 instead of the DPO adapters."""
    stages: list[StageSpec] = []
    inputs = tuple(before)
    for r in range(1, cfg.rounds + 1):
        for name in ROUND_STAGES:
            upstream = inputs if name == ROUND_STAGES[0] else (f"r{r}/{stages[-1].name}",)
            stages.append(_spec(name, r, cfg, upstream))
        inputs = (*(s for s in before if s != "dpo"), f"r{r}/{ROUND_STAGES[-1]}")
    return stages


_ABSENT = object()


def _section(plain: Any, key: str, exclude: tuple[str, ...]) -> Any:
    """The plain value of config ``key`` without the ``exclude`` keys inside it; a key that does not exist is a
    bug in a stage declaration, not a value (it would hash as None and never change)."""
    value = OmegaConf.select(plain, key, default=_ABSENT)
    if value is _ABSENT:
        raise KeyError(f"stage fingerprint key '{key}' is not a config key")
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    for dropped in exclude:
        if dropped.startswith(key + "."):
            parent, _, leaf = dropped[len(key) + 1:].rpartition(".")
            holder = value
            for part in filter(None, parent.split(".")):
                holder = holder[part]
            if leaf not in holder:
                raise KeyError(f"stage fingerprint exclude '{dropped}' is not a config key")
            del holder[leaf]
    return value


def fingerprint(cfg: PipelineConfig, stage: StageSpec, upstream_fingerprints: dict[str, str]) -> str:
    plain = OmegaConf.create(to_dict(cfg))
    values = {key: _section(plain, key, stage.exclude) for key in stage.config_keys}
    return stable_hash({"stage": stage.id, "config": values, "upstream": upstream_fingerprints})


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in ("sipo", "torch", "transformers", "peft", "trl", "accelerate"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def stage_function(name: str) -> Callable[[StageContext], dict[str, Any]]:
    return STAGES[name].run


def check_run_dir(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Refuse a run directory written by a config with other objectives, data source or model."""
    if run_dir.root.exists() and not run_dir.root.is_dir():
        raise RunDirError(f"run_dir '{run_dir.root}' is a file, not a folder")
    saved = run_dir.root / "config.yaml"
    if not saved.is_file():
        return
    try:
        old = OmegaConf.load(saved)
    except Exception:
        raise RunDirError(f"{saved}: unreadable; use a fresh run_dir") from None
    new = OmegaConf.create(to_dict(cfg))
    for key in IDENTITY_KEYS:
        old_value, new_value = OmegaConf.select(old, key), OmegaConf.select(new, key)
        if OmegaConf.is_config(old_value):
            old_value = OmegaConf.to_container(old_value)
        if OmegaConf.is_config(new_value):
            new_value = OmegaConf.to_container(new_value)
        if old_value != new_value:
            raise RunDirError(
                f"{saved}: run directory was written with {key}={old_value!r}, not {new_value!r}; "
                "use a fresh run_dir")


def stages_to_run(cfg: PipelineConfig, run_dir: RunDir, stages: Sequence[StageSpec], force: Sequence[str] = ()
                  ) -> list[StageSpec]:
    """The stages that a run would not skip: forced, or without a manifest holding their fingerprint."""
    fingerprints: dict[str, str] = {}
    todo = []
    for stage in stages:
        fp = fingerprint(cfg, stage, {u: fingerprints[u] for u in stage.upstream})
        fingerprints[stage.id] = fp
        manifest = run_dir.read_manifest(stage.id)
        if stage.id in force or stage.name in force or manifest is None or manifest.get("fingerprint") != fp:
            todo.append(stage)
    return todo


def run_pipeline(cfg: PipelineConfig, *, only: Sequence[str] | None = None, force: Sequence[str] = (),
                 dry_run: bool = False) -> list[dict[str, Any]]:
    """Run every stage of ``cfg`` in order, skipping the finished ones.

    Args:
        only: stage ids (or names, meaning every round of it) to run; upstream stages must be finished.
        force: stage ids or names to re-run even if finished.
        dry_run: only validate (the config, the run directory, the inputs of the stages that would run) and
            return the plan; nothing is written.

    Returns:
        One status dict per stage: id, status (``ran``/``skipped``/``planned``), seconds, counts.
    """
    from sipo.config import resolve_device

    run_dir = RunDir(cfg.run_dir)
    stages = plan(cfg)
    known = {s.id for s in stages} | {s.name for s in stages}
    for name in [*(only or ()), *force]:
        if name not in known:
            raise ConfigError(f"unknown stage '{name}' for this config (stages: {', '.join(s.id for s in stages)})")
    if only:  # the stages after the last one asked for are not this command's business
        last = max(i for i, s in enumerate(stages) if s.id in only or s.name in only)
        stages = stages[:last + 1]
    check_run_dir(cfg, run_dir)
    check_inputs(cfg, {s.name for s in stages_to_run(cfg, run_dir, stages, force)})
    if dry_run:
        return [{"id": s.id, "status": "planned"} for s in stages]

    rank, world_size = process_rank()
    main = rank == 0
    device = resolve_device(cfg)
    if world_size > 1:
        init_processes(device)
    else:
        warn_if_launch_lost_processes()
    if main:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir.root / "config.yaml")
        if world_size > 1 and cfg.model.name_or_path == "smollm2":
            from sipo.models.loading import resolve_model_source

            resolve_model_source(cfg.model)  # convert the GGUF once, before the other ranks look for it
    barrier()
    fingerprints: dict[str, str] = {}
    results = []
    cache: dict[str, Any] = {}
    for stage in stages:
        upstream = {u: fingerprints[u] for u in stage.upstream}
        fp = fingerprint(cfg, stage, upstream)
        fingerprints[stage.id] = fp
        selected = only is None or stage.id in only or stage.name in only
        manifest = run_dir.read_manifest(stage.id)
        forced = stage.id in force or stage.name in force
        if manifest is not None and manifest.get("fingerprint") == fp and not forced:
            logger.info("%-12s skipped (finished, settings unchanged)", stage.id)
            results.append({"id": stage.id, "status": "skipped", "counts": manifest.get("counts", {})})
            continue
        if not selected:
            raise RunDirError(f"stage '{stage.id}' is not finished (or its settings changed); run it first")
        barrier()
        if main:
            run_dir.invalidate(stage.id)
            reset_partial_outputs(run_dir, stage.id, fp)
        barrier()
        logger.info("%-12s running: %s", stage.id, STAGES[stage.name].help)
        start = time.perf_counter()
        ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=stage, device=device, cache=cache)
        counts: dict[str, Any] = {}
        if main or stage.distributed:
            counts = stage_function(stage.name)(ctx) or {}
        seconds = round(time.perf_counter() - start, 2)
        barrier()
        if not main:
            results.append({"id": stage.id, "status": "ran", "seconds": seconds, "counts": counts})
            continue
        run_dir.write_manifest(stage.id, {
            "stage": stage.id,
            "fingerprint": fp,
            "upstream": upstream,
            "counts": counts,
            "seconds": seconds,
            "processes": world_size,
            "versions": _library_versions(),
            "git_sha": _git_sha(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        summary = ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, (dict, list)))
        logger.info("%-12s done in %.1fs%s", stage.id, seconds, f": {summary}" if summary else "")
        results.append({"id": stage.id, "status": "ran", "seconds": seconds, "counts": counts})
    barrier()
    return results


STARTED = ".started"
"""File in a stage's folder naming the fingerprint that its partial outputs (finished shards, caches) belong to."""


def reset_partial_outputs(run_dir: RunDir, stage_id: str, fp: str) -> None:
    """Before a stage runs: keep what a killed run of it left (finished shards, caches such as MODPO's margins)
    only if that run had the same fingerprint; otherwise empty the stage's folder, so that outputs made with other
    settings or other upstream results are never read back."""
    folder = run_dir.path(stage_id)
    try:
        previous = (folder / STARTED).read_text().strip()
    except OSError:
        previous = None
    if previous != fp and folder.is_dir():
        shutil.rmtree(folder)
    elif folder.is_dir():
        # Temporary files of writes that a kill interrupted (atomic_path's ".<name>.<random>.tmp").
        for leftover in sorted(folder.rglob(".*.tmp"), reverse=True):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    atomic_write_text(folder / STARTED, fp + "\n")
