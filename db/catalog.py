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


def app_inventory(connection: Connection, *, end_transaction: bool = True) -> list[str]:
    """One sorted line per object in the app schemas.

    With end_transaction=False it reads inside the caller's transaction and leaves it open.
    """
    rows = connection.execute(_QUERY, {"schemas": list(APP_SCHEMAS)}).scalars().all()
    if end_transaction and connection.in_transaction():
        connection.rollback()
    return sorted(rows)


_TABLE_COLUMNS = text(
    """
    SELECT format('"%s"."%s"', n.nspname, c.relname), a.attname
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p')
       AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY 1, a.attnum
    """
)


def table_columns(connection: Connection) -> dict[str, list[str]]:
    """Qualified table name -> its columns, in the app schemas; leaves transactions alone."""
    shape: dict[str, list[str]] = {}
    for table, column in connection.execute(_TABLE_COLUMNS, {"schemas": list(APP_SCHEMAS)}):
        shape.setdefault(table, []).append(column)
    return shape


def shown(qualified: str) -> str:
    """A qualified name as people write it: public.tasks."""
    return qualified.replace('"', "")


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def holdings(
    connection: Connection, now: dict[str, list[str]], before: dict[str, list[str]]
) -> list[str]:
    """What the tables and columns in `now` but not in `before` hold, one line each
    (nothing for empty ones): going back to `before` destroys exactly that."""
    held = []
    for table, columns in sorted(now.items()):
        if table not in before:
            count = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            if count:
                held.append(f"table {shown(table)} ({_counted(count, 'row')})")
            continue
        for column in columns:
            if column in before[table]:
                continue
            count = connection.execute(text(f'SELECT count("{column}") FROM {table}')).scalar_one()
            if count:
                held.append(f"column {shown(table)}.{column} ({_counted(count, 'value')})")
    return held
