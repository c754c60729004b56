"""The run-directory lock: one ``sipo run`` / ``sipo stage`` writes a run directory at a time.

Two runs writing one directory would leave stages of one run next to stages of the other, and nothing in the
files would show it. The lock is an OS advisory lock (``fcntl.flock``) on ``RUN_DIR/.sipo.lock``, held from the
moment the run starts writing until the process exits. The kernel releases a ``flock`` when its holder dies, even
by SIGKILL, so a killed run never leaves a stale lock; the pid, host and start time written into the file only
serve the message that a second run gets.

Under ``accelerate launch`` / torchrun only rank 0 takes the lock (the other processes of the job write only
through rank 0's plan, after barriers). ``--dry-run`` and ``sipo report`` take no lock.

A ``flock`` guards the file it was taken on, so the lock is only as good as that file: the file is opened with
``O_NOFOLLOW`` (a ``.sipo.lock`` that is a symlink is refused, never written through), and the run checks at every
stage boundary (:meth:`HeldLock.check`) that ``.sipo.lock`` is still the file it holds; if it was deleted or
replaced, a second run may have taken a lock of its own, so this one stops.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from sipo.errors import RunDirError

LOCK_NAME = ".sipo.lock"


class RunLocked(RunDirError):
    """Another process holds the run directory's lock."""


class HeldLock:
    """The lock a run holds: :meth:`check` that its file is still in place."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def check(self) -> None:
        """Raise RunLocked when ``.sipo.lock`` was deleted or replaced since the lock was taken."""
        try:
            same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            raise RunLocked(f"{self.path}: the lock file was deleted or replaced during the run, so another sipo "
                            "run may be writing this run directory; stopped (the finished stages are kept)")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[HeldLock]:
    """Hold the lock of run directory ``root`` (which must exist) for the ``with`` block.

    Raises:
        RunLocked: another process holds it (the message names its pid and start time).
        RunDirError: ``.sipo.lock`` is a symlink (or not a regular file).
        OSError: the lock file cannot be created (e.g. read-only storage); the caller reports it.
    """
    import fcntl

    path = Path(root) / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _attempt in range(3):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise RunDirError(f"{path}: the run directory's lock file is a symlink or not a regular file; remove "
                              "it (sipo never writes through it)")
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink made between the check and the open
                raise RunDirError(f"{path}: the run directory's lock file is a symlink; remove it") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLocked(f"{root}: another sipo run is writing this run directory ({_holder(path)}); wait for "
                            "it to finish or use another run_dir") from None
        try:  # a refused run removes the lock file it created; a lock on that removed file guards nothing
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    else:
        raise RunLocked(f"{root}: the run directory's lock file keeps being replaced; is another sipo run "
                        "starting on it?")
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:
            exc.filename = str(path)
            raise
        yield HeldLock(path, fd)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
