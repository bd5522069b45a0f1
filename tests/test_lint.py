"""`migrate.lint`: squawk over each migration's offline SQL, with .squawk.toml."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import VERSIONS
from tests.helpers import add_migration

PLAIN_INDEX = 'op.create_index("ix_tasks_due_date", "tasks", ["due_date"])'
CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.create_index(
        "ix_tasks_due_date",
        "tasks",
        ["due_date"],
        postgresql_concurrently=True,
        if_not_exists=True,  # outside a transaction, a failed run must be rerunnable
    )
"""
DROP_INDEX = 'op.drop_index("ix_tasks_due_date", table_name="tasks")'


def test_the_chain_passes_lint(invoke) -> None:
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(VERSIONS)})
    assert result.returncode == 0, result.explain()
    assert "001  001_initial_schema.py: ok" in result.stdout, result.explain()


def test_index_on_an_existing_table_without_concurrently_fails(invoke, versions_copy: Path) -> None:
    add_migration(versions_copy, "002", "001", "due_date_index", PLAIN_INDEX, DROP_INDEX)
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 8, result.explain()
    assert "require-concurrent-index-creation" in result.stdout, result.explain()
    assert "002_due_date_index.sql" in result.stdout, "the report names the migration"


def test_concurrent_index_in_an_autocommit_block_passes(invoke, versions_copy: Path) -> None:
    add_migration(versions_copy, "002", "001", "due_date_index", CONCURRENT_INDEX, DROP_INDEX)
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 0, result.explain()
