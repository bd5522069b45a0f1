"""Which tables a stairway step changed in the catalog, told by event triggers.

The stairway reads the catalog after every step. Reading all of it costs in proportion to
the schema, so checking N migrations would cost N². Instead, two event triggers in the
stairway's throwaway database log what each DDL command created, altered or dropped, and
the stairway reads again only the tables those objects belong to (`catalog.reread`).

An object that belongs to no table (a schema, enum, type, function, sequence of its own,
extension, GRANT...) asks for a full read, and so does anything this module cannot place.
Renames and inheritance are left to `catalog.reread`, which sees them. Online steps and
steps on a database without the log get full reads too. The tests run every roundtrip
with WORKTRACKER_ROUNDTRIP_CHECK_READS=1, which compares each partial read with a full one.

Creating event triggers takes a superuser: our throwaway servers have one. Elsewhere
`install` says no and every read is a full one.

Not seen: a step that turns event triggers off and on again within itself, and catalog
changes made without DDL (a superuser's UPDATE of pg_catalog). No migration should.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db import history
from db.catalog import Catalog
from db.settings import BOOKKEEPING_SCHEMA as SCHEMA

LOG = f"{SCHEMA}.roundtrip_ddl"
_TABLE_KINDS = "('table', 'view', 'materialized view', 'foreign table')"

# SECURITY DEFINER: a migration that SET ROLEs to a role without rights on the log must
# not fail because of it. ENABLE ALWAYS: session_replication_role = replica (a migration
# that turns foreign keys off for a backfill) would otherwise hide its DDL from the log.
_INSTALL = rf"""
CREATE TABLE {LOG} (
    classid oid, objid oid, schema_name text, owner oid, dropped boolean NOT NULL
);
-- The table an object of one of these catalogs belongs to; NULL for any other catalog.
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_table_of(classid oid, objid oid) RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE classid
        WHEN 'pg_constraint'::regclass THEN
            (SELECT nullif(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = objid)
        WHEN 'pg_trigger'::regclass THEN
            (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = objid)
        WHEN 'pg_policy'::regclass THEN
            (SELECT p.polrelid FROM pg_policy p WHERE p.oid = objid)
        WHEN 'pg_rewrite'::regclass THEN
            (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = objid)
        WHEN 'pg_attrdef'::regclass THEN
            (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = objid)
        WHEN 'pg_statistic_ext'::regclass THEN
            (SELECT s.stxrelid FROM pg_statistic_ext s WHERE s.oid = objid)
    END
$$;
-- The tables whose lines show relation `rel` by name: their foreign keys, views,
-- defaults, triggers and policies that use it, and columns of its row type. NULL for a
-- dependent that belongs to no table.
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_dependents(rel oid) RETURNS SETOF oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN d.classid = 'pg_class'::regclass THEN d.objid
                ELSE {SCHEMA}.roundtrip_ddl_table_of(d.classid, d.objid) END
    FROM pg_depend d
    WHERE d.deptype = 'n'
      AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = rel)
           OR (d.refclassid = 'pg_type'::regclass
               AND d.refobjid = (SELECT c.reltype FROM pg_class c WHERE c.oid = rel)))
$$;
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {LOG}
    SELECT d.classid, d.objid, d.schema_name, CASE
        WHEN d.classid = 'pg_class'::regclass THEN (
            SELECT CASE
                -- In an inheritance or partition tree, even for a moment: ALTER TABLE
                -- passes columns and indexes on to tables it does not report.
                WHEN EXISTS (SELECT 1 FROM pg_inherits h
                              WHERE h.inhparent = c.oid OR h.inhrelid = c.oid) THEN NULL
                WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f') THEN c.oid
                WHEN c.relkind IN ('i', 'I') THEN
                    (SELECT x.indrelid FROM pg_index x WHERE x.indexrelid = c.oid)
                WHEN c.relkind = 'S' THEN (  -- a serial or identity column's: its table,
                    SELECT o.refobjid FROM pg_depend o  -- if no other table names it
                     WHERE o.classid = 'pg_class'::regclass AND o.objid = c.oid
                       AND o.refclassid = 'pg_class'::regclass AND o.deptype IN ('a', 'i')
                       AND NOT EXISTS (
                           SELECT 1 FROM {SCHEMA}.roundtrip_ddl_dependents(c.oid) AS t
                            WHERE t IS DISTINCT FROM o.refobjid)
                     LIMIT 1)
            END FROM pg_class c WHERE c.oid = d.objid)
        ELSE {SCHEMA}.roundtrip_ddl_table_of(d.classid, d.objid)
    END, false
    FROM pg_event_trigger_ddl_commands() d;
END $$;
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Gone from the catalog by now: placed by what was dropped with them, or by name.
    WITH dropped AS (SELECT * FROM pg_event_trigger_dropped_objects()),
         tables AS (SELECT objid, object_identity FROM dropped
                     WHERE classid = 'pg_class'::regclass AND objsubid = 0
                       AND object_type IN {_TABLE_KINDS})
    INSERT INTO {LOG}
    SELECT d.classid, d.objid, d.schema_name, CASE
        WHEN d.classid = 'pg_class'::regclass
             AND (d.objsubid <> 0 OR d.object_type IN {_TABLE_KINDS}) THEN d.objid
        WHEN d.classid = 'pg_type'::regclass THEN  -- a dropped table's row type
            (SELECT t.objid FROM tables t
              WHERE t.object_identity = regexp_replace(d.object_identity, '\[\]$', ''))
        WHEN d.object_type IN ('table constraint', 'trigger', 'policy', 'rule',
                               'default value') THEN coalesce(
            to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))::oid,
            (SELECT t.objid FROM tables t
              WHERE t.object_identity
                    = format('%I.%I', d.address_names[1], d.address_names[2])))
    END, true
    FROM dropped d
    WHERE d.schema_name IS DISTINCT FROM 'pg_toast';  -- gone with its table, logged too
END $$;
CREATE EVENT TRIGGER worktracker_roundtrip_ddl_end ON ddl_command_end
    EXECUTE FUNCTION {SCHEMA}.roundtrip_ddl_end();
CREATE EVENT TRIGGER worktracker_roundtrip_ddl_drop ON sql_drop
    EXECUTE FUNCTION {SCHEMA}.roundtrip_ddl_drop();
ALTER EVENT TRIGGER worktracker_roundtrip_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER worktracker_roundtrip_ddl_drop ENABLE ALWAYS;
"""

# TRUNCATE is no DDL to event triggers; it gives the table a new file, as do VACUUM FULL
# and CLUSTER, and REINDEX before PostgreSQL 17 (to an index). The catalog keeps file
# nodes (the stairway re-reads rewritten tables' rows).
_NEW_FILES = text(
    "SELECT k.oid FROM unnest(CAST(:oids AS oid[]), CAST(:nodes AS oid[])) AS k(oid, node) "
    "LEFT JOIN pg_class c ON c.oid = k.oid WHERE c.relfilenode IS DISTINCT FROM k.node"
)
_TAKE = text(
    f"WITH taken AS (DELETE FROM {LOG} RETURNING classid, objid, schema_name, owner, dropped) "
    "SELECT classid = 'pg_class'::regclass, objid, schema_name, owner, dropped FROM taken"
)
# The log sees everything only while both triggers fire always and event triggers are on
# (PostgreSQL 17's event_triggers setting). A step that turns them off and on again
# within itself is not seen: that is no migration's business.
_ARMED = text(
    "SELECT count(*) FILTER (WHERE evtenabled = 'A') = 2 "
    "AND current_setting('event_triggers', true) IS DISTINCT FROM 'off' "
    "FROM pg_event_trigger WHERE evtname IN ('worktracker_roundtrip_ddl_end', "
    "'worktracker_roundtrip_ddl_drop')"
)
# A table new to the application schemas that other tables already name: moved in from
# another schema (SET SCHEMA), so their lines changed with it.
_NAMED_ELSEWHERE = text(
    f"SELECT EXISTS (SELECT 1 FROM unnest(CAST(:new AS oid[])) AS n, "
    f"LATERAL {SCHEMA}.roundtrip_ddl_dependents(n) AS t "
    "WHERE t IS NULL OR t <> ALL(CAST(:tables AS oid[])))"
)


def install(connection: Connection) -> bool:
    """Log DDL in this database from now on. False, with nothing changed, when the
    connection's role may not create event triggers (not a superuser)."""
    history.ensure_table(connection)
    try:
        with connection.begin():
            connection.execute(text(_INSTALL))
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        return False
    return True


def take(connection: Connection, before: Catalog) -> set[int] | None:
    """The tables whose catalog entries may have changed since `before` was read, and
    empty the log; None when something outside any table changed: read everything then.

    Inside the caller's transaction: called inside a step's, it takes what the step logged.
    """
    logged = connection.execute(_TAKE).all()
    if not connection.execute(_ARMED).scalar():
        return None
    stored = [r for r in before.relations.values() if r.filenode]
    params = {"oids": [r.oid for r in stored], "nodes": [r.filenode for r in stored]}
    tables = {before.relations[o].owner for o in connection.execute(_NEW_FILES, params).scalars()}
    needs_full_read = False
    for is_class, objid, schema, owner, dropped in logged:
        shown = before.relations.get(objid) if is_class else None
        if schema is not None and schema not in before.schemas:
            # Outside the application schemas (temporary, bookkeeping, another schema):
            # a move out of them, or a table there that application objects may name.
            needs_full_read = True
        elif shown is not None and shown.kind == "S":
            needs_full_read = True  # a sequence of its own: schema-level lines
        elif owner is not None:
            tables.add(owner)
        elif dropped and is_class:
            # An index or sequence, gone with its catalog rows: its table is in `before`.
            # Not there: created by this step (its creation placed it), or never shown
            # (an owned sequence or a TOAST table, whose owner is logged as well).
            if shown is not None:
                tables.add(shown.owner)
        else:
            needs_full_read = True
    if needs_full_read:
        return None
    new = sorted(t for t in tables if t not in before.relations)
    if (
        new
        and connection.execute(_NAMED_ELSEWHERE, {"new": new, "tables": sorted(tables)}).scalar()
    ):
        return None
    return tables
