"""The migration lock is never lost silently: idle timeouts on the role do not end the
lock's session, a run whose lock session is terminated stops with exit 6 and rolls its
step back, and a run waiting on another role's lock describes what it can see."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from db.lock import LOCK_KEY
from tests.conftest import finish
from tests.helpers import add_migration, as_env, connect, current_revision, scalar, wait_until

SLOW = (
    'op.execute("SELECT pg_sleep(3)")\nop.add_column("tasks", sa.Column("estimate", sa.Integer()))'
)


def _slow_chain(versions: Path) -> None:
    path = add_migration(
        versions, "002", "001", "slow_estimate", SLOW, 'op.drop_column("tasks", "estimate")'
    )
    path.write_text(
        path.read_text().replace(
            "from alembic import op", "import sqlalchemy as sa\nfrom alembic import op"
        )
    )


def _wait_for(url: URL, sql: str) -> object:
    return wait_until(lambda: scalar(url, sql), sql)


@pytest.mark.waits
def test_idle_timeouts_on_the_role_do_not_end_the_lock(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    _slow_chain(versions_copy)
    with connect(initial_db, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{initial_db.database}\" SET idle_session_timeout = '1s'")
        conn.execute(
            f'ALTER DATABASE "{initial_db.database}" '
            "SET idle_in_transaction_session_timeout = '1s'"
        )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 0, result.explain()
    assert current_revision(initial_db) == "002"


@pytest.mark.waits
def test_a_run_that_loses_its_lock_stops_and_rolls_back(
    spawn, initial_db: URL, versions_copy: Path
) -> None:
    _slow_chain(versions_copy)
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    process = spawn("migrate.up", env=env)
    lock_pid = _wait_for(
        initial_db,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'worktracker-migrate (lock)'",
    )
    _wait_for(
        initial_db,
        "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' "
        "AND pid <> pg_backend_pid()",
    )
    assert scalar(initial_db, "SELECT pg_terminate_backend(%s)", lock_pid)
    result = finish(process)
    assert result.returncode == 6, result.explain()
    assert "the migration lock was lost" in result.stderr, result.explain()
    assert "the database is at 001" in result.stderr, result.explain()
    assert "Traceback" not in result.output
    assert current_revision(initial_db) == "001"
    assert scalar(initial_db, "SELECT to_regclass('tasks') IS NOT NULL")
    assert not scalar(
        initial_db,
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'estimate'",
    ), "the step must be rolled back"
    error = scalar(
        initial_db, "SELECT error FROM migrations.history WHERE NOT success ORDER BY id DESC"
    )
    assert error and "lock was lost" in error, error


@pytest.mark.waits
def test_a_waiting_run_describes_a_holder_it_cannot_fully_see(
    invoke, initial_db: URL, pg_server
) -> None:
    with connect(initial_db, autocommit=True) as conn:
        for role in ("lock_holder_role", "waiting_role"):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN")
    holder_url = initial_db.set(username="lock_holder_role")
    with psycopg.connect(as_env(holder_url)["DATABASE_URL"], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        pid = holder.info.backend_pid
        result = invoke(
            "migrate.up", "--lock-timeout", "1", env=as_env(initial_db.set(username="waiting_role"))
        )
    assert result.returncode == 6, result.explain()
    assert f"pid {pid}" in result.stderr, result.explain()
    assert "lock_holder_role" in result.stderr, result.explain()
    assert "Traceback" not in result.output
