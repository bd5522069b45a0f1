"""One roundtrip run reports every defect of a chain, each once, with no cascade: after a
failed step the database is put back where the next revision expects it."""

from __future__ import annotations

from pathlib import Path

from db.roundtrip import check
from db.roundtrip.results import OK, SKIPPED, Result
from db.throwaway import Server
from tests.corpus import Case, Expect, Migration
from tests.corpus_run import chain_results, use_chain

NOTES = """
op.create_table(
    "notes",
    sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
    sa.Column("task_id", sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
)
"""
ARCHIVE = """
op.create_table(
    "archive",
    sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
    sa.Column("note", sa.Text(), nullable=False),
)
"""

SEVERAL_DEFECTS = Case(
    "several-defects",
    (
        Migration("add_notes", NOTES, 'op.drop_table("notes")'),  # 002: fine
        Migration(  # 003: the down forgets the column
            "add_estimate",
            'op.add_column("tasks", sa.Column("estimate", sa.Integer(), nullable=True))',
            'op.execute("SELECT 1")',
        ),
        Migration(  # 004: fine, and needs 003's column: runs only if 003 was put back
            "index_estimate",
            'op.create_index("ix_tasks_estimate", "tasks", ["estimate"])',
            'op.drop_index("ix_tasks_estimate", table_name="tasks")',
        ),
        Migration(  # 005: data loss in a table that existed before it
            "add_pinned",
            'op.add_column("comments", sa.Column("pinned", sa.Boolean(), nullable=True))',
            'op.drop_column("comments", "pinned")\nop.execute("DELETE FROM notes")',
        ),
        Migration(  # 006: irreversible, creates a table
            "add_archive",
            ARCHIVE,
            'raise NotImplementedError("the archive stays")',
            {"irreversible": "the archive stays"},
        ),
        Migration(  # 007: loses the archive's rows: only seen if 006 left rows there
            "index_archive",
            'op.create_index("ix_archive_note", "archive", ["note"])',
            'op.drop_index("ix_archive_note", table_name="archive")\n'
            'op.execute("DELETE FROM archive")',
        ),
        Migration(  # 008: its down fails inside its transaction: no rebuild needed
            "touch_labels",
            "op.execute(\"COMMENT ON TABLE labels IS 'labels'\")",
            'op.execute("SELECT * FROM no_such_table")',
        ),
        Migration(  # 009: a table no sample row can satisfy
            "add_odd",
            'op.execute("CREATE TABLE odd (a int NOT NULL, CONSTRAINT ck_odd_never '
            'CHECK (a > 10 AND a < 5))")',
            'op.drop_table("odd")',
        ),
        Migration(  # 010: changes it again (not a second sample rows defect); its down
            "add_odd_b",  # forgets the column: a second rebuild, from the first one's copy
            'op.add_column("odd", sa.Column("b", sa.Integer()))',
            'op.execute("SELECT 1")',
        ),
        Migration(  # 011: a broken upgrade: nothing after it can run
            "broken",
            'op.execute("ALTER TABLE no_such_table ADD COLUMN x int")',
            'op.execute("SELECT 1")',
        ),
        Migration("after_a", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
        Migration("after_b", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
    ),
    Expect(False),
    whole_chain=True,
)


def _shown(results: list[Result]) -> str:
    return "\n".join(f"  {r.revision} {r.step}: {r.status} {r.note}" for r in results)


def test_one_run_lists_every_defect_once_without_cascade(
    pg_server: Server, tmp_path: Path, monkeypatch
) -> None:
    use_chain(SEVERAL_DEFECTS, tmp_path / "versions", monkeypatch)
    report = check.run(pg_server)
    results = chain_results(report.results)
    shown = _shown(results)
    failures = {(r.revision, r.step) for r in report.failures}
    assert failures == {
        ("003", "down"),
        ("005", "data"),
        ("007", "data"),
        ("008", "down"),
        ("009", "sample rows"),
        ("010", "down"),
        ("011", "up"),
    }, shown
    assert len(report.failures) == len(failures), f"each defect once:\n{shown}"
    steps = {(r.revision, r.step): r for r in results}
    assert "+ column public.tasks.estimate" in steps[("003", "down")].detail
    assert "estimate" not in steps[("003", "data")].note, "the down did not drop it"
    assert steps[("003", "rebuilt")].status == OK, shown
    assert steps[("004", "up again")].status == OK, "004 runs on 003's up state"
    assert "public.notes" in steps[("005", "data")].detail
    assert "public.archive" in steps[("007", "data")].detail, "006 left rows in its table"
    assert ("008", "rebuilt") not in steps, "a down rolled back leaves 008's state as it was"
    assert "public.odd (see 009)" in steps[("010", "sample rows")].note, shown
    assert [r.step for r in results if r.revision == "009"].count("sample rows") == 1, shown
    assert steps[("010", "data")].status == OK, "the other tables' rows are compared"
    assert steps[("010", "rebuilt")].note.startswith("the schema after its down differs: 003 → 010")
    skipped = steps[("012-013", "stairway")]
    assert skipped.status == SKIPPED and "011's upgrade fails" in skipped.note, shown
    assert not [r for r in results if r.revision in ("012", "013")], shown
    chain = steps[("chain", "whole chain")]
    assert chain.status == SKIPPED and "011's upgrade fails" in chain.note, shown


def test_a_schema_failure_at_down_still_reports_the_data_it_loses(
    pg_server: Server, tmp_path: Path, monkeypatch
) -> None:
    case = Case(
        "forgets-a-column-and-deletes-rows",
        (
            Migration(
                "add_pinned",
                'op.add_column("comments", sa.Column("pinned", sa.Boolean(), nullable=True))',
                'op.execute("DELETE FROM labels")  # and forgets the column',
            ),
        ),
        Expect(False),
        whole_chain=True,
    )
    use_chain(case, tmp_path / "versions", monkeypatch)
    report = check.run(pg_server)
    shown = _shown(report.results)
    # The models stay at 001 and know no `pinned`: models vs head is not this test's.
    failures = {(r.revision, r.step): r for r in report.failures if r.step != "models vs head"}
    assert set(failures) == {("002", "down"), ("002", "data")}, shown
    assert "public.labels" in failures[("002", "data")].detail
    assert "public.comments" not in failures[("002", "data")].detail, "its shape differs"
    steps = {(r.revision, r.step): r for r in report.results}
    assert steps[("chain", "base → head")].status == OK, shown
    way_down = steps[("chain", "head → base")]
    assert way_down.status == SKIPPED and "down of 002" in way_down.note, shown


def test_a_failed_second_up_is_rebuilt_and_the_next_revision_still_runs(
    pg_server: Server, tmp_path: Path, monkeypatch
) -> None:
    case = Case(
        "down-leaves-duplicates",
        (
            Migration("add_t", 'op.execute("CREATE TABLE t (a int)")', 'op.drop_table("t")'),
            Migration(  # its down leaves rows that its unique index refuses
                "unique_a",
                'op.execute("CREATE UNIQUE INDEX ux_t_a ON t (a)")',
                'op.execute("DROP INDEX ux_t_a")\nop.execute("INSERT INTO t SELECT a FROM t")',
            ),
            Migration(
                "add_b",
                'op.add_column("t", sa.Column("b", sa.Integer()))',
                'op.drop_column("t", "b")',
            ),
        ),
        Expect(False),
        whole_chain=True,
    )
    use_chain(case, tmp_path / "versions", monkeypatch)
    report = check.run(pg_server)
    shown = _shown(report.results)
    failures = [(r.revision, r.step) for r in report.failures if r.step != "models vs head"]
    assert failures == [("003", "up again")], shown
    steps = {(r.revision, r.step): r for r in report.results}
    assert "it failed to go up again" in steps[("003", "rebuilt")].note, shown
    assert steps[("004", "up again")].status == OK, shown
    assert steps[("chain", "head → base")].status == OK, "a failed second up does not skip it"
