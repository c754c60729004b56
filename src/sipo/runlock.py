"""The run-directory lock: one ``sipo run`` / ``sipo stage`` writes a run directory at a time.

Two runs writing one directory would leave stages of one run next to stages of the other, and nothing in the
files would show it. The lock is an OS advisory lock (``fcntl.flock``) on ``RUN_DIR/.sipo.lock``, held from the
moment the run starts writing until the process exits. The kernel releases a ``flock`` when its holder dies, even
by SIGKILL, so a killed run never leaves a stale lock; the pid, host and start time written into the file only
serve the message that a second run gets.

Under ``accelerate launch`` / torchrun only rank 0 takes the lock (the other processes of the job write only
through rank 0's plan, after barriers). ``--dry-run`` and ``sipo report`` take no lock.
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


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def run_lock(root: str | Path) -> Iterator[Path]:
    """Hold the lock of run directory ``root`` (which must exist) for the ``with`` block.

    Raises:
        RunLocked: another process holds it (the message names its pid and start time).
        OSError: the lock file cannot be created (e.g. read-only storage); the caller reports it.
    """
    import fcntl

    path = Path(root) / LOCK_NAME
    for _attempt in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
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
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
