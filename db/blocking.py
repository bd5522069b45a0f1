"""The blocking budget: how long one attempt of a migration step may block the application.

`lock_timeout` bounds only a statement's wait in the lock queue. Once a step holds a lock
that blocks the application's SELECT, INSERT, UPDATE or DELETE on an existing table (an
ALTER TABLE's ACCESS EXCLUSIVE, a plain CREATE INDEX's SHARE), every application
statement on that table waits until the step commits: a rewrite, a validating scan or a
backfill in that transaction stalls the application for its whole length.

A `Guard` watches the step's backend from a session of its own, every POLL_SECONDS: from
the moment the step waits for or holds such a lock (on a table other sessions can see,
so one it created itself does not count), the clock runs; at the budget, it cancels the
statement in flight (pg_cancel_backend), and the server rolls the step back. A
statement_timeout set before each statement cannot do this: the statement that takes
the lock is the one that rewrites or scans, and which statement takes which lock is only
known once it has. A cancel while the step was still waiting is a long lock wait, retried
like a `lock_timeout`; a cancel while it held the lock fails the run (BudgetExceeded).

A retry waits for the sessions that blocked it to end their transactions (a long
reader), then a jittered moment, at most the backoff: the next attempt lands when the
lock is free instead of queueing the application behind the same reader again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db import settings
from db.errors import ConnectionFailed, MigrationFailed
from db.lock_modes import BLOCKING, SHOWN, blocked_by

log = logging.getLogger(__name__)

"""The table lock modes that conflict with ROW EXCLUSIVE (the application's INSERT,
UPDATE, DELETE; ACCESS EXCLUSIVE also with SELECT's ACCESS SHARE): PostgreSQL's conflict
table. SHARE UPDATE EXCLUSIVE (VALIDATE, CONCURRENTLY) blocks none of them."""

POLL_SECONDS = 0.02
"""How often the guard looks: the most a cancel comes late, with the cancel's own trip."""

QUERY_CANCELED = "57014"


class BudgetExceeded(MigrationFailed):
    """A step blocked the application past the blocking budget and was rolled back."""

    exit_code = 10


@dataclass(frozen=True)
class Budget:
    ms: int
    """0: off (a maintenance window: the application may wait as long as the step takes)."""
    source: str = "WORKTRACKER_BLOCKING_BUDGET"

    @property
    def off(self) -> bool:
        return self.ms == 0

    def note(self) -> str | None:
        """What the history rows of a run without a budget say."""
        if not self.off:
            return None
        return f"blocking budget off ({self.source}=0): applied as in a maintenance window"


def budget(environ: Mapping[str, str] | None = None) -> Budget:
    """`blocking_budget` ([tool.worktracker] or WORKTRACKER_BLOCKING_BUDGET); unset, the
    step's lock wait (`ddl_lock_timeout`): the application then never waits on a step
    longer than it may wait in the lock queue, whatever the step does once it has its
    lock. `0` turns it off."""
    pick = settings._picker(environ)
    name, raw = pick("blocking_budget", None)
    if raw is None:
        lock_ms = settings.timeouts(environ).lock_ms
        return Budget(lock_ms, "WORKTRACKER_DDL_LOCK_TIMEOUT")
    return Budget(settings._milliseconds(name, raw), name)


@dataclass
class Trip:
    """What the guard cancelled."""

    statement: str
    mode: str
    table: str
    rows: int
    waiting: bool
    """The step was still waiting for the lock: a lock wait, not a long hold."""
    elapsed_ms: float
    budget_ms: int

    def __str__(self) -> str:
        statement = " ".join(self.statement.split())
        statement = statement if len(statement) <= 120 else statement[:119] + "…"
        rows = f"about {self.rows} rows" if self.rows >= 0 else "rows not counted yet"
        verb = "waited for" if self.waiting else "held"
        mode, blocked = SHOWN.get(self.mode, self.mode), ", ".join(blocked_by(self.mode))
        return (
            f"cancelled at the blocking budget ({self.budget_ms} ms): the step {verb} "
            f"{mode} on {self.table} ({rows}) for {self.elapsed_ms:.0f} ms, "
            f"blocking the application's {blocked}, in {statement!r}"
        )

    def hint(self, at: str) -> str:
        return (
            f"the step was rolled back, so the database is at {at} and {self.table} is "
            f"unchanged. Write it online: {online_way(self.statement)}. `invoke "
            "migrate.plan` names such statements beforehand. In a maintenance window, "
            "WORKTRACKER_BLOCKING_BUDGET=0 applies it as it is (the history records it)"
        )


def online_way(statement: str) -> str:
    """The online form of what a statement does, from its text."""
    sql = " ".join(statement.upper().split())
    if "CREATE" in sql and "INDEX" in sql:
        return (
            "CREATE INDEX CONCURRENTLY, in op.get_context().autocommit_block(), in a "
            "migration of its own"
        )
    if " TYPE " in sql:
        return (
            "expand, backfill in batches, contract: add a new column, keep it in step with a "
            "trigger, fill it in batches that each commit (autocommit_block()), then swap the "
            "columns in a short step"
        )
    if "FOREIGN KEY" in sql or "CHECK" in sql or "ADD CONSTRAINT" in sql:
        return (
            "ADD CONSTRAINT … NOT VALID in one migration, then VALIDATE CONSTRAINT in the "
            "next (it holds only SHARE UPDATE EXCLUSIVE)"
        )
    if "NOT NULL" in sql:
        return (
            "ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then "
            "SET NOT NULL (no scan once the check is valid) and drop the check"
        )
    if sql.startswith(("UPDATE", "DELETE", "INSERT")):
        return (
            "expand, backfill in batches, contract: the schema change in a step of its own "
            "(ADD COLUMN without a volatile default is instant), then the backfill in "
            "batches that each commit (autocommit_block()), then the constraint "
            "(CHECK … NOT VALID, VALIDATE, SET NOT NULL)"
        )
    return (
        "expand, backfill in batches, contract; NOT VALID + VALIDATE for constraints; "
        "CONCURRENTLY for indexes"
    )


# One round trip: the watched backend's transaction, its statement, and the blocking
# locks it holds or waits for on relations this session can see (committed ones: a
# table the step created is nobody else's yet), an index's counted as its table's.
_LOOK = """
SELECT clock_timestamp(), a.xact_start, a.query, l.mode, l.granted,
       n.nspname || '.' || t.relname, t.reltuples::bigint,
       CASE WHEN l.granted THEN NULL ELSE pg_blocking_pids(a.pid) END
  FROM pg_stat_activity a
  LEFT JOIN pg_locks l
    ON l.pid = a.pid AND l.locktype = 'relation' AND l.mode = ANY(:modes)
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  LEFT JOIN pg_index i ON i.indexrelid = l.relation
  LEFT JOIN pg_class t ON t.oid = coalesce(i.indrelid, l.relation) AND t.relkind IN ('r', 'p', 'm')
  LEFT JOIN pg_namespace n
    ON n.oid = t.relnamespace AND n.nspname <> ALL(:excluded) AND n.nspname !~ '^pg_'
 WHERE a.pid = :pid
"""
_CANCEL = """
SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = :pid AND xact_start = :xact
"""
_TRANSACTIONS = "SELECT pid, xact_start FROM pg_stat_activity WHERE pid = ANY(:pids)"


@dataclass
class Guard:
    """Watches one migration connection's backend while a step attempt runs."""

    budget: Budget
    pid: int = 0
    tripped: Trip | None = None
    blockers: dict[int, datetime | None] = field(default_factory=dict)
    """Sessions the step waited behind (pid → their transaction's start)."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, connection: Connection) -> None:
        excluded = ["information_schema", settings.BOOKKEEPING_SCHEMA]
        parameters = {"modes": list(BLOCKING), "excluded": excluded, "pid": self.pid}
        xact: datetime | None = None
        clean_at: datetime | None = None
        since: datetime | None = None
        while not self._stop.wait(POLL_SECONDS):
            found = connection.execute(text(_LOOK), parameters).all()
            # Never idle in a transaction between looks: the lock's session, which this
            # may be, must hold no snapshot (it would hold back vacuum for the whole run).
            connection.commit()
            if not found:
                return  # the backend is gone
            now, xact_start = found[0][0], found[0][1]
            if xact_start != xact:
                xact, clean_at, since = xact_start, xact_start, None
            locks = [row for row in found if row[5] is not None]
            if xact_start is None or not locks:
                clean_at = now
                continue
            for row in locks:
                for pid in row[7] or ():
                    self.blockers.setdefault(pid, None)
            if since is None:
                # Taken since the last look that saw none: counted from that look.
                since = max(clean_at or xact_start, xact_start)
            elapsed = (now - since).total_seconds() * 1000
            if elapsed < self.budget.ms:
                continue
            # Only while the same transaction runs: never a later step's statement.
            connection.execute(text(_CANCEL), {"pid": self.pid, "xact": xact_start})
            connection.commit()
            if self.tripped is None:
                held = [row for row in locks if row[4]]
                worst = max(held or locks, key=lambda row: BLOCKING.index(row[3]))
                self.tripped = Trip(
                    statement=found[0][2] or "",
                    mode=worst[3],
                    table=worst[5],
                    rows=int(worst[6]) if worst[6] is not None else -1,
                    waiting=not held,
                    elapsed_ms=elapsed,
                    budget_ms=self.budget.ms,
                )

    def cancelled(self, error: BaseException | None) -> Trip | None:
        """The trip behind a step's failure, when the guard's cancel is what failed it."""
        detail = getattr(error, "orig", None) or error
        if self.tripped is not None and getattr(detail, "sqlstate", None) == QUERY_CANCELED:
            return self.tripped
        return None


@contextmanager
def guarding(
    connection: Connection, budget: Budget | None, watcher: Connection | None = None
) -> Iterator[Guard | None]:
    """A Guard on `connection`'s backend while the block runs (None when off).

    `watcher`: an idle connection of this run to watch from (the migration lock's
    session); without one, the guard opens its own. A pool sized for the run's two
    sessions (PgBouncer's default_pool_size) would queue a third for ever."""
    if budget is None or budget.off:
        yield None
        return
    pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    connection.rollback()  # the runner starts each attempt without a transaction
    guard = Guard(budget, pid)
    own = watcher is None
    if watcher is None:
        try:
            watcher = connection.engine.connect()
        except Exception as exc:
            raise ConnectionFailed(
                f"could not open the session that enforces the blocking budget: {exc}".strip(),
                "the budget needs one more connection; or turn it off for this run with "
                "WORKTRACKER_BLOCKING_BUDGET=0",
            ) from None
    watching = watcher

    def run() -> None:
        try:
            guard.watch(watching)
        except Exception as exc:  # never hide the run's own outcome behind the guard's
            log.warning("the blocking budget's guard stopped: %s", exc)

    thread = threading.Thread(target=run, name="blocking-budget", daemon=True)
    thread.start()
    try:
        yield guard
    finally:
        guard._stop.set()
        thread.join(5)
        if own:
            watching.close()


def wait_before_retry(
    connection: Connection, guard: Guard | None, longest: float, chance: random.Random | None = None
) -> float:
    """Sleep until the sessions the attempt waited behind have ended their transactions
    (or `longest` seconds), then a jittered moment; returns the seconds slept."""
    chance = chance or random.Random()
    started = time.monotonic()
    deadline = started + longest
    blockers = dict(guard.blockers) if guard is not None else {}
    if blockers:
        rows = connection.execute(text(_TRANSACTIONS), {"pids": list(blockers)}).all()
        now_at: dict[int, datetime | None] = {pid: xact for pid, xact in rows}
        connection.rollback()
        # Their transactions as they were when the attempt gave up.
        blockers = {pid: xact for pid, xact in now_at.items() if xact is not None}
    while blockers and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = connection.execute(text(_TRANSACTIONS), {"pids": list(blockers)}).all()
        connection.rollback()
        still = {pid: xact for pid, xact in rows if xact is not None and xact == blockers.get(pid)}
        blockers = still
    if not blockers and guard is not None and guard.blockers:
        # Free now: go soon, but not in step with another run that waited behind it too.
        time.sleep(min(chance.uniform(0.0, 0.1), max(0.0, deadline - time.monotonic())))
    else:
        time.sleep(max(0.0, deadline - time.monotonic()) * chance.uniform(0.5, 1.0))
    return time.monotonic() - started
