"""`migrate.plan` measures what each statement of a migration does to a live application,
on the rehearsal against real PostgreSQL: the locks it takes and how long they stay held,
rewrites and scans, the rows it touches, and the application statements it blocks."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from db import commands, lock_modes, render, urls
from db.throwaway import Server
from tests.conftest import Filled
from tests.corpus import BY_NAME
from tests.corpus_run import filled_at_001, target, use_chain
from tests.helpers import scalar


@pytest.fixture
def planned(pg_server: Server, filled_template: Filled, tmp_path: Path, monkeypatch, capsys):
    """plan(case name, as_json) on a database at 001 whose tables hold sample rows."""

    def plan(name: str, as_json: bool = True):
        use_chain(BY_NAME[name], tmp_path / name, monkeypatch)
        with filled_at_001(pg_server, filled_template) as (url, _):
            target(url, monkeypatch)
            render.deliver(commands.migrate_plan(as_json=as_json))
            out = capsys.readouterr().out
            tasks = scalar(url, "SELECT count(*) FROM tasks")
        return (json.loads(out) if as_json else out), tasks

    return plan


def _statements(document: dict, revision: str = "002") -> list[dict]:
    [step] = [s for s in document["impact"] if s["revision"] == revision]
    return step["statements"]


def _locks(statement: dict, table: str = "public.tasks") -> dict[str, dict]:
    return {lock["mode"]: lock for lock in statement["locks"] if lock["relation"] == table}


def test_a_blocking_index_build_holds_share_until_commit_and_scans_the_table(planned) -> None:
    document, tasks = planned("index-without-concurrently")
    [statement] = _statements(document)
    assert statement["sql"].startswith("CREATE INDEX ix_tasks_due_date"), statement
    lock = _locks(statement)["SHARE"]
    assert lock["until"] == "commit"
    assert lock["blocks"] == ["INSERT", "UPDATE", "DELETE"], "SHARE lets SELECT through"
    assert lock["held_seconds"] >= statement["seconds"], "held from its statement to commit"
    assert tasks > 0 and statement["scanned"] == {"public.tasks": tasks}
    assert statement["rewritten"] == []


def test_concurrently_reports_its_own_lock_held_for_the_statement_only(planned) -> None:
    document, _ = planned("online-index-create")
    [statement] = _statements(document)
    assert statement["autocommit"] is True
    [lock] = statement["locks"]
    assert (lock["relation"], lock["mode"]) == ("public.tasks", "SHARE UPDATE EXCLUSIVE")
    # The rehearsal built it inside its transaction, without CONCURRENTLY.
    assert lock["measured_mode"] == "SHARE"
    assert lock["until"] == "statement" and lock["blocks"] == []


def test_a_type_change_rewrites_the_table_under_access_exclusive(planned) -> None:
    document, _ = planned("type-widen")
    [statement] = _statements(document)
    assert statement["rewritten"] == ["public.tasks"]
    lock = _locks(statement)["ACCESS EXCLUSIVE"]
    assert lock["blocks"] == ["SELECT", "INSERT", "UPDATE", "DELETE"]
    assert lock["until"] == "commit"
    # Its indexes are rebuilt under the same lock.
    assert any(
        x["table"] == "public.tasks" and x["relation"] != x["table"] for x in statement["locks"]
    )


def test_a_backfill_reports_its_rows_and_set_not_null_its_validating_scan(planned) -> None:
    document, tasks = planned("not-null-with-backfill")
    add, backfill, not_null = _statements(document)
    assert "ACCESS EXCLUSIVE" in _locks(add) and add["scanned"] == {}, "a nullable column: no scan"
    assert backfill["updated"] == {"public.tasks": tasks}
    assert backfill["row_locks"] == {"public.tasks": tasks}
    assert "SET NOT NULL" in not_null["sql"]
    assert not_null["scanned"] == {"public.tasks": tasks}, "SET NOT NULL reads every row"
    assert not_null["locks"] == [] and not_null["under"] == {"public.tasks": "AccessExclusiveLock"}


def test_a_foreign_key_locks_both_tables_and_validates(planned) -> None:
    document, tasks = planned("foreign-key-validating")
    statement = next(s for s in _statements(document) if "FOREIGN KEY" in s["sql"])
    for table in ("public.tasks", "public.users"):
        lock = _locks(statement, table)["SHARE ROW EXCLUSIVE"]
        assert lock["blocks"] == ["INSERT", "UPDATE", "DELETE"], table
    assert statement["scanned"].get("public.tasks", 0) >= tasks, "the check reads every row"


def test_not_valid_then_validate_never_blocks_writes_while_it_scans(planned) -> None:
    document, tasks = planned("check-not-valid-then-validate")
    [add] = _statements(document, "002")
    assert add["scanned"] == {}, "NOT VALID reads no row"
    [validate] = _statements(document, "003")
    assert _locks(validate)["SHARE UPDATE EXCLUSIVE"]["blocks"] == []
    assert validate["scanned"] == {"public.tasks": tasks}


def test_the_measurement_reports_no_lock_of_its_own_or_of_the_rehearsal(planned) -> None:
    # An enum label touches no table: any lock reported would come from the tool's own
    # reads (catalog, pg_locks, statistics) or from Alembic's version table.
    document, _ = planned("enum-label-add")
    assert [(s["revision"], s["statements"]) for s in document["impact"]] == [("002", [])]
    text, _ = planned("enum-label-add", as_json=False)
    assert "Locks on existing tables: none." in text, text


def test_the_plan_shows_a_table_per_migration(planned) -> None:
    text, _ = planned("check-validating", as_json=False)
    assert "Locks on existing tables, measured in the rehearsal:" in text, text
    assert "002 check priority not negative" in text, text
    [row] = [line for line in text.splitlines() if line.startswith("ALTER TABLE tasks ADD")]
    for words in ("ACCESS EXCLUSIVE", "public.tasks", "to commit", "SELECT, INSERT", "scanned"):
        assert words in row, row
    assert "lock_timeout" in text, text


@pytest.mark.parametrize("mode", lock_modes.MODES)
def test_the_conflict_table_is_postgresqls(mode: str, empty_db) -> None:
    """What blocked_by() says each mode blocks is what PostgreSQL really blocks."""
    conninfo = urls.libpq(empty_db).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO t VALUES (1, 1) ON CONFLICT DO NOTHING")
    statements = {
        "SELECT": "SELECT * FROM t",
        "INSERT": "INSERT INTO t VALUES (2, 2)",
        "UPDATE": "UPDATE t SET v = 3 WHERE id = 2",
        "DELETE": "DELETE FROM t WHERE id = 3",
    }
    blocked = []
    with psycopg.connect(conninfo) as holder, psycopg.connect(conninfo) as app:
        holder.execute(f"LOCK TABLE t IN {lock_modes.SHOWN[mode]} MODE")
        for name, sql in statements.items():
            app.execute("SET lock_timeout = '50ms'")
            try:
                app.execute(sql)
            except errors.LockNotAvailable:
                blocked.append(name)
            app.rollback()
        holder.rollback()
    assert lock_modes.blocked_by(mode) == blocked
