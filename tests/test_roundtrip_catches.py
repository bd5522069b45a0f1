"""The checker must be able to fail: deliberately broken migrations, each caught with a
clear diff that names the revision and the step."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.roundtrip import check
from db.roundtrip.results import DECLARED, FAIL, OK, Report, Result
from db.throwaway import Server
from tests.conftest import make_engine
from tests.corpus_run import database_at_001, stairway_from_001
from tests.helpers import add_migration

BROKEN = {
    "forgets-an-index": (
        'op.create_index("ix_tasks_due_date", "tasks", ["due_date"])',
        'op.execute("SELECT 1")  # forgets the index',
        "down",
        "CREATE INDEX ix_tasks_due_date",
    ),
    "forgets-an-enum": (
        """
        op.execute("CREATE TYPE reminder_channel AS ENUM ('email', 'push')")
        op.execute("ALTER TABLE tasks ADD COLUMN reminder_channel reminder_channel")
        """,
        'op.drop_column("tasks", "reminder_channel")  # forgets the type',
        "down",
        "+ enum public.reminder_channel (email, push)",
    ),
    "forgets-a-trigger": (
        'op.execute("CREATE TRIGGER trg_users_touch BEFORE UPDATE ON users '
        'FOR EACH ROW EXECUTE FUNCTION set_updated_at()")',
        'op.execute("SELECT 1")  # forgets the trigger',
        "down",
        "CREATE TRIGGER trg_users_touch",
    ),
    "forgets-a-column-default": (
        "op.execute(\"ALTER TABLE tasks ALTER COLUMN description SET DEFAULT ''\")",
        'op.execute("SELECT 1")  # forgets the default',
        "down",
        "~ column public.tasks.description default: none → ''::text",
    ),
    "forgets-a-constraint-comment": (
        "op.execute(\"COMMENT ON CONSTRAINT pk_users ON users IS 'the id'\")",
        'op.execute("SELECT 1")  # forgets the comment',
        "down",
        "comment the id",
    ),
    "forgets-extended-statistics": (
        'op.execute("CREATE STATISTICS st_tasks_project_status ON project_id, status FROM tasks")',
        'op.execute("SELECT 1")  # forgets the statistics object',
        "down",
        "statistics st_tasks_project_status",
    ),
    "forgets-a-storage-setting": (
        'op.execute("ALTER TABLE tasks ALTER COLUMN description SET STORAGE EXTERNAL")',
        'op.execute("SELECT 1")  # forgets the storage',
        "down",
        "storage external",
    ),
    "deletes-rows-it-does-not-own": (
        'op.add_column("comments", sa.Column("pinned", sa.Boolean(), nullable=True))',
        'op.drop_column("comments", "pinned")\nop.execute("DELETE FROM comments")',
        "data",
        "public.comments: 3 of 3 rows that existed before up are gone or changed",
    ),
}


def _write_002(versions: Path, monkeypatch, upgrade: str, downgrade: str, **extra: str) -> None:
    path = add_migration(versions, "002", "001", "broken", upgrade, downgrade)
    source = path.read_text().replace(
        "from alembic import op\n", "import sqlalchemy as sa\nfrom alembic import op\n"
    )
    for name, value in extra.items():
        source = source.replace("branch_labels = None", f"branch_labels = None\n{name} = {value!r}")
    path.write_text(source)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions))


def _stair_of_002(
    pg_server: Server,
    template: str,
    versions: Path,
    monkeypatch,
    upgrade: str,
    downgrade: str,
    **extra: str,
) -> list[Result]:
    """002's stair, where what these tests look at is decided: the whole roundtrip
    (check.run) would build 001's stair, the whole chain and the models check again."""
    _write_002(versions, monkeypatch, upgrade, downgrade, **extra)
    with database_at_001(pg_server, template) as url:
        return stairway_from_001(pg_server, url)


def _run_with_002(
    pg_server: Server, versions: Path, monkeypatch, upgrade: str, downgrade: str, **extra: str
) -> Report:
    _write_002(versions, monkeypatch, upgrade, downgrade, **extra)
    return check.run(pg_server)


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_roundtrip_catches(
    pg_server: Server, initial_template: str, versions_copy: Path, monkeypatch, case: str
) -> None:
    upgrade, downgrade, step, evidence = BROKEN[case]
    results = _stair_of_002(
        pg_server, initial_template, versions_copy, monkeypatch, upgrade, downgrade
    )
    caught = [r for r in results if r.status == FAIL and r.revision == "002" and r.step == step]
    assert caught, f"{case}: no failure at 002 {step}; got {results}"
    assert evidence in caught[0].detail, caught[0].detail
    if step == "down" and "rows changed" not in evidence:
        assert "--- 002 before up" in caught[0].detail, "the diff must be labelled"
        assert "+++ 002 after down" in caught[0].detail, "the diff must be labelled"


def test_declared_data_loss_is_listed_not_failed(
    pg_server: Server, initial_template: str, versions_copy: Path, monkeypatch
) -> None:
    results = _stair_of_002(
        pg_server,
        initial_template,
        versions_copy,
        monkeypatch,
        'op.execute("ALTER TABLE tasks ALTER COLUMN title TYPE varchar(5) USING left(title, 5)")',
        'op.execute("ALTER TABLE tasks ALTER COLUMN title TYPE text")',
        downgrade_loses_data="titles were cut to five characters",
    )
    data = next(r for r in results if r.revision == "002" and r.step == "data")
    assert data.status == DECLARED, data
    assert "titles were cut to five characters" in data.detail
    assert "public.tasks" in data.detail, data.detail
    stair = [r for r in results if r.status == FAIL and r.revision == "002"]
    assert not stair, stair


def test_rows_of_what_the_upgrade_created_are_listed_not_failed(
    pg_server: Server, initial_template: str, versions_copy: Path, monkeypatch
) -> None:
    results = _stair_of_002(
        pg_server,
        initial_template,
        versions_copy,
        monkeypatch,
        """
        op.execute(
            "CREATE TABLE reminders (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
            "task_id uuid NOT NULL REFERENCES tasks ON DELETE CASCADE, "
            "remind_at timestamptz NOT NULL)"
        )
        """,
        'op.drop_table("reminders")',
    )
    data = next(r for r in results if r.revision == "002" and r.step == "data")
    assert data.status == OK, data
    assert "drops what 002 created: table public.reminders (3 rows)" in data.note, data


def test_models_that_disagree_show_the_rendered_ops(
    pg_server: Server, versions_copy: Path, monkeypatch
) -> None:
    report = _run_with_002(
        pg_server,
        versions_copy,
        monkeypatch,
        'op.add_column("tasks", sa.Column("estimate", sa.Integer(), nullable=True))',
        'op.drop_column("tasks", "estimate")',
        downgrade_loses_data="estimates are dropped",
    )
    models = next(r for r in report.results if r.step == "models vs head")
    assert models.status == FAIL, models
    assert "op.drop_column('tasks', 'estimate')" in models.detail, models.detail


def test_models_in_another_schema_match_their_migration(
    pg_server: Server, initial_template: str, versions_copy: Path, monkeypatch
) -> None:
    """Models may live in any application schema: models vs head compares them there."""
    import sqlalchemy as sa

    from db import planning, revisions, runner
    from db.models import metadata
    from db.roundtrip.models_check import models_match

    table = sa.Table(
        "forecasts",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note", sa.Text, nullable=True),
        schema="planning",
    )
    try:
        report = _run_with_002(
            pg_server,
            versions_copy,
            monkeypatch,
            'op.execute("CREATE SCHEMA planning")\n'
            'op.create_table("forecasts", sa.Column("id", sa.Integer(), primary_key=True), '
            'sa.Column("note", sa.Text(), nullable=True), schema="planning")',
            'op.drop_table("forecasts", schema="planning")\nop.execute("DROP SCHEMA planning")',
        )
        models = next(r for r in report.results if r.step == "models vs head")
        # Only what concerns the planning table: the models may be past 001 (conftest).
        assert "forecasts" not in models.detail, models.detail
        table.append_column(sa.Column("extra", sa.Integer, nullable=True))
        # The same head, the model one column ahead: the check alone, on a database at 002.
        with database_at_001(pg_server, initial_template) as url:
            engine = make_engine(url)
            with engine.connect() as connection:
                plan = planning.plan_upgrade(revisions.script_directory(), "001", "002")
                runner.run(connection, plan)
                models = models_match(connection)
            engine.dispose()
        assert models.status == FAIL, "a column only the model has must be seen"
        assert "planning" in models.detail and "extra" in models.detail, models.detail
    finally:
        metadata.remove(table)
