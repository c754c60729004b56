"""Sharded, resumable work of the stages: shards of prompts and units of training that a killed run keeps.

Sharding: long stages split their items into shards of ``shard_size`` prompts, write each finished shard
atomically under ``<stage>/shards/``, and merge them at the end by key. A killed stage therefore loses at most the
shard in progress, and with several processes (``accelerate launch``) each rank does the shards ``i`` with
``i % world_size == rank``; rank 0 merges after a barrier.

What a kill (SIGKILL, power loss) costs, by stage: sample, review, rewrite and evaluate lose at most one shard;
dpo, realign, dpo_lw and modpo lose at most the adapter being trained (:func:`resumable_unit`; no trainer
checkpoints are written: they keep optimizer and RNG state as pickle files, which this project never loads);
prepare, sft, combine, filter and report start over. Partial work is kept only for a run with the same settings
(the pipeline empties the stage's folder otherwise, and always under ``--force``), and a resumed run ends with the
same files as an uninterrupted one.

Kept work is verified before it is reused, like a finished stage's outputs: every finished shard and unit has a
record (:func:`write_kept_record`) holding the stage fingerprint it was made under and the size and content hash of
each of its files, and :func:`check_kept` accepts it only when all of them still match. A shard or unit that fails
the check (edited, truncated, emptied, made under other settings, or without a record) is done again, with one log
line naming it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sipo.artifacts import atomic_write_json, changed_files, content_hash, files_table
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

STARTED = ".started"
"""File in a stage's folder naming the fingerprint that its partial outputs (finished shards, caches) belong to
(written by the pipeline before the stage runs)."""

RECORD_SCHEMA = 2
"""Version of the records of kept work (a record of another version, e.g. a bare counts dict, is not trusted)."""


def started_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint the pipeline wrote into the stage folder before this attempt (None outside a pipeline)."""
    try:
        return (out_dir / STARTED).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _files_of(output: Path) -> dict[str, list]:
    """The files table of a piece of kept work: every file of a folder (relative to it), or one file (by name)."""
    if output.is_dir():
        return files_table(output)
    return {output.name: [output.stat().st_size, content_hash(output)]}


def write_kept_record(record: Path, output: Path, out_dir: Path, payload: dict[str, Any]) -> None:
    """Record a finished piece of kept work (a shard file, an adapter folder, a cache file): the stage fingerprint
    it was made under, each of its files' size and content hash, and ``payload`` (e.g. the unit's counts). Written
    after the output itself, so a record always describes a complete output."""
    atomic_write_json(record, {"schema": RECORD_SCHEMA, "fingerprint": started_fingerprint(out_dir),
                               "folder": output.is_dir(), "files": _files_of(output), "payload": payload})


def check_kept(record: Path, output: Path, out_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Verify kept work against its record (see :func:`write_kept_record`).

    Returns:
        ``(payload, None)`` when the output is exactly what was recorded; ``(None, reason)`` when it is not (the
        reason names the first file that differs); ``(None, None)`` when there is neither a record nor an output
        (nothing was kept).
    """
    if not record.is_file():
        return None, (None if not output.exists() else "it has no record (killed before it was recorded)")
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"its record {record.name} is unreadable"
    if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA or not isinstance(data.get("files"), dict):
        return None, f"its record {record.name} is of an older format"
    if data.get("fingerprint") != started_fingerprint(out_dir):
        return None, "it was made with other settings or inputs"
    if not data["files"]:
        return None, "it has no files"
    root = output if data.get("folder") else output.parent
    try:
        changed = changed_files(root, data["files"])
    except (TypeError, ValueError):
        return None, f"its record {record.name} is unreadable"
    if changed:
        return None, f"{root / changed[0]} is missing or changed"
    return data.get("payload") if isinstance(data.get("payload"), dict) else {}, None


def sampled_shard_keys(decode: Any) -> tuple[str, ...]:
    """The fingerprint keys that sharding adds to a stage decoding with ``decode`` (a DecodeSettings):
    ``shard_size`` when it samples (``temperature > 0``), since every shard's decode is seeded anew, so the shard
    size decides which random draws each response gets; none for greedy decoding, which does not depend on it (a
    re-sharded greedy run stays finished)."""
    return ("shard_size",) if decode.temperature > 0 else ()


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

    Every shard's records are written to ``out_dir/shards/size<S>/NNNNN.jsonl`` atomically, then its record
    ``NNNNN.done.json`` (:func:`write_kept_record`); a shard whose file and record check out (:func:`check_kept`)
    is not recomputed, any other is (the folder names the shard size, so a killed run resumed with another
    ``shard_size`` never mixes shards of two sizes). Records are merged by ``key`` (not by file order), so the
    result does not depend on the number of processes.
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
        kept, reason = check_kept(_shard_record(path), path, out_dir)
        if reason is not None:
            logger.warning("%s: shard %s left by an interrupted run does not check out (%s); doing it again",
                           desc or out_dir.name, path, reason)
        if kept is None:
            _shard_record(path).unlink(missing_ok=True)
            rows = work(pieces[index])
            write_jsonl(path, rows)
            write_kept_record(_shard_record(path), path, out_dir, {"rows": len(rows)})
            timed += 1
        done += 1
        if desc:
            logger.info("%s: shard %s (%s)", desc,
                        time_left_text(done, len(mine), time.perf_counter() - start, timed),
                        "kept from an interrupted run" if kept is not None else "done")
    barrier()
    rows: list[R] = []
    for index in range(len(pieces)):
        rows.extend(read_jsonl(shard_dir / f"{index:05d}.jsonl", record))
    rows.sort(key=key)
    return rows


def _shard_record(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".done.json")


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


def resumable_unit(ctx: StageContext, name: str, work: Callable[[], dict], output: Path) -> dict:
    """Do one unit of a stage's work (e.g. train one adapter into the folder ``output``) unless a killed run of
    this stage, with the same settings, finished it already and its output checks out; returns the unit's counts.

    Units are what a stage that trains several adapters can lose when killed: one adapter (trainer checkpoints are
    not kept). The record ``<stage>/<name>.done.json`` (``name`` is an objective or a weights tag, never data) is
    written after ``work`` returned, so after its outputs, and holds the stage fingerprint, the size and content
    hash of every file of ``output`` and the counts (:func:`write_kept_record`). A unit counts as done only when
    :func:`check_kept` accepts it; one that fails (an edited, emptied or missing file, other settings) is done
    again, with one log line naming it. The pipeline empties the folder when the settings changed or the stage is
    forced; :func:`finish_units` removes the records when the stage is done.
    """
    record = ctx.out_dir / f"{name}.done.json"
    counts, reason = check_kept(record, output, ctx.out_dir)
    if counts is not None:
        logger.info("%s: %s was finished by an interrupted run with the same settings; kept", ctx.stage.id, name)
        return counts
    if reason is not None:
        logger.warning("%s: %s (%s) left by an interrupted run does not check out (%s); doing it again",
                       ctx.stage.id, name, output, reason)
    if process_rank()[0] == 0:  # what a killed attempt at this unit left: atomic-write and trainer scratch folders
        record.unlink(missing_ok=True)
        for stale in ctx.out_dir.glob(f".{name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    counts = work()
    check_stop()
    if process_rank()[0] == 0:
        write_kept_record(record, output, ctx.out_dir, counts)
    return counts


def finish_units(ctx: StageContext) -> None:
    """Remove the records of :func:`resumable_unit` once every unit of the stage is done (rank 0 only)."""
    barrier()
    if process_rank()[0] == 0:
        for record in ctx.out_dir.glob("*.done.json"):
            record.unlink()
