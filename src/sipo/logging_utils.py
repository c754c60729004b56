"""One logging set-up for the entry points; library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os
import sys
import warnings


def process_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (``accelerate launch`` / torchrun), default (0, 1)."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, world


def is_main_process() -> bool:
    return process_rank()[0] == 0


def setup_logging(rank: int | None = None, *, verbose: bool = False) -> None:
    """INFO on rank 0 (DEBUG with ``verbose``), WARNING elsewhere; quiet the libraries' chatter."""
    if rank is None:
        rank = process_rank()[0]
    level = (logging.DEBUG if verbose else logging.INFO) if rank == 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname).1s %(name)s: %(message)s" if verbose else "%(asctime)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("sipo").setLevel(level)
    for noisy in ("transformers", "trl", "peft", "accelerate", "datasets", "torch", "matplotlib", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        warnings.filterwarnings("ignore")
        try:
            import transformers

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except Exception:  # pragma: no cover - transformers always importable in practice
            pass
        try:
            import datasets

            datasets.utils.logging.set_verbosity_error()
            datasets.disable_progress_bars()
        except Exception:  # pragma: no cover
            pass


def progress_enabled() -> bool:
    """Progress bars on rank 0 only, and not when SIPO_NO_PROGRESS is set."""
    return is_main_process() and not os.environ.get("SIPO_NO_PROGRESS")


def progress_bar(iterable, total: int, enabled: bool, desc: str):
    """A tqdm bar over ``iterable`` when asked, on a terminal, on rank 0 (and not with ``SIPO_NO_PROGRESS``)."""
    from tqdm.auto import tqdm

    show = enabled and sys.stderr.isatty() and progress_enabled()
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)
