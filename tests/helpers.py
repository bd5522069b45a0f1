"""Small helpers shared by the tests: database URLs for subprocesses, throwaway migrations."""

from __future__ import annotations

import inspect
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from db import urls


def as_env(url: URL) -> dict[str, str]:
    """DATABASE_URL for a subprocess, as a user would write it."""
    return {"DATABASE_URL": urls.libpq(url).render_as_string(hide_password=False)}


def connect(url: URL, **kwargs) -> psycopg.Connection:
    return psycopg.connect(urls.libpq(url).render_as_string(hide_password=False), **kwargs)


def scalar(url: URL, sql: str, *params: object) -> object:
    with connect(url) as conn:
        row = conn.execute(sql, params or None).fetchone()
        return row[0] if row else None


def scalar_if(url: URL, table: str, sql: str, *params: object) -> object:
    """scalar(), or None while `table` does not exist yet (one connection for both)."""
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,):
            return None
        row = conn.execute(sql, params or None).fetchone()
        return row[0] if row else None


def current_revision(url: URL) -> str | None:
    table = "migrations.alembic_version"
    found = scalar_if(url, table, f"SELECT version_num FROM {table}")
    return str(found) if found is not None else None


def tasks_in_a_project(url: URL, rows: int = 0) -> None:
    """An organization, a project, and `rows` tasks in it (numbered 1…rows, priority the
    number modulo 5): the filled `tasks` the lock and blocking tests migrate under."""
    with connect(url, autocommit=True) as conn:
        org = conn.execute(
            "INSERT INTO organizations (name, slug) VALUES ('A', 'a1') RETURNING id"
        ).fetchone()[0]
        project = conn.execute(
            "INSERT INTO projects (organization_id, key, name) VALUES (%s, 'AA', 'A') RETURNING id",
            [org],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO tasks (project_id, number, title, priority) "
            "SELECT %s, g, 'task', g %% 5 FROM generate_series(1, %s) AS g",
            [project, rows],
        )


def an_attempt_failed(url: URL, revision: str) -> bool:
    """Whether the history holds a failed attempt at `revision` (False while the run has
    not created its history yet)."""
    return bool(
        scalar_if(
            url,
            "migrations.history",
            "SELECT count(*) FROM migrations.history WHERE revision = %s AND NOT success",
            revision,
        )
    )


def running(url: URL, statement: str) -> int:
    """How many other sessions run a statement that starts with `statement` (a migration
    that reached its pg_sleep, say)."""
    return int(
        scalar(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            statement + "%",
        )
    )


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    """Poll `condition` until it is truthy and return its value; fail naming `what`.
    Tests wait for the event itself, never a fixed time (machines under load are slow)."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return found


def _body(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip(), "    ")


def add_migration(
    versions: Path, revision: str, down: str, slug: str, upgrade: str, downgrade: str
) -> Path:
    """Write NNN_slug.py into a copy of the chain, with the given bodies."""
    source = "\n".join(
        [
            f'"""{slug.replace("_", " ")}"""',
            "",
            "from __future__ import annotations",
            "",
            "from alembic import op",
            "",
            f'revision: str = "{revision}"',
            f'down_revision: str | None = "{down}"',
            "branch_labels = None",
            "depends_on = None",
            "",
            "",
            "def upgrade() -> None:",
            f'    """Apply: {slug}."""',
            _body(upgrade),
            "",
            "",
            "def downgrade() -> None:",
            f'    """Revert: {slug}."""',
            _body(downgrade),
            "",
        ]
    )
    path = versions / f"{revision}_{slug}.py"
    path.write_text(source)
    return path


def add_task_estimates(versions: Path) -> Path:
    """002: a nullable `estimate` column on tasks, the plain change most tests migrate."""
    return add_migration(
        versions,
        "002",
        "001",
        "task_estimates",
        'op.execute("ALTER TABLE tasks ADD COLUMN estimate integer")',
        'op.execute("ALTER TABLE tasks DROP COLUMN estimate")',
    )


SLOW = "SELECT pg_sleep(30)"
"""What start_slow_up()'s migration 002 runs while a test interrupts, kills or cuts it."""


def start_slow_up(spawn, url: URL, versions: Path):
    """`invoke migrate.up` from 001 over a 002 that sleeps in its transaction, returned
    once its step has reached the sleep."""
    add_migration(versions, "002", "001", "slow", f'op.execute("{SLOW}")', 'op.execute("SELECT 1")')
    env = {**as_env(url), "WORKTRACKER_VERSIONS_DIR": str(versions)}
    process = spawn("migrate.up", env=env)
    wait_until(lambda: running(url, SLOW) == 1, "002 to reach its sleep")
    return process


SCHEMA_MOVED = {"42703", "42P01"}
"""SQLSTATEs of a statement that names a column or a table that no longer exists."""


def _written_by_hand(statement: str, error: Exception) -> str:
    """Why a schema test's hand-written statement broke, and what to do about it."""
    table = re.search(r"\b(?:INTO|UPDATE|FROM)\s+([\w.]+)", statement, re.I)
    name = table.group(1) if table else "a table"
    frames = (f for f in inspect.stack() if "/tests/test_" in f.filename)
    caller = next((f"{Path(f.filename).name}:{f.lineno}" for f in frames), "the test")
    reason = str(getattr(error, "orig", error)).splitlines()[0]
    return (
        f"this test writes rows by hand into {name}: a migration changed {name} ({reason}); "
        f"update the statement at {caller} (README, Daily workflow, step 5).\n"
        f"--- statement ---\n{statement}"
    )


def by_hand(db, statement: str, params: dict | None = None):
    """Run a statement a schema test writes by hand and that must go through; when the
    schema moved under it, fail saying which statement to update, not with a traceback."""
    try:
        return db.execute(text(statement), params or {})
    except DBAPIError as error:
        why = _written_by_hand(statement, error)
    pytest.fail(why, pytrace=False)  # outside the except: no chained database traceback


def refused(db, statement: str, params: dict | None = None) -> str:
    """Run a statement a schema test writes by hand and that a rule must refuse; its
    SQLSTATE. A column or table that no longer exists is not a refusal: the test says so."""
    try:
        db.execute(text(statement), params or {})
    except DBAPIError as error:
        if error.orig.sqlstate not in SCHEMA_MOVED:
            return error.orig.sqlstate
        why = _written_by_hand(statement, error)
    else:
        why = f"nothing refused:\n{statement}"
    pytest.fail(why, pytrace=False)
