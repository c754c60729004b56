"""Stop requests (Ctrl-C, SIGTERM) that cannot be lost.

A signal handler that raises is not enough on its own: when the signal lands while the garbage collector runs a
``__del__`` method, Python reports the exception as "ignored" and carries on, so the run would finish as if it had
never been asked to stop. :func:`handling_stops` installs handlers that also *record* the request, and
:func:`check_stop` raises it again at the places where stopping is safe and cheap to test: each training step,
each shard and unit of work, and before a stage is recorded as finished. The swallowed exception itself is not
reported (it would print a traceback for a plain Ctrl-C).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C (locks released, finished stages kept)."""


_pending: int | None = None


def _stop_exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _on_signal(signum: int, frame: Any) -> None:
    global _pending
    _pending = signum
    raise _stop_exception(signum)


def check_stop() -> None:
    """Raise the stop request that a signal made, if any (again, if the first raise was swallowed)."""
    if _pending is not None:
        raise _stop_exception(_pending)


def _quiet_unraisable(previous_hook: Any) -> Any:
    def hook(unraisable: Any) -> None:
        if _pending is not None and isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
            return  # our own stop request, swallowed by a __del__: check_stop raises it again
        previous_hook(unraisable)

    return hook


@contextmanager
def handling_stops() -> Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, and both are
    remembered for :func:`check_stop`. Outside the main thread (where handlers cannot be set) nothing changes."""
    global _pending
    _pending = None
    try:
        previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    previous_hook = sys.unraisablehook
    if previous:
        sys.unraisablehook = _quiet_unraisable(previous_hook)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = previous_hook
        _pending = None
