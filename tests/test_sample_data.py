"""Sample rows exercise the schema without hand-written hints: every enum label and every
value of an IN (…) CHECK appears, values satisfy the common CHECK forms and lengths, rows
that break a CHECK over several columns are repaired, and a table that cannot be filled
is a clear error (exit 8), never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from db.roundtrip import sample_data
from db.roundtrip.samples import EMPTY, SAMPLES
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
    assert not EMPTY, "every table of the initial schema gets sample rows"


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


def test_a_connection_lost_on_a_sample_row_is_reported_with_the_servers_reason(
    db_at_001: Connection,
) -> None:
    """SQLAlchemy must learn that the connection is gone (as its own execute tells it):
    else the fill's ROLLBACK on the dead connection raised in place of the row's error."""
    _ddl(
        db_at_001,
        """
        CREATE TABLE doomed (id int PRIMARY KEY);
        CREATE FUNCTION doomed_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NEW;
        END $$;
        CREATE TRIGGER doomed_row BEFORE INSERT ON doomed
            FOR EACH ROW EXECUTE FUNCTION doomed_row();
        """,
    )
    with pytest.raises(sample_data.SampleDataError) as caught:
        sample_data.Filler().fill(db_at_001, only={'"public"."doomed"'})
    assert "terminating connection" in caught.value.render(), caught.value.render()
    assert db_at_001.invalidated


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


# --- NULLs, foreign-key cycles, keys that must differ ------------------------------------


def _nullable_columns(connection: Connection) -> list[tuple[str, str]]:
    found = connection.exec_driver_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND is_nullable = 'YES' ORDER BY 1, 2"
    ).all()
    connection.rollback()
    return [tuple(row) for row in found]


def test_every_nullable_column_holds_null_in_some_rows_of_a_round_not_all(
    db_at_001: Connection,
) -> None:
    sample_data.Filler().fill(db_at_001)
    columns = _nullable_columns(db_at_001)
    assert len(columns) > 10, columns
    for table, column in columns:
        nulls, total = db_at_001.exec_driver_sql(
            f'SELECT count(*) FILTER (WHERE "{column}" IS NULL), count(*) FROM "{table}"'
        ).one()
        assert 0 < nulls < total, f"{table}.{column}: {nulls} NULL of {total} rows"
    db_at_001.rollback()


def test_a_nullable_listed_column_keeps_every_value_besides_its_null(
    db_at_001: Connection,
) -> None:
    _ddl(db_at_001, "CREATE TABLE sizes (size text CHECK (size IN ('s', 'm', 'l', 'xl')))")
    sample_data.Filler().fill(db_at_001)
    assert _values(db_at_001, "SELECT size FROM sizes") == {"s", "m", "l", "xl", None}


def test_the_null_row_keeps_its_nulls_when_a_unique_key_makes_it_retry(
    db_at_001: Connection,
) -> None:
    _ddl(
        db_at_001, "CREATE TABLE slots (a int NOT NULL UNIQUE CHECK (a BETWEEN 1 AND 4), note text)"
    )
    _ddl(db_at_001, "INSERT INTO slots VALUES (4, 'taken')")  # the NULL row's first value
    sample_data.Filler().fill(db_at_001)
    assert _values(db_at_001, "SELECT count(*) FROM slots WHERE note IS NULL") == {1}


@pytest.mark.parametrize("order", ["not-null side sorts first", "nullable side sorts first"])
def test_a_foreign_key_cycle_is_filled_and_its_keys_set_afterwards(
    db_at_001: Connection, order: str
) -> None:
    strict, loose = (
        ("a_nodes", "b_nodes") if order.startswith("not-null") else ("b_nodes", "a_nodes")
    )
    _ddl(db_at_001, f"CREATE TABLE {loose} (id uuid PRIMARY KEY, name text NOT NULL, other uuid)")
    _ddl(
        db_at_001,
        f"CREATE TABLE {strict} (id uuid PRIMARY KEY, other uuid NOT NULL REFERENCES {loose})",
    )
    _ddl(db_at_001, f"ALTER TABLE {loose} ADD FOREIGN KEY (other) REFERENCES {strict}")
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    filler.fill(db_at_001)
    set_keys, rows = db_at_001.exec_driver_sql(f"SELECT count(other), count(*) FROM {loose}").one()
    db_at_001.rollback()
    assert rows == 6 and set_keys == 4, "keys set after the cycle, NULL only in the NULL rows"


def test_a_cycle_of_not_null_keys_is_filled_when_one_is_deferrable(
    db_at_001: Connection,
) -> None:
    _ddl(db_at_001, "CREATE TABLE a_nodes (id uuid PRIMARY KEY, other uuid NOT NULL)")
    _ddl(
        db_at_001,
        "CREATE TABLE b_nodes (id uuid PRIMARY KEY, other uuid NOT NULL REFERENCES a_nodes)",
    )
    _ddl(
        db_at_001,
        "ALTER TABLE a_nodes ADD FOREIGN KEY (other) REFERENCES b_nodes "
        "DEFERRABLE INITIALLY IMMEDIATE",
    )
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    added = filler.fill(db_at_001)
    assert added == {**added, '"public"."a_nodes"': 3, '"public"."b_nodes"': 3}
    orphans = db_at_001.exec_driver_sql(
        "SELECT count(*) FROM a_nodes a WHERE NOT EXISTS "
        "(SELECT 1 FROM b_nodes b WHERE b.id = a.other)"
    ).scalar()
    db_at_001.rollback()
    assert orphans == 0


def test_a_cycle_of_not_null_keys_that_cannot_wait_is_filled_a_row_of_each_at_a_time(
    db_at_001: Connection,
) -> None:
    _ddl(db_at_001, "CREATE TABLE a_nodes (id uuid PRIMARY KEY, other uuid NOT NULL)")
    _ddl(
        db_at_001,
        "CREATE TABLE b_nodes (id uuid PRIMARY KEY, other uuid NOT NULL REFERENCES a_nodes)",
    )
    _ddl(db_at_001, "ALTER TABLE a_nodes ADD FOREIGN KEY (other) REFERENCES b_nodes")
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    added = filler.fill(db_at_001)
    assert added == {**added, '"public"."a_nodes"': 3, '"public"."b_nodes"': 3}
    assert _values(db_at_001, "SELECT count(*) FROM a_nodes") == {6}


IDENTITY_CYCLE = [
    "CREATE TABLE a_nodes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "other bigint NOT NULL)",
    "CREATE TABLE b_nodes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "other bigint NOT NULL REFERENCES a_nodes)",
    "ALTER TABLE a_nodes ADD FOREIGN KEY (other) REFERENCES b_nodes",
]


def test_a_cycle_whose_keys_the_server_generates_is_named_with_the_hint(
    db_at_001: Connection,
) -> None:
    for statement in IDENTITY_CYCLE:
        _ddl(db_at_001, statement)
    with pytest.raises(sample_data.SampleDataError) as caught:
        sample_data.Filler().fill(db_at_001)
    message = caught.value.render()
    assert "public.a_nodes, public.b_nodes" in message, message
    assert "a_nodes.other → public.b_nodes" in message, message
    assert "is set by the server" in message, message
    assert "DEFERRABLE" in message and "EMPTY in db/roundtrip/samples.py" in message, message


def test_tables_listed_in_empty_get_no_rows_and_the_rest_is_filled(
    db_at_001: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    for statement in IDENTITY_CYCLE:
        _ddl(db_at_001, statement)
    monkeypatch.setattr(sample_data, "EMPTY", {"a_nodes", "public.b_nodes"})
    added = sample_data.Filler().fill(db_at_001)
    assert '"public"."a_nodes"' not in added and '"public"."b_nodes"' not in added
    assert added['"public"."tasks"'] > 0


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE nodes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "parent_id bigint REFERENCES nodes)",
        "CREATE TABLE nodes (id uuid PRIMARY KEY, parent_id uuid NOT NULL REFERENCES nodes)",
    ],
    ids=["identity key", "not-null uuid key"],
)
def test_a_self_reference_is_filled(db_at_001: Connection, ddl: str) -> None:
    _ddl(db_at_001, ddl)
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    filler.fill(db_at_001)
    linked, rows = db_at_001.exec_driver_sql("SELECT count(parent_id), count(*) FROM nodes").one()
    db_at_001.rollback()
    assert rows == 6 and linked >= 3, "NULL only in the first row and in the NULL rows"


def test_two_keys_to_one_parent_that_must_differ_need_no_hint(db_at_001: Connection) -> None:
    _ddl(
        db_at_001,
        "CREATE TABLE task_blocks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "blocked_by uuid NOT NULL REFERENCES tasks, blocks uuid NOT NULL REFERENCES tasks, "
        "CONSTRAINT ck_task_blocks_differ CHECK (blocked_by <> blocks), "
        "UNIQUE (blocked_by, blocks))",
    )
    filler = sample_data.Filler()
    filler.fill(db_at_001)
    filler.fill(db_at_001, only={'"public"."task_blocks"'})  # tasks not filled this round
    assert db_at_001.exec_driver_sql("SELECT count(*) FROM task_blocks").scalar() == 6
    db_at_001.rollback()


# --- rows that use what a revision newly allows -------------------------------------------

RELAXING = [
    "ALTER TABLE users ALTER COLUMN display_name DROP NOT NULL",
    "ALTER TABLE tasks DROP CONSTRAINT fk_tasks_assignee_id_users",
    "ALTER TABLE tasks DROP CONSTRAINT uq_tasks_project_id_number",
    "DROP INDEX uq_users_lower_email",
    "ALTER TABLE tasks DROP CONSTRAINT ck_tasks_number_positive, "
    "ADD CONSTRAINT ck_tasks_number_positive CHECK (number >= 0)",
    "ALTER TABLE organizations DROP CONSTRAINT ck_organizations_plan_valid, "
    "ADD CONSTRAINT ck_organizations_plan_valid "
    "CHECK (plan IN ('free', 'startup', 'team', 'enterprise'))",
    "ALTER TABLE tasks DROP CONSTRAINT ck_tasks_completed_at_status, ADD CONSTRAINT "
    "ck_tasks_completed_at_status CHECK (completed_at IS NULL OR status <> 'todo')",
]
RESTORING = {  # each statement of RELAXING undone blindly, as a careless downgrade would
    "display_name": "ALTER TABLE users ALTER COLUMN display_name SET NOT NULL",
    "assignee": "ALTER TABLE tasks ADD CONSTRAINT fk_tasks_assignee_id_users "
    "FOREIGN KEY (assignee_id) REFERENCES users (id)",
    "number unique": "ALTER TABLE tasks ADD CONSTRAINT uq_tasks_project_id_number "
    "UNIQUE (project_id, number)",
    "email unique": "CREATE UNIQUE INDEX uq_users_lower_email ON users (lower(email)) "
    "WHERE deleted_at IS NULL",
    "number positive": "ALTER TABLE tasks DROP CONSTRAINT ck_tasks_number_positive, "
    "ADD CONSTRAINT ck_tasks_number_positive CHECK (number > 0)",
    "plan list": "ALTER TABLE organizations DROP CONSTRAINT ck_organizations_plan_valid, "
    "ADD CONSTRAINT ck_organizations_plan_valid "
    "CHECK (plan IN ('free', 'team', 'enterprise'))",
    "completed status": "ALTER TABLE tasks DROP CONSTRAINT ck_tasks_completed_at_status, "
    "ADD CONSTRAINT ck_tasks_completed_at_status "
    "CHECK (completed_at IS NULL OR status IN ('done', 'canceled'))",
}


def test_rows_at_a_revision_use_everything_it_newly_allows(db_at_001: Connection) -> None:
    from db import catalog
    from db.roundtrip import relaxed

    filler = sample_data.Filler()
    filler.fill(db_at_001)
    before = catalog.read(db_at_001)
    db_at_001.rollback()
    for statement in RELAXING:
        _ddl(db_at_001, statement)
    after = catalog.read(db_at_001)
    db_at_001.rollback()
    allowed = relaxed.newly_allowed(before, after)
    found = sorted((a.kind, a.name) for things in allowed.values() for a in things)
    assert found == [
        ("check", "ck_organizations_plan_valid"),
        ("check", "ck_tasks_completed_at_status"),
        ("check", "ck_tasks_number_positive"),
        ("duplicate", "uq_tasks_project_id_number"),
        ("duplicate", "uq_users_lower_email"),
        ("null", "display_name"),
        ("orphan", "fk_tasks_assignee_id_users"),
    ]
    uses = {after.relations[oid].sql: things for oid, things in allowed.items()}
    filler.fill(db_at_001, only=set(uses), allowed=uses)
    assert filler.unused == []
    for what, statement in RESTORING.items():
        try:
            with db_at_001.begin():
                db_at_001.exec_driver_sql(statement)
        except DBAPIError:
            continue
        pytest.fail(f"{what}: restored without an error, so no row uses what was relaxed")


def test_a_renamed_constraint_is_not_a_relaxation(db_at_001: Connection) -> None:
    from db import catalog
    from db.roundtrip import relaxed

    before = catalog.read(db_at_001)
    db_at_001.rollback()
    _ddl(db_at_001, "ALTER INDEX uq_users_lower_email RENAME TO uq_users_email")
    _ddl(db_at_001, "ALTER TABLE tasks RENAME CONSTRAINT ck_tasks_number_positive TO ck_n")
    _ddl(db_at_001, "COMMENT ON CONSTRAINT ck_n ON tasks IS 'a number of the project'")
    after = catalog.read(db_at_001)
    db_at_001.rollback()
    assert relaxed.newly_allowed(before, after) == {}
