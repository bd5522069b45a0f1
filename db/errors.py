"""Errors a user can act on. Each carries a one-line message, a hint and an exit code.

The command line (tasks.py) prints `message` and `hint` and exits with `exit_code`;
anything that is not a `UserError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment: never worth a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        return f"{text}\nhint: {self.hint}" if self.hint else text


class ConfigError(UserError):
    """DATABASE_URL or another setting is missing, empty or malformed."""

    exit_code = 2


class RevisionError(UserError):
    """An unknown revision, or a target the chain cannot reach from here."""

    exit_code = 2


class ConnectionFailed(UserError):
    """The database could not be reached or refused us."""

    exit_code = 3


class MigrationFailed(UserError):
    """A migration raised; its transaction was rolled back."""

    exit_code = 4


class Refused(UserError):
    """A command declined to do something dangerous without an explicit flag."""

    exit_code = 5


class LockTimeout(UserError):
    """Another run held the migration lock for longer than --lock-timeout."""

    exit_code = 6


class LockLost(UserError):
    """The run's migration lock went away while it was migrating."""

    exit_code = 6


class ChecksumMismatch(UserError):
    """An applied migration's file was edited or deleted after it was applied."""

    exit_code = 7


class DatabaseRefused(UserError):
    """The database refused something the tool does outside a migration step (a missing
    privilege, a read-only session, a timeout)."""

    exit_code = 9


class CheckFailed(UserError):
    """A check (the roundtrip) ran and found problems; its report says which."""

    exit_code = 8
