"""An inventory of everything in the app schemas, read from pg_catalog.

Two inventories are equal when the schemas hold the same tables, columns, types,
functions, triggers, constraints and indexes under the same names.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.settings import APP_SCHEMAS

_QUERY = text(
    """
    SELECT 'relation ' || c.relkind::text || ' ' || c.relname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas)
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
           || coalesce(' comment ' || col_description(c.oid, a.attnum), '')
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE n.nspname = ANY(:schemas) AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
    UNION ALL
    SELECT 'type ' || t.typname || ' ' || t.typtype::text
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname = ANY(:schemas)
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = ANY(:schemas)
    UNION ALL
    SELECT 'trigger ' || c.relname || '.' || tg.tgname || ' ' || pg_get_triggerdef(tg.oid)
      FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND NOT tg.tgisinternal
    UNION ALL
    SELECT 'constraint ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
      FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
     WHERE n.nspname = ANY(:schemas)
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas)
    UNION ALL
    SELECT 'comment ' || c.relname || ' ' || obj_description(c.oid, 'pg_class')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND obj_description(c.oid, 'pg_class') IS NOT NULL
    """
)


def app_inventory(connection: Connection) -> list[str]:
    """One sorted line per object in the app schemas."""
    rows = connection.execute(_QUERY, {"schemas": list(APP_SCHEMAS)}).scalars().all()
    if connection.in_transaction():
        connection.rollback()
    return sorted(rows)
