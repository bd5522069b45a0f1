"""What a command found or did, as values: each command returns one of these, and
db/render.py shows it as text or JSON. A command whose outcome is a failure (a rehearsal
that failed, drift found) says so through `problem()`, raised once it has been shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from db.errors import MigrationFailed, UserError

if TYPE_CHECKING:
    from db import preview


@dataclass
class Outcome:
    as_json: bool = field(default=False, kw_only=True)
    """Shown as JSON (for scripts) rather than text."""

    def problem(self) -> UserError | None:
        """The error the command ends with, once the outcome has been shown."""
        return None


@dataclass
class Applied(Outcome):
    """An up or down (or the re-apply of a reset): from `start` to `end`; `steps` of
    them, none when there was nothing to do."""

    direction: str
    database: str
    start: str
    end: str
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Planned(Outcome):
    """A rehearsal of an up or down in one transaction, rolled back."""

    database: str
    direction: str
    start: str
    end: str
    rehearsed: preview.Rehearsed | None = None
    """None: nothing to plan."""
    seconds: float = 0.0

    def problem(self) -> UserError | None:
        if self.rehearsed is None or self.rehearsed.rehearsal.stopped_before is None:
            return None
        failed = self.rehearsed.rehearsal.stopped_before
        return MigrationFailed(
            f"the rehearsal failed at {failed.revision} ({failed.description}): "
            f"{self.rehearsed.rehearsal.reason}.",
            "nothing was changed; the real run would fail the same way. Fix the migration "
            "(or the data it trips on) and plan again",
        )


@dataclass
class Verified(Outcome):
    """Every applied migration's file matches its recorded checksum."""

    applied: int
