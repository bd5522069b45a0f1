"""One migration run at a time: a session-level PostgreSQL advisory lock.

The lock lives on a connection of its own, opened for it and held for the whole run.
It must not be the connection the migrations run on: their COMMITs and ROLLBACKs
(and Alembic's autocommit_block()) must not be able to release it. A run that dies
loses its session, and the server releases the lock with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from db import connect, settings
from db.errors import LockLost, LockTimeout
from db.output import waiting
from db.settings import APPLICATION_NAME

log = logging.getLogger(__name__)

LOCK_NAME = "worktracker-schema/migrations"
# Every copy of the tool derives the same 64-bit key from the same name.
LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
POLL_SECONDS = 0.2
LOCK_SESSION_NAME = f"{APPLICATION_NAME} (lock)"


@dataclass(frozen=True)
class Holder:
    pid: int
    application_name: str | None
    client: str | None
    user: str
    since: datetime | None
    """None when pg_stat_activity hides another role's session from us."""

    def describe(self, now: datetime | None = None) -> str:
        if self.since is None:
            # Without pg_read_all_stats, other roles' sessions show little but pid and user.
            return (
                f"pid {self.pid} (user {self.user}; its other details are hidden from this "
                "role, which lacks pg_read_all_stats)"
            )
        now = now or datetime.now(UTC)
        held = (now - self.since).total_seconds()
        return (
            f"pid {self.pid} ({self.application_name or 'no application_name'}, "
            f"user {self.user}, from {self.client or 'an unknown client'}), connected since "
            f"{self.since:%Y-%m-%d %H:%M:%S %Z} ({held:.0f} s ago)"
        )


_HOLDER = text(
    """
    SELECT a.pid, a.application_name,
           CASE WHEN a.backend_start IS NOT NULL
                THEN coalesce(host(a.client_addr), 'local socket') END AS client,
           coalesce(a.usename::text, '?') AS user, a.backend_start AS since
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND l.classid = :lock_hi AND l.objid = :lock_lo AND l.objsubid = 1
    """
)


def holder(connection: Connection) -> Holder | None:
    """Who holds the migration lock on this database, if anyone."""
    row = connection.execute(_HOLDER, _key_parts()).first()
    connection.commit()
    return Holder(**row._mapping) if row else None


def _try(connection: Connection) -> bool:
    got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
    # Commit at once: an open transaction here is harmless to the lock (session-level),
    # but an idle-in-transaction session is a poor neighbour on a busy server.
    connection.commit()
    return bool(got)


# True while the session `:lock_pid` holds the lock. Also the condition of the history
# INSERT a step makes before it commits (history.record), saving a round trip per step.
HELD_CONDITION = """
    EXISTS (
        SELECT 1 FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND pid = :lock_pid
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid = :lock_hi AND objid = :lock_lo AND objsubid = 1)
"""
_HELD = text(f"SELECT {HELD_CONDITION}")


def _key_parts() -> dict[str, int]:
    unsigned = LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
    return {"lock_hi": unsigned >> 32, "lock_lo": unsigned & 0xFFFF_FFFF}


@dataclass(frozen=True)
class Held:
    """The lock as a run holds it: the backend of its own session."""

    pid: int
    session: Connection | None = field(default=None, compare=False, repr=False)
    """The lock's own connection, idle for the whole run: the blocking budget's guard
    watches from it (db/blocking.py) instead of asking a tight pool for one more."""

    @property
    def condition(self) -> tuple[str, dict[str, int]]:
        """SQL that is true while the lock's session still holds it, and its parameters."""
        return HELD_CONDITION, {"lock_pid": self.pid, **_key_parts()}

    def ensure(self, connection: Connection) -> None:
        """Raise LockLost unless the lock's session still holds it; `connection` is any
        other connection to the same database (the migrations' own, inside a step)."""
        if not connection.execute(_HELD, self.condition[1]).scalar():
            raise self.lost()

    def lost(self) -> LockLost:
        return LockLost(
            f"the migration lock was lost: its session (pid {self.pid}) ended or let go "
            "while this run was migrating, so another run may be migrating too.",
            "the step in progress was rolled back. Find out what ended the session "
            "(idle_session_timeout, pg_terminate_backend, a restart), then run again",
        )


# The lock's session sits idle for the whole run: an idle_session_timeout (a common
# hardening) would end it and release the lock under the run's feet. It never sits idle
# in a transaction (each statement commits at once), so the stalled-link bounds
# (settings.link) apply to it as to the migrations' session. One statement sets them,
# names the session, and tries the lock: a run's bookkeeping is a few round trips.
_OPEN = """
    SELECT set_config('application_name', :name, false),{link}
           set_config('statement_timeout', '0', false),{since_14}
           pg_backend_pid() AS pid, pg_try_advisory_lock(:k) AS got
"""
_SINCE_14 = "\n           set_config('idle_session_timeout', '0', false),"


@contextmanager
def migration_lock(
    engine: Engine,
    timeout: float,
    say: Callable[[str], None] = print,
) -> Iterator[Held]:
    """Hold the migration lock for the duration of the block, waiting up to `timeout` s.

    `engine` is used for one dedicated connection, never shared with the migrations,
    named LOCK_SESSION_NAME in pg_stat_activity.
    """
    with connect.connect(engine) as connection:
        since_14 = _SINCE_14 if connect.server_major(connection) >= 14 else ""
        link = settings.link().server_settings()
        calls = "".join(f"\n           set_config('{name}', :{name}, false)," for name in link)
        opened = connection.execute(
            text(_OPEN.format(since_14=since_14, link=calls)),
            {"name": LOCK_SESSION_NAME, "k": LOCK_KEY, **link},
        ).one()
        connection.commit()
        if not opened.got:
            _wait(connection, timeout, say)
        try:
            yield Held(opened.pid, connection)
        finally:
            # Closing the session would release it too; unlocking says so explicitly. A
            # session that died must not hide the error that ended the run.
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                connection.commit()
            except Exception as exc:
                log.info("could not unlock (the session is gone): %s", exc)


def _wait(connection: Connection, timeout: float, say: Callable[[str], None]) -> None:
    who = holder(connection)
    who_text = who.describe() if who else "a session that has just let go"
    started = time.monotonic()
    message = f"Waiting for the migration lock, held by {who_text}; giving up after {timeout:g} s"
    with waiting(message + ".") as update:
        while True:
            if _try(connection):
                break
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                who = holder(connection) or who
                raise LockTimeout(
                    f"gave up after {timeout:g} s waiting for the migration lock, held by "
                    f"{who.describe() if who else 'another session'}.",
                    "another migration run is in progress; wait for it to finish, or raise "
                    "--lock-timeout. If that process is stuck, stop it "
                    f"(SELECT pg_terminate_backend({who.pid if who else 'PID'}))",
                )
            update(f"{message} (waited {elapsed:.0f} s)")
            time.sleep(POLL_SECONDS)
    say(f"Got the migration lock after {time.monotonic() - started:.1f} s.")
