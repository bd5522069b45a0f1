"""Drift: a database is compared with what its migrations make at its own revision.

Changes made by hand (an index, a type, a default, a dropped trigger, a table in another
schema, an enum label) are each named; a clean database is clean; databases at
different revisions are each compared with their own revision, and databases at the same
revision share one build; the run never writes (a read-only role is enough, and a
database at base gets no bookkeeping schema); an unreachable database is a row, not a
crash."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db import drift, planning, revisions, runner, targets, throwaway
from tests.conftest import make_engine
from tests.helpers import add_task_estimates, as_env, connect, scalar

NOWHERE = "postgresql://postgres@/nowhere?host=/nonexistent-socket-dir"
BY_HAND = [
    "CREATE INDEX tasks_title_by_hand ON tasks (title)",
    "ALTER TABLE tasks ALTER COLUMN description TYPE varchar(2000)",
    "ALTER TABLE tasks ALTER COLUMN priority SET DEFAULT 3",
    "DROP TRIGGER trg_tasks_set_updated_at ON tasks",
    "CREATE SCHEMA reporting",
    "CREATE TABLE reporting.daily (day date PRIMARY KEY, tasks int NOT NULL)",
    "ALTER TYPE task_status ADD VALUE 'blocked'",
]
EXPECTED_LINES = [
    "+ index tasks_title_by_hand on public.tasks",
    "~ column public.tasks.description type text → character varying(2000)",
    "~ column public.tasks.priority default: 2 → 3",
    "- trigger trg_tasks_set_updated_at on public.tasks",
    "+ schema reporting",
    "+ table reporting.daily",
    "+ enum label public.task_status 'blocked'",
]


def _run_sql(url: URL, *statements: str) -> None:
    with connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def build_here(pg_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build expected catalogs on the tests' own server, not on a new one per check."""
    monkeypatch.setenv("TEST_DATABASE_URL", as_env(pg_server.admin_url)["DATABASE_URL"])


@pytest.fixture
def reader(pg_server) -> Iterator[str]:
    """A role that can read everything and write nothing."""
    name = f"reader_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
        conn.execute(f"GRANT pg_read_all_data TO {name}")
        conn.execute(f"ALTER ROLE {name} SET default_transaction_read_only = on")
    yield name
    with pg_server.admin() as conn:
        conn.execute(f"DROP ROLE {name}")


def test_a_clean_database_has_no_drift(invoke, initial_db: URL, build_here) -> None:
    done = invoke("migrate.drift", env=as_env(initial_db))
    assert done.returncode == 0, done.explain()
    assert "No drift" in done.stdout and "at 001" in done.stdout, done.explain()


def test_changes_made_by_hand_are_each_named(invoke, initial_db: URL, build_here) -> None:
    _run_sql(initial_db, *BY_HAND)
    done = invoke("migrate.drift", env=as_env(initial_db))
    assert done.returncode == 8, done.explain()
    for line in EXPECTED_LINES:
        assert line in done.stdout, f"missing {line!r}\n{done.explain()}"
    assert "1 of 1 database(s) drifted" in done.stderr and "hint:" in done.stderr


def test_a_read_only_role_can_check_and_nothing_is_written(
    invoke, pg_server, initial_db: URL, empty_db: URL, reader: str, build_here
) -> None:
    _run_sql(initial_db, "CREATE INDEX tasks_title_by_hand ON tasks (title)")
    as_reader = initial_db.set(username=reader, password=None)
    done = invoke("migrate.drift", env=as_env(as_reader))
    assert done.returncode == 8, done.explain()
    assert "+ index tasks_title_by_hand on public.tasks" in done.stdout, done.explain()

    # A database at base: drift must not create the bookkeeping schema to read it.
    _run_sql(empty_db, "CREATE TABLE made_by_hand (id int)")
    done = invoke("migrate.drift", "--json", env=as_env(empty_db))
    assert done.returncode == 8, done.explain()
    [row] = json.loads(done.stdout)
    assert row["revision"] is None and row["drift"] is True, row
    assert any(d.startswith("+ table public.made_by_hand") for d in row["differences"]), row
    assert scalar(empty_db, "SELECT to_regnamespace('migrations')") is None


def test_an_unreachable_database_is_a_clear_error(invoke) -> None:
    done = invoke("migrate.drift", env={"DATABASE_URL": NOWHERE})
    assert done.returncode == 3, done.explain()
    assert done.stderr.startswith("error: could not connect") and "Traceback" not in done.stderr


def _target(url: URL | str, environment: str = "shards") -> targets.Target:
    from db import urls

    parsed = urls.parse(url if isinstance(url, str) else as_env(url)["DATABASE_URL"])
    return targets.Target(environment, parsed)


def test_each_database_is_compared_at_its_own_revision_with_one_build_per_server(
    pg_server,
    versions_copy: Path,
    initial_template: str,
    build_here,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_task_estimates(versions_copy)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    at_001 = [pg_server.create_database(template=initial_template) for _ in range(2)]
    at_002 = [pg_server.create_database(template=initial_template) for _ in range(2)]
    for url in at_002:  # 002 applied by hand, with the history a run would leave
        _run_sql(
            url,
            "ALTER TABLE tasks ADD COLUMN estimate integer",
            "UPDATE migrations.alembic_version SET version_num = '002'",
        )
    _run_sql(at_001[1], "ALTER TABLE tasks ADD COLUMN estimate integer")  # ahead of its files
    builds: list[set] = []
    real = drift._expected
    monkeypatch.setattr(
        drift, "_expected", lambda major, wanted: builds.append(wanted) or real(major, wanted)
    )
    try:
        chosen = [_target(url) for url in [*at_001, *at_002]] + [_target(NOWHERE)]
        findings = drift.check(chosen, parallel=3)
    finally:
        for url in [*at_001, *at_002]:
            pg_server.drop_database(url.database)
    assert builds == [{"001", "002"}], builds  # one build serves both revisions
    results = [(f.revision, f.differences) for f in findings[:4]]
    assert results == [
        ("001", []),
        ("001", ["+ column public.tasks.estimate integer"]),
        ("002", []),
        ("002", []),
    ], results
    assert findings[4].error is not None and findings[4].error.exit_code == 3
    assert findings[4].differences is None and findings[4].result.startswith("could not connect")


@pytest.mark.skipif(
    throwaway.why_not("debian-15") is not None, reason="Debian's PostgreSQL 15 is not here"
)
def test_the_expected_schema_is_built_on_the_targets_major_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    with throwaway.server_of_kind("debian-15") as server:
        url = server.create_database()
        engine = make_engine(url)
        with engine.connect() as connection:
            runner.run(connection, planning.plan_upgrade(revisions.script_directory(), None, "001"))
        engine.dispose()
        _run_sql(url, "CREATE INDEX tasks_title_by_hand ON tasks (title)")
        [finding] = drift.check([_target(url)])
    assert finding.server_major == 15 and finding.note == "", finding
    assert finding.differences and finding.differences[0].startswith(
        "+ index tasks_title_by_hand on public.tasks"
    ), finding.differences
