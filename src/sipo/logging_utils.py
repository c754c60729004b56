"""One logging set-up for the entry points; library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
"""Work that runs longer than this logs its progress and the time left, at most once per this many seconds."""


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
        # trl's one-off loops (precomputing reference log-probs) draw a tqdm bar unless TQDM_DISABLE is set; our own
        # bars pass ``disable`` explicitly, which this default does not override.
        os.environ.setdefault("TQDM_DISABLE", "1")
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
    """A tqdm bar over ``iterable`` when asked, on a terminal, on rank 0 (and not with ``SIPO_NO_PROGRESS``); and,
    whatever the terminal, a log line with the time left every :data:`PROGRESS_EVERY_S` seconds of a long loop
    (:class:`TimeLeft`)."""
    from tqdm.auto import tqdm

    show = enabled and sys.stderr.isatty() and progress_enabled()
    return with_time_left(tqdm(iterable, total=total, desc=desc, disable=not show, leave=False), total, desc)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def time_left_text(done: int, total: int, elapsed: float, timed: int | None = None) -> str:
    """``12/40 (30%), 36 s so far, about 1 min 24 s left``: the time left at the rate of the ``timed`` items (those
    the elapsed time was spent on; default ``done``). Pure."""
    timed = done if timed is None else timed
    share = f" ({done / total:.0%})" if total else ""
    text = f"{done}/{total}{share}, {format_seconds(elapsed)} so far"
    if timed > 0 and done < total:
        text += f", about {format_seconds(elapsed / timed * (total - done))} left"
    return text


class TimeLeft:
    """Progress with the time left, as log lines: :meth:`step` after each item; a line is logged (rank 0) once the
    work has run :data:`PROGRESS_EVERY_S` seconds, then at most once per that many seconds, and at the last item
    of work that logged before.

    Example::

        progress = TimeLeft("label: scoring", total=len(batches))
        for batch in batches:
            ...
            progress.step()
    """

    def __init__(self, desc: str, total: int, *, every: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.every, self.clock = desc, total, every, clock
        self.start = self.last = clock()
        self.done = self.timed = 0
        self.logged = False

    def step(self, count: int = 1, *, timed: bool = True) -> str | None:
        """Count ``count`` items (``timed=False``: items that took no time, e.g. kept from an interrupted run);
        returns the line when one is logged."""
        self.done += count
        self.timed += count if timed else 0
        now = self.clock()
        due = now - self.last >= self.every or (self.logged and self.done >= self.total)
        if not due:
            return None
        self.last, self.logged = now, True
        line = f"{self.desc}: {time_left_text(self.done, self.total, now - self.start, self.timed)}"
        if is_main_process():
            logger.info("%s", line)
        return line


def with_time_left(iterable: Iterable, total: int, desc: str) -> Iterator:
    """``iterable``'s items, with a :class:`TimeLeft` step after each."""
    progress = TimeLeft(desc, total)
    for item in iterable:
        yield item
        progress.step()
