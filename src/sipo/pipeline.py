"""The stage graph of a run, fingerprints, and the orchestrator that skips finished stages.

Each stage has an id (``prepare``, ``dpo``, ``r1/sample``, ...), the config sections that affect it, and the
stages whose outputs it reads. Its *fingerprint* hashes those config values, the content of the files outside the
run directory that it reads, and the result ids of the upstream stages (:mod:`sipo.fingerprints`), so changing one
stage's settings or inputs re-runs that stage and everything downstream of it, and nothing else. A stage is skipped
iff its ``manifest.json`` holds the same fingerprint and its outputs are the files the manifest recorded.

A run that has work to do holds the run directory's lock (:mod:`sipo.runlock`) while it writes; a run with nothing
to do, ``--dry-run`` and a refused run write nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sipo.artifacts import RunDir, atomic_write_text
from sipo.config import PipelineConfig, config_text, to_dict
from sipo.errors import ConfigError, RunDirError, SipoError
from sipo.fingerprints import RunHashes, external_inputs, finished_result, record_outputs, stage_fingerprint
from sipo.logging_utils import process_rank
from sipo.preflight import check_inputs, precheck_stages
from sipo.runlock import run_lock

logger = logging.getLogger(__name__)

ROUND_STAGES = ("sample", "review", "rewrite", "combine", "filter", "realign")
ABLATION_STAGES = ("sipo_no_rewrite", "sipo_no_filter", "sipo_oracle_filter", "nll_control")
"""SIPO's ablations and controls (sipo.ablations): each a method and a stage of the same name."""
STAGE_NAMES = ("prepare", "sft", "dpo", "label", *ROUND_STAGES, *ABLATION_STAGES, "dpo_lw", "modpo", "evaluate",
               "report")

STAGE_HELP = {
    "prepare": "build per-objective pairs, flag conflicts, split train/train_conflict/validation/test by prompt",
    "sft": "build the base model (random init for tests and the synthetic benchmark) and fine-tune it (optional)",
    "dpo": "train one LoRA adapter per objective with DPO (round 1)",
    "label": "one dataset per objective: the round-1 adapters fill the missing labels, then pick conflicting prompts",
    "sample": "MOD-decode every conflicting training prompt at every sampling weight vector",
    "review": "the reviewer adapter writes suggestions to improve each candidate on all objectives",
    "rewrite": "MOD-decode a rewrite of each candidate that follows its review",
    "combine": "keep the rewrite instead of the candidate when the implicit rewards say so",
    "filter": "keep, per prompt, the best candidate that beats both original responses under every judge",
    "realign": "DPO + alpha*NLL on (selected > chosen), (selected > rejected) from each round's adapters",
    "sipo_no_rewrite": "ablation: SIPO's filter on the MOD samples (no review, no rewrite), then re-alignment",
    "sipo_no_filter": "ablation: the best candidate by summed judge reward (no need to beat both), re-aligned",
    "sipo_oracle_filter": "upper bound: the oracle picks the candidate that beats both originals, re-aligned",
    "nll_control": "control: DPO + alpha*NLL on the original conflicting pairs, as many steps as re-alignment",
    "dpo_lw": "baseline: one adapter per weight vector trained on the weighted sum of per-objective DPO losses",
    "modpo": "baseline: one adapter per weight vector trained with MODPO margins",
    "evaluate": "decode the test prompts with every method at every weight vector and score them",
    "report": "hypervolumes, Pareto fronts, report.json / summary.csv / pareto.png / report.md",
}

# Config keys (dotted) that define the run as a whole: a run directory holding another value is refused.
IDENTITY_KEYS = ("objectives", "data.source", "model.name_or_path")


# Stages that every process runs (training under DDP, generation/scoring sharded by prompt); the others run on
# rank 0 while the other ranks wait.
DISTRIBUTED_STAGES = ("sft", "dpo", "sample", "review", "rewrite", "realign", "dpo_lw", "modpo", "evaluate",
                      *ABLATION_STAGES)


@dataclass(frozen=True)
class StageSpec:
    name: str
    round: int | None = None
    config_keys: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()

    @property
    def distributed(self) -> bool:
        return self.name in DISTRIBUTED_STAGES

    @property
    def id(self) -> str:
        return f"r{self.round}/{self.name}" if self.round is not None else self.name


@dataclass
class StageContext:
    """What a stage function gets: the config, its output folder, and paths of upstream outputs."""

    cfg: PipelineConfig
    run_dir: RunDir
    stage: StageSpec
    device: str
    cache: dict[str, Any] = field(default_factory=dict)
    """Objects shared between stages of one ``sipo run`` (e.g. a loaded base model)."""

    @property
    def out_dir(self) -> Path:
        return self.run_dir.stage_dir(self.stage.id)

    @property
    def round(self) -> int:
        return self.stage.round or 1


def _model_keys(cfg: PipelineConfig) -> tuple[str, ...]:
    return ("model", "seed")


def plan(cfg: PipelineConfig) -> list[StageSpec]:
    """The stages of this config, in execution order."""
    prepare_keys: tuple[str, ...] = ("data", "objectives", "seed")
    if cfg.data.source == "synthetic":
        # The benchmark's SFT demonstrations (prepare/sft.jsonl) render the review and rewrite prompts.
        prepare_keys += ("objective_descriptions", "review.template", "rewrite.template")
    stages: list[StageSpec] = [StageSpec("prepare", None, prepare_keys)]
    base_upstream: tuple[str, ...] = ()
    if needs_sft_stage(cfg):
        # A random model's word vocabulary covers the rendered review and rewrite templates.
        sft_keys = ("sft", "objective_descriptions", "review.template", "rewrite.template")
        stages.append(StageSpec("sft", None, (*sft_keys, *_model_keys(cfg)), ("prepare",)))
        base_upstream = ("sft",)
    stages.append(StageSpec("dpo", None, ("dpo", *_model_keys(cfg)), ("prepare", *base_upstream)))
    previous_adapters = "dpo"
    conflicts_from = "prepare"
    ablations = [m for m in ABLATION_STAGES if m in cfg.methods]
    if ("sipo" in cfg.methods or ablations) and needs_label_stage(cfg):
        judge_keys = ("eval.reward_model",) if cfg.data.fill_judge == "reward_model" else ()
        stages.append(StageSpec("label", None, ("data", "dpo.beta", *judge_keys, *_model_keys(cfg)),
                                ("prepare", "dpo", *base_upstream)))
        conflicts_from = "label"
    # The self-improvement rounds only feed the `sipo` method (and round 1 its ablations).
    for r in range(1, (cfg.rounds if "sipo" in cfg.methods else 1 if ablations else 0) + 1):
        prefix = f"r{r}/"
        stages += [
            StageSpec("sample", r, ("sample", *_model_keys(cfg)),
                      tuple(dict.fromkeys(("prepare", conflicts_from, previous_adapters, *base_upstream)))),
            StageSpec("review", r, ("review", "objective_descriptions"), (prefix + "sample",)),
            StageSpec("rewrite", r, ("rewrite", "objective_descriptions"), (prefix + "review",)),
            StageSpec("combine", r, ("combine", "dpo.beta"), (prefix + "rewrite",)),
            StageSpec("filter", r, ("filter", "soup_mode", "sample.grid", "dpo.beta"), (prefix + "combine",)),
            StageSpec("realign", r, ("realign",), (prefix + "filter",)),
        ]
        previous_adapters = prefix + "realign"
    realign_keys = ("realign", "filter", "soup_mode", "sample.grid", "dpo.beta")
    for method in ablations:
        source = {"sipo_no_rewrite": "r1/sample", "nll_control": "r1/realign"}.get(method, "r1/combine")
        upstream = tuple(dict.fromkeys(("prepare", conflicts_from, "dpo", source, *base_upstream)))
        stages.append(StageSpec(method, None, realign_keys, upstream))
    for baseline in ("dpo_lw", "modpo"):
        if baseline in cfg.methods:
            stages.append(StageSpec(baseline, None, ("dpo", "eval.grid", *_model_keys(cfg)),
                                    ("prepare", "dpo", *base_upstream)))
    eval_upstream = tuple(s.id for s in stages if s.name in ("dpo", "realign", "dpo_lw", "modpo", *ablations))
    # Every eval key but reference_point, which only the report reads.
    eval_keys = ("eval.judge", "eval.grid", "eval.decode", "eval.reward_model")
    stages.append(StageSpec("evaluate", None, (*eval_keys, "methods", "soup_mode", "rounds", "data.synthetic"),
                            ("prepare", *base_upstream, *eval_upstream)))
    stages.append(StageSpec("report", None, ("eval.reference_point", "eval.judge", "eval.bootstrap"),
                            ("evaluate",)))
    return stages


def needs_label_stage(cfg: PipelineConfig) -> bool:
    """One dataset per objective (``data.path`` a mapping): labels must be filled before conflicts exist."""
    from sipo.config import data_specs

    return data_specs(cfg) is not None


def needs_sft_stage(cfg: PipelineConfig) -> bool:
    return cfg.sft.enabled or cfg.model.name_or_path == "random"


def fingerprint(cfg: PipelineConfig, stage: StageSpec, upstream_results: dict[str, str],
                hashes: RunHashes | None = None) -> str:
    """The stage's settings, the content of its external inputs and its upstream stages' result ids, hashed."""
    plain = OmegaConf.create(to_dict(cfg))
    values = {key: OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(plain, key)}))["v"]
              for key in stage.config_keys}
    inputs = external_inputs(cfg, stage.name, needs_sft_stage(cfg))
    return stage_fingerprint(cfg, stage.id, values, inputs, upstream_results, hashes or RunHashes())


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in ("sipo", "torch", "transformers", "peft", "trl", "accelerate"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _environment(device: str) -> dict[str, Any]:
    """What makes numbers repeat exactly: the CPU kernels torch picked (AVX-512 and AVX2 round differently), its
    thread count, and the device."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "device": device}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def stage_function(name: str) -> Callable[[StageContext], dict[str, Any]]:
    module = importlib.import_module(f"sipo.stages.{name}")
    return module.run


def check_run_dir(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Refuse a run_dir that is (or lies under) a file, and a run directory in which a stage finished with other
    objectives, data source or model (one where no stage finished, e.g. after refused data, is free to reuse)."""
    for folder in (run_dir.root, *run_dir.root.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "is a file" if folder == run_dir.root else f"lies under the file '{folder}'"
                raise RunDirError(f"run_dir '{run_dir.root}' {where}, not a folder")
            break
    saved = run_dir.root / "config.yaml"
    if not saved.is_file() or not any(run_dir.root.rglob("manifest.json")):
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


def stages_to_run(cfg: PipelineConfig, run_dir: RunDir, stages: Sequence[StageSpec], force: Sequence[str] = (),
                  hashes: RunHashes | None = None) -> list[StageSpec]:
    """The stages that a run would not skip: forced, unfinished, finished with another fingerprint or with outputs
    gone or changed, and every stage downstream of one of those (it will read new results)."""
    hashes = hashes or RunHashes()
    results: dict[str, str | None] = {}
    todo = []
    for stage in stages:
        result = None
        upstream = {u: results[u] for u in stage.upstream}
        if all(r is not None for r in upstream.values()) and stage.id not in force and stage.name not in force:
            result = finished_result(run_dir, stage.id, fingerprint(cfg, stage, upstream, hashes), hashes)  # type: ignore[arg-type]
        results[stage.id] = result
        if result is None:
            todo.append(stage)
    return todo


def safetensors_error(exc: Exception, folder: Path) -> Exception:
    """safetensors' error (e.g. ``IoError(Os { code: 28, ... })`` when a disk fills up while an adapter is saved) as
    an OSError with its errno, naming the stage's folder, or as a RunDirError for a corrupt file."""
    import errno
    import os
    import re

    text = " ".join(str(exc).split())
    code = re.search(r"code: (\d+)", text)
    if code and int(code.group(1)) in errno.errorcode:
        return OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(folder))
    return RunDirError(f"{folder}: cannot read or write a safetensors file ({text})")


def _save_config_if_changed(cfg: PipelineConfig, path: Path) -> None:
    """Write ``config.yaml`` only when its text changes (a finished run on read-only storage stays checkable)."""
    text = config_text(cfg)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)


class _Undo:
    """What a run refused by a user mistake (a SipoError raised by a stage) takes back so that the run directory is
    left as it was: the folders this run created for the failing stage, ``config.yaml`` and, when no stage finished,
    the run directory itself if this run created it."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.created_root = not run_dir.root.exists()
        self.lock_existed = (run_dir.root / ".sipo.lock").exists()
        saved = run_dir.root / "config.yaml"
        self.config_before = saved.read_bytes() if saved.is_file() else None
        self.finished = 0
        self.new_folder: Path | None = None
        """The outermost folder that the stage now running created (removed if it is refused)."""

    def new_folders(self, stage_id: str) -> Path | None:
        """The outermost folder of ``stage_id``'s path that does not exist yet (None: the stage folder exists)."""
        outermost = None
        folder = self.run_dir.path(stage_id)
        while folder != self.run_dir.root and not folder.exists():
            outermost, folder = folder, folder.parent
        return outermost

    def undo(self) -> None:
        root, new_stage_folder = self.run_dir.root, self.new_folder
        if self.finished == 0 and self.created_root:
            shutil.rmtree(root, ignore_errors=True)
            return
        if new_stage_folder is not None:
            shutil.rmtree(new_stage_folder, ignore_errors=True)
        if self.finished == 0:
            saved = root / "config.yaml"
            if self.config_before is None:
                saved.unlink(missing_ok=True)
            elif not saved.is_file() or saved.read_bytes() != self.config_before:
                atomic_write_text(saved, self.config_before.decode("utf-8"))
            if not self.lock_existed:
                (root / ".sipo.lock").unlink(missing_ok=True)


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
    hashes = RunHashes()
    todo = stages_to_run(cfg, run_dir, stages, force, hashes)
    check_inputs(cfg, {s.name for s in todo})
    cache: dict[str, Any] = {}
    precheck_stages(cfg, {s.name for s in todo}, cache)  # e.g. the data, parsed and split, before any write
    if dry_run:
        return [{"id": s.id, "status": "planned"} for s in stages]
    if not todo:  # nothing to do: no lock, nothing written (a finished run on read-only storage is checked)
        for stage in stages:
            logger.info("%-12s skipped (finished, settings and inputs unchanged)", stage.id)
        return [{"id": s.id, "status": "skipped", "counts": (run_dir.read_manifest(s.id) or {}).get("counts", {})}
                for s in stages]

    rank, world_size = process_rank()
    main = rank == 0
    device = resolve_device(cfg)
    if world_size > 1:
        init_processes(device)
    else:
        warn_if_launch_lost_processes()
    undo = _Undo(run_dir)
    lock: contextlib.AbstractContextManager = contextlib.nullcontext()
    if main:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        lock = run_lock(run_dir.root)
    with lock:
        try:
            if main:
                check_run_dir(cfg, run_dir)  # again: another run may have finished stages while we were checking
                _save_config_if_changed(cfg, run_dir.root / "config.yaml")
                if world_size > 1 and cfg.model.name_or_path == "smollm2":
                    from sipo.models.loading import resolve_model_source

                    resolve_model_source(cfg.model)  # convert the GGUF once, before the other ranks look for it
            barrier()
            return _run_stages(cfg, run_dir, stages, only, force, hashes, cache, device, undo)
        except SipoError:
            if main:
                undo.undo()
            raise


def _run_stages(cfg: PipelineConfig, run_dir: RunDir, stages: Sequence[StageSpec], only: Sequence[str] | None,
                force: Sequence[str], hashes: RunHashes, cache: dict[str, Any], device: str, undo: _Undo
                ) -> list[dict[str, Any]]:
    rank, world_size = process_rank()
    main = rank == 0
    results_ids: dict[str, str] = {}
    results = []
    for stage in stages:
        upstream = {u: results_ids[u] for u in stage.upstream}
        fp = fingerprint(cfg, stage, upstream, hashes)
        selected = only is None or stage.id in only or stage.name in only
        forced = stage.id in force or stage.name in force
        previous = None if forced else finished_result(run_dir, stage.id, fp, hashes)
        if previous is not None:
            logger.info("%-12s skipped (finished, settings and inputs unchanged)", stage.id)
            results_ids[stage.id] = previous
            manifest = run_dir.read_manifest(stage.id) or {}
            results.append({"id": stage.id, "status": "skipped", "counts": manifest.get("counts", {})})
            continue
        if not selected:
            raise RunDirError(f"stage '{stage.id}' is not finished (or its settings or inputs changed); run it first")
        barrier()
        undo.new_folder = undo.new_folders(stage.id)
        if main:
            run_dir.invalidate(stage.id)
            reset_partial_outputs(run_dir, stage.id, fp)
        barrier()
        logger.info("%-12s running: %s", stage.id, STAGE_HELP[stage.name])
        start = time.perf_counter()
        ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=stage, device=device, cache=cache)
        counts: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        try:
            if main or stage.distributed:
                from sipo.tracking import stage_tracking

                with stage_tracking(cfg, run_dir.root, stage.id) as tracked:
                    counts = stage_function(stage.name)(ctx) or {}
                metrics = tracked.summary()
        except OSError as exc:
            if exc.filename is None:  # e.g. a write that ran out of space: name the stage's folder at least
                exc.filename = str(run_dir.path(stage.id))
            raise
        except Exception as exc:
            if type(exc).__name__ == "SafetensorError":  # raised from Rust, with no path and no errno attribute
                raise safetensors_error(exc, run_dir.path(stage.id)) from None
            raise
        seconds = round(time.perf_counter() - start, 2)
        barrier()
        if main:
            run_dir.write_manifest(stage.id, {
                "stage": stage.id,
                "fingerprint": fp,
                "upstream": upstream,
                **record_outputs(run_dir, stage.id, fp),
                "counts": counts,
                **({"metrics": metrics} if metrics else {}),
                "seconds": seconds,
                "processes": world_size,
                "versions": _library_versions(),
                "environment": _environment(device),
                "git_sha": _git_sha(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            undo.finished += 1
        undo.new_folder = None
        barrier()  # the other processes read the new result id from the manifest
        results_ids[stage.id] = (run_dir.read_manifest(stage.id) or {}).get("result", "")
        results.append({"id": stage.id, "status": "ran", "seconds": seconds, "counts": counts})
        if main:
            summary = ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, (dict, list)))
            logger.info("%-12s done in %.1fs%s", stage.id, seconds, f": {summary}" if summary else "")
    barrier()
    return results


DIST_TIMEOUT_S = 6 * 3600
"""How long a process waits at a barrier (e.g. while rank 0 runs the combine and filter stages alone) before the
job fails; override with ``SIPO_DIST_TIMEOUT_S``."""


def init_processes(device: str) -> None:
    """Join the process group of an ``accelerate launch`` / torchrun job before the first barrier.

    accelerate picks gloo only when told the job runs on CPU (``PartialState(cpu=True)``); a bare
    ``PartialState()`` on a machine without CUDA silently runs as one process, so its barriers would not wait.
    The group is created here, once, with :data:`DIST_TIMEOUT_S`; the Trainer later re-creates accelerate's state
    but keeps this process group.
    """
    import datetime
    import os

    from accelerate import PartialState

    timeout = datetime.timedelta(seconds=int(os.environ.get("SIPO_DIST_TIMEOUT_S", DIST_TIMEOUT_S)))
    state = PartialState(cpu=device == "cpu", timeout=timeout)
    if state.num_processes != process_rank()[1]:
        raise RuntimeError(f"launcher says {process_rank()[1]} processes but accelerate joined "
                           f"{state.num_processes} ({state.distributed_type})")


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


def warn_if_launch_lost_processes() -> None:
    """Warn when ``accelerate launch --cpu --num_processes N`` (N > 1) started this single process.

    accelerate's CPU mode starts several processes only through mpirun; otherwise it runs the script once, with
    ``MASTER_ADDR`` set but no ``WORLD_SIZE``.
    """
    import os

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and os.environ.get("MASTER_ADDR") \
            and "WORLD_SIZE" not in os.environ:
        logger.warning("accelerate launch --cpu started one process (it needs mpirun for more); for several CPU "
                       "processes use: accelerate launch --config_file configs/accelerate/ddp_cpu.yaml -m sipo ... "
                       "or torchrun --nproc_per_node N -m sipo ...")


def barrier() -> None:
    """Wait for every process of an ``accelerate launch`` / torchrun job (a no-op in a single process)."""
    if process_rank()[1] > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
