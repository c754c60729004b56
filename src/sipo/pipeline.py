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
import errno
import importlib.metadata
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sipo.artifacts import RunDir, atomic_write_text
from sipo.config import PipelineConfig, config_text, resolve_device, to_dict
from sipo.distributed import barrier, init_processes, warn_if_launch_lost_processes
from sipo.errors import ConfigError, RunDirError, SipoError
from sipo.fingerprints import (
    RunHashes,
    external_inputs,
    finished_result,
    record_outputs,
    stage_fingerprint,
    stage_status,
)
from sipo.interrupt import check_stop
from sipo.logging_utils import process_rank
from sipo.methods import METHODS
from sipo.preflight import check_inputs, precheck_stages
from sipo.runlock import HeldLock, run_lock
from sipo.stage import StageContext, StageSpec, needs_label_stage, needs_sft_stage  # noqa: F401 (re-exported)
from sipo.stages.registry import ROUND_STAGES, STAGES
from sipo.stages.sharding import STARTED
from sipo.tracking import STAGE_STARTS

logger = logging.getLogger(__name__)

STAGE_NAMES = STAGES.names()

# Config keys (dotted) that define the run as a whole: a run directory holding another value is refused.
IDENTITY_KEYS = ("objectives", "data.source", "model.name_or_path")


def _spec(name: str, round_: int | None, cfg: PipelineConfig, upstream: tuple[str, ...]) -> StageSpec:
    definition = STAGES[name]
    return StageSpec(name, round_, definition.keys(cfg), upstream, definition.exclude, definition.distributed)


def plan(cfg: PipelineConfig) -> list[StageSpec]:
    """The stages of this config, in the registry's order: prepare, sft (when the run builds its base model), dpo,
    the optional stages that the configured methods train (their ``trains``; ``label`` also only with one dataset
    per objective), the self-improvement rounds, the baselines' stages, evaluate and report. Each stage's
    definition names its upstream stages (:attr:`~sipo.stage.StageDef.upstream`)."""
    needed = {name for method in cfg.methods for name in METHODS.choose(method, "methods").trains}
    stages: list[StageSpec] = []
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
        before = [(s.id, STAGES[s.name]) for s in stages]
        stages.append(_spec(name, None, cfg, definition.upstream(cfg, before)))
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
        inputs = (*(s for s in before if not STAGES[s].makes_adapters), f"r{r}/{ROUND_STAGES[-1]}")
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


def fingerprint(cfg: PipelineConfig, stage: StageSpec, upstream_results: dict[str, str],
                hashes: RunHashes | None = None) -> str:
    """The stage's settings, the content of its external inputs and its upstream stages' result ids, hashed."""
    plain = OmegaConf.create(to_dict(cfg))
    values = {key: _section(plain, key, stage.exclude) for key in stage.config_keys}
    inputs = external_inputs(cfg, STAGES[stage.name], needs_sft_stage(cfg))
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
    return STAGES[name].run


def check_run_dir(cfg: PipelineConfig, run_dir: RunDir) -> None:
    """Refuse a run_dir that is (or lies under) a file, and a run directory in which a stage finished with other
    objectives, data source or model (one where no stage finished, e.g. after refused data, is free to reuse)."""
    for folder in (run_dir.root, *run_dir.root.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "symlink to nothing" if folder.is_symlink() and not folder.exists() else "file"
                where = f"is a {what}" if folder == run_dir.root else f"lies under the {what} '{folder}'"
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


def stale_stages(cfg: PipelineConfig, run_dir: RunDir, needed: Sequence[str],
                 hashes: RunHashes | None = None) -> list[tuple[str, str]]:
    """``(stage id, reason)`` of every stage among ``needed`` and their upstream stages that a reader cannot trust:
    not finished, finished under another fingerprint than ``cfg`` gives it now (other settings, inputs, or an
    upstream stage that ran again since), or with an output missing or changed. In plan order, so the first one is
    the stage to complete first; a stage downstream of an untrusted one is not listed again. Empty: every stage
    read is what ``cfg`` would make."""
    hashes = hashes or RunHashes()
    stages = plan(cfg)
    by_id = {s.id: s for s in stages}
    unknown = [n for n in needed if n not in by_id]
    if unknown:
        raise RunDirError(f"{run_dir.root}: its config.yaml plans no stage '{unknown[0]}'")
    wanted: set[str] = set()
    todo = list(needed)
    while todo:
        stage_id = todo.pop()
        if stage_id not in wanted:
            wanted.add(stage_id)
            todo.extend(by_id[stage_id].upstream)
    results: dict[str, str | None] = {}
    problems = []
    for stage in stages:
        if stage.id not in wanted:
            continue
        upstream = {u: results[u] for u in stage.upstream}
        if any(r is None for r in upstream.values()):
            results[stage.id] = None
            continue
        result, reason = stage_status(run_dir, stage.id, fingerprint(cfg, stage, upstream, hashes), hashes)  # type: ignore[arg-type]
        results[stage.id] = result
        if result is None:
            problems.append((stage.id, reason))
    return problems


def check_before_reading(cfg: PipelineConfig, run_dir: RunDir, needed: Sequence[str], what: str, *,
                         allow_stale: bool = False) -> str | None:
    """Refuse a command that reads a run (``generate``, ``export``, ``compare``, ``report``) unless every stage it
    reads checks out (:func:`stale_stages`).

    Returns:
        None when the run checks out; with ``allow_stale``, the line saying what does not (also logged as a
        warning), for the caller to put into its output.

    Raises:
        RunDirError: one line naming the first stage that does not check out and the command that completes it.
    """
    problems = stale_stages(cfg, run_dir, needed)
    if not problems:
        return None
    import shlex

    stage_id, reason = problems[0]
    root = run_dir.root
    command = f"sipo run {shlex.quote(str(root / 'config.yaml'))} {shlex.quote(f'run_dir={root}')}"
    line = f"{what}: stage {stage_id} of the run {root} {reason}; complete it with `{command}`"
    if not allow_stale:
        raise RunDirError(line + " (or pass --allow-stale to use the run as it is)")
    logger.warning("%s; used anyway (--allow-stale)", line)
    return f"stale run (--allow-stale): stage {stage_id} {reason}"


def safetensors_error(exc: Exception, folder: Path) -> Exception:
    """safetensors' error (e.g. ``IoError(Os { code: 28, ... })`` when a disk fills up while an adapter is saved) as
    an OSError with its errno, naming the stage's folder, or as a RunDirError for a corrupt file."""
    import re

    text = " ".join(str(exc).split())
    # "IoError(Os { code: 28, ... })" (older safetensors) or "I/O error: File too large (os error 27)"
    code = re.search(r"(?:code: |os error )(\d+)", text)
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


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_write_access(run_dir: RunDir, todo: Sequence[StageSpec]) -> None:
    """Refuse the run before it writes ``config.yaml`` when a folder it has to write is not writable: the run
    directory and every folder under the stages it will run (the stage empties or rewrites them).

    Raises:
        PermissionError: naming the first such folder (exit code 4).
    """
    folders = [run_dir.root]
    for stage in todo:
        top = run_dir.path(stage.id)
        if top.is_dir() and not top.is_symlink():
            folders += [top, *(Path(d) for d, _, _ in os.walk(top) if Path(d) != top)]
        elif top.parent.is_dir() and top.parent != run_dir.root:
            folders.append(top.parent)
    for folder in folders:
        if folder.is_dir() and not _writable(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))


class _Undo:
    """What a run refused by a user mistake (a SipoError raised by a stage) takes back so that the run directory is
    left as it was: the folders this run created for the failing stage, ``config.yaml`` and, when no stage finished,
    the run directory itself if this run created it. A run refused by the environment (an OSError) only gets its
    ``config.yaml`` back (:meth:`restore_config`)."""

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
        self.restore_config()

    def restore_config(self) -> None:
        """When no stage finished: ``config.yaml`` as it was (and no lock file this run created). A run that the
        environment stopped keeps its partial work (shards, units) for the next attempt; only the settings it
        failed to apply are taken back."""
        if self.finished:
            return
        root = self.run_dir.root
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
    if str(cfg.model.device) == "cuda":
        resolve_device(cfg)  # refused where there is no CUDA device, under --dry-run too
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
    with lock as held:
        try:
            if main:
                check_run_dir(cfg, run_dir)  # again: another run may have finished stages while we were checking
                check_write_access(run_dir, todo)
                _save_config_if_changed(cfg, run_dir.root / "config.yaml")
                if world_size > 1 and cfg.model.name_or_path == "smollm2":
                    from sipo.models.loading import resolve_model_source

                    resolve_model_source(cfg.model)  # convert the GGUF once, before the other ranks look for it
            barrier()
            return _run_stages(cfg, run_dir, stages, only, force, hashes, cache, device, undo, held)
        except SipoError:
            if main:
                undo.undo()
            raise
        except OSError:  # refused by the environment: config.yaml goes back to the settings of the finished stages
            if main:
                with contextlib.suppress(OSError):
                    undo.restore_config()
            raise


def _run_stages(cfg: PipelineConfig, run_dir: RunDir, stages: Sequence[StageSpec], only: Sequence[str] | None,
                force: Sequence[str], hashes: RunHashes, cache: dict[str, Any], device: str, undo: _Undo,
                held: HeldLock | None = None) -> list[dict[str, Any]]:
    rank, world_size = process_rank()
    main = rank == 0
    results_ids: dict[str, str] = {}
    results = []
    for stage in stages:
        check_stop()
        if held is not None:
            held.check()  # a lock file deleted mid-run no longer keeps a second run out
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
            reset_partial_outputs(run_dir, stage.id, fp, clear=forced)
        barrier()
        logger.info("%-12s running: %s", stage.id, STAGES[stage.name].help, extra={STAGE_STARTS: True})
        start = time.perf_counter()
        ctx = StageContext(cfg=cfg, run_dir=run_dir, stage=stage, device=device, cache=cache)
        counts: dict[str, Any] = {}
        try:
            if main or stage.distributed:
                counts = stage_function(stage.name)(ctx) or {}
        except OSError as exc:
            if exc.filename is None:  # e.g. a write that ran out of space: name the stage's folder at least
                exc.filename = str(run_dir.path(stage.id))
            raise
        except Exception as exc:
            if type(exc).__name__ == "SafetensorError":  # raised from Rust, with no path and no errno attribute
                raise safetensors_error(exc, run_dir.path(stage.id)) from None
            raise
        seconds = round(time.perf_counter() - start, 2)
        check_stop()  # a stop request that a __del__ swallowed must not be recorded as a finished stage
        barrier()
        if main:
            run_dir.write_manifest(stage.id, {
                "stage": stage.id,
                "fingerprint": fp,
                "upstream": upstream,
                **record_outputs(run_dir, stage.id, fp),
                "counts": counts,
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


def reset_partial_outputs(run_dir: RunDir, stage_id: str, fp: str, *, clear: bool = False) -> None:
    """Before a stage runs: keep what a killed run of it left (finished shards and units, caches such as MODPO's
    margins) only if that run had the same fingerprint and the stage is not forced (``clear``); otherwise empty the
    stage's folder, so that outputs made with other settings or other upstream results are never read back. What
    is kept is verified piece by piece when the stage reuses it (:func:`sipo.stages.sharding.check_kept`).
    Scratch left by a kill (temporary files of atomic writes, trainer scratch folders) is removed either way."""
    folder = run_dir.path(stage_id)
    try:
        previous = (folder / STARTED).read_text().strip()
    except (OSError, UnicodeDecodeError):
        previous = None
    if (clear or previous != fp) and folder.is_dir():
        shutil.rmtree(folder)
    elif folder.is_dir():
        # atomic_path's ".<name>.<random>.tmp" and the trainers' ".<name>.trainer.<random>" scratch folders.
        for leftover in sorted({*folder.rglob(".*.tmp"), *folder.rglob(".*.trainer.*")}, reverse=True):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    atomic_write_text(folder / STARTED, fp + "\n")
