"""Migrations with an autocommit_block() (CREATE INDEX CONCURRENTLY): a failed build is
reported truthfully (what was left, where the database is, how to fix it), `migrate.up`
never reports success over an INVALID index, and rehearsals handle the block."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import add_migration, as_env, connect, current_revision, scalar, wait_until

UNIQUE_ONLINE = """
with op.get_context().autocommit_block():
    op.create_index(
        "uq_users_display_name", "users", ["display_name"], unique=True,
        postgresql_concurrently=True, if_not_exists=True,
    )
"""
DROP_UNIQUE_ONLINE = """
with op.get_context().autocommit_block():
    op.drop_index("uq_users_display_name", table_name="users",
                  postgresql_concurrently=True, if_exists=True)
"""


def _chain(versions: Path, url: URL) -> dict[str, str]:
    add_migration(versions, "002", "001", "unique_names", UNIQUE_ONLINE, DROP_UNIQUE_ONLINE)
    return {**as_env(url), "WORKTRACKER_VERSIONS_DIR": str(versions)}


def _duplicates(url: URL) -> None:
    with connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, display_name) VALUES ('a@x.io', 'Sam'), ('b@x.io', 'Sam')"
        )


def _invalid(url: URL) -> bool:
    return bool(
        scalar(
            url,
            "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = "
            "to_regclass('public.uq_users_display_name')",
        )
    )


def test_a_failed_online_index_is_reported_with_what_it_left(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    env = _chain(versions_copy, initial_db)
    _duplicates(initial_db)
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "could not create unique index" in result.stderr, result.explain()
    assert "the database is at 001" in result.stderr, result.explain()
    assert "uq_users_display_name" in result.stderr and "INVALID" in result.stderr
    assert "DROP INDEX CONCURRENTLY public.uq_users_display_name" in result.stderr
    assert "transaction was rolled back" not in result.stderr, "that would be false"
    assert "Traceback" not in result.output
    assert current_revision(initial_db) == "001"
    assert _invalid(initial_db), "the test expects PostgreSQL to leave the index INVALID"


def test_up_never_reports_success_over_an_invalid_index(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    env = _chain(versions_copy, initial_db)
    _duplicates(initial_db)
    assert invoke("migrate.up", env=env).returncode == 4
    again = invoke("migrate.up", env=env)  # if_not_exists keeps the INVALID index
    assert again.returncode == 4, again.explain()
    assert "Done" not in again.stdout, again.explain()
    assert "left INVALID index(es)" in again.stderr, again.explain()
    assert "DROP INDEX CONCURRENTLY public.uq_users_display_name" in again.stderr
    assert current_revision(initial_db) == "001"

    with connect(initial_db, autocommit=True) as conn:
        conn.execute("DROP INDEX CONCURRENTLY public.uq_users_display_name")
        conn.execute("UPDATE users SET display_name = 'Alex' WHERE email = 'b@x.io'")
    fixed = invoke("migrate.up", env=env)
    assert fixed.returncode == 0, fixed.explain()
    assert current_revision(initial_db) == "002"
    assert not _invalid(initial_db)


def test_rollback_past_an_online_index_is_rehearsed_not_refused(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    env = _chain(versions_copy, initial_db)
    assert invoke("migrate.up", env=env).returncode == 0
    down = invoke("migrate.down", "--to", "base", env=env)
    assert down.returncode == 0, down.explain()
    assert current_revision(initial_db) is None


ONLINE_NAME_INDEX = """
with op.get_context().autocommit_block():
    op.create_index(
        "ix_users_display_name", "users", ["display_name"],
        postgresql_concurrently=True, if_not_exists=True,
    )
"""
DROP_ONLINE_NAME_INDEX = """
with op.get_context().autocommit_block():
    op.drop_index("ix_users_display_name", table_name="users",
                  postgresql_concurrently=True, if_exists=True)
"""


def test_ctrl_c_during_an_online_index_names_the_invalid_index(
    spawn, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy, "002", "001", "name_index", ONLINE_NAME_INDEX, DROP_ONLINE_NAME_INDEX
    )
    env = {
        **as_env(initial_db),
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
        "WORKTRACKER_DDL_LOCK_TIMEOUT": "0",  # the build waits for the writer below
    }
    with connect(initial_db) as writer:
        # An open transaction that wrote to users: the build registers the index (INVALID),
        # then waits for this writer to finish.
        writer.execute("INSERT INTO users (email, display_name) VALUES ('w@x.io', 'W')")
        process = spawn("migrate.up", env=env)
        wait_until(
            lambda: scalar(initial_db, "SELECT to_regclass('public.ix_users_display_name')"),
            "the build to register its index",
        )
        process.send_signal(signal.SIGINT)
        result = finish(process, timeout=60)
        writer.rollback()
    assert result.returncode == 130, result.explain()
    assert "the database is at 001" in result.stderr, result.explain()
    assert "INVALID" in result.stderr, result.explain()
    assert "DROP INDEX CONCURRENTLY public.ix_users_display_name" in result.stderr, result.explain()
    assert "rolled back by the server" not in result.stderr, "not all of it was"
    for internal in ("Traceback", "sqlalchemy", "psycopg"):
        assert internal not in result.output, result.explain()
    assert current_revision(initial_db) == "001"
    assert scalar(
        initial_db,
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = "
        "to_regclass('public.ix_users_display_name')",
    ), "the test expects the interrupted build to leave the index INVALID"


def test_a_failed_online_step_names_every_statement_that_committed(
    initial_db: URL, versions_copy: Path, monkeypatch
) -> None:
    from db import commands, render
    from db.errors import MigrationFailed
    from tests.corpus_run import target

    upgrade = """
    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_due_date ON tasks (due_date)")
        op.execute("UPDATE organizations SET settings = settings || '{\\"beta\\": true}'")
        op.execute("CREATE UNIQUE INDEX CONCURRENTLY uq_users_display_name "
                   "ON users (display_name)")
    """
    add_migration(versions_copy, "002", "001", "beta_and_indexes", upgrade, DROP_UNIQUE_ONLINE)
    _duplicates(initial_db)
    target(initial_db, monkeypatch)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    with pytest.raises(MigrationFailed) as failed:
        render.deliver(commands.migrate_up())
    hint = failed.value.hint or ""
    for stayed in (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_due_date",
        "UPDATE organizations SET settings",  # no trace in the catalog: only the log knows
        "DROP INDEX CONCURRENTLY public.uq_users_display_name;",
        "undo the rest by hand",
    ):
        assert stayed in hint, f"{stayed!r} missing from: {hint}"
    assert current_revision(initial_db) == "001"
