"""The exceptions ccg raises for a problem the user can fix.

Each message says what was expected, what was got, and how to fix it (which flag, key or
argument to change). They all derive from `CCGError`, so a program can catch ccg's own errors
in one place; the `ccg` command turns them into a one-paragraph message and exit code 2.
"""

from __future__ import annotations


class CCGError(Exception):
    """Base class of ccg's user-facing errors."""


class ConfigError(CCGError, ValueError):
    """A configuration that cannot be used (raised before any work starts)."""


class ModelFileError(CCGError, ValueError):
    """A model file that cannot be read (missing, corrupt, wrong format or version)."""


class TrainingError(CCGError, RuntimeError):
    """Training cannot continue (too many non-finite samples, a checkpoint that does not fit)."""


class Interrupted(CCGError):
    """A run stopped by SIGINT or SIGTERM after finishing its current step and saving its
    state (`checkpoint`), so that it can be resumed.

    Attributes:
        signum: the signal number (2 for SIGINT, 15 for SIGTERM).
        checkpoint: the file the state was saved to (None when nothing new was saved because
            the last saved state is the one to resume from).
        exit_code: 128 + signum, what a shell expects of a process ended by that signal.
    """

    def __init__(self, signum: int, checkpoint=None, message: str = "") -> None:
        self.signum, self.checkpoint = int(signum), checkpoint
        super().__init__(message or f"interrupted by signal {signum}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
