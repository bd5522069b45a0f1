"""A killed `migrate.plan`, or a `migrate.down` killed during its rehearsal, leaves no
session behind holding the rehearsal's locks: the server notices the dead client within
a second (client_connection_check_interval), as for real runs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from tests.helpers import add_migration, as_env, connect, running, wait_until

LOCKS_AND_SLEEPS = """
op.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
op.execute("SELECT pg_sleep(30)")
"""


@pytest.mark.waits
@pytest.mark.parametrize("command", ["migrate.plan", "migrate.down"])
def test_a_killed_rehearsal_releases_its_locks_at_once(
    spawn, invoke, initial_db: URL, versions_copy: Path, command: str
) -> None:
    if command == "migrate.plan":
        add_migration(
            versions_copy, "002", "001", "slow", LOCKS_AND_SLEEPS, 'op.execute("SELECT 1")'
        )
    else:
        add_migration(
            versions_copy, "002", "001", "slow", 'op.execute("SELECT 1")', LOCKS_AND_SLEEPS
        )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    if command == "migrate.down":
        assert invoke("migrate.up", env=env).returncode == 0
    process = spawn(command, env=env)
    wait_until(
        lambda: running(initial_db, "SELECT pg_sleep(30)") == 1, "the rehearsal to reach its sleep"
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    started = time.monotonic()
    with connect(initial_db, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '10s'")
        try:
            conn.execute("SELECT count(*) FROM users").fetchone()
        except psycopg.errors.QueryCanceled:
            pytest.fail("an application query waited 10 s behind the dead rehearsal")
    assert time.monotonic() - started < 5
