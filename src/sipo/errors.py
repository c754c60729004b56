"""User-facing errors.

Anything that is the user's mistake (a bad config key, a malformed data row, a missing file) raises a
:class:`SipoError` subclass. The CLI turns it into one line on stderr and exit code 2; library code never
prints.
"""

from __future__ import annotations


class SipoError(Exception):
    """A problem the user can fix; reported as one line, exit code 2."""


class ConfigError(SipoError):
    """A config key is missing, misspelled or has an invalid value."""


class DataError(SipoError):
    """A data file is missing or a row in it is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class RunDirError(SipoError):
    """The run directory was written by an incompatible config or is otherwise unusable."""
