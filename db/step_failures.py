"""What a failed migration step is, and how to say it: the exceptions a step ends with,
what an online step left behind, and the message and hint for each way of failing."""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db import blocking
from db.errors import ConnectionFailed, LockLost, MigrationFailed, UserError
from db.planning import Step

if TYPE_CHECKING:
    from db import catalog

log = logging.getLogger(__name__)


class MigrationExited(Exception):
    """Migration code called sys.exit()."""


class TransactionEnded(Exception):
    """Migration code ended the step's transaction itself (COMMIT, ROLLBACK)."""

    def __init__(self, statement: str, then: BaseException | None = None) -> None:
        text = " ".join(statement.split())[:80]
        after = f"; then {type(then).__name__}: {then}" if then is not None else ""
        super().__init__(f"the migration ended its own transaction with {text!r}{after}")


class InvalidIndexes(Exception):
    """A step that ran an autocommit_block() left indexes INVALID."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"INVALID index(es) after the step: {', '.join(names)}")
        self.names = names


LOCK_NOT_AVAILABLE = "55P03"
"""SQLSTATE of a statement that gave up waiting for lock_timeout."""


class StepFailed(Exception):
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


def where_it_failed(error: BaseException, step: Step) -> str:
    """file:line of the innermost frame inside the migration file, if any."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(step.path)]
    return f" at {step.path.name}:{frames[-1].lineno}" if frames else ""


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


def left_behind(connection: Connection, failure: StepFailed) -> _LeftBehind | None:
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


def what_stays(step: Step, left: _LeftBehind, then: str = "run again") -> str:
    """The hint after an online step stopped midway: what stays, and how to undo it."""
    return (
        f"{step.revision}'s autocommit_block() had already committed part of it, which "
        f"stays: {left}. Remove that ({left.fix}), then {then}"
    )


def connection_lost(failure: StepFailed, now_at: str | None) -> ConnectionFailed:
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


def over_budget(failure: StepFailed, trip: blocking.Trip) -> UserError:
    step = failure.step
    return blocking.BudgetExceeded(
        f"migration {step.revision} ({step.description}) going {step.direction} was {trip}.",
        trip.hint(step.from_revision or "base"),
    )


def migration_failed(
    failure: StepFailed,
    error: str,
    attempts: int,
    left: _LeftBehind | None = None,
    waited: bool = False,
) -> UserError:
    """`waited`: the last attempt gave up waiting for a lock, on lock_timeout or cut by
    the blocking budget (db/blocking.py), whichever came first."""
    step = failure.step
    at = step.from_revision or "base"
    where = where_it_failed(failure.error, step)
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
            + what_stays(step, left, "fix the migration or the data it trips on, and run again"),
        )
    if failure.lock_timed_out or waited:
        return MigrationFailed(
            f"migration {step.revision} ({step.description}) could not get its locks: "
            f"{attempts} attempt(s) each gave up after lock_timeout or the blocking budget. "
            f"{error}",
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
