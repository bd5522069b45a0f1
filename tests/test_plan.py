"""`migrate.plan` rehearses the change on the real database in one transaction, reports
the schema diff and each migration's time, then rolls everything back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from tests.helpers import add_migration, as_env, current_revision, scalar

CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.create_index(
        "ix_tasks_due_date", "tasks", ["due_date"], postgresql_concurrently=True
    )
"""


def test_plan_reports_the_diff_and_rolls_back(invoke, empty_db: URL) -> None:
    result = invoke("migrate.plan", env=as_env(empty_db))
    assert result.returncode == 0, result.explain()
    for fragment in (
        "base → 001",
        "↑ 001  initial schema",
        "Schema changes (",
        "+ table public.tasks (15 columns, 4 indexes, 10 constraints, 1 trigger)",
        "+ enum public.task_status (todo, in_progress, in_review, done, canceled)",
        "+ function set_updated_at() in public",
        "Rolled back after",
    ):
        assert fragment in result.stdout, f"missing {fragment!r}\n{result.explain()}"
    assert current_revision(empty_db) is None
    assert scalar(empty_db, "SELECT to_regclass('public.tasks')") is None, "the plan left tables"
    assert scalar(empty_db, "SELECT to_regclass('migrations.history')") is None


def test_plan_of_a_small_change(invoke, initial_db: URL, versions_copy: Path) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "estimate",
        'op.add_column("tasks", sa.Column("estimate", sa.Integer()))',
        'op.drop_column("tasks", "estimate")',
    )
    path = versions_copy / "002_estimate.py"
    path.write_text(
        path.read_text().replace(
            "from alembic import op", "import sqlalchemy as sa\nfrom alembic import op"
        )
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.plan", env=env)
    assert result.returncode == 0, result.explain()
    assert "Schema changes (1):" in result.stdout, result.explain()
    assert "+ column public.tasks.estimate integer" in result.stdout, result.explain()
    assert current_revision(initial_db) == "001"


def test_plan_rehearses_an_autocommit_block_inside_its_transaction(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "concurrent_index",
        CONCURRENT_INDEX,
        'op.drop_index("ix_tasks_due_date", table_name="tasks")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.plan", env=env)
    assert result.returncode == 0, result.explain()
    assert "↑ 002  concurrent index" in result.stdout, result.explain()
    assert (
        "+ index ix_tasks_due_date on public.tasks: "
        "CREATE INDEX ix_tasks_due_date ON public.tasks USING btree (due_date)" in result.stdout
    ), result.explain()
    assert scalar(initial_db, "SELECT to_regclass('ix_tasks_due_date')") is None
    assert current_revision(initial_db) == "001"


def test_plan_exits_4_when_the_rehearsal_fails(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "bad_sql",
        'op.execute("ALTER TABLE no_such_table ADD COLUMN x int")',
        'op.execute("SELECT 1")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.plan", env=env)
    assert result.returncode == 4, result.explain()
    assert "the rehearsal failed at 002 (bad sql)" in result.stderr, result.explain()
    assert "no_such_table" in result.stderr
    assert "nothing was changed" in result.stderr
    assert current_revision(initial_db) == "001"


THINGS = """
op.execute(
    "CREATE TABLE things (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, "
    "updated_at timestamptz NOT NULL DEFAULT now())"
)
op.execute(
    "CREATE TRIGGER trg_things_set_updated_at BEFORE UPDATE ON things "
    "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
)
op.execute("INSERT INTO things (name) VALUES ('a'), ('b')")
"""


def test_a_backfill_of_a_new_column_is_not_data_the_change_destroys(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    """The backfill fires the table's updated_at trigger, and the table's first column
    cannot be updated (GENERATED ALWAYS): neither is a loss."""
    add_migration(versions_copy, "002", "001", "things", THINGS, 'op.execute("DROP TABLE things")')
    add_migration(
        versions_copy,
        "003",
        "002",
        "thing_codes",
        'op.execute("ALTER TABLE things ADD COLUMN code text")\n'
        'op.execute("UPDATE things SET code = upper(name)")',
        'op.execute("ALTER TABLE things DROP COLUMN code")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    assert invoke("migrate.up", "--to", "002", env=env).returncode == 0
    result = invoke("migrate.plan", env=env)
    assert result.returncode == 0, result.explain()
    assert "+ column public.things.code text" in result.stdout, result.explain()
    assert "destroy" not in result.stdout, result.explain()


def test_a_new_default_reads_from_none(invoke, initial_db: URL, versions_copy: Path) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "estimate_default",
        "op.execute(\"ALTER TABLE tasks ALTER COLUMN description SET DEFAULT ''\")",
        'op.execute("ALTER TABLE tasks ALTER COLUMN description DROP DEFAULT")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.plan", env=env)
    assert result.returncode == 0, result.explain()
    assert "~ column public.tasks.description default: none → ''::text" in result.stdout, (
        result.explain()
    )
    assert "None" not in result.stdout, result.explain()
