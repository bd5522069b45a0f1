"""Running the chain: upgrade and downgrade on one connection, one transaction per step.

The functions here work out the exact steps before Alembic runs, so that an
unknown target or a rollback below base is refused before anything changes, and
so that a failure can name the migration it happened in.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationStep
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError, to_tuple
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db import blocking, history, interrupts, revisions, settings
from db.errors import ConnectionFailed, LockLost, MigrationFailed, RevisionError, UserError
from db.settings import BOOKKEEPING_SCHEMA, Timeouts

if TYPE_CHECKING:
    from db import catalog
    from db.lock import Held

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
        # A migration without a docstring: its file name says what it does.
        return self.script.doc or self.path.stem.partition("_")[2].replace("_", " ")

    @property
    def path(self) -> Path:
        return revisions.path_of(self.script)

    @property
    def online(self) -> bool:
        """Whether the migration uses autocommit_block(): part of it commits on its own."""
        return _uses_autocommit(self.path)


_ONLINE: dict[Path, bool] = {}


def _uses_autocommit(path: Path) -> bool:
    if path not in _ONLINE:
        try:
            _ONLINE[path] = "autocommit_block" in path.read_text()
        except OSError:
            _ONLINE[path] = False
    return _ONLINE[path]


class MigrationExited(Exception):
    """Migration code called sys.exit()."""


class TransactionEnded(Exception):
    """Migration code ended the step's transaction itself (COMMIT, ROLLBACK)."""

    def __init__(self, statement: str, then: BaseException | None = None) -> None:
        text = " ".join(statement.split())[:80]
        after = f"; then {type(then).__name__}: {then}" if then is not None else ""
        super().__init__(f"the migration ended its own transaction with {text!r}{after}")


class _TransactionWatch:
    """Notices a statement that ends the transaction Alembic opened for a step (an
    op.execute("COMMIT")): what ran before it is committed, whatever happens next.

    It also keeps the step's statements, to name those that stay committed when the step
    fails: an autocommit_block() commits what ran before it, and then each of its own."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.ended_by: str | None = None
        self.statements: list[str] = []
        self.committed = 0
        """How many of `statements` are committed."""

    def next_step(self) -> None:
        self.statements.clear()
        self.committed = 0

    def committed_statements(self) -> list[str]:
        """The step's committed statements that changed something, each on one line."""
        return [
            " ".join(statement.split())
            for statement in self.statements[: self.committed]
            if not _READ_ONLY.match(statement)
        ]

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        raw = conn.connection.dbapi_connection
        self.statements.append(statement)
        if getattr(raw, "autocommit", False):
            self.committed = len(self.statements)
        elif (
            self.ended_by is None
            and conn.in_transaction()
            and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            self.ended_by = statement
            if not _ROLLBACK.match(statement):
                self.committed = len(self.statements)

    def __enter__(self) -> _TransactionWatch:
        event.listen(self.connection, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.connection, "after_cursor_execute", self._after)


_READ_ONLY = re.compile(r"^\s*(SELECT|SHOW|BEGIN|START|COMMIT|END)\b", re.I)
"""Statements that leave nothing behind (transaction control included)."""
_ROLLBACK = re.compile(r"^\s*(ROLLBACK|ABORT)\b", re.I)


class InvalidIndexes(Exception):
    """A step that ran an autocommit_block() left indexes INVALID."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"INVALID index(es) after the step: {', '.join(names)}")
        self.names = names


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


def _set(connection: Connection, values: dict[str, str], *, local: bool) -> None:
    """SET each of `values` (SET LOCAL with `local`), in one round trip."""
    scope = "true" if local else "false"
    calls = ", ".join(f"set_config(:name{i}, :value{i}, {scope})" for i in range(len(values)))
    parameters = {}
    for i, (name, value) in enumerate(values.items()):
        parameters[f"name{i}"], parameters[f"value{i}"] = name, value
    connection.execute(text(f"SELECT {calls}"), parameters)


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
    provided: tuple[str, dict] | None = None,
    note: str | None = None,
) -> bool:
    return history.record(
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
        provided=provided,
        note=note,
    )


LOCK_NOT_AVAILABLE = "55P03"
"""SQLSTATE of a statement that gave up waiting for lock_timeout."""


class _StepFailed(Exception):
    def __init__(
        self,
        step: Step,
        error: BaseException,
        done: int,
        seconds: float,
        before: catalog.Catalog | None = None,
        committed: list[str] | None = None,
    ) -> None:
        super().__init__(str(error))
        self.step, self.error, self.done, self.seconds = step, error, done, seconds
        self.before = before
        """The catalog before an online step, to tell what its failure left behind."""
        self.committed = committed or []
        """The step's statements that stay committed (autocommit_block(), a COMMIT)."""

    @property
    def detail(self) -> BaseException:
        error = self.error
        return error.orig if isinstance(error, DBAPIError) and error.orig is not None else error

    @property
    def lock_timed_out(self) -> bool:
        return getattr(self.detail, "sqlstate", None) == LOCK_NOT_AVAILABLE

    @property
    def connection_lost(self) -> bool:
        """The server or the link failed under the step (a killed backend, a crash, a
        restart, the network), not the migration's SQL."""
        state = getattr(self.detail, "sqlstate", None) or ""
        if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return True
        return isinstance(self.detail, psycopg.OperationalError) and not state

    @property
    def message(self) -> str:
        text = " ".join(str(self.detail).split())
        return f"{type(self.detail).__name__}: {text}" if text else type(self.detail).__name__


def _alembic(
    connection: Connection,
    plan: list[Step],
    after_step: Callable[..., None],
    scripts: ScriptDirectory | None = None,
    **attributes,
) -> None:
    config = revisions.alembic_config()
    config.attributes.update(connection=connection, models=False, **attributes)
    target = plan[-1].to_revision or revisions.BASE
    # What alembic.command.upgrade/downgrade do, on the chain already loaded (they would
    # load every migration file again).
    script = scripts or revisions.script_directory()
    up = plan[0].direction == "up"

    def steps(rev, context):
        if set(rev) == set(to_tuple(plan[0].from_revision, default=())):
            # The plan's own steps: Alembic would walk the whole chain to find them again,
            # at every run (the roundtrip runs one step at a time, N times over).
            make = MigrationStep.upgrade_from_script if up else MigrationStep.downgrade_from_script
            return [make(script.revision_map, step.script) for step in plan]
        # Not where the plan starts: Alembic's own walk, and its own error.
        return (script._upgrade_revs if up else script._downgrade_revs)(target, rev)

    # What a migration prints goes to stderr while it runs: stdout is the tool's, and may
    # be --json. The tool's own lines, from after_step, still go to stdout.
    stdout = sys.stdout

    def after(**kwargs) -> None:
        with contextlib.redirect_stdout(stdout):
            after_step(**kwargs)

    config.attributes["configure_options"] = {"on_version_apply": after}
    with (
        contextlib.redirect_stdout(sys.stderr),
        EnvironmentContext(config, script, fn=steps, destination_rev=target),
    ):
        script.run_env()


def _run_once(
    connection: Connection,
    plan: list[Step],
    on_step: StepDone | None,
    who: history.Who | None,
    lock: Held | None = None,
    scripts: ScriptDirectory | None = None,
    note: str | None = None,
    **attributes,
) -> None:
    done: list[Step] = []
    started_at = datetime.now(UTC)
    mark = time.perf_counter()
    rehearsal = bool(attributes.get("rehearsal"))
    if any(step.online for step in plan) and not rehearsal:
        from db import catalog  # only online steps read it: not worth its import otherwise
    before: catalog.Catalog | None = None
    if plan[0].online and not rehearsal:
        before = catalog.read(connection)
        connection.commit()

    def after_step(*, ctx, step, heads, run_args) -> None:
        nonlocal mark, started_at, before
        seconds = time.perf_counter() - mark
        finished = plan[len(done)]
        # Inside the step's last transaction: failing here keeps the revision where it
        # was, so `migrate.up` never reports success over an INVALID index.
        if finished.online and not rehearsal and (bad := catalog.invalid_indexes(ctx.connection)):
            raise InvalidIndexes(bad)
        if watch.ended_by is not None:
            raise TransactionEnded(watch.ended_by)
        # The run must still hold the migration lock when the step commits. With history,
        # the row is written on that condition, in the same statement (only that condition
        # can keep it from being written).
        if who is not None:
            provided = lock.condition if lock is not None else None
            if not _record(
                ctx.connection, who, finished, started_at, seconds, None, provided, note
            ):
                assert lock is not None
                raise lock.lost()
        elif lock is not None:
            lock.ensure(ctx.connection)
        done.append(finished)
        if on_step is not None:
            on_step(finished, seconds)
        following = plan[len(done)] if len(done) < len(plan) else None
        online_next = following is not None and following.online and not rehearsal
        before = catalog.read(ctx.connection) if online_next else None
        started_at, mark = datetime.now(UTC), time.perf_counter()
        watch.next_step()

    watch = _TransactionWatch(connection)
    try:
        with watch:
            _alembic(connection, plan, after_step, scripts, **attributes)
    except CommandError as exc:
        raise RevisionError(str(exc)) from None
    except BaseException as exc:
        failed = plan[len(done)] if len(done) < len(plan) else plan[-1]
        seconds, committed = time.perf_counter() - mark, watch.committed_statements()
        if (interrupt := _interruption(exc)) is not None:
            # Ctrl-C or SIGTERM, possibly hidden behind what Alembic's autocommit_block()
            # raised while cleaning up after it: the interruption it is.
            interrupt.step_failed = _StepFailed(  # type: ignore[attr-defined]
                failed, interrupt, len(done), seconds, before, committed
            )
            interrupt.step_in_progress = (failed, seconds)  # type: ignore[attr-defined]
            raise interrupt from None
        if isinstance(exc, SystemExit):  # sys.exit() in a migration is not a success
            exc = MigrationExited(f"the migration called sys.exit({exc.code!r})")
        if watch.ended_by is not None and not isinstance(exc, TransactionEnded):
            exc = TransactionEnded(watch.ended_by, exc)
        raise _StepFailed(failed, exc, len(done), seconds, before, committed) from exc


def _interruption(error: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt (or other signal turned exception) behind `error`, if any."""
    while error is not None:
        if not isinstance(error, Exception | SystemExit | GeneratorExit):
            return error
        error = error.__context__
    return None


def run(
    connection: Connection,
    plan: list[Step],
    on_step: StepDone | None = None,
    who: history.Who | None = None,
    timeouts: Timeouts | None = None,
    say: Callable[[str], None] | None = None,
    lock: Held | None = None,
    scripts: ScriptDirectory | None = None,
    budget: blocking.Budget | None = None,
) -> None:
    """Apply `plan` on `connection`, which must have no open transaction.

    `scripts`: the chain `plan` comes from, when the caller has it loaded already.

    Each step runs in its own transaction under `timeouts` (lock_timeout and
    statement_timeout). A step that gives up on lock_timeout is retried, with the
    wait doubling each time, up to `timeouts.retries` times. With `who`, each step
    writes its history row inside its transaction, and each failed attempt writes a
    failure row after its rollback. With `budget`, each attempt that blocks the
    application past it is cancelled (db/blocking.py).
    """
    if connection.in_transaction():
        # Alembic would run inside it, and a close without COMMIT would silently undo
        # every migration while reporting success.
        raise RuntimeError(
            "runner.run() needs a connection without an open transaction; commit or roll back first"
        )
    if not plan:
        return
    timeouts = timeouts or settings.timeouts()
    # A stalled link must not hold the step's locks for ever (README, Safety).
    values = {**timeouts.session_settings(), **settings.link().server_settings()}
    if connection.dialect.server_version_info >= (14,):
        # A backend notices within a second that its client died (kill -9, lost network)
        # and rolls back, instead of holding its locks until its statement ends.
        values["client_connection_check_interval"] = "1000"
        # A hardened role's idle timeout must not end the run between two steps.
        values["idle_session_timeout"] = "0"
    _set(connection, values, local=False)
    connection.commit()

    remaining, attempt = plan, 1
    guard: blocking.Guard | None = None
    while True:
        try:
            note = budget.note() if budget is not None else None
            with blocking.guarding(connection, budget) as guard:
                _run_once(connection, remaining, on_step, who, lock, scripts, note)
            return
        except _StepFailed as failure:
            trip = guard.cancelled(failure.error) if guard is not None else None
            waited = failure.lock_timed_out or (trip is not None and trip.waiting)
            retry = waited and attempt <= timeouts.retries
            error = failure.message if trip is None else str(trip)
            if waited:
                error += f" (attempt {attempt} of {timeouts.retries + 1})"
            if who is not None:
                _record_failure(connection, who, failure.step, failure.seconds, error)
            if trip is not None and not trip.waiting and failure.before is None:
                raise _over_budget(failure, trip) from None
            if not retry and failure.connection_lost:
                raise _connection_lost(failure, revision_elsewhere(connection.engine)) from None
            if not retry:
                left = _left_behind(connection, failure)
                raise _migration_failed(failure, error, attempt, left) from failure.error
            remaining = remaining[failure.done :]
            wait = min(timeouts.backoff_seconds * 2 ** (attempt - 1), 60.0)
            if say is not None:
                waited_ms = trip.budget_ms if trip else timeouts.lock_ms
                say(
                    f"  {failure.step.revision} waited {waited_ms} ms for a lock and gave "
                    f"up (attempt {attempt} of {timeouts.retries + 1}); retrying in {wait:g} s at "
                    "most, as soon as what held it is done"
                )
            blocking.wait_before_retry(connection, guard, wait)
            attempt += 1
        except BaseException as interrupt:  # Ctrl-C, SIGTERM
            # The caller records the step they stopped, and what an online step left.
            if (stopped := getattr(interrupt, "step_in_progress", None)) and who is not None:
                _record_interrupted(connection.engine, who, *stopped, interrupt)
            failure = getattr(interrupt, "step_failed", None)
            if not isinstance(failure, _StepFailed):
                raise
            left = _left_behind(connection, failure)
            if left is not None and (left.changes or left.committed):
                interrupt.left_behind = _what_stays(  # type: ignore[attr-defined]
                    failure.step, left
                )
            raise


@dataclass(frozen=True)
class _LeftBehind:
    changes: list[str]
    indexes: list[str]
    """New indexes among the changes, schema.name, to drop."""
    committed: list[str]
    """The statements that committed: what the autocommit_block() ran, and before it."""

    def __str__(self) -> str:
        parts = []
        if self.committed:
            parts.append(
                "the statements that committed: " + "; ".join(_short(s) for s in self.committed)
            )
        if self.changes:
            parts.append("in the schema: " + "; ".join(self.changes))
        return ", and ".join(parts) or "nothing in the schema"

    @property
    def fix(self) -> str:
        drops = " ".join(f"DROP INDEX CONCURRENTLY {name};" for name in self.indexes)
        rest = len(self.changes) > len(self.indexes) or any(
            not _INDEX_BUILD.match(statement) for statement in self.committed
        )
        if not drops:
            return "undo it by hand"
        return f"{drops} and undo the rest by hand" if rest else drops


_INDEX_BUILD = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\b", re.I)


def _short(statement: str) -> str:
    return statement if len(statement) <= 120 else statement[:119] + "…"


def _left_behind(connection: Connection, failure: _StepFailed) -> _LeftBehind | None:
    """What a failed online step committed before it failed; None if it is not online."""
    if failure.before is None:
        return None
    from db import catalog

    try:
        # Also after an interrupt, which leaves the connection invalidated: a rollback
        # lets it reconnect.
        connection.rollback()
        now = catalog.read(connection)
        connection.rollback()
    except Exception as exc:  # the connection itself may be what failed
        log.warning("could not read what %s left behind: %s", failure.step.revision, exc)
        return _LeftBehind(["(could not read the catalog to tell)"], [], failure.committed)
    return _LeftBehind(
        catalog.changes(failure.before, now),
        catalog.new_indexes(failure.before, now),
        failure.committed,
    )


def _what_stays(step: Step, left: _LeftBehind, then: str = "run again") -> str:
    """The hint after an online step stopped midway: what stays, and how to undo it."""
    return (
        f"{step.revision}'s autocommit_block() had already committed part of it, which "
        f"stays: {left}. Remove that ({left.fix}), then {then}"
    )


def _connection_lost(failure: _StepFailed, now_at: str | None) -> ConnectionFailed:
    step = failure.step
    if now_at is None:
        where = (
            "the server does not answer now, so where the database is is unknown: "
            "`invoke migrate.status` tells once it is back"
        )
    elif now_at == (step.to_revision or "base"):
        where = f"the step had committed: the database is at {now_at}"
    else:
        where = f"the server rolled the step back: the database is at {now_at}"
    online = (
        " Its autocommit_block() may have committed part of it: check the indexes it builds."
        if failure.before is not None
        else ""
    )
    return ConnectionFailed(
        f"the connection to the server failed during migration {step.revision} "
        f"({step.description}) going {step.direction}: {failure.message.rstrip('.')}.",
        "the server or the link failed, not the migration (a restart, a crash, "
        f"pg_terminate_backend, the network); {where}.{online} Check the server, then run "
        "the command again",
    )


def _over_budget(failure: _StepFailed, trip: blocking.Trip) -> UserError:
    step = failure.step
    return blocking.BudgetExceeded(
        f"migration {step.revision} ({step.description}) going {step.direction} was {trip}.",
        trip.hint(step.from_revision or "base"),
    )


def _migration_failed(
    failure: _StepFailed, error: str, attempts: int, left: _LeftBehind | None = None
) -> UserError:
    step = failure.step
    at = step.from_revision or "base"
    where = _where_it_failed(failure.error, step)
    committed = "; ".join(_short(s) for s in failure.committed)
    if isinstance(failure.error, TransactionEnded):
        return MigrationFailed(
            f"migration {step.revision} ({step.description}) failed going {step.direction}"
            f"{where}: {failure.error}.",
            "what it ran before ending its transaction stays committed"
            + (f" ({committed})" if committed else "")
            + f", the rest was rolled back, and the revision is still {at}. Undo the "
            "committed part by hand, then "
            "remove the COMMIT (statements that cannot run in a transaction go in "
            "op.get_context().autocommit_block()) and run again",
        )
    if isinstance(failure.error, LockLost):
        return LockLost(
            f"migration {step.revision} ({step.description}) stopped going {step.direction}: "
            f"{failure.error.message}",
            f"it was rolled back, so the database is at {at}. {failure.error.hint}",
        )
    if isinstance(failure.error, InvalidIndexes):
        names = ", ".join(failure.error.names)
        return MigrationFailed(
            f"migration {step.revision} ({step.description}) left INVALID index(es) "
            f"going {step.direction}: {names} (a CREATE INDEX CONCURRENTLY that failed, now "
            "or in an earlier run).",
            f"the database is at {at}. Drop them "
            + " ".join(f"(DROP INDEX CONCURRENTLY {n};)" for n in failure.error.names)
            + ", fix the cause (duplicates for a unique index, a timeout), and run again"
            + (f". The statements that committed also stay: {committed}" if committed else ""),
        )
    if left is not None:
        return MigrationFailed(
            f"migration {step.revision} ({step.description}) failed while going "
            f"{step.direction}{where}: {error}",
            f"the database is at {at}, but "
            + _what_stays(step, left, "fix the migration or the data it trips on, and run again"),
        )
    if failure.lock_timed_out:
        return MigrationFailed(
            f"migration {step.revision} ({step.description}) could not get its locks: "
            f"{attempts} attempt(s) each gave up after lock_timeout. {error}",
            f"the database is at {at}. Something holds a lock on the tables it changes "
            "(a long transaction?): find it in pg_stat_activity, or run again later",
        )
    hint = (
        f"its transaction was rolled back, so the database is at {at}. Fix the "
        "migration (or the data it trips on) and run the command again"
    )
    if getattr(failure.detail, "sqlstate", None) == "42501":
        hint = (
            f"its transaction was rolled back, so the database is at {at}. The role lacks a "
            "privilege the migration needs (migrations run as the owner of the application "
            "schemas): run it as that role, or ask the database's owner"
        )
    if isinstance(failure.detail, NotImplementedError):
        hint = (
            f"the database is at {at}. Write the migration's {step.direction}grade(); if it "
            'cannot be undone, declare irreversible = "why" at module level (its rollback is '
            "then refused instead of attempted)"
        )
    return MigrationFailed(
        f"migration {step.revision} ({step.description}) failed while going "
        f"{step.direction}{where}: {error}",
        hint,
    )


_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b\s*", re.I)
_VACUUM = re.compile(r"^\s*VACUUM\b", re.I)


def in_transaction_instead(statement: str) -> str:
    """A statement of an autocommit_block() as it runs inside a rehearsal's transaction:
    without CONCURRENTLY, which has the same effect on the catalog; VACUUM is skipped."""
    if _VACUUM.match(statement):
        return "SELECT 1"
    return _CONCURRENTLY.sub("", statement)


IN_AUTOCOMMIT_BLOCK = "worktracker_in_autocommit_block"
"""Set in `Connection.info` while a rehearsal runs an autocommit_block(): its statements
commit on their own in a real run (db/impact.py reports their locks per statement)."""


def _rehearsed_autocommit(connection: Connection) -> Callable[[], object]:
    """A stand-in for MigrationContext.autocommit_block() inside a rehearsal: no COMMIT
    (it would end the rehearsal's transaction), and statements that need autocommit
    rewritten to run inside the transaction."""

    def rewrite(conn, cursor, statement, parameters, context, executemany):
        return in_transaction_instead(statement), parameters

    @contextmanager
    def block() -> Iterator[None]:
        event.listen(connection, "before_cursor_execute", rewrite, retval=True)
        connection.info[IN_AUTOCOMMIT_BLOCK] = True
        try:
            yield
        finally:
            connection.info.pop(IN_AUTOCOMMIT_BLOCK, None)
            event.remove(connection, "before_cursor_execute", rewrite)

    return block


@dataclass
class Rehearsal:
    """What happened when a plan ran inside one transaction that was then rolled back."""

    steps: list[tuple[Step, float]]
    stopped_before: Step | None = None
    reason: str = ""
    error: BaseException | None = None


def rehearse(
    connection: Connection,
    plan: list[Step],
    timeouts: Timeouts | None = None,
    on_step: StepDone | None = None,
) -> Rehearsal:
    """Run `plan` inside the caller's open transaction, which the caller rolls back.

    An autocommit_block() (CREATE INDEX CONCURRENTLY and the like) runs inside the
    transaction too, without CONCURRENTLY: the same catalog effect, and nothing commits.
    A failing step stops the rehearsal; the steps before it are kept. `on_step` is
    called after each step that went through, inside the transaction.
    """
    if not connection.in_transaction():
        raise RuntimeError("rehearse() runs inside the caller's transaction; begin one first")
    values = {
        **(timeouts or settings.timeouts()).session_settings(),
        **settings.link().server_settings(),
    }
    if connection.dialect.server_version_info >= (14,):
        # As in real runs: a killed plan's backend rolls back within a second instead of
        # holding the rehearsal's locks until its statement ends.
        values["client_connection_check_interval"] = "1000"
    _set(connection, values, local=True)
    result = Rehearsal(steps=[])
    if not plan:
        return result

    def step_done(step: Step, seconds: float) -> None:
        result.steps.append((step, seconds))
        if on_step is not None:
            on_step(step, seconds)
        # A later failure rolls back to here, keeping the steps that went through.
        connection.execute(text("SAVEPOINT rehearsal_step"))

    try:
        connection.execute(text("SAVEPOINT rehearsal_step"))
        _run_once(
            connection,
            plan,
            step_done,
            None,
            rehearsal=True,
            autocommit_block=_rehearsed_autocommit(connection),
        )
    except _StepFailed as failure:
        connection.execute(text("ROLLBACK TO SAVEPOINT rehearsal_step"))
        result.stopped_before = failure.step
        result.error = failure.detail
        result.reason = (
            f"{failure.step.revision} failed{_where_it_failed(failure.error, failure.step)}: "
            f"{failure.message}"
        )
    return result


def _record_failure(
    connection: Connection, who: history.Who, step: Step, seconds: float, error: str
) -> None:
    """Write the failure row after the rollback; never hide the original error. When the
    step's own connection is what failed, on a new one, if the server still answers."""
    try:
        connection.rollback()  # also lets an invalidated connection reconnect
        with connection.begin():
            started_at = datetime.now(UTC) - timedelta(seconds=seconds)
            _record(connection, who, step, started_at, seconds, error)
    except Exception:
        _record_elsewhere(connection.engine, who, step, seconds, error)


_ELSEWHERE_SECONDS = 2.0
"""How long a run that already failed or was interrupted waits to write its history row on
a new connection: a server that does not answer by then is not worth waiting for."""


def _record_elsewhere(
    engine: Engine, who: history.Who, step: Step, seconds: float, error: str
) -> None:
    """The failure row on a new connection, given up after _ELSEWHERE_SECONDS: the step's
    own connection is dead, stuck, or in the middle of a statement."""

    def write() -> None:
        with engine.connect() as other, other.begin():
            # Bounded on the server too: the stopped step may still hold its locks.
            other.execute(text("SET LOCAL statement_timeout = '2s'"))
            started_at = datetime.now(UTC) - timedelta(seconds=seconds)
            _record(other, who, step, started_at, seconds, error)

    if (failed := _bounded(write)) is not None:
        log.warning("could not record how %s ended in the history: %s", step.revision, failed)


def _bounded(work: Callable[[], object]) -> str | None:
    """Try `work` again and again for up to _ELSEWHERE_SECONDS (a crashed server is back
    in a moment); None once it succeeded, else why not. In a daemon thread: a server that
    does not answer must not keep the run from ending."""
    outcome: list[str | None] = ["the server did not answer in time"]

    def attempts() -> None:
        deadline = time.monotonic() + _ELSEWHERE_SECONDS - 0.3
        while True:
            try:
                work()
                outcome[0] = None
                return
            except Exception as exc:
                outcome[0] = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
                if time.monotonic() > deadline:
                    return
                time.sleep(0.2)

    worker = threading.Thread(target=attempts, name="after-the-step", daemon=True)
    worker.start()
    worker.join(_ELSEWHERE_SECONDS)
    return outcome[0]


def _record_interrupted(
    engine: Engine, who: history.Who, step: Step, seconds: float, interrupt: BaseException
) -> None:
    """A row for the step an interrupt stopped (the server rolls it back): the history
    says the run was there, and how it ended."""
    how = interrupts.NAMES.get(interrupts.signal_of(interrupt), type(interrupt).__name__)
    _record_elsewhere(engine, who, step, seconds, f"interrupted by {how}; rolled back")


def revision_elsewhere(engine: Engine) -> str | None:
    """The revision read on a new connection (the run's own one may be dead); None when
    the server does not answer within _ELSEWHERE_SECONDS."""
    found: list[str] = []

    def read() -> None:
        with engine.connect() as other:
            found.append(current_revision(other) or "base")

    if (failed := _bounded(read)) is not None:
        log.info("could not read the revision after the step: %s", failed)
    return found[0] if found else None
