"""The run directory: one folder per stage, atomic outputs, and a manifest written last.

Layout (``r1`` is the self-improvement round)::

    RUN_DIR/config.yaml            resolved config, written before any work
    RUN_DIR/prepare/               pairs_train.jsonl, pairs_conflict.jsonl, ..., manifest.json
    RUN_DIR/sft/model/             (optional) the fine-tuned base model
    RUN_DIR/dpo/<objective>/       round-1 LoRA adapters
    RUN_DIR/r1/sample/             candidates.jsonl
    RUN_DIR/r1/{review,rewrite,combine,filter}/
    RUN_DIR/r1/realign/<objective>/  realigned adapters
    RUN_DIR/evaluate/              scores.jsonl
    RUN_DIR/report/                report.json, scores.jsonl, summary.csv, pareto.png, report.md

A stage is done iff its ``manifest.json`` exists and its fingerprint matches; outputs are written to temporary
names and renamed into place, so a killed stage never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (file or folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.filename is None:  # a write that ran out of space names no file: name the one being written
            exc.filename = str(path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def stable_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (first 16 hex digits)."""
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


FULL_HASH_LIMIT = 256 << 20
"""Files up to this size (256 MiB) are hashed whole; larger ones (model weights) by :func:`sampled_hash`."""
SAMPLE_BYTES = 4 << 20


def sampled_hash(path: str | Path, size: int) -> str:
    """sha256 of a large file's size and of 4 MiB at its start, middle and end.

    Weights of a large model are gigabytes; reading them whole on every run to decide whether a finished stage can be
    skipped would cost more than some stages. A change that keeps the size and leaves these three windows intact
    goes unnoticed (``--force`` re-runs a stage whatever its fingerprint says).
    """
    h = hashlib.sha256(f"sampled:{size}:".encode())
    with open(path, "rb") as f:
        for offset in (0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)):
            f.seek(offset)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:16]


def content_hash(path: str | Path) -> str:
    """The content hash of one file: sha256 streamed in 1 MiB chunks, or :func:`sampled_hash` above
    :data:`FULL_HASH_LIMIT`."""
    size = os.stat(path).st_size
    return file_hash(path) if size <= FULL_HASH_LIMIT else sampled_hash(path, size)


def files_table(folder: str | Path, *, skip_hidden: bool = True, skip: tuple[str, ...] = ()) -> dict[str, list]:
    """``{relative path: [size, content hash]}`` of every file under ``folder`` (sorted; hidden names and the
    top-level names in ``skip`` left out). Symlinked files are read through (as in a Hugging Face cache snapshot);
    symlinked folders are not entered, so a link cycle cannot loop."""
    root = Path(folder)
    table: dict[str, list] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if skip_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            if skip_hidden and name.startswith("."):
                continue
            if rel_dir == Path(".") and name in skip:
                continue
            path = Path(dirpath) / name
            table[(rel_dir / name).as_posix()] = [path.stat().st_size, content_hash(path)]
    return table


def changed_files(folder: str | Path, table: dict[str, list]) -> list[str]:
    """The recorded files of ``table`` that are missing under ``folder`` or differ in size or content (a size
    check first, so that a truncated file costs no hashing)."""
    root = Path(folder)
    changed = []
    for rel, (size, digest) in sorted(table.items()):
        path = root / rel
        try:
            if not path.is_file() or path.stat().st_size != size or content_hash(path) != digest:
                changed.append(rel)
        except OSError:
            changed.append(rel)
    return changed


class RunDir:
    """Paths and manifests of one run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        """The folder of a stage id such as ``prepare`` or ``r1/sample`` (created on demand)."""
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, stage: str, *parts: str) -> Path:
        return self.root.joinpath(stage, *parts)

    def manifest_path(self, stage: str) -> Path:
        return self.root / stage / MANIFEST

    def read_manifest(self, stage: str) -> dict[str, Any] | None:
        """The stage's manifest, or None when there is none or it is not a JSON object (a damaged manifest means
        the stage is not finished)."""
        path = self.manifest_path(stage)
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None

    def write_manifest(self, stage: str, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path(stage), manifest)

    def invalidate(self, stage: str) -> None:
        """Forget that a stage finished (its outputs will be rewritten)."""
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path(stage).unlink()
