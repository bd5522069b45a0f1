"""Sample rows exercise the schema without hand-written hints: every enum label and every
value of an IN (…) CHECK appears, values satisfy the common CHECK forms and lengths, rows
that break a CHECK over several columns are repaired, and a table that cannot be filled
is a clear error (exit 8), never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, Connection

from db.roundtrip import sample_data
from db.roundtrip.samples import SAMPLES
from tests.conftest import make_engine


@pytest.fixture
def db_at_001(initial_db: URL) -> Iterator[Connection]:
    """A connection to a fresh database at 001 that the filler can run transactions on."""
    engine = make_engine(initial_db)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def _ddl(connection: Connection, sql: str) -> None:
    connection.exec_driver_sql(sql)
    connection.commit()


def _values(connection: Connection, sql: str) -> set:
    found = {row[0] for row in connection.exec_driver_sql(sql)}
    connection.rollback()
    return found


def test_every_label_and_listed_value_appears_in_one_round(db_at_001: Connection) -> None:
    sample_data.Filler().fill(db_at_001)
    assert _values(db_at_001, "SELECT status::text FROM tasks") == {
        "todo",
        "in_progress",
        "in_review",
        "done",
        "canceled",
    }
    for table, column, listed in [
        ("organizations", "plan", {"free", "team", "enterprise"}),
        ("organization_members", "role", {"owner", "admin", "member", "viewer"}),
        ("audit_events", "action", {"create", "update", "delete", "restore"}),
    ]:
        assert _values(db_at_001, f"SELECT {column} FROM {table}") == listed, (table, column)
    kinds = _values(db_at_001, "SELECT entity_type FROM audit_events")
    assert len(kinds) == 7, kinds


def test_the_initial_schema_needs_no_hints() -> None:
    assert SAMPLES == {}, "derive values from the catalog; samples.py is for what cannot be"


def test_common_check_forms_are_satisfied_in_any_schema(db_at_001: Connection) -> None:
    _ddl(db_at_001, "CREATE SCHEMA reporting")
    _ddl(
        db_at_001,
        """
        CREATE TABLE reporting.invoices (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            number text NOT NULL UNIQUE CHECK (number ~ '^INV-[0-9]{5}$'),
            code varchar(4) NOT NULL,
            amount numeric(8, 2) NOT NULL CHECK (amount BETWEEN 10 AND 500),
            quantity int NOT NULL CHECK (quantity > 0 AND quantity < 100),
            note text CHECK (char_length(note) BETWEEN 3 AND 8),
            state text NOT NULL CHECK (state IN ('draft', 'sent', 'paid')),
            paid_at timestamptz,
            meta jsonb NOT NULL CHECK (jsonb_typeof(meta) = 'object'),
            CONSTRAINT paid_has_time CHECK (paid_at IS NULL OR state = 'paid')
        )
        """,
    )
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    filler.fill(db_at_001)
    rows = db_at_001.exec_driver_sql(
        "SELECT number, code, amount, quantity, note, state, paid_at FROM reporting.invoices"
    ).all()
    assert len(rows) == 6
    assert all(re.fullmatch(r"INV-[0-9]{5}", r.number) for r in rows)
    assert len({r.number for r in rows}) == 6
    assert all(len(r.code) <= 4 and 10 <= r.amount <= 500 and 0 < r.quantity < 100 for r in rows)
    assert all(r.note is None or 3 <= len(r.note) <= 8 for r in rows)
    assert {r.state for r in rows} == {"draft", "sent", "paid"}
    assert all(r.paid_at is None or r.state == "paid" for r in rows)


def test_a_label_added_later_appears_in_the_next_round(db_at_001: Connection) -> None:
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    _ddl(db_at_001, "ALTER TYPE task_status ADD VALUE 'on_hold'")
    filler.fill(db_at_001)
    assert "on_hold" in _values(db_at_001, "SELECT status::text FROM tasks")


def test_rounds_never_repeat_rows(db_at_001: Connection) -> None:
    filler = sample_data.Filler()
    first = filler.fill(db_at_001)
    second = filler.fill(db_at_001)
    assert first == second and all(first.values())
    ids = db_at_001.exec_driver_sql("SELECT count(DISTINCT id), count(*) FROM tasks").one()
    assert ids[0] == ids[1] == 2 * first['"public"."tasks"']


def test_a_table_that_cannot_be_filled_is_named_with_its_constraint(
    db_at_001: Connection,
) -> None:
    _ddl(
        db_at_001,
        "CREATE TABLE odd (a int NOT NULL, CONSTRAINT ck_odd_never CHECK (a > 10 AND a < 5))",
    )
    with pytest.raises(sample_data.SampleDataError) as caught:
        sample_data.Filler().fill(db_at_001)
    assert caught.value.exit_code == 8
    message = caught.value.render()
    assert "public.odd" in message and "ck_odd_never" in message, message
    assert "samples.py" in message, message


@pytest.mark.parametrize(
    ("pattern", "example"),
    [
        ("^[a-z0-9][a-z0-9-]{1,62}$", "org slug"),
        ("^[^@]+@[^@]+$", "email"),
        ("^#[0-9a-fA-F]{6}$", "colour"),
        ("^[A-Z][A-Z0-9]{1,9}$", "project key"),
        ("^(draft|sent)-[[:digit:]]{3}$", "branch and a POSIX class"),
    ],
)
def test_generated_strings_match_their_pattern(pattern: str, example: str) -> None:
    for n in range(20):
        value = sample_data.matching(pattern, f"seed {n}")
        python = pattern.replace("[[:digit:]]", "[0-9]")
        assert value is not None and re.fullmatch(python.strip("^$"), value), (example, value)
