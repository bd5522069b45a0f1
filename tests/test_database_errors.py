"""Database errors outside a migration step are one line and a hint with a documented
exit code, never a traceback: unknown URL options, missing privileges, read-only
sessions, tiny or huge timeouts, a lost connection, a reset the role may not do."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import (
    add_migration,
    as_env,
    connect,
    current_revision,
    running,
    scalar,
    wait_until,
)


def _clean(result) -> None:
    assert "Traceback" not in result.output, result.explain()
    assert result.stderr.startswith("error: ") and "\nhint: " in result.stderr, result.explain()


def _role(url: URL, name: str, *grants: str) -> URL:
    with connect(url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN")
        for grant in grants:
            conn.execute(grant.format(role=name, db=url.database))
    return url.set(username=name)


def test_an_unknown_url_option_is_bad_input(invoke, initial_db: URL) -> None:
    env = as_env(initial_db)
    env["DATABASE_URL"] += "&foo=bar"
    result = invoke("migrate.status", env=env)
    assert result.returncode == 2, result.explain()
    assert "foo" in result.stderr
    _clean(result)


def test_a_role_without_create_on_the_database_is_told_what_it_lacks(invoke, empty_db: URL) -> None:
    result = invoke("migrate.up", env=as_env(_role(empty_db, "no_create_role")))
    assert result.returncode == 9, result.explain()
    assert "privilege" in result.stderr and "CREATE on the database" in result.stderr
    _clean(result)


@pytest.mark.waits
def test_a_read_only_session_can_run_what_changes_nothing(
    invoke, empty_db: URL, versions_copy: Path
) -> None:
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    assert invoke("migrate.up", env=env).returncode == 0
    with connect(empty_db, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{empty_db.database}" SET default_transaction_read_only = on')
    for args in (("migrate.status",), ("migrate.verify",), ("migrate.up",)):
        result = invoke(*args, env=env)
        assert result.returncode == 0, result.explain()
    add_migration(
        versions_copy,
        "002",
        "001",
        "more",
        'op.execute("CREATE TABLE t (a int)")',
        'op.execute("DROP TABLE t")',
    )
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "read-only" in result.stderr, result.explain()
    assert "Traceback" not in result.output
    assert current_revision(empty_db) == "001"


def test_a_one_millisecond_statement_timeout_on_the_database_does_not_break_bookkeeping(
    invoke, empty_db: URL
) -> None:
    with connect(empty_db, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{empty_db.database}" SET statement_timeout = 1')
    result = invoke("migrate.up", env=as_env(empty_db))
    assert result.returncode == 0, result.explain()
    with connect(empty_db, autocommit=True, options="-c statement_timeout=0") as conn:
        # The test's own reads must not trip on the 1 ms either.
        conn.execute(f'ALTER DATABASE "{empty_db.database}" RESET statement_timeout')
    assert current_revision(empty_db) == "001"


def test_an_oversized_statement_timeout_is_bad_input(invoke, initial_db: URL) -> None:
    env = {**as_env(initial_db), "WORKTRACKER_STATEMENT_TIMEOUT": "1000h"}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 2, result.explain()
    assert "WORKTRACKER_STATEMENT_TIMEOUT" in result.stderr
    _clean(result)


@pytest.mark.parametrize("command", ["migrate.down", "migrate.up"])
def test_an_empty_target_revision_is_bad_input(invoke, initial_db: URL, command: str) -> None:
    result = invoke(command, "--to", "", env=as_env(initial_db))
    assert result.returncode == 2, result.explain()
    assert "--to needs a revision" in result.stderr
    _clean(result)
    assert current_revision(initial_db) == "001"


def test_a_reset_the_role_may_not_do_is_one_line(invoke, empty_db: URL) -> None:
    assert invoke("migrate.up", env=as_env(empty_db)).returncode == 0
    with connect(empty_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name) VALUES ('a@b.c', 'A')")
    url = _role(empty_db, "not_owner_role", 'GRANT CREATE ON DATABASE "{db}" TO {role}')
    result = invoke("db.reset", "--allow-data-loss", env=as_env(url))
    assert result.returncode == 9, result.explain()
    assert "privilege" in result.stderr
    _clean(result)
    assert scalar(empty_db, "SELECT count(*) FROM users") == 1


def test_a_connection_lost_mid_step_is_a_connection_failure_saying_where_the_database_is(
    spawn, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "slow",
        'op.execute("SELECT pg_sleep(20)")',
        'op.execute("SELECT 1")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    process = spawn("migrate.up", env=env)
    wait_until(lambda: running(initial_db, "SELECT pg_sleep(20)") > 0, "the migration to start")
    scalar(
        initial_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
        "'SELECT pg_sleep(20)%%' AND pid <> pg_backend_pid()",
    )
    result = finish(process)
    assert result.returncode == 3, result.explain()
    assert "connection to the server failed during migration 002 (slow)" in result.stderr
    assert "not the migration" in result.stderr and "fix the migration" not in result.stderr
    assert "the database is at 001" in result.stderr, result.explain()
    assert result.stderr.count("error: ") == 1, result.explain()
    assert "Traceback" not in result.output
    assert current_revision(initial_db) == "001"
    # The server still answers: the history says how the step ended.
    failed = scalar(
        initial_db,
        "SELECT error FROM migrations.history WHERE revision = '002' AND NOT success",
    )
    assert failed and "terminating connection" in failed, failed


def test_a_reset_is_recorded_so_the_history_replays(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    assert invoke("migrate.up", env=env).returncode == 0
    assert invoke("db.reset", env=env).returncode == 0
    rows = [
        r
        for r in (
            connect(empty_db).execute(
                "SELECT direction, from_revision, note FROM migrations.history ORDER BY id"
            )
        )
    ]
    assert [r[0] for r in rows] == ["up", "reset", "up"], rows
    assert rows[1][1] == "001" and "dropped schemas public" in rows[1][2]
    assert invoke("migrate.verify", env=env).returncode == 0
    history = invoke("migrate.history", env=env)
    assert "(reset)" in history.stdout, history.explain()
