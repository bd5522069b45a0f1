"""Planning: the exact steps of an upgrade or a downgrade, worked out before Alembic runs,
so that an unknown target or a rollback below base is refused before anything changes,
and so that a failure can name the migration it happened in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import Connection

from db import revisions
from db.errors import RevisionError
from db.settings import BOOKKEEPING_SCHEMA


@dataclass(frozen=True)
class Step:
    """One migration applied (up) or reverted (down)."""

    script: Script
    direction: str  # "up" or "down"

    @property
    def revision(self) -> str:
        return self.script.revision

    @property
    def from_revision(self) -> str | None:
        return _parent(self.script) if self.direction == "up" else self.script.revision

    @property
    def to_revision(self) -> str | None:
        return self.script.revision if self.direction == "up" else _parent(self.script)

    @property
    def description(self) -> str:
        # A migration without a docstring: its file name says what it does.
        return self.script.doc or self.path.stem.partition("_")[2].replace("_", " ")

    @property
    def path(self) -> Path:
        return revisions.path_of(self.script)

    @property
    def online(self) -> bool:
        """Whether the migration uses autocommit_block(): part of it commits on its own."""
        return _uses_autocommit(self.path)


def _parent(script: Script) -> str | None:
    """The revision below `script`. Plans come from revisions.chain(), which refuses a
    merge (several parents) before any step exists."""
    down = script.down_revision
    if isinstance(down, tuple | list):
        raise RevisionError(
            f"the migration chain is not a line: {script.revision} merges {', '.join(down)}.",
            "migrations are linear in this repository: renumber one branch on top of the "
            "other instead of merging",
        )
    return down


_ONLINE: dict[Path, bool] = {}


def _uses_autocommit(path: Path) -> bool:
    if path not in _ONLINE:
        try:
            _ONLINE[path] = "autocommit_block" in path.read_text()
        except OSError:
            _ONLINE[path] = False
    return _ONLINE[path]


StepDone = Callable[[Step, float], None]
"""Called after each step's SQL ran (inside its transaction) with its duration in seconds."""


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; None at base (or before the first run)."""
    context = MigrationContext.configure(
        connection, opts={"version_table_schema": BOOKKEEPING_SCHEMA}
    )
    heads = context.get_current_heads()
    if connection.in_transaction():
        connection.rollback()  # reading autobegan one; Alembic must start clean
    return heads[0] if heads else None


def _position(scripts: list[Script], revision: str | None) -> int:
    """How many migrations are applied when the database is at `revision`."""
    if revision is None:
        return 0
    ids = [s.revision for s in scripts]
    if revision not in ids:
        raise RevisionError(
            f"the database is at revision {revision!r}, which this checkout does not have.",
            "the database is ahead of this checkout: update your checkout (git pull), or "
            "check that DATABASE_URL points at the right database",
        )
    return ids.index(revision) + 1


def plan_upgrade(script: ScriptDirectory, current: str | None, target: str) -> list[Step]:
    scripts = revisions.chain(script)
    start = _position(scripts, current)
    end = _position(scripts, revisions.resolve(script, target))
    if end < start:
        raise RevisionError(
            f"cannot upgrade to {target}: the database is already past it (at {current}).",
            f"to go back, run `invoke migrate.down --to {target}`",
        )
    return [Step(s, "up") for s in scripts[start:end]]


def plan_downgrade(
    script: ScriptDirectory, current: str | None, *, steps: int | None, target: str | None
) -> list[Step]:
    scripts = revisions.chain(script)
    start = _position(scripts, current)
    if target is not None:
        end = _position(scripts, revisions.resolve(script, target))
        if end > start:
            raise RevisionError(
                f"cannot downgrade to {target}: the database is below it (at {current or 'base'}).",
                f"to go forward, run `invoke migrate.up --to {target}`",
            )
    else:
        count = 1 if steps is None else steps
        if count < 1:
            raise RevisionError(f"--steps must be 1 or more, not {count}.")
        if count > start:
            raise RevisionError(
                f"cannot roll back {count} step(s): only {start} migration(s) are applied "
                f"(at {current or 'base'}).",
                "`invoke migrate.down --to base` rolls back everything",
            )
        end = start - count
    return [Step(s, "down") for s in reversed(scripts[end:start])]
