"""A migration step never blocks the application past the blocking budget: a step that
holds a lock blocking the application's statements on a filled table for longer is
cancelled and rolled back, with a clear error and exit code 10; turning the budget off
(a maintenance window) applies it, and the history says so; a lock wait behind a long
reader is cut at the budget and retried; `migrate.plan` names the statement beforehand.

The slow rewrite is made slow on purpose (a conversion function that sleeps per row), so
that it outlasts a small budget by far on any machine: nothing here is timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import (
    add_migration,
    add_task_estimates,
    an_attempt_failed,
    as_env,
    connect,
    current_revision,
    scalar,
    tasks_in_a_project,
    wait_until,
)

ROWS = 10
SLOW_ROW_SECONDS = 0.05
"""A rewrite of ROWS rows takes ROWS times this (0.5 s), against budgets of 100 ms."""

COLUMN_TYPE = (
    "SELECT data_type FROM information_schema.columns "
    "WHERE table_name = 'tasks' AND column_name = 'number'"
)


@pytest.fixture
def slow_rewrite(initial_db: URL, versions_copy: Path) -> dict[str, str]:
    """A database at 001 with ROWS tasks, and a 002 that rewrites tasks slowly under
    ACCESS EXCLUSIVE (ALTER COLUMN TYPE through a function that sleeps per row)."""
    tasks_in_a_project(initial_db, ROWS)
    with connect(initial_db, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow_bigint(value integer) RETURNS bigint LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_sleep({SLOW_ROW_SECONDS}); RETURN value; END $$"
        )
    add_migration(
        versions_copy,
        "002",
        "001",
        "widen_task_number",
        'op.execute("ALTER TABLE tasks ALTER COLUMN number TYPE bigint USING slow_bigint(number)")',
        'op.execute("ALTER TABLE tasks ALTER COLUMN number TYPE integer")',
    )
    return {
        **as_env(initial_db),
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
        "WORKTRACKER_BLOCKING_BUDGET": "100ms",
    }


def test_a_rewrite_past_the_budget_is_cancelled_and_rolled_back(
    invoke, initial_db: URL, slow_rewrite: dict[str, str]
) -> None:
    result = invoke("migrate.up", env=slow_rewrite)
    assert result.returncode == 10, result.explain()
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    for words in (
        "blocking budget (100 ms)",
        "held ACCESS EXCLUSIVE on public.tasks",
        "ALTER TABLE tasks ALTER COLUMN number TYPE bigint",
        "expand, backfill in batches, contract",
        "WORKTRACKER_BLOCKING_BUDGET=0",
    ):
        assert words in message, result.explain()
    assert current_revision(initial_db) == "001"
    assert scalar(initial_db, COLUMN_TYPE) == "integer", "the rewrite was rolled back"
    assert scalar(initial_db, "SELECT count(*) FROM tasks") == ROWS
    error = scalar(
        initial_db, "SELECT error FROM migrations.history WHERE revision = '002' AND NOT success"
    )
    assert "blocking budget" in error and "public.tasks" in error, error


def test_turning_the_budget_off_applies_it_and_the_history_says_so(
    invoke, initial_db: URL, slow_rewrite: dict[str, str]
) -> None:
    result = invoke("migrate.up", env={**slow_rewrite, "WORKTRACKER_BLOCKING_BUDGET": "0"})
    assert result.returncode == 0, result.explain()
    assert current_revision(initial_db) == "002"
    assert scalar(initial_db, COLUMN_TYPE) == "bigint"
    note = scalar(
        initial_db, "SELECT note FROM migrations.history WHERE revision = '002' AND success"
    )
    assert note and "blocking budget off" in note, note


def test_a_lock_wait_behind_a_long_reader_is_cut_at_the_budget_and_retried(
    spawn, initial_db: URL, versions_copy: Path
) -> None:
    add_task_estimates(versions_copy)
    env = {
        **as_env(initial_db),
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
        # lock_timeout alone would let it queue (and the application behind it) for 60 s.
        "WORKTRACKER_DDL_LOCK_TIMEOUT": "60s",
        "WORKTRACKER_BLOCKING_BUDGET": "200ms",
        "WORKTRACKER_DDL_LOCK_RETRIES": "50",
        "WORKTRACKER_DDL_LOCK_BACKOFF": "0.2",
    }
    reader = connect(initial_db)
    try:
        reader.execute("SELECT count(*) FROM tasks")  # holds ACCESS SHARE until it ends
        process = spawn("migrate.up", env=env)
        wait_until(
            lambda: an_attempt_failed(initial_db, "002"),
            "an attempt to give up at the budget",
            timeout=60,
        )
    finally:
        reader.rollback()
        reader.close()
    result = finish(process)
    assert result.returncode == 0, result.explain()
    assert current_revision(initial_db) == "002"
    error = scalar(
        initial_db,
        "SELECT error FROM migrations.history WHERE revision = '002' AND NOT success "
        "ORDER BY started_at LIMIT 1",
    )
    assert "waited for ACCESS EXCLUSIVE on public.tasks" in error, error
    assert "(attempt 1 of 51)" in error, error


@pytest.mark.waits
def test_plan_names_the_statement_over_the_budget(
    invoke, initial_db: URL, slow_rewrite: dict[str, str]
) -> None:
    result = invoke("migrate.plan", env=slow_rewrite)
    assert result.returncode == 0, result.explain()
    text = " ".join(result.stdout.split())
    assert "Over the blocking budget (100 ms," in text, result.explain()
    assert "ALTER TABLE tasks ALTER COLUMN number TYPE bigint" in text, result.explain()
    result = invoke("migrate.plan", "--json", env=slow_rewrite)
    document = json.loads(result.stdout)
    (statement,) = [s for s in document["impact"][0]["statements"] if "TYPE bigint" in s["sql"]]
    assert any(lock["over_budget"] for lock in statement["locks"]), statement
    assert current_revision(initial_db) == "001"
