"""What each statement of a rehearsed migration does to a live application: the locks it
took, how long they stay held, whether it rewrote or scanned a table, the rows it
touched, and which of the application's statements each lock would block.

Measured, not guessed: while `preview.rehearse_and_roll_back` runs the plan, a hook on
the rehearsal's connection reads, after each statement, `pg_locks` for its own backend
(the locks held so far; those new since the previous statement are this statement's) and
the transaction's per-table counters (`pg_stat_get_xact_*`) and file nodes from `pg_class`.
Those reads go through the DBAPI cursor (no SQLAlchemy events, so no recursion) and
touch only catalogs and statistics, never a user table, so they add no lock of their
own to what is reported.

A lock is held until its transaction ends. A migration runs in its own transaction, so
each lock is held from the statement that took it to the migration's commit: in the
rehearsal, to the end of the step. A statement of an `autocommit_block()` commits on its
own: its locks last as long as the statement. The rehearsal runs those inside its
transaction without CONCURRENTLY; for them the lock PostgreSQL documents for the
CONCURRENTLY form is reported (measured mode in the note).

Limits, said in the output: the rehearsal is one transaction, so a lock that an earlier
migration of the same plan already holds does not show again under a later one; and
while a statement waits for its lock (up to lock_timeout), the statements it would block
queue behind it too. Likewise a lock the rehearsal held before the plan started is no
statement's: the catalog read before it takes ACCESS SHARE on the tables views read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from sqlalchemy import event
from sqlalchemy.engine import Connection

from db import blocking, planning, rehearsal, settings
from db.lock_modes import BLOCKING, MODES, SHOWN, blocked_by

_CONCURRENT_MODE = (
    (re.compile(r"^\s*REFRESH\s+MATERIALIZED\s+VIEW\s+CONCURRENTLY\b", re.I), "ExclusiveLock"),
    (re.compile(r"\bCONCURRENTLY\b", re.I), "ShareUpdateExclusiveLock"),
)
"""The lock the CONCURRENTLY forms take (CREATE/DROP INDEX, REINDEX, DETACH PARTITION:
SHARE UPDATE EXCLUSIVE; REFRESH MATERIALIZED VIEW: EXCLUSIVE), where the rehearsal,
running them without CONCURRENTLY inside its transaction, measures a stronger one."""


def concurrent_mode(statement: str) -> str | None:
    for pattern, mode in _CONCURRENT_MODE:
        if pattern.search(statement):
            return mode
    return None


@dataclass
class Lock:
    relation: str
    """schema.name of what is locked (a table, view, or index)."""
    table: str
    """The table whose statements it affects: the relation itself, or an index's table."""
    mode: str
    held_seconds: float
    until: str
    """"commit" (held to the end of its migration's transaction) or "statement"."""
    blocks: list[str]
    measured_mode: str = ""
    """For a CONCURRENTLY statement: the mode the rehearsal measured without it."""
    over_budget: bool = False
    """It blocks the application's statements for longer than the blocking budget:
    `migrate.up` would cancel the step (db/blocking.py)."""

    @property
    def shown_mode(self) -> str:
        return SHOWN[self.mode]


@dataclass
class Statement:
    sql: str
    seconds: float
    autocommit: bool
    locks: list[Lock] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    """Rows read by sequential scans, per table (a validation, an index build, a backfill)."""
    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    row_locks: dict[str, int] = field(default_factory=dict)
    """Rows updated or deleted per table: an application UPDATE or DELETE of one of them
    waits for the row lock until the migration commits."""
    under: dict[str, str] = field(default_factory=dict)
    """Tables it scanned, rewrote or changed without a new lock: the strongest lock an
    earlier statement of the plan already holds on each (it works under that one)."""

    @property
    def effects(self) -> list[str]:
        found = []
        for table in sorted(set(self.rewritten) | set(self.scanned)):
            rows = self.scanned.get(table)
            counted = f", {rows} rows read" if rows is not None else ""
            verb = "rewritten" if table in self.rewritten else "scanned"
            found.append(f"{table} {verb}{counted}")
        for verb, counts in (
            ("inserted", self.inserted),
            ("updated", self.updated),
            ("deleted", self.deleted),
        ):
            found += [f"{n} rows {verb} in {table}" for table, n in sorted(counts.items())]
        return found

    def as_dict(self) -> dict:
        document = asdict(self)
        for lock in document["locks"]:
            lock["mode"] = SHOWN[lock["mode"]]
            lock["measured_mode"] = SHOWN.get(lock["measured_mode"], "")
            lock["held_seconds"] = round(lock["held_seconds"], 4)
        document["seconds"] = round(self.seconds, 4)
        return document


@dataclass
class StepImpact:
    revision: str
    description: str
    seconds: float
    statements: list[Statement] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "revision": self.revision,
            "description": self.description,
            "seconds": round(self.seconds, 4),
            "statements": [s.as_dict() for s in self.statements],
        }

    def strongest(self) -> dict[str, str]:
        """The strongest mode taken on each table (through its indexes too)."""
        found: dict[str, str] = {}
        for statement in self.statements:
            for lock in statement.locks:
                now = found.get(lock.table)
                if now is None or MODES.index(lock.mode) > MODES.index(now):
                    found[lock.table] = lock.mode
        return found


# Relations that exist when the rehearsal starts, outside PostgreSQL's and the tool's own
# schemas: what the application can see, so what its statements can wait on.
_RELATIONS = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text, c.relfilenode::bigint,
       coalesce(i.indrelid, c.oid)::bigint,
       pg_stat_get_xact_numscans(c.oid), pg_stat_get_xact_tuples_returned(c.oid),
       pg_stat_get_xact_tuples_inserted(c.oid), pg_stat_get_xact_tuples_updated(c.oid),
       pg_stat_get_xact_tuples_deleted(c.oid)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_index i ON i.indexrelid = c.oid
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'i', 'I')
   AND n.nspname <> ALL(%s) AND n.nspname !~ '^pg_'
"""
_HELD = """
SELECT l.relation::bigint, l.mode, c.relfilenode::bigint,
       pg_stat_get_xact_numscans(l.relation), pg_stat_get_xact_tuples_returned(l.relation),
       pg_stat_get_xact_tuples_inserted(l.relation), pg_stat_get_xact_tuples_updated(l.relation),
       pg_stat_get_xact_tuples_deleted(l.relation)
  FROM pg_locks l
  LEFT JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND l.relation >= 16384
"""
"""16384 is FirstNormalObjectId: below it, PostgreSQL's own catalogs."""


@dataclass
class _Relation:
    shown: str
    kind: str
    table: int
    filenode: int
    counters: tuple[int, ...]
    """numscans, tuples returned, inserted, updated, deleted: at the last look. They
    change only under a lock, so every change is seen by the statement that made it."""


class Measurer:
    """Listens on the rehearsal's connection; `step_done` closes each migration."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.budget = blocking.budget()
        self.steps: list[StepImpact] = []
        self._pending: list[tuple[Statement, float]] = []
        self._held: set[tuple[int, str]] = set()
        self._original = ""
        self._started = 0.0
        excluded = ["information_schema", settings.BOOKKEEPING_SCHEMA]
        self.relations: dict[int, _Relation] = {}
        for oid, schema, name, kind, filenode, table, *counters in self._query(
            _RELATIONS, (excluded,)
        ):
            self.relations[oid] = _Relation(
                f"{schema}.{name}", kind, table, filenode, tuple(counters)
            )
        self._look()  # what the caller's transaction already holds is no statement's

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        # The DBAPI cursor: SQLAlchemy's events do not see it, so this hook never
        # measures itself.
        dbapi = self.connection.connection.dbapi_connection
        assert dbapi is not None, "the rehearsal's connection is open"
        cursor = dbapi.cursor()
        try:
            cursor.execute(sql, parameters)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def _look(self) -> tuple[set[tuple[int, str]], dict[int, tuple]]:
        """Locks held now on relations that existed at the start, and their counters."""
        held, state = set(), {}
        for oid, mode, filenode, *counters in self._query(_HELD):
            if oid in self.relations:
                held.add((oid, mode))
                state[oid] = (filenode, tuple(counters))
        new = held - self._held
        self._held |= held
        return new, state

    def before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self._original, self._started = statement, time.perf_counter()

    def after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        seconds = time.perf_counter() - self._started
        autocommit = bool(conn.info.get(rehearsal.IN_AUTOCOMMIT_BLOCK))
        new, state = self._look()
        found = Statement(" ".join(self._original.split()), seconds, autocommit)
        concurrent = (
            concurrent_mode(self._original) if autocommit and self._original != statement else None
        )
        for oid, mode in sorted(new, key=lambda held: (self.relations[held[0]].shown, held[1])):
            relation = self.relations[oid]
            measured = ""
            if concurrent is not None and MODES.index(mode) > MODES.index(concurrent):
                measured, mode = mode, concurrent
            found.locks.append(
                Lock(
                    relation.shown,
                    self.relations[relation.table].shown
                    if relation.table in self.relations
                    else relation.shown,
                    mode,
                    seconds,
                    "statement" if autocommit else "commit",
                    blocked_by(mode),
                    measured,
                )
            )
        for oid, (filenode, counters) in state.items():
            relation = self.relations[oid]
            if relation.kind not in ("r", "p", "m"):
                continue
            previous, relation.counters = relation.counters, counters
            if filenode is not None and filenode != relation.filenode:
                found.rewritten.append(relation.shown)
                relation.filenode = filenode
            scans, read, inserted, updated, deleted = (
                now - then for now, then in zip(counters, previous, strict=True)
            )
            if scans:
                found.scanned[relation.shown] = read
            for counts, n in (
                (found.inserted, inserted),
                (found.updated, updated),
                (found.deleted, deleted),
            ):
                if n:
                    counts[relation.shown] = n
            if updated + deleted:
                found.row_locks[relation.shown] = updated + deleted
        touched = {*found.rewritten, *found.scanned, *found.inserted, *found.row_locks}
        locked = {lock.table for lock in found.locks}
        for table in touched - locked:
            modes = [
                mode
                for oid, mode in self._held
                if self.relations[oid].shown == table and self.relations[oid].table == oid
            ]
            if modes:
                found.under[table] = max(modes, key=MODES.index)
        if found.locks or touched:
            self._pending.append((found, self._started))

    def step_done(self, step: planning.Step, seconds: float) -> None:
        """Close a migration: each of its locks that lasts to commit is held from its
        statement's start to now (the end of the migration's transaction)."""
        now = time.perf_counter()
        done = StepImpact(step.revision, step.description, seconds)
        for statement, started in self._pending:
            for lock in statement.locks:
                if lock.until == "commit":
                    lock.held_seconds = now - started
                lock.over_budget = (
                    not self.budget.off
                    and lock.mode in BLOCKING
                    and lock.held_seconds * 1000 > self.budget.ms
                )
            done.statements.append(statement)
        self._pending = []
        self.steps.append(done)


class _Off:
    """What `measuring` yields when it is off: no hook, nothing measured."""

    def __init__(self) -> None:
        self.steps: list[StepImpact] = []

    def step_done(self, step: planning.Step, seconds: float) -> None:
        pass


@contextmanager
def measuring(connection: Connection, enabled: bool = True) -> Iterator[Measurer | _Off]:
    """Measure every statement run on `connection` (inside its open transaction) until
    the block ends; statements of a migration that did not finish are dropped."""
    if not enabled:
        yield _Off()
        return
    measurer = Measurer(connection)
    event.listen(connection, "before_cursor_execute", measurer.before)
    event.listen(connection, "after_cursor_execute", measurer.after)
    try:
        yield measurer
    finally:
        event.remove(connection, "before_cursor_execute", measurer.before)
        event.remove(connection, "after_cursor_execute", measurer.after)


def _short(sql: str, limit: int = 60) -> str:
    return sql if len(sql) <= limit else sql[: limit - 1] + "…"


def _held(lock: Lock) -> str:
    held = f"{lock.held_seconds:.3f} s to " + ("commit" if lock.until == "commit" else "its end")
    return f"{held}, over budget" if lock.over_budget else held


def _blocks(statement: Statement, locks: list[Lock]) -> str:
    blocks = ", ".join(locks[0].blocks)
    rows = statement.row_locks.get(locks[0].table)
    if rows and locks[0].mode == "RowExclusiveLock":
        changed = f"UPDATE, DELETE of the {rows} rows it changed"
        blocks = f"{blocks}; {changed}" if blocks else changed
    return blocks or "none"


def rows(step: StepImpact) -> list[list[str]]:
    """One row per statement and locked table (its indexes folded in): statement, lock,
    table, held, blocks, effect."""
    found = []
    for statement in step.statements:
        sql = _short(statement.sql)
        effects = "; ".join(statement.effects)
        grouped: dict[tuple[str, str], list[Lock]] = {}
        for lock in statement.locks:
            grouped.setdefault((lock.table, lock.mode), []).append(lock)
        for table, mode in sorted(statement.under.items()):
            found.append([sql, f"{SHOWN[mode]} (held)", table, "-", "-", effects])
            sql, effects = "", ""
        if not grouped and sql:
            found.append([sql, "-", "-", "-", "-", effects])
        for (table, _mode), locks in sorted(
            grouped.items(), key=lambda kv: (kv[0][0], -MODES.index(kv[0][1]))
        ):
            indexes = sum(lock.relation != table for lock in locks)
            on = table + (f" (+{indexes} index{'es' if indexes > 1 else ''})" if indexes else "")
            mode = locks[0].shown_mode
            if locks[0].measured_mode:
                mode += " (CONCURRENTLY)"
            found.append([sql, mode, on, _held(locks[0]), _blocks(statement, locks), effects])
            sql, effects = "", ""
    return found


COLUMNS = ["statement", "lock", "on", "held", "blocks", "effect"]


def over_budget(steps: list[StepImpact]) -> list[str]:
    """One line per statement whose blocking lock outlasts the blocking budget."""
    found = []
    for step in steps:
        for statement in step.statements:
            locks = [lock for lock in statement.locks if lock.over_budget]
            if not locks:
                continue
            lock = max(locks, key=lambda held: MODES.index(held.mode))
            found.append(
                f"{step.revision}: {_short(statement.sql, 100)} holds {lock.shown_mode} on "
                f"{lock.table} for {lock.held_seconds:.2f} s, blocking "
                f"{', '.join(lock.blocks)}; write it online: "
                f"{blocking.online_way(statement.sql)}"
            )
    return found


def notes(lock_ms: int, steps: list[StepImpact] | None = None) -> list[str]:
    """What the lock table means; with `steps`, which statements are over the budget."""
    found = []
    budget = blocking.budget()
    if steps and (lines := over_budget(steps)):
        found.append(
            f"Over the blocking budget ({budget.ms} ms, {budget.source}): migrate.up would "
            "cancel and roll back these, exit 10. " + " ".join(lines)
        )
    waits = f"up to lock_timeout, {lock_ms} ms" if lock_ms else "lock_timeout is off: no limit"
    return [
        *found,
        "A lock is held until its migration commits (a statement of an autocommit_block(): "
        "until the statement ends), so it blocks what it blocks for that long; times are "
        "the rehearsal's, on this database's rows.",
        f"While a statement waits for its lock ({waits}), the statements it would block "
        "queue behind it too. The rehearsal is one transaction: a lock an earlier migration "
        "of this plan took shows under that one only.",
    ]
