"""Interrupted runs and misbehaving migration code: Ctrl-C and SIGTERM say where the
database is (exit 130, 143); a reader that closes stdout never changes what is applied;
sys.exit() in a migration is a failure; a migration that COMMITs itself is told apart."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db.settings import PROJECT_ROOT
from tests.conftest import _environ, finish
from tests.helpers import add_migration, as_env, current_revision, scalar, start_slow_up, wait_until

OURS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'worktracker-migrate%%' "
    "AND datname = current_database()"
)


def _wait(url: URL, sql: str, expect) -> None:
    wait_until(lambda: scalar(url, sql) == expect, f"{sql} == {expect}")


@pytest.mark.parametrize(
    ("sig", "code", "how"),
    [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")],
)
def test_an_interrupted_run_says_where_the_database_is_and_records_the_step(
    spawn, initial_db: URL, versions_copy: Path, sig: int, code: int, how: str
) -> None:
    process = start_slow_up(spawn, initial_db, versions_copy)
    process.send_signal(sig)
    result = finish(process, timeout=30)
    assert result.returncode == code, result.explain()
    assert "interrupted:" in result.stderr, result.explain()
    assert "the database is at 001" in result.stderr, result.explain()
    assert "Traceback" not in result.output
    _wait(initial_db, OURS, 0)
    assert current_revision(initial_db) == "001"
    # The server rolled the step back; the history still shows the run was there.
    row = scalar(
        initial_db,
        "SELECT row(direction, success, error)::text FROM migrations.history "
        "WHERE revision = '002'",
    )
    assert row == f'(up,f,"interrupted by {how}; rolled back")', result.explain()


def test_a_closed_stdout_never_changes_what_is_applied(
    embedded_pgdata: Path, initial_chain: Path, empty_db: URL
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "migrate.up"],
        cwd=PROJECT_ROOT,
        env=_environ(embedded_pgdata, initial_chain, as_env(empty_db)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.readline()  # `| head -1`
    process.stdout.close()
    process.wait(timeout=60)
    assert current_revision(empty_db) == "001", process.stderr.read().decode()
    assert scalar(empty_db, "SELECT count(*) FROM migrations.history WHERE success") == 1


def test_sys_exit_in_a_migration_is_a_failure(invoke, initial_db: URL, versions_copy: Path) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "exits",
        'import sys\nop.execute("CREATE TABLE t (a int)")\nsys.exit(0)',
        'op.execute("DROP TABLE t")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "sys.exit(0)" in result.stderr, result.explain()
    assert current_revision(initial_db) == "001"
    assert scalar(initial_db, "SELECT to_regclass('t')") is None


def test_a_migration_that_commits_itself_is_told_apart(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "commits",
        'op.execute("CREATE TABLE early (a int)")\nop.execute("COMMIT")\n'
        'op.execute("CREATE TABLE late (a int)")',
        'op.execute("DROP TABLE late")\nop.execute("DROP TABLE early")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "ended its own transaction with 'COMMIT'" in result.stderr, result.explain()
    assert "stays committed" in result.stderr and "still 001" in result.stderr
    assert "(CREATE TABLE early (a int))" in result.stderr, "what stays is named"
    assert "its transaction was rolled back" not in result.stderr, "that would be false"
    assert current_revision(initial_db) == "001"
    assert scalar(initial_db, "SELECT to_regclass('early')") is not None, "committed part"
    assert scalar(initial_db, "SELECT to_regclass('late')") is None
