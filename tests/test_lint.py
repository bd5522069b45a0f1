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
DROP_CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.drop_index(
        "ix_tasks_due_date", table_name="tasks", postgresql_concurrently=True, if_exists=True
    )
"""


def test_the_chain_passes_lint(invoke) -> None:
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(VERSIONS)})
    assert result.returncode == 0, result.explain()
    assert "001  001_initial_schema.py: ok" in result.stdout, result.explain()


def test_index_on_an_existing_table_without_concurrently_fails(invoke, versions_copy: Path) -> None:
    add_migration(versions_copy, "002", "001", "due_date_index", PLAIN_INDEX, DROP_INDEX)
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 8, result.explain()
    assert "require-concurrent-index-creation" in result.stdout, result.explain()
    path = versions_copy / "002_due_date_index.py"
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if "create_index" in text
    )
    assert f"002_due_date_index.py:{line}: require-concurrent-index-creation" in result.stdout, (
        result.explain()
    )
    assert "hint: build the index CONCURRENTLY" in result.stdout, result.explain()


def test_a_reviewed_exception_belongs_to_one_migration(invoke, versions_copy: Path) -> None:
    path = add_migration(versions_copy, "002", "001", "due_date_index", PLAIN_INDEX, DROP_INDEX)
    source = path.read_text().replace(
        "depends_on = None",
        'depends_on = None\nsquawk_ignore = {"require-concurrent-index-creation": '
        '"tasks is empty until launch", "require-concurrent-index-deletion": "idem"}',
    )
    path.write_text(source)
    add_migration(
        versions_copy,
        "003",
        "002",
        "another_index",
        PLAIN_INDEX.replace("ix_tasks_due_date", "ix_tasks_created_at").replace(
            "due_date", "created_at"
        ),
        DROP_INDEX.replace("ix_tasks_due_date", "ix_tasks_created_at"),
    )
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 8, result.explain()
    assert "002  002_due_date_index.py: ok" in result.stdout, result.explain()
    assert "ignores require-concurrent-index-creation: tasks is empty until launch" in (
        result.stdout
    )
    assert "003_another_index.py:" in result.stdout, "the exception is 002's alone"


def test_concurrent_index_in_an_autocommit_block_passes(invoke, versions_copy: Path) -> None:
    add_migration(
        versions_copy, "002", "001", "due_date_index", CONCURRENT_INDEX, DROP_CONCURRENT_INDEX
    )
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 0, result.explain()


def test_an_exception_in_a_migration_keeps_the_projects_exclusions(
    invoke, versions_copy: Path
) -> None:
    # An integer column (prefer-bigint-over-int, excluded in .squawk.toml) with a CHECK
    # added in the same migration (constraint-missing-not-valid, ignored by the file).
    upgrade = (
        'op.add_column("tasks", sa.Column("estimate_minutes", sa.Integer()))\n'
        'op.create_check_constraint(op.f("ck_tasks_estimate_minutes"), "tasks", '
        '"estimate_minutes >= 0")'
    )
    downgrade = 'op.drop_column("tasks", "estimate_minutes")'
    path = add_migration(versions_copy, "002", "001", "task_estimates", upgrade, downgrade)
    path.write_text(
        path.read_text()
        .replace("from alembic import op", "import sqlalchemy as sa\nfrom alembic import op")
        .replace(
            "depends_on = None",
            'depends_on = None\nsquawk_ignore = {"constraint-missing-not-valid": '
            '"the column is new: every row is NULL"}',
        )
    )
    result = invoke("migrate.lint", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 0, result.explain()
    assert "prefer-bigint-over-int" not in result.stdout, (
        "a migration's squawk_ignore replaced the rules .squawk.toml excludes\n" + result.explain()
    )


def _lint_in_process(versions: Path, monkeypatch, capsys) -> str:
    from db import commands, render
    from db.errors import CheckFailed

    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions))
    try:
        render.deliver(commands.migrate_lint())
    except CheckFailed as failed:
        return capsys.readouterr().out + failed.render()
    return capsys.readouterr().out


def _line_of(path: Path, fragment: str, after: str = "def upgrade") -> int:
    lines = path.read_text().splitlines()
    start = next(n for n, text in enumerate(lines) if after in text)
    return next(n for n, text in enumerate(lines[start:], start + 1) if fragment in text)


def test_findings_point_at_the_line_that_wrote_the_statement(
    versions_copy: Path, monkeypatch, capsys
) -> None:
    # The names of the renamed column appear on earlier lines too (a comment on it, and
    # the upgrade for the downgrade's statement): only the call that wrote it counts.
    upgrade = """
    op.execute("COMMENT ON COLUMN tasks.title IS 'what the task is'")
    op.alter_column("tasks", "title", new_column_name="name")
    with op.get_context().autocommit_block():
        op.drop_index("ix_tasks_reporter_id", table_name="tasks",
                      postgresql_concurrently=True, if_exists=True)
    """
    downgrade = """
    op.create_index("ix_tasks_reporter_id", "tasks", ["reporter_id"])
    op.alter_column("tasks", "name", new_column_name="title")
    """
    path = add_migration(versions_copy, "002", "001", "rename_title", upgrade, downgrade)
    output = _lint_in_process(versions_copy, monkeypatch, capsys)
    rename = _line_of(path, "new_column_name")
    index = _line_of(path, "op.create_index", after="def downgrade")
    assert f"002_rename_title.py:{rename}: renaming-column (in upgrade())" in output, output
    assert f"002_rename_title.py:{index}: require-concurrent-index-creation (in downgrade())" in (
        output
    )


def test_a_migration_that_reads_the_database_is_a_warning_not_a_traceback(
    versions_copy: Path, monkeypatch, capsys
) -> None:
    upgrade = """
    op.create_index("ix_tasks_due_date", "tasks", ["due_date"])
    if op.get_bind().dialect.server_version_info >= (15,):
        op.execute("SELECT 1")
    """
    add_migration(versions_copy, "002", "001", "depends_on_version", upgrade, DROP_INDEX)
    output = _lint_in_process(versions_copy, monkeypatch, capsys)
    assert "require-concurrent-index-creation" in output, "what came before the read is linted"
    assert "warning: upgrade() not checked from 002_depends_on_version.py:" in output, output
    assert "reads the database (op.get_bind())" in output, output
