"""The schema tests write rows by hand (tests/test_schema_*.py). When a migration changes
a table under them, they fail saying which statement to update, not with a database
traceback that reads like a broken schema."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tests.helpers import by_hand, refused

PROJECT = (
    "INSERT INTO organizations (name, slug) VALUES ('Acme', 'acme');"
    "INSERT INTO projects (organization_id, key, name) "
    "SELECT id, 'WEB', 'Website' FROM organizations"
)
TASK = "INSERT INTO tasks (project_id, number, title) SELECT id, 1, 'First' FROM projects"


def test_a_hand_insert_after_a_column_rename_names_the_table_and_the_statement(
    db_at_001: Connection,
) -> None:
    db_at_001.execute(text(PROJECT))
    db_at_001.execute(text("ALTER TABLE tasks RENAME COLUMN title TO summary"))
    with pytest.raises(pytest.fail.Exception) as failed:
        by_hand(db_at_001, TASK)
    message = str(failed.value)
    assert "this test writes rows by hand into tasks: a migration changed tasks" in message
    assert 'column "title" of relation "tasks" does not exist' in message, message
    assert "test_hand_written_rows.py:" in message and "Daily workflow" in message, message
    assert TASK in message, message


def test_a_rule_case_tells_a_missing_column_from_a_refusal(db_at_001: Connection) -> None:
    db_at_001.execute(text(PROJECT))
    empty_title = TASK.replace("'First'", "''")
    assert refused(db_at_001, empty_title) == "23514"  # ck_tasks_title_length
    db_at_001.execute(text("ALTER TABLE tasks RENAME COLUMN title TO summary"))
    with pytest.raises(pytest.fail.Exception) as failed:
        refused(db_at_001, empty_title)
    assert "a migration changed tasks" in str(failed.value), failed.value


def test_a_hand_insert_that_goes_through_returns_its_result(db_at_001: Connection) -> None:
    db_at_001.execute(text(PROJECT))
    assert by_hand(db_at_001, TASK + " RETURNING number").scalar_one() == 1
