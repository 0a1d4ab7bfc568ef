"""Errors that loralab reports to the user as one line (no traceback), and their exit codes."""

from __future__ import annotations

from pathlib import Path


class LoralabError(Exception):
    """Base class for user-facing errors: the CLI prints ``str(err)`` and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(LoralabError):
    """A configuration value is invalid; the message names the option (as the CLI flag)."""


class DataError(LoralabError):
    """A data file is invalid; the message names the file, the line and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class RunDirError(LoralabError):
    """A run directory is missing, incomplete or unreadable."""
