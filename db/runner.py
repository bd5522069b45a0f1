"""Running a plan: upgrade and downgrade on one connection, one transaction per step,
with its history row inside it, a step that waited too long for its locks retried, and
the failure told (db/step_failures.py) after its rollback."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationStep
from alembic.script import ScriptDirectory
from alembic.util import CommandError, to_tuple
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from db import blocking, connect, history, interrupts, revisions, settings
from db.errors import RevisionError
from db.planning import Step, StepDone, current_revision
from db.settings import Timeouts
from db.step_failures import (
    InvalidIndexes,
    MigrationExited,
    StepFailed,
    TransactionEnded,
    connection_lost,
    left_behind,
    migration_failed,
    over_budget,
    what_stays,
)

if TYPE_CHECKING:
    from db import catalog
    from db.lock import Held

log = logging.getLogger(__name__)


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


def set_config(connection: Connection, values: dict[str, str], *, local: bool) -> None:
    """SET each of `values` (SET LOCAL with `local`), in one round trip."""
    scope = "true" if local else "false"
    calls = ", ".join(f"set_config(:name{i}, :value{i}, {scope})" for i in range(len(values)))
    parameters = {}
    for i, (name, value) in enumerate(values.items()):
        parameters[f"name{i}"], parameters[f"value{i}"] = name, value
    connection.execute(text(f"SELECT {calls}"), parameters)


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


def run_once(
    connection: Connection,
    plan: list[Step],
    on_step: StepDone | None,
    who: history.Who | None,
    lock: Held | None = None,
    scripts: ScriptDirectory | None = None,
    note: str | None = None,
    **attributes,
) -> None:
    """One attempt at `plan`, without retries: StepFailed names the step that failed and
    how many went through. `attributes` go to env.py (a rehearsal's stand-in for
    autocommit_block(), db/rehearsal.py)."""
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
            interrupt.step_failed = StepFailed(  # type: ignore[attr-defined]
                failed, interrupt, len(done), seconds, before, committed
            )
            raise interrupt from None
        if isinstance(exc, SystemExit):  # sys.exit() in a migration is not a success
            exc = MigrationExited(f"the migration called sys.exit({exc.code!r})")
        if watch.ended_by is not None and not isinstance(exc, TransactionEnded):
            exc = TransactionEnded(watch.ended_by, exc)
        raise StepFailed(failed, exc, len(done), seconds, before, committed) from exc


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
    if connect.server_major(connection) >= 14:
        # A backend notices within a second that its client died (kill -9, lost network)
        # and rolls back, instead of holding its locks until its statement ends.
        values["client_connection_check_interval"] = "1000"
        # A hardened role's idle timeout must not end the run between two steps.
        values["idle_session_timeout"] = "0"
    set_config(connection, values, local=False)
    connection.commit()

    remaining, attempt = plan, 1
    guard: blocking.Guard | None = None
    note = budget.note() if budget is not None else None
    while True:
        try:
            with blocking.guarding(connection, budget, lock.session if lock else None) as guard:
                run_once(connection, remaining, on_step, who, lock, scripts, note)
            return
        except StepFailed as failure:
            trip = guard.cancelled(failure.error) if guard is not None else None
            waited = failure.lock_timed_out or (trip is not None and trip.waiting)
            retry = waited and attempt <= timeouts.retries
            error = failure.message if trip is None else str(trip)
            if waited:
                error += f" (attempt {attempt} of {timeouts.retries + 1})"
            if who is not None:
                _record_failure(connection, who, failure.step, failure.seconds, error)
            if trip is not None and not trip.waiting and failure.before is None:
                raise over_budget(failure, trip) from None
            if not retry and failure.connection_lost:
                raise connection_lost(failure, revision_elsewhere(connection.engine)) from None
            if not retry:
                left = left_behind(connection, failure)
                raise migration_failed(failure, error, attempt, left, waited) from failure.error
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
            stopped = getattr(interrupt, "step_failed", None)
            if not isinstance(stopped, StepFailed):
                raise
            # The step it stopped gets its history row; the caller says what an online
            # step left.
            if who is not None:
                _record_interrupted(
                    connection.engine, who, stopped.step, stopped.seconds, interrupt
                )
            left = left_behind(connection, stopped)
            if left is not None and (left.changes or left.committed):
                interrupt.left_behind = what_stays(  # type: ignore[attr-defined]
                    stopped.step, left
                )
            raise


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
    signum = interrupts.signal_of(interrupt)
    how = type(interrupt).__name__
    if signum is not None:
        how = interrupts.NAMES.get(signum, how)
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
