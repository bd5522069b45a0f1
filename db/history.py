"""The migration history: one append-only row per migration step applied or rolled back,
in the bookkeeping schema, where app-schema comparisons and rollbacks never reach it."""

from __future__ import annotations

import functools
import getpass
import hashlib
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection

from db.settings import BOOKKEEPING_SCHEMA as SCHEMA
from db.settings import PROJECT_ROOT

TABLE = f"{SCHEMA}.history"
DIRECTIONS = ("up", "down", "accept-changed", "reset")

# Idempotent, and run only while holding the migration lock: concurrent
# CREATE ... IF NOT EXISTS can still collide in the catalog.
DDL = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        revision      text NOT NULL,
        from_revision text,
        to_revision   text,
        direction     text NOT NULL
                      CONSTRAINT history_direction_check
                      CHECK (direction IN ('up', 'down', 'accept-changed', 'reset')),
        description   text NOT NULL,
        checksum      text,
        db_user       text NOT NULL DEFAULT current_user,
        os_user       text,
        host          text,
        tool_version  text,
        started_at    timestamptz NOT NULL,
        duration_ms   double precision NOT NULL,
        success       boolean NOT NULL,
        error         text,
        note          text
    )
    """,
    f"COMMENT ON TABLE {TABLE} IS "
    "'Every migration step applied or rolled back, and how it ended. Append-only.'",
    f"""
    CREATE OR REPLACE FUNCTION {SCHEMA}.history_is_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{TABLE} is append-only';
    END;
    $$
    """,
    f"""
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'history_is_append_only'
                       AND tgrelid = '{TABLE}'::regclass) THEN
            CREATE TRIGGER history_is_append_only BEFORE UPDATE OR DELETE ON {TABLE}
            FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.history_is_append_only();
        END IF;
    END $$
    """,
    # Tables made before 'reset' rows existed get the wider CHECK.
    f"""
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '{TABLE}'::regclass
                       AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%reset%') THEN
            ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS history_direction_check;
            ALTER TABLE {TABLE} ADD CONSTRAINT history_direction_check
                CHECK (direction IN ('up', 'down', 'accept-changed', 'reset'));
        END IF;
    END $$
    """,
]

_READY = text(
    f"""
    SELECT to_regclass('{TABLE}') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'history_is_append_only'
                    AND tgrelid = to_regclass('{TABLE}'))
       AND EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass('{TABLE}')
                    AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%reset%')
    """
)


def ensure_table(connection: Connection) -> None:
    """Create the bookkeeping schema and the history table if they are missing.

    Checks first and writes nothing when all is there, so that a read-only session or a
    role without CREATE can still run everything that needs no change.
    """
    with connection.begin():
        if connection.execute(_READY).scalar():
            return
        # One round trip: a statement without parameters may hold several.
        connection.execute(text(";\n".join(DDL)))


def exists(connection: Connection) -> bool:
    found = connection.execute(text("SELECT to_regclass(:t)"), {"t": TABLE}).scalar()
    connection.rollback()
    return found is not None


def checksum(path: Path) -> str | None:
    """sha256 of a migration file's bytes; None when the file is gone."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


@functools.cache
def tool_version() -> str:
    """What a history row says ran the step: the installed version (setuptools-scm's, from
    the tags) and, when db/ runs from a git checkout, that checkout's state. An editable
    install keeps the version of the commit it was installed at, and whether the tree was
    edited when a migration ran is what a reader of the history needs most.

    Asked once per process (a `git describe` and a metadata read cost 10 ms): a
    process runs one command, and a fleet's forks share their parent's answer."""
    try:
        ours = metadata.version("worktracker-schema")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    # PROJECT_ROOT is a checkout where the project is installed editable, as the README and
    # the deploy workflow install it; site-packages otherwise.
    state = checkout_state(PROJECT_ROOT)
    if state:
        ours += f" (checkout {state})"
    return f"worktracker-schema {ours}, alembic {metadata.version('alembic')}"


def checkout_state(root: Path) -> str | None:
    """`git describe` of the checkout at `root`: v0.4.0-12-gabc1234, with -dirty when a
    tracked file differs from the commit, the commit alone where no tag is reachable; None
    where `root` is no checkout or git does not answer (not installed, another owner)."""
    if not (root / ".git").exists():
        return None
    command = ["git", "describe", "--tags", "--long", "--dirty", "--always", "--match", "v[0-9]*"]
    try:
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


@dataclass(frozen=True)
class Who:
    os_user: str
    host: str
    tool_version: str

    @classmethod
    def here(cls) -> Who:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(user, socket.gethostname(), tool_version())


_COLUMNS = (
    "revision, from_revision, to_revision, direction, description, checksum, os_user, host, "
    "tool_version, started_at, duration_ms, success, error, note"
)
_INSERT = text(
    f"""
    INSERT INTO {TABLE} ({_COLUMNS})
    VALUES (:revision, :from_revision, :to_revision, :direction, :description,
            :checksum, :os_user, :host, :tool_version, :started_at, :duration_ms,
            :success, :error, :note)
    """
)
# INSERT ... SELECT leaves the types of the parameters to infer: they are spelled out.
_INSERT_IF = f"""
    INSERT INTO {TABLE} ({_COLUMNS})
    SELECT CAST(:revision AS text), CAST(:from_revision AS text), CAST(:to_revision AS text),
           CAST(:direction AS text), CAST(:description AS text), CAST(:checksum AS text),
           CAST(:os_user AS text), CAST(:host AS text), CAST(:tool_version AS text),
           CAST(:started_at AS timestamptz), CAST(:duration_ms AS double precision),
           CAST(:success AS boolean), CAST(:error AS text), CAST(:note AS text)
     WHERE {{condition}}
"""


def record(
    connection: Connection,
    *,
    revision: str,
    from_revision: str | None,
    to_revision: str | None,
    direction: str,
    description: str,
    checksum: str | None,
    started_at: datetime,
    duration_ms: float,
    success: bool,
    who: Who,
    error: str | None = None,
    note: str | None = None,
    provided: tuple[str, dict[str, Any]] | None = None,
) -> bool:
    """Insert one row on `connection`, inside whatever transaction the caller has open.

    With `provided` (an SQL condition and its parameters), the row is inserted only if
    the condition holds, in the same statement; returns whether it was inserted.
    """
    values = {
        "revision": revision,
        "from_revision": from_revision,
        "to_revision": to_revision,
        "direction": direction,
        "description": description,
        "checksum": checksum,
        "os_user": who.os_user,
        "host": who.host,
        "tool_version": who.tool_version,
        "started_at": started_at,
        "duration_ms": duration_ms,
        "success": success,
        "error": error,
        "note": note,
    }
    if provided is None:
        connection.execute(_INSERT, values)
        return True
    condition, parameters = provided
    inserted = connection.execute(_insert_if(condition), {**values, **parameters})
    return inserted.rowcount == 1


@functools.cache
def _insert_if(condition: str) -> TextClause:
    return text(_INSERT_IF.format(condition=condition))


def rows(connection: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """The history, oldest first (the newest `limit` rows when given)."""
    if not exists(connection):
        return []
    query = f"SELECT * FROM {TABLE} ORDER BY id DESC" + (" LIMIT :limit" if limit else "")
    result = [dict(r._mapping) for r in connection.execute(text(query), {"limit": limit})]
    connection.rollback()
    return list(reversed(result))


def applied_checksums(connection: Connection) -> dict[str, dict[str, Any]]:
    """For each revision that history says is applied: its latest accepted row.

    Replays the successful steps in order; an 'accept-changed' row replaces the
    checksum an 'up' row recorded.
    """
    state: dict[str, dict[str, Any]] = {}
    for row in rows(connection):
        if not row["success"]:
            continue
        if row["direction"] == "reset":
            state.clear()  # db.reset dropped everything; what follows is re-applied
        elif row["direction"] == "down":
            state.pop(row["revision"], None)
        else:
            state[row["revision"]] = row
    return state
