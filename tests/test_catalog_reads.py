"""The stairway reads the catalog again only for the tables a step's DDL touched
(db/roundtrip/ddl_log.py, catalog.reread): that read must equal a full read, for every
kind of change, or the change must ask for a full read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import catalog, settings
from db.roundtrip import ddl_log
from db.roundtrip.results import FAIL
from db.throwaway import Server
from tests.conftest import make_engine

SETUP = """
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE child (
    id serial PRIMARY KEY, parent_id int REFERENCES parent (id), note text, amount int
);
CREATE INDEX ix_child_parent ON child (parent_id);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER child_audit AFTER INSERT ON child FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TYPE mood AS ENUM ('ok', 'bad');
CREATE SEQUENCE loose;
CREATE TABLE base (a int);
CREATE TABLE derived (b int) INHERITS (base);
CREATE TABLE measures (k int) PARTITION BY RANGE (k);
CREATE TABLE measures_low (k int);
INSERT INTO parent VALUES (1, 'a');
INSERT INTO child (parent_id, note, amount) VALUES (1, 'x', 2);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'catalog_reads_owner') THEN
        CREATE ROLE catalog_reads_owner NOLOGIN;
    END IF;
END $$;
GRANT CREATE, USAGE ON SCHEMA public TO catalog_reads_owner;
"""

PARTIAL, FULL = "partial", "full"

# (what, DDL, which read it gets). "full" is where a partial read could not be right:
# something outside the touched tables changed, or a name other tables show.
CHANGES = [
    ("add a column", "ALTER TABLE child ADD COLUMN extra int DEFAULT 3", PARTIAL),
    ("drop a column", "ALTER TABLE child DROP COLUMN note", PARTIAL),
    ("retype a column", "ALTER TABLE child ALTER COLUMN amount TYPE bigint", PARTIAL),
    ("set not null", "ALTER TABLE child ALTER COLUMN amount SET NOT NULL", PARTIAL),
    (
        "a new table with identity and a foreign key",
        "CREATE TABLE other (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "parent_id int REFERENCES parent (id) ON DELETE CASCADE, CHECK (parent_id > 0))",
        PARTIAL,
    ),
    ("a serial column on a new table", "CREATE TABLE counters (n serial)", PARTIAL),
    ("drop a table with a serial column", "DROP TABLE child", PARTIAL),
    ("drop the referenced table (cascade)", "DROP TABLE parent CASCADE", PARTIAL),
    ("drop a foreign key", "ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey", PARTIAL),
    ("a unique constraint", "ALTER TABLE child ADD CONSTRAINT uq_note UNIQUE (note)", PARTIAL),
    ("drop a primary key", "ALTER TABLE parent DROP CONSTRAINT parent_pkey CASCADE", PARTIAL),
    ("an index", "CREATE INDEX ix_child_note ON child (lower(note))", PARTIAL),
    ("drop an index", "DROP INDEX ix_child_parent", PARTIAL),
    ("rename an index", "ALTER INDEX ix_child_parent RENAME TO ix_child_parent_id", PARTIAL),
    ("comment on a column", "COMMENT ON COLUMN child.note IS 'why'", PARTIAL),
    ("comment on an index", "COMMENT ON INDEX ix_child_parent IS 'why'", PARTIAL),
    ("comment on a table", "COMMENT ON TABLE child IS 'why'", PARTIAL),
    ("comment on a constraint", "COMMENT ON CONSTRAINT child_pkey ON child IS 'why'", PARTIAL),
    ("comment on a trigger", "COMMENT ON TRIGGER child_audit ON child IS 'why'", PARTIAL),
    ("extended statistics", "CREATE STATISTICS st_child ON parent_id, amount FROM child", PARTIAL),
    (
        "drop extended statistics",
        "DROP STATISTICS st_parent",
        FULL,
        "CREATE STATISTICS st_parent ON id, name FROM parent",
    ),
    ("column storage", "ALTER TABLE child ALTER COLUMN note SET STORAGE EXTERNAL", PARTIAL),
    (
        "column statistics target",
        "ALTER TABLE child ALTER COLUMN amount SET STATISTICS 500",
        PARTIAL,
    ),
    ("a serial's sequence options", "ALTER SEQUENCE child_id_seq INCREMENT BY 5", PARTIAL),
    (
        "identity options",
        "ALTER TABLE counted ALTER COLUMN id SET INCREMENT BY 5",
        PARTIAL,
        "CREATE TABLE counted (id int GENERATED ALWAYS AS IDENTITY)",
    ),
    (
        "a policy's check and roles",
        "ALTER POLICY visible ON child TO catalog_reads_owner WITH CHECK (amount < 10)",
        PARTIAL,
        "CREATE POLICY visible ON child USING (amount > 0)",
    ),
    (
        "a trigger",
        "CREATE TRIGGER child_touch BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION touch()",
        PARTIAL,
    ),
    ("a rule", "CREATE RULE keep AS ON DELETE TO child DO INSTEAD NOTHING", PARTIAL),
    (
        "row security and a policy",
        "ALTER TABLE child ENABLE ROW LEVEL SECURITY; "
        "CREATE POLICY positive ON child USING (amount > 0)",
        PARTIAL,
    ),
    (
        "a view, then a column dropped from under it",
        "CREATE VIEW notes AS SELECT id, note FROM child; "
        "ALTER TABLE child DROP COLUMN note CASCADE",
        PARTIAL,
    ),
    ("a materialized view", "CREATE MATERIALIZED VIEW totals AS SELECT 1 AS one", PARTIAL),
    ("truncate (no DDL: a new file)", "TRUNCATE child", PARTIAL),
    (
        "DDL as a role without rights on the log",
        "SET ROLE catalog_reads_owner; CREATE TABLE owned (id int); RESET ROLE",
        PARTIAL,
    ),
    (
        "DDL with replication triggers off",
        "SET session_replication_role = replica; ALTER TABLE child ADD COLUMN r int; "
        "RESET session_replication_role",
        PARTIAL,
    ),
    (
        "DDL in a DO block",
        "DO $$ BEGIN EXECUTE 'ALTER TABLE child ADD COLUMN dynamic int'; END $$",
        PARTIAL,
    ),
    ("rename a table", "ALTER TABLE parent RENAME TO parents", FULL),
    ("rename a referenced column", "ALTER TABLE parent RENAME COLUMN id TO key", FULL),
    ("a column passed on to an inheriting table", "ALTER TABLE base ADD COLUMN c int", FULL),
    (
        "attach a partition",
        "ALTER TABLE measures ATTACH PARTITION measures_low FOR VALUES FROM (0) TO (10)",
        FULL,
    ),
    ("an enum label", "ALTER TYPE mood ADD VALUE 'meh'", FULL),
    ("a function", "CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'", FULL),
    ("a sequence of its own", "CREATE SEQUENCE spare", FULL),
    ("a loose sequence given an owner", "ALTER SEQUENCE loose OWNED BY child.amount", FULL),
    ("a schema", "CREATE SCHEMA reporting", FULL),
    ("a grant", "GRANT SELECT ON child TO PUBLIC", FULL),
    # Found by an adversarial pass: changes that show in the lines of tables they do not
    # touch, or that the log cannot see.
    ("rename a serial's sequence", "ALTER SEQUENCE child_id_seq RENAME TO child_seq", PARTIAL),
    (
        "rename a serial's sequence another table uses",
        "ALTER SEQUENCE child_id_seq RENAME TO child_seq",
        FULL,
        "CREATE TABLE other (x int DEFAULT nextval('child_id_seq'))",
    ),
    (
        "rename, through ALTER TABLE, a serial's sequence a view uses",
        "ALTER TABLE child_id_seq RENAME TO child_seq",
        FULL,
        "CREATE VIEW next_ids AS SELECT nextval('child_id_seq') AS n",
    ),
    (
        "rename a serial's sequence, owned by another table now",
        "ALTER SEQUENCE child_id_seq RENAME TO moved_seq",
        FULL,
        "ALTER SEQUENCE child_id_seq OWNED BY parent.id",
    ),
    (
        "a referenced table moved out of the application schemas",
        "ALTER TABLE parent SET SCHEMA archive",
        FULL,
        "CREATE SCHEMA archive",
        ["public"],
    ),
    (
        "a referenced table outside the application schemas renamed",
        "ALTER TABLE archive.t RENAME TO t2",
        FULL,
        "CREATE SCHEMA archive; CREATE TABLE archive.t (id int PRIMARY KEY); "
        "ALTER TABLE child ADD COLUMN t_id int REFERENCES archive.t",
        ["public"],
    ),
    (
        "a referenced table moved into the application schemas",
        "ALTER TABLE archive.t SET SCHEMA public",
        FULL,
        "CREATE SCHEMA archive; CREATE TABLE archive.t (id int PRIMARY KEY); "
        "ALTER TABLE child ADD COLUMN t_id int REFERENCES archive.t",
        ["public"],
    ),
    (
        "a table moved into the bookkeeping schema",
        "ALTER TABLE parent SET SCHEMA migrations",
        FULL,
    ),
    (
        "a temporary table that shadows a referenced one",
        "CREATE TEMP TABLE parent (id int)",
        FULL,
    ),
    (
        "a session search_path that hides a function",
        "SET search_path = elsewhere; ALTER TABLE public.child ADD COLUMN q int",
        PARTIAL,
        "CREATE SCHEMA elsewhere",
    ),
    (
        "a table in an earlier schema on the path",
        "CREATE TABLE early.parent (id int)",
        PARTIAL,
        "CREATE SCHEMA early; SET search_path = early, public",
    ),
    (
        "the log's trigger disabled by the step",
        "ALTER EVENT TRIGGER worktracker_roundtrip_ddl_end DISABLE; "
        "ALTER TABLE child ADD COLUMN z int",
        FULL,
    ),
    (
        "inheritance that exists only during the step",
        "CREATE TABLE tp (k int) PARTITION BY RANGE (k); "
        "ALTER TABLE tp ATTACH PARTITION measures_low FOR VALUES FROM (0) TO (10); "
        "ALTER TABLE tp ADD COLUMN extra int; CREATE INDEX ix_tp ON tp (k); "
        "ALTER TABLE tp DETACH PARTITION measures_low; DROP TABLE tp",
        FULL,
    ),
]


@pytest.fixture
def logged(empty_db: URL) -> Iterator[Connection]:
    engine = make_engine(empty_db)
    with engine.connect() as connection:
        with connection.begin():
            connection.execute(text(SETUP))
        assert ddl_log.install(connection), "the tests' server has a superuser"
        yield connection
    engine.dispose()


@pytest.mark.parametrize("change", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_partial_read_equals_a_full_read(logged: Connection, change: tuple, monkeypatch) -> None:
    what, ddl, expected = change[:3]
    setup = change[3] if len(change) > 3 else ""
    schemas = change[4] if len(change) > 4 else None
    if schemas is not None:
        monkeypatch.setattr(settings, "app_schemas", lambda: tuple(schemas))
    if setup:
        logged.execute(text(setup))
        logged.execute(text(f"DELETE FROM {ddl_log.LOG}"))  # what the step logs, only
        logged.commit()
    before = catalog.read(logged)
    logged.rollback()
    with logged.begin():
        logged.execute(text(ddl))
        tables = ddl_log.take(logged, before)
    partial = None if tables is None else catalog.reread(logged, before, tables)
    full = catalog.read(logged)
    logged.rollback()
    quiet = ("truncate", "a grant", "a temporary", "the log's", "inheritance that")
    assert full.lines() != before.lines() or what.startswith(quiet), (
        f"{what}: the change should show in the catalog, or the test proves nothing"
    )
    got = FULL if partial is None else PARTIAL
    assert got == expected, f"{what}: expected a {expected} read, got a {got} read ({tables=})"
    if partial is not None:
        differ = partial.differences(full)
        assert not differ, (
            f"{what}: the read of tables {sorted(tables or ())} differs from a full read in "
            f"{', '.join(differ)}. Likely cause: ddl_log places an object under the wrong "
            "table, or misses one.\n" + "\n".join(catalog.changes(full, partial))
        )


def test_the_log_is_emptied_by_each_take(logged: Connection) -> None:
    before = catalog.read(logged)
    logged.rollback()
    with logged.begin():
        logged.execute(text("ALTER TABLE child ADD COLUMN extra int"))
        assert ddl_log.take(logged, before)
    after = catalog.read(logged)
    logged.rollback()
    with logged.begin():
        assert ddl_log.take(logged, after) == set()


def test_an_index_given_a_new_file_without_ddl_is_read_again(logged: Connection) -> None:
    """REINDEX is DDL to event triggers only from PostgreSQL 17 on: before, an index's
    new file is found by its file node, and its table is read again."""
    before = catalog.read(logged)
    logged.rollback()
    index = next(r for r in before.relations.values() if r.name == "ix_child_parent")
    stale = dataclasses.replace(index, filenode=index.filenode + 1)
    before = dataclasses.replace(before, relations={**before.relations, index.oid: stale})
    with logged.begin():
        assert ddl_log.take(logged, before) == {index.owner}


def test_without_the_right_to_create_event_triggers_nothing_is_installed(
    empty_db: URL,
) -> None:
    engine = make_engine(empty_db)
    with engine.connect() as connection:
        with connection.begin():
            connection.execute(text(SETUP))
            connection.execute(
                text(f"GRANT CREATE ON DATABASE {empty_db.database} TO catalog_reads_owner")
            )
        connection.execute(text("SET ROLE catalog_reads_owner"))
        connection.commit()
        assert ddl_log.install(connection) is False
        connection.execute(text("RESET ROLE"))
        found = connection.execute(
            text("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'worktracker%'")
        ).scalar()
        assert found == 0
    engine.dispose()


def test_the_stairway_reads_only_what_a_new_table_touched(
    pg_server: Server, initial_template: str, tmp_path, monkeypatch
) -> None:
    """Guards the speed-up itself: a chain of plain table migrations gets partial reads
    (without the log, every read would be a full one, and the roundtrip N² again)."""
    from tests.corpus import BY_NAME
    from tests.corpus_run import case_scripts, database_at_001, stairway_on, use_chain

    use_chain(BY_NAME["new-table-with-checks"], tmp_path / "versions", monkeypatch)
    with (
        database_at_001(pg_server, initial_template) as url,
        stairway_on(pg_server, url) as stairway,
    ):
        for script in case_scripts():
            assert all(r.status != FAIL for r in stairway.revision(script))
    assert stairway.logged
    assert stairway.reads["partial"] == 3, stairway.reads  # up, down, up again


def test_a_change_the_log_missed_fails_the_step_under_check_reads(
    pg_server: Server, initial_template: str, tmp_path, monkeypatch
) -> None:
    """The safety net the tests rely on: with WORKTRACKER_ROUNDTRIP_CHECK_READS=1 (set
    by conftest), a log that misses a change fails the step, with a message, instead of
    letting a stale catalog decide the verdict."""
    from tests.corpus import BY_NAME
    from tests.corpus_run import case_scripts, database_at_001, stairway_on, use_chain

    monkeypatch.setattr(ddl_log, "take", lambda connection, before: set())
    use_chain(BY_NAME["new-table-with-checks"], tmp_path / "versions", monkeypatch)
    with (
        database_at_001(pg_server, initial_template) as url,
        stairway_on(pg_server, url) as stairway,
    ):
        results = stairway.revision(case_scripts()[0])
    assert results[0].step == "up" and results[0].status == FAIL, results
    assert "its DDL log missed a change" in results[0].detail, results[0].detail
