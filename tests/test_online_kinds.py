"""The online forms the load run applies (benchmarks/online_kinds.py) do what their
blocking forms do, on a filled table, under a blocking budget that cancels any step
holding a blocking lock for longer than an instant."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from benchmarks.online_kinds import CASES
from tests.corpus import write_chain
from tests.helpers import as_env, current_revision, scalar, tasks_in_a_project

ROWS = 3000


@pytest.fixture
def filled_tasks(initial_db: URL) -> URL:
    tasks_in_a_project(initial_db, ROWS)
    return initial_db


def _apply(invoke, url: URL, kind: str, folder: Path) -> None:
    write_chain(folder, CASES[kind])
    env = {
        **as_env(url),
        "WORKTRACKER_VERSIONS_DIR": str(folder),
        "WORKTRACKER_BLOCKING_BUDGET": "2s",
    }
    result = invoke("migrate.up", env=env)
    assert result.returncode == 0, result.explain()
    assert current_revision(url) == f"{len(CASES[kind].migrations) + 1:03d}"


def test_type_widen_online_ends_with_a_bigint_number_and_its_constraints(
    invoke, filled_tasks: URL, tmp_path: Path
) -> None:
    _apply(invoke, filled_tasks, "type-widen-online", tmp_path / "chain")
    column = scalar(
        filled_tasks,
        "SELECT data_type || ' ' || is_nullable FROM information_schema.columns "
        "WHERE table_name = 'tasks' AND column_name = 'number'",
    )
    assert column == "bigint NO"
    assert scalar(filled_tasks, "SELECT sum(number) FROM tasks") == ROWS * (ROWS + 1) // 2
    constraints = scalar(
        filled_tasks,
        "SELECT string_agg(conname || ':' || convalidated, ',' ORDER BY conname) "
        "FROM pg_constraint WHERE conrelid = 'tasks'::regclass "
        "AND conname IN ('uq_tasks_project_id_number', 'ck_tasks_number_positive')",
    )
    assert constraints == "ck_tasks_number_positive:true,uq_tasks_project_id_number:true"


def test_not_null_online_fills_every_row_and_ends_not_null(
    invoke, filled_tasks: URL, tmp_path: Path
) -> None:
    _apply(invoke, filled_tasks, "not-null-online", tmp_path / "chain")
    assert scalar(filled_tasks, "SELECT count(*) FROM tasks WHERE weight <> priority + 1") == 0
    nullable = scalar(
        filled_tasks,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'tasks' AND column_name = 'weight'",
    )
    assert nullable == "NO"
