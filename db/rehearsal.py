"""Rehearsal: a plan run inside the caller's transaction, which the caller rolls back.
What `migrate.plan` and the destructive-rollback guard (db/preview.py) build on."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from db import connect, runner, settings
from db.planning import Step, StepDone
from db.settings import Timeouts
from db.step_failures import StepFailed, where_it_failed

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


def run_in_transaction(
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
        raise RuntimeError(
            "run_in_transaction() runs inside the caller's transaction; begin one first"
        )
    values = {
        **(timeouts or settings.timeouts()).session_settings(),
        **settings.link().server_settings(),
    }
    if connect.server_major(connection) >= 14:
        # As in real runs: a killed plan's backend rolls back within a second instead of
        # holding the rehearsal's locks until its statement ends.
        values["client_connection_check_interval"] = "1000"
    runner.set_config(connection, values, local=True)
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
        runner.run_once(
            connection,
            plan,
            step_done,
            None,
            rehearsal=True,
            autocommit_block=_rehearsed_autocommit(connection),
        )
    except StepFailed as failure:
        connection.execute(text("ROLLBACK TO SAVEPOINT rehearsal_step"))
        result.stopped_before = failure.step
        result.error = failure.detail
        result.reason = (
            f"{failure.step.revision} failed{where_it_failed(failure.error, failure.step)}: "
            f"{failure.message}"
        )
    return result
