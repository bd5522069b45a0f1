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
_INSTALL = f"""
CREATE TABLE {LOG} (
    classid oid, objid oid, object_type text, owner oid, dropped boolean NOT NULL
);
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO {LOG}
    SELECT d.classid, d.objid, d.object_type, CASE d.classid
        WHEN 'pg_class'::regclass::oid THEN (
            SELECT CASE
                WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f') THEN c.oid
                WHEN c.relkind IN ('i', 'I') THEN
                    (SELECT x.indrelid FROM pg_index x WHERE x.indexrelid = c.oid)
                WHEN c.relkind = 'S' THEN  -- a serial or identity column's: its table
                    (SELECT p.refobjid FROM pg_depend p
                      WHERE p.classid = 'pg_class'::regclass AND p.objid = c.oid
                        AND p.refclassid = 'pg_class'::regclass AND p.deptype IN ('a', 'i')
                      LIMIT 1)
            END FROM pg_class c WHERE c.oid = d.objid)
        WHEN 'pg_constraint'::regclass::oid THEN
            (SELECT nullif(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = d.objid)
        WHEN 'pg_trigger'::regclass::oid THEN
            (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = d.objid)
        WHEN 'pg_policy'::regclass::oid THEN
            (SELECT p.polrelid FROM pg_policy p WHERE p.oid = d.objid)
        WHEN 'pg_rewrite'::regclass::oid THEN
            (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid)
        WHEN 'pg_attrdef'::regclass::oid THEN
            (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = d.objid)
        WHEN 'pg_statistic_ext'::regclass::oid THEN
            (SELECT s.stxrelid FROM pg_statistic_ext s WHERE s.oid = d.objid)
    END, false
    FROM pg_event_trigger_ddl_commands() d
    WHERE d.schema_name IS DISTINCT FROM '{SCHEMA}';
END $$;
CREATE FUNCTION {SCHEMA}.roundtrip_ddl_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Gone from the catalog by now: placed by what was dropped with them, or by name.
    INSERT INTO {LOG}
    SELECT d.classid, d.objid, d.object_type, CASE
        WHEN d.classid = 'pg_class'::regclass::oid
             AND (d.objsubid <> 0 OR d.object_type IN {_TABLE_KINDS}) THEN d.objid
        WHEN d.classid = 'pg_type'::regclass::oid THEN  -- a dropped table's row type
            (SELECT t.objid FROM pg_event_trigger_dropped_objects() t
              WHERE t.classid = 'pg_class'::regclass AND t.objsubid = 0
                AND t.object_type IN {_TABLE_KINDS}
                AND t.object_identity = regexp_replace(d.object_identity, '\\[\\]$', ''))
        WHEN d.object_type IN ('table constraint', 'trigger', 'policy', 'rule',
                               'default value') THEN coalesce(
            to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))::oid,
            (SELECT t.objid FROM pg_event_trigger_dropped_objects() t
              WHERE t.classid = 'pg_class'::regclass AND t.objsubid = 0
                AND t.object_type IN {_TABLE_KINDS}
                AND t.object_identity
                    = format('%I.%I', d.address_names[1], d.address_names[2])))
    END, true
    FROM pg_event_trigger_dropped_objects() d
    WHERE d.schema_name IS DISTINCT FROM '{SCHEMA}'
      AND d.schema_name IS DISTINCT FROM 'pg_toast' AND NOT d.is_temporary;
END $$;
CREATE EVENT TRIGGER worktracker_roundtrip_ddl_end ON ddl_command_end
    EXECUTE FUNCTION {SCHEMA}.roundtrip_ddl_end();
CREATE EVENT TRIGGER worktracker_roundtrip_ddl_drop ON sql_drop
    EXECUTE FUNCTION {SCHEMA}.roundtrip_ddl_drop();
ALTER EVENT TRIGGER worktracker_roundtrip_ddl_end ENABLE ALWAYS;
ALTER EVENT TRIGGER worktracker_roundtrip_ddl_drop ENABLE ALWAYS;
"""

# TRUNCATE is no DDL to event triggers; it gives the table a new file, as do VACUUM FULL
# and CLUSTER. The catalog keeps file nodes (the stairway re-reads rewritten tables' rows).
_NEW_FILES = text(
    "SELECT k.oid FROM unnest(CAST(:oids AS oid[]), CAST(:nodes AS oid[])) AS k(oid, node) "
    "LEFT JOIN pg_class c ON c.oid = k.oid WHERE c.relfilenode IS DISTINCT FROM k.node"
)
_TAKE = text(
    f"WITH taken AS (DELETE FROM {LOG} RETURNING classid, objid, owner, dropped) "
    "SELECT classid = 'pg_class'::regclass, objid, owner, dropped FROM taken"
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
    holding = [r for r in before.relations.values() if r.holds_rows]
    params = {"oids": [r.oid for r in holding], "nodes": [r.filenode for r in holding]}
    tables = set(connection.execute(_NEW_FILES, params).scalars())
    needs_full_read = False
    for is_class, objid, owner, dropped in connection.execute(_TAKE):
        shown = before.relations.get(objid) if is_class else None
        if shown is not None and shown.kind == "S":
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
    return None if needs_full_read else tables
