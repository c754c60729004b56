"""Where rows come from: a local file or folder (JSONL, parquet, arrow, ``save_to_disk`` output) or a Hub dataset.

:func:`read_rows` yields ``(where, number, row)`` for every row, whatever the storage, so that every format reader
reports a bad row the same way, ``<where>:<number>: <what is wrong>``: for JSONL the number is the line, for
parquet, arrow and ``datasets`` rows it is the row (counting from 1). What ``data.path`` may be:

- a ``.jsonl`` file (any other suffix but ``.parquet`` / ``.arrow`` is read as JSON lines too);
- a ``.parquet`` file (read with pyarrow) or a ``.arrow`` file (``datasets.Dataset.from_file``);
- a folder written by ``Dataset.save_to_disk`` (it holds ``state.json``) or ``DatasetDict.save_to_disk``
  (``dataset_dict.json``; ``data.split`` picks the split);
- any other folder: its ``*.jsonl``, ``*.parquet`` and ``*.arrow`` files in sorted name order;
- a Hugging Face Hub dataset id (``owner/name``), loaded with ``datasets.load_dataset(id, split=data.split,
  revision=data.revision)``: from the local cache when ``HF_HUB_OFFLINE=1``.

Nothing here writes a cache: local files are read in place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sipo.errors import ConfigError, DataError
from sipo.records import iter_json_lines

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".arrow")
FOLDER_GLOBS = ("*.jsonl", "*.parquet", "*.arrow")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Row = tuple[str, int, dict[str, Any]]
"""(where, number, row): a file path or ``hub:<id>[split]``, the 1-based line or row number, the row."""


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def looks_like_hub_id(path: str) -> bool:
    return bool(_HUB_ID.match(path)) and Path(path).suffix.lower() not in (".jsonl", ".json", *TABLE_SUFFIXES)


def describe(path: str | Path, split: str = "train") -> str:
    """How a source is named in messages."""
    text = str(path)
    if not Path(text).exists() and looks_like_hub_id(text):
        return f"hub:{text}[{split}]"
    return text


def read_rows(path: str | Path | None, *, split: str = "train", revision: str | None = None,
              data_dir: str | None = None) -> Iterator[Row]:
    """Every row of ``path`` (see the module docstring), in storage order.

    Raises:
        ConfigError: no path given.
        DataError: a missing path, an empty folder, a malformed row (with its place) or a dataset that cannot be
            loaded.
    """
    if path is None or str(path) == "":
        raise ConfigError("config key 'data.path': is required for this data source")
    root = Path(path)
    if root.is_file():
        yield from _file_rows(root)
    elif root.is_dir():
        if is_saved_dataset(root):
            yield from _dataset_rows(str(root), _load_from_disk(root, split))
            return
        files = sorted({p for pattern in FOLDER_GLOBS for p in root.glob(pattern) if p.is_file()})
        if not files:
            raise DataError("folder holds no *.jsonl files (nor *.parquet, *.arrow or a save_to_disk dataset) "
                            "(data.path)", path=str(root))
        for file in files:
            yield from _file_rows(file)
    elif looks_like_hub_id(str(path)):
        where = describe(path, split)
        yield from _dataset_rows(where, _load_hub(str(path), split, revision, data_dir))
    else:
        raise DataError(f"no such file or folder (data.path{relative_hint(root)})", path=str(root))


def _file_rows(file: Path) -> Iterator[Row]:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        yield from _table_rows(str(file), _read_parquet(file))
    elif suffix == ".arrow":
        yield from _dataset_rows(str(file), _read_arrow(file))
    else:
        try:
            for line, row in iter_json_lines(file):
                yield str(file), line, row
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(file)) from None


def _read_parquet(file: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"not a readable parquet file ({_first_line(exc)})", path=str(file)) from None


def _read_arrow(file: Path):
    from datasets import Dataset

    try:
        return Dataset.from_file(str(file))
    except Exception as exc:
        raise DataError(f"not a readable arrow file ({_first_line(exc)})", path=str(file)) from None


def _load_from_disk(folder: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(folder))
    except Exception as exc:
        raise DataError(f"not a readable save_to_disk dataset ({_first_line(exc)})", path=str(folder)) from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataError(f"the saved dataset has no split '{split}' (data.split; it has: "
                            f"{', '.join(dataset)})", path=str(folder))
        dataset = dataset[split]
    return dataset


def _load_hub(name: str, split: str, revision: str | None, data_dir: str | None):
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, revision=revision, data_dir=data_dir)
    except Exception as exc:  # offline without a cache, unknown id, unknown split: one line for the user
        raise DataError(
            f"cannot load Hub dataset '{name}' (split={split}, revision={revision}): {_first_line(exc)} "
            "(with HF_HUB_OFFLINE=1 it must be in the local datasets cache; a local path must exist)",
        ) from None


def _table_rows(where: str, table) -> Iterator[Row]:
    number = 0
    for batch in table.to_batches(max_chunksize=1024):
        for row in batch.to_pylist():
            number += 1
            yield where, number, row


def _dataset_rows(where: str, dataset) -> Iterator[Row]:
    for number, row in enumerate(dataset, start=1):
        yield where, number, dict(row)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def source_args(cfg) -> dict[str, Any]:
    """``split``, ``revision`` and ``data_dir`` of ``cfg.data``, as keyword arguments of :func:`read_rows`."""
    return {"split": cfg.data.split, "revision": cfg.data.revision, "data_dir": cfg.data.data_dir}


def check_path(path: str | Path | None, key: str = "data.path") -> None:
    """The cheap check of a ``data.path`` (or ``key``) before a run: it exists (a folder holding data), or it names a
    Hub dataset (not loaded here). Raises ConfigError or DataError like :func:`read_rows`."""
    if path is None or str(path) == "":
        raise ConfigError(f"config key '{key}': is required for this data source")
    root = Path(path)
    if root.is_file():
        return
    if root.is_dir():
        if not is_saved_dataset(root) and not any(p.is_file() for pattern in FOLDER_GLOBS for p in root.glob(pattern)):
            raise DataError(f"folder holds no *.jsonl files (nor *.parquet, *.arrow or a save_to_disk dataset) "
                            f"({key})", path=str(root))
        return
    if not looks_like_hub_id(str(path)):
        raise DataError(f"no such file or folder ({key}{relative_hint(root)})", path=str(root))


def relative_hint(path: Path) -> str:
    """For a relative path that is not there: what it was resolved against (the current folder, never the
    preset's), so that a preset's ``data.path`` written relative to the preset is recognised as the cause."""
    if Path(path).expanduser().is_absolute():
        return ""
    return (f"; a relative path is read from the current folder {Path.cwd()}, not from the preset's folder: "
            f"run sipo from the folder it is relative to, or give an absolute path")
