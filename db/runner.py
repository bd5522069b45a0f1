"""Running the chain: upgrade and downgrade on one connection, one transaction per step.

The functions here work out the exact steps before Alembic runs, so that an
unknown target or a rollback below base is refused before anything changes, and
so that a failure can name the migration it happened in.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db import history, revisions
from db.errors import MigrationFailed, RevisionError
from db.settings import BOOKKEEPING_SCHEMA

log = logging.getLogger(__name__)


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
        return self.script.down_revision if self.direction == "up" else self.script.revision

    @property
    def to_revision(self) -> str | None:
        return self.script.revision if self.direction == "up" else self.script.down_revision

    @property
    def description(self) -> str:
        return self.script.doc

    @property
    def path(self) -> Path:
        return revisions.path_of(self.script)


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
            "pull the latest main, or check that DATABASE_URL points at the right database",
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


def _where_it_failed(error: BaseException, step: Step) -> str:
    """file:line of the innermost frame inside the migration file, if any."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(step.path)]
    return f" at {step.path.name}:{frames[-1].lineno}" if frames else ""


def _record(
    connection: Connection,
    who: history.Who,
    step: Step,
    started_at: datetime,
    seconds: float,
    error: str | None = None,
) -> None:
    history.record(
        connection,
        revision=step.revision,
        from_revision=step.from_revision,
        to_revision=step.to_revision,
        direction=step.direction,
        description=step.description,
        checksum=history.checksum(step.path),
        started_at=started_at,
        duration_ms=seconds * 1000,
        success=error is None,
        error=error,
        who=who,
    )


def run(
    connection: Connection,
    plan: list[Step],
    on_step: StepDone | None = None,
    who: history.Who | None = None,
) -> None:
    """Apply `plan` on `connection`, which must have no open transaction.

    With `who`, each step also writes its history row, inside the step's own
    transaction; a failed step writes a failure row after its rollback.
    """
    if connection.in_transaction():
        # Alembic would run inside it, and a close without COMMIT would silently undo
        # every migration while reporting success.
        raise RuntimeError(
            "runner.run() needs a connection without an open transaction; commit or roll back first"
        )
    if not plan:
        return
    done: list[Step] = []
    started_at = datetime.now(UTC)
    mark = time.perf_counter()

    def after_step(*, ctx, step, heads, run_args) -> None:
        nonlocal mark, started_at
        seconds = time.perf_counter() - mark
        finished = plan[len(done)]
        if who is not None:
            _record(ctx.connection, who, finished, started_at, seconds)
        done.append(finished)
        if on_step is not None:
            on_step(finished, seconds)
        started_at, mark = datetime.now(UTC), time.perf_counter()

    if connection.dialect.server_version_info >= (14,):
        # A backend notices within a second that its client died (kill -9, lost network)
        # and rolls back, instead of holding its locks until its statement ends.
        connection.execute(text("SET client_connection_check_interval = 1000"))
        connection.commit()
    config = revisions.alembic_config()
    config.attributes["connection"] = connection
    config.attributes["configure_options"] = {"on_version_apply": after_step}
    direction = plan[0].direction
    target = plan[-1].to_revision or revisions.BASE
    try:
        if direction == "up":
            command.upgrade(config, target)
        else:
            command.downgrade(config, target)
    except CommandError as exc:
        raise RevisionError(str(exc)) from None
    except Exception as exc:
        failed = plan[len(done)] if len(done) < len(plan) else plan[-1]
        detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        message = " ".join(str(detail).split()) or type(detail).__name__
        error = f"{type(detail).__name__}: {message}"
        if who is not None:
            _record_failure(connection, who, failed, started_at, time.perf_counter() - mark, error)
        at = failed.from_revision or "base"
        raise MigrationFailed(
            f"migration {failed.revision} ({failed.description}) failed while going "
            f"{failed.direction}{_where_it_failed(exc, failed)}: {error}",
            f"its transaction was rolled back, so the database is at {at}. Fix the "
            "migration (or the data it trips on) and run the command again",
        ) from exc


def _record_failure(
    connection: Connection,
    who: history.Who,
    step: Step,
    started_at: datetime,
    seconds: float,
    error: str,
) -> None:
    """Write the failure row after the rollback; never hide the original error."""
    try:
        if connection.in_transaction():
            connection.rollback()
        with connection.begin():
            _record(connection, who, step, started_at, seconds, error)
    except Exception as exc:  # the connection itself may be what failed
        log.warning("could not record the failure of %s in the history: %s", step.revision, exc)
