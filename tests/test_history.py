"""Every apply and rollback is recorded in migrations.history, which no rollback touches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from db import history
from tests.conftest import VERSIONS, make_engine
from tests.helpers import add_migration, as_env, connect, current_revision, scalar


def _history(invoke, env: dict[str, str]) -> list[dict]:
    result = invoke("migrate.history", "--json", env=env)
    assert result.returncode == 0, result.explain()
    return json.loads(result.stdout)


def test_history_survives_a_full_rollback_and_reapply(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    for args in (("migrate.up",), ("migrate.down", "--to", "base"), ("migrate.up",)):
        result = invoke(*args, env=env)
        assert result.returncode == 0, result.explain()

    rows = _history(invoke, env)
    steps = [(r["direction"], r["revision"], r["from_revision"], r["to_revision"]) for r in rows]
    assert steps == [
        ("up", "001", None, "001"),
        ("down", "001", "001", None),
        ("up", "001", None, "001"),
    ], steps
    file_sum = hashlib.sha256((VERSIONS / "001_initial_schema.py").read_bytes()).hexdigest()
    for row in rows:
        assert row["success"] is True and row["error"] is None, row
        assert row["duration_ms"] > 0, row
        assert row["checksum"] == file_sum, row
        assert row["db_user"] and row["os_user"] and row["host"], row
        assert row["tool_version"].startswith("worktracker-schema "), row
        assert row["description"] == "initial schema", row
    starts = [r["started_at"] for r in rows]
    assert starts == sorted(starts), "rows must be in the order the steps ran"


def test_rollback_to_base_keeps_history_out_of_the_app_schema(invoke, initial_db: URL) -> None:
    env = as_env(initial_db)
    assert invoke("migrate.down", "--to", "base", env=env).returncode == 0
    tables = scalar(
        initial_db,
        "SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY 1) "
        "FROM information_schema.tables WHERE table_schema NOT IN "
        "('pg_catalog', 'information_schema')",
    )
    assert tables == "migrations.alembic_version,migrations.history", tables


def test_failed_migration_leaves_previous_revision_and_a_failure_row(
    invoke, empty_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "doomed",
        'op.execute("CREATE TABLE doomed (id int)")\nop.execute("SELECT 1/0")',
        'op.drop_table("doomed")',
    )
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "Traceback" not in result.output, result.explain()
    for fragment in ("migration 002", "division by zero", "002_doomed.py:", "at 001"):
        assert fragment in result.stderr, result.explain()

    assert current_revision(empty_db) == "001", "001 committed on its own; 002 rolled back"
    assert scalar(empty_db, "SELECT to_regclass('doomed')") is None, "002 was partly applied"
    last = _history(invoke, env)[-1]
    assert (last["revision"], last["direction"], last["success"]) == ("002", "up", False), last
    assert "division by zero" in last["error"], last


def test_history_is_append_only(initial_db: URL) -> None:
    engine = make_engine(initial_db)
    with engine.connect() as connection:  # bookkeeping appears with the first locked run
        history.ensure_table(connection)
    engine.dispose()
    with connect(initial_db, autocommit=True) as conn:
        for statement in (
            "UPDATE migrations.history SET note = 'x'",
            "DELETE FROM migrations.history",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)


def test_status_shows_when_and_by_whom(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    assert invoke("migrate.up", env=env).returncode == 0
    status = invoke("migrate.status", env=env)
    assert status.returncode == 0, status.explain()
    line = next(line for line in status.stdout.splitlines() if line.startswith("001"))
    assert "applied" in line and " UTC" in line and " as " in line, status.explain()


def test_status_json_is_for_scripts(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    assert invoke("migrate.up", env=env).returncode == 0
    result = invoke("migrate.status", "--json", env=env)
    assert result.returncode == 0, result.explain()
    status = json.loads(result.stdout)
    assert status["current"] == "001"
    (migration,) = status["migrations"]
    assert migration["state"] == "applied" and migration["applied_at"], migration
    assert migration["file"] == "001_initial_schema.py"
