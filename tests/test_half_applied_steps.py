"""A migration that mixes an autocommit_block() with statements outside it can fail
between two revisions: the static checks refuse it, and `migrate.up` does not start it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db import commands, render
from db.errors import ConfigError
from db.roundtrip import static
from tests.corpus import BY_NAME, CASES, write_chain
from tests.corpus_run import target
from tests.helpers import add_migration, current_revision, scalar

MIXED = BY_NAME["autocommit-mixed-with-transaction"]


def test_only_a_block_mixed_with_other_statements_is_refused(tmp_path: Path) -> None:
    refused = set()
    for case in CASES:
        for path in write_chain(tmp_path / case.name, case):
            if static.mixed_autocommit(path):
                refused.add(case.name)
    # Online indexes and enum labels alone in their block pass, as do the downgrades that
    # rebuild a type without one.
    assert refused == {MIXED.name}, refused


@pytest.mark.parametrize(
    ("upgrade", "mixed"),
    [
        ('op.execute("SELECT 1")\nbind = op.get_bind()', False),
        ('with op.get_context().autocommit_block():\n    op.execute("VACUUM tasks")', False),
        (
            'with op.get_context().autocommit_block():\n    op.execute("VACUUM tasks")\n'
            'op.get_bind().execute(sa.text("UPDATE tasks SET priority = 0"))',
            True,
        ),
        (
            "if True:\n    op.drop_column('tasks', 'due_date')\n"
            "    with op.get_context().autocommit_block():\n        op.execute('VACUUM tasks')",
            True,
        ),
    ],
    ids=["no-block", "block-alone", "after-the-block", "nested"],
)
def test_what_counts_as_mixing(versions_copy: Path, upgrade: str, mixed: bool) -> None:
    path = add_migration(versions_copy, "002", "001", "x", upgrade, "pass")
    assert bool(static.mixed_autocommit(path)) is mixed, static.mixed_autocommit(path)


def test_up_refuses_a_mixed_migration_before_running_any_of_it(
    initial_db: URL, versions_copy: Path, monkeypatch
) -> None:
    upgrade = """
    op.add_column("tasks", sa.Column("estimate", sa.SmallInteger(), nullable=True))
    with op.get_context().autocommit_block():
        op.create_index("ix_tasks_estimate", "tasks", ["estimate"],
                        postgresql_concurrently=True, if_not_exists=True)
    """
    path = add_migration(
        versions_copy,
        "002",
        "001",
        "add_task_estimate",
        upgrade,
        'op.drop_column("tasks", "estimate")',
    )
    path.write_text(
        path.read_text().replace("from alembic", "import sqlalchemy as sa\nfrom alembic")
    )
    target(initial_db, monkeypatch)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    with pytest.raises(ConfigError) as refused:
        render.deliver(commands.migrate_up())
    assert "002_add_task_estimate.py: upgrade() runs SQL outside" in refused.value.message
    assert "split it into two migrations" in (refused.value.hint or "")
    assert current_revision(initial_db) == "001"
    assert (
        scalar(
            initial_db,
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'estimate'",
        )
        == 0
    ), "nothing of it may run"
