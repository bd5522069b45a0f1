"""One migration run at a time: the advisory lock, as separate processes see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from db import lock, planning, revisions, runner
from db.settings import PROJECT_ROOT
from tests.conftest import finish
from tests.helpers import add_migration, as_env, connect, current_revision, scalar, wait_until

SLOW_002 = """
op.execute("CREATE TABLE half_done (id int)")
op.execute(
    "SELECT pg_sleep(coalesce(nullif(current_setting('worktracker.test_sleep', true), ''), "
    "'0')::float)"
)
"""


def test_lock_key_is_fixed() -> None:
    """Every copy of the tool must agree on the key; changing it lets two versions race."""
    assert lock.LOCK_KEY == 6567386069863816486, (
        "the advisory lock key changed: old and new copies of the tool would no longer "
        "exclude each other. Keep LOCK_NAME as it was."
    )


@pytest.mark.waits
def test_eight_concurrent_runs_apply_each_migration_once(
    spawn, empty_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "slow_step",
        'op.execute("CREATE TABLE slow_step (id int)")\nop.execute("SELECT pg_sleep(1)")',
        'op.drop_table("slow_step")',
    )
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    runs = [finish(p) for p in [spawn("migrate.up", env=env) for _ in range(8)]]
    for result in runs:
        assert result.returncode == 0, result.explain()
    assert current_revision(empty_db) == "002"
    with connect(empty_db) as conn:
        applied = conn.execute(
            "SELECT revision, count(*) FROM migrations.history "
            "WHERE direction = 'up' AND success GROUP BY revision ORDER BY revision"
        ).fetchall()
    assert applied == [("001", 1), ("002", 1)], f"each migration exactly once, got {applied}"
    idle = sum("Nothing to apply" in r.stdout for r in runs)
    assert idle == 7, "\n\n".join(r.explain() for r in runs)


@pytest.mark.waits
def test_held_lock_times_out_naming_the_holder(invoke, empty_db: URL) -> None:
    with connect(empty_db, autocommit=True) as holder:
        holder.execute("SET application_name = 'lock-holder-test'")
        holder.execute("SELECT pg_advisory_lock(%s)", [lock.LOCK_KEY])
        started = time.monotonic()
        result = invoke("migrate.up", "--lock-timeout", "1", env=as_env(empty_db))
        waited = time.monotonic() - started
        holder_pid = holder.info.backend_pid
    assert result.returncode == 6, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert waited >= 1.0, f"gave up after {waited:.2f} s, before the 1 s timeout"
    for fragment in (f"pid {holder_pid}", "lock-holder-test", "gave up after 1 s"):
        assert fragment in result.stderr, result.explain()
    assert "Waiting for the migration lock" in result.stdout, result.explain()
    assert current_revision(empty_db) is None, "a run that never got the lock changed things"


@pytest.mark.waits
def test_waiting_run_proceeds_when_the_lock_is_released(spawn, empty_db: URL) -> None:
    with connect(empty_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock.LOCK_KEY])
        process = spawn("migrate.up", "--lock-timeout", "60", env=as_env(empty_db))
        # Release only once the run is there and trying (however long it took to start).
        _wait_for(
            lambda: (
                scalar(
                    empty_db,
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'worktracker-migrate (lock)'",
                )
                == 1
            ),
            "the run to open its lock session",
        )
        time.sleep(1)
        assert process.poll() is None, "the run should still be waiting for the lock"
    result = finish(process)
    assert result.returncode == 0, result.explain()
    assert "Got the migration lock" in result.stdout, result.explain()
    assert current_revision(empty_db) == "001"


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    wait_until(condition, what, timeout)


@pytest.mark.waits
def test_kill_9_mid_migration_rolls_back_and_frees_the_lock(
    spawn, invoke, empty_db: URL, versions_copy: Path
) -> None:
    add_migration(versions_copy, "002", "001", "slow", SLOW_002, 'op.drop_table("half_done")')
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    process = spawn("migrate.up", env={**env, "PGOPTIONS": "-c worktracker.test_sleep=60"})
    sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'"
    ours = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
        "'worktracker-migrate%%' AND datname = current_database()"
    )
    _wait_for(lambda: scalar(empty_db, sleeping) == 1, "002 to reach its pg_sleep")
    assert current_revision(empty_db) == "001"

    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    _wait_for(lambda: scalar(empty_db, ours) == 0, "the server to end the dead run's sessions")

    assert current_revision(empty_db) == "001", "the database must be at the previous revision"
    assert scalar(empty_db, "SELECT to_regclass('half_done')") is None, "002 was partly applied"
    with connect(empty_db, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", [lock.LOCK_KEY]).fetchone()[0]
        conn.execute("SELECT pg_advisory_unlock(%s)", [lock.LOCK_KEY])

    result = invoke("migrate.up", env=env)
    assert result.returncode == 0, result.explain()
    assert current_revision(empty_db) == "002"


def test_runner_refuses_a_connection_with_an_open_transaction(empty_db: URL) -> None:
    """The Alembic pitfall: inside an outer transaction, closing would undo everything."""
    engine = create_engine(empty_db, poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # autobegins
        plan = planning.plan_upgrade(revisions.script_directory(), None, "head")
        try:
            runner.run(connection, plan)
        except RuntimeError as error:
            assert "open transaction" in str(error)
        else:
            raise AssertionError("runner.run() accepted a connection inside a transaction")
    engine.dispose()
    assert current_revision(empty_db) is None


def test_read_only_commands_take_no_lock(invoke, initial_db: URL) -> None:
    """status, history and verify answer at once while a migration run holds the lock."""
    with connect(initial_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [lock.LOCK_KEY])
        for command in ("migrate.status", "migrate.history", "migrate.verify"):
            result = invoke(command, env={**as_env(initial_db), "WORKTRACKER_LOCK_TIMEOUT": "0"})
            assert result.returncode == 0, f"{command}\n{result.explain()}"
            assert "Waiting for the migration lock" not in result.output, result.explain()


def test_two_first_runs_at_once_create_the_embedded_database_once(
    spawn, embedded_pgdata: Path
) -> None:
    """Both runs start (or find) the embedded server and its database, then one migrates."""
    # spawn's runs use embedded_pgdata, which stops the server after the test, pass or fail.
    env = {"WORKTRACKER_PGDATA": str(embedded_pgdata), "WORKTRACKER_DATABASE": "race"}
    processes = [spawn("migrate.up", env=env) for _ in range(2)]
    results = [finish(p) for p in processes]
    assert [r.returncode for r in results] == [0, 0], "\n".join(r.explain() for r in results)
    assert "Traceback" not in "".join(r.output for r in results)
    stop = subprocess.run(
        [sys.executable, "-m", "invoke", "db.stop"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert stop.returncode == 0, stop.stderr
