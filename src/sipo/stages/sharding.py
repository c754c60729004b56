"""Sharded, resumable work of the stages: shards of prompts and units of training that a killed run keeps.

Sharding: long stages split their items into shards of ``shard_size`` prompts, write each finished shard
atomically under ``<stage>/shards/``, and merge them at the end by key. A killed stage therefore loses at most the
shard in progress, and with several processes (``accelerate launch``) each rank does the shards ``i`` with
``i % world_size == rank``; rank 0 merges after a barrier.

What a kill (SIGKILL, power loss) costs, by stage: sample, review, rewrite and evaluate lose at most one shard;
dpo, realign, dpo_lw and modpo lose at most the adapter being trained (:func:`resumable_unit`; no trainer
checkpoints are written: they keep optimizer and RNG state as pickle files, which this project never loads);
prepare, sft, combine, filter and report start over. Partial work is kept only for a run with the same settings
(the pipeline empties the stage's folder otherwise), and a resumed run ends with the same files as an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sipo.artifacts import atomic_write_json
from sipo.distributed import barrier
from sipo.interrupt import check_stop
from sipo.logging_utils import process_rank, time_left_text
from sipo.records import read_jsonl, write_jsonl

if TYPE_CHECKING:
    from sipo.stage import StageContext

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SHARD_SIZE = 16
"""Prompts per shard of generation and scoring work."""


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def shard(items: Sequence[T], rank: int, world_size: int) -> list[int]:
    """Indices of the shards (of ``items``) that process ``rank`` of ``world_size`` works on."""
    return [i for i in range(len(items)) if i % world_size == rank]


def run_sharded(
    out_dir: Path,
    items: Sequence[T],
    work: Callable[[Sequence[T]], list[R]],
    *,
    record: type[R],
    key: Callable[[R], Any],
    shard_size: int = SHARD_SIZE,
    desc: str = "",
) -> list[R]:
    """Apply ``work`` to shards of ``items``, resumably and across processes; return every shard's records (of
    type ``record``) sorted by ``key``.

    Every shard's records are written to ``out_dir/shards/size<S>/NNNNN.jsonl`` atomically; a shard file that
    exists is not recomputed (the folder names the shard size, so a killed run resumed with another ``shard_size``
    never mixes shards of two sizes). Records are merged by ``key`` (not by file order), so the result does not
    depend on the number of processes.
    """
    rank, world_size = process_rank()
    shard_dir = out_dir / "shards" / f"size{shard_size}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    pieces = list(chunks(items, shard_size))
    mine = shard(pieces, rank, world_size)
    done = timed = 0
    start = time.perf_counter()
    for index in mine:
        path = shard_dir / f"{index:05d}.jsonl"
        check_stop()
        kept = path.is_file()
        if not kept:
            write_jsonl(path, work(pieces[index]))
            timed += 1
        done += 1
        if desc:
            logger.info("%s: shard %s (%s)", desc,
                        time_left_text(done, len(mine), time.perf_counter() - start, timed),
                        "kept from an interrupted run" if kept else "done")
    barrier()
    rows: list[R] = []
    for index in range(len(pieces)):
        rows.extend(read_jsonl(shard_dir / f"{index:05d}.jsonl", record))
    rows.sort(key=key)
    return rows


def finish_shards(out_dir: Path) -> None:
    """Remove the shard files once the merged output is written (rank 0 only, after a barrier)."""
    barrier()
    if process_rank()[0] != 0:
        return
    # rmtree: a run killed while writing a shard leaves a temporary folder next to the shard files.
    shutil.rmtree(out_dir / "shards", ignore_errors=True)


def write_output(path: Path, rows: Sequence[Any]) -> int:
    """Write a stage's merged output (rank 0 only: every rank holds the same rows); returns the row count."""
    if process_rank()[0] != 0:
        return len(rows)
    return write_jsonl(path, rows)


def resumable_unit(ctx: StageContext, name: str, work: Callable[[], dict], outputs: Sequence[Path] = ()) -> dict:
    """Do one unit of a stage's work (e.g. train one adapter) unless a killed run of this stage, with the same
    settings, finished it already; returns the unit's counts.

    Units are what a stage that trains several adapters can lose when killed: one adapter (trainer checkpoints are
    not kept). The record ``<stage>/<name>.done.json`` (``name`` is an objective or a weights tag, never data) is
    written after ``work`` returned, so after its outputs; a unit counts as done when the record and every path of
    ``outputs`` exist. The pipeline empties the folder when the settings changed; :func:`finish_units` removes the
    records when the stage is done, so that ``--force`` redoes every unit.
    """
    record = ctx.out_dir / f"{name}.done.json"
    if record.is_file() and all(Path(p).exists() for p in outputs):
        try:
            counts = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            counts = None
        if isinstance(counts, dict):
            logger.info("%s: %s was finished by an interrupted run with the same settings; kept", ctx.stage.id, name)
            return counts
    if process_rank()[0] == 0:  # what a killed attempt at this unit left: atomic-write and trainer scratch folders
        for stale in ctx.out_dir.glob(f".{name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    counts = work()
    check_stop()
    if process_rank()[0] == 0:
        atomic_write_json(record, counts)
    return counts


def finish_units(ctx: StageContext) -> None:
    """Remove the records of :func:`resumable_unit` once every unit of the stage is done (rank 0 only)."""
    barrier()
    if process_rank()[0] == 0:
        for record in ctx.out_dir.glob("*.done.json"):
            record.unlink()
