"""Representative rows for every table in the app schemas, derived from the live catalog,
so that it keeps working as migrations add tables and columns.

Every column gets a value (so that losing it is visible), by this rule, first match wins:
a hint in samples.SAMPLES; a foreign key: the parent row of the same number; a uuid:
md5(table.column.n); otherwise a value of the column's type. Identity and generated
columns are left to the server.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db import catalog
from db.roundtrip.samples import SAMPLES

ROWS_PER_ROUND = 3


class SampleDataError(Exception):
    """A table could not be filled: a constrained column needs a hint."""


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # pg_type.typname
    sql_type: str  # format_type(), e.g. "timestamp with time zone"
    is_enum: bool
    not_null: bool
    skip: bool  # identity or generated: the server fills it


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    # column -> (referenced table's qualified name, referenced column)
    references: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'


_COLUMNS = text(
    """
    SELECT n.nspname, c.relname, a.attname, t.typname, format_type(a.atttypid, a.atttypmod),
           t.typtype = 'e', a.attnotnull, a.attidentity <> '' OR a.attgenerated <> ''
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_type t ON t.oid = a.atttypid
     WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p')
       AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY n.nspname, c.relname, a.attnum
    """
)
_REFERENCES = text(
    """
    SELECT n.nspname, c.relname, a.attname, format('"%s"."%s"', rn.nspname, rc.relname),
           ra.attname
      FROM pg_constraint co
      JOIN pg_class c ON c.oid = co.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_class rc ON rc.oid = co.confrelid
      JOIN pg_namespace rn ON rn.oid = rc.relnamespace
      CROSS JOIN LATERAL unnest(co.conkey, co.confkey) AS k(col, refcol)
      JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.col
      JOIN pg_attribute ra ON ra.attrelid = co.confrelid AND ra.attnum = k.refcol
     WHERE co.contype = 'f' AND n.nspname = ANY(:schemas)
    """
)


def read_tables(connection: Connection) -> dict[str, Table]:
    """The app schemas' tables, keyed by qualified name."""
    tables: dict[str, Table] = {}
    params = {"schemas": catalog.app_schemas(connection)}
    for schema, name, column, type_name, sql_type, is_enum, not_null, skip in connection.execute(
        _COLUMNS, params
    ):
        table = tables.setdefault(f'"{schema}"."{name}"', Table(schema, name))
        table.columns.append(Column(column, type_name, sql_type, is_enum, not_null, skip))
    for schema, name, column, referred, referred_column in connection.execute(_REFERENCES, params):
        tables[f'"{schema}"."{name}"'].references[column] = (referred, referred_column)
    return tables


def shape(connection: Connection) -> dict[str, list[str]]:
    """Table -> its column names, now: what a fingerprint compares."""
    columns = catalog.table_columns(connection)
    connection.rollback()
    return columns


def _in_dependency_order(tables: dict[str, Table]) -> list[Table]:
    ordered: list[Table] = []
    placed: set[str] = set()
    pending = dict(tables)
    while pending:
        ready = [
            q
            for q, t in pending.items()
            if all(
                ref == q or ref in placed or ref not in tables for ref, _ in t.references.values()
            )
        ]
        if not ready:  # a cycle of foreign keys: the nullable ones are filled with NULL
            ready = [sorted(pending)[0]]
        for q in sorted(ready):
            ordered.append(pending.pop(q))
            placed.add(q)
    return ordered


def _uuid(table: str, column: str, n: int) -> str:
    return f"md5('{table}.{column}.{n}')::uuid"


def _typed_value(table: Table, column: Column, n: int) -> str | None:
    type_name = column.type_name
    if type_name == "uuid":
        return _uuid(table.name, column.name, n)
    if type_name in ("text", "varchar", "bpchar", "citext"):
        return f"'sample {table.name}.{column.name} {n}'"
    if type_name in ("int2", "int4", "int8", "numeric", "float4", "float8"):
        return str(n)
    if type_name == "bool":
        return "true" if n % 2 else "false"
    if type_name in ("timestamptz", "timestamp"):
        return f"timestamptz '2024-01-01 00:00:00+00' + interval '{n} hours'"
    if type_name == "date":
        return f"date '2024-01-01' + {n}"
    if type_name in ("jsonb", "json"):
        return f"'{{\"sample\": {n}}}'"
    if column.is_enum:
        values = f"enum_range(NULL::{column.sql_type})"
        return f"({values})[1 + {n} % array_length({values}, 1)]"
    return None


class Filler:
    """Fills every table with ROWS_PER_ROUND rows per call; numbers never repeat."""

    def __init__(self) -> None:
        self.round = 0
        self._only: set[str] | None = None

    def fill(self, connection: Connection, only: set[str] | None = None) -> dict[str, int]:
        """Insert rows into every table in the app schemas (or those named in `only`,
        quoted and qualified); return rows added per table."""
        first = self.round * ROWS_PER_ROUND + 1
        self.round += 1
        self._only = only
        added: dict[str, int] = defaultdict(int)
        with connection.begin():
            tables = read_tables(connection)
            for table in _in_dependency_order(tables):
                if only is not None and table.qualified not in only:
                    continue
                for n in range(first, first + ROWS_PER_ROUND):
                    self._insert(connection, tables, table, n, first)
                    added[table.qualified] += 1
        return dict(added)

    def _value(self, tables: dict[str, Table], table: Table, column: Column, n: int, first: int):
        hint = SAMPLES.get(f"{table.name}.{column.name}")
        if hint is not None:
            return hint(n)
        if column.name in table.references:
            referred, referred_column = table.references[column.name]
            if referred == table.qualified:  # self-reference: the previous row of the round
                parent = n - 1 if n > first else None
                return _uuid(table.name, referred_column, parent) if parent else "NULL"
            target = tables.get(referred)
            parent_column = next((c for c in target.columns if c.name == referred_column), None)
            if (
                parent_column is not None
                and parent_column.type_name == "uuid"
                and not SAMPLES.get(f"{target.name}.{referred_column}")
                and (self._only is None or referred in self._only)
            ):
                return _uuid(target.name, referred_column, n)
            return (
                f"(SELECT {referred_column} FROM {referred} ORDER BY {referred_column} "
                f"OFFSET {n - 1} % greatest((SELECT count(*) FROM {referred}), 1) LIMIT 1)"
            )
        value = _typed_value(table, column, n)
        if value is None and column.not_null:
            raise SampleDataError(
                f"no sample value for {table.name}.{column.name} of type {column.sql_type}: "
                "add one to db/roundtrip/samples.py"
            )
        return value or "NULL"

    def _insert(
        self, connection: Connection, tables: dict[str, Table], table: Table, n: int, first: int
    ) -> None:
        columns = [c for c in table.columns if not c.skip]
        values = [self._value(tables, table, c, n, first) for c in columns]
        names = ", ".join(f'"{c.name}"' for c in columns)
        statement = f"INSERT INTO {table.qualified} ({names}) VALUES ({', '.join(values)})"
        try:
            with connection.begin_nested():
                connection.execute(text(statement))
        except DBAPIError as error:
            detail = " ".join(str(error.orig).split())
            raise SampleDataError(
                f"could not fill {table.name} with sample row {n}: {detail}. Add sample values "
                "for its constrained columns to db/roundtrip/samples.py"
            ) from None


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    digest: str


def fingerprint(connection: Connection, columns: dict[str, list[str]]) -> dict[str, Fingerprint]:
    """Row count and an ordered content hash per table, over the given columns only."""
    prints = {}
    for table, names in columns.items():
        row = f"ROW({', '.join(f'{chr(34)}{c}{chr(34)}' for c in names)})::text"
        count, digest = connection.execute(
            text(
                f"SELECT count(*), md5(coalesce(string_agg(r, E'\\n' ORDER BY r), '')) "
                f"FROM (SELECT {row} AS r FROM {table}) AS rows"
            )
        ).one()
        prints[table] = Fingerprint(count, digest)
    connection.rollback()
    return prints


def common_shape(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    """Tables on both sides, with the columns both sides have."""
    return {t: [c for c in cols if c in b[t]] for t, cols in a.items() if t in b}


def holdings(
    connection: Connection, now: dict[str, list[str]], before: dict[str, list[str]]
) -> list[str]:
    """catalog.holdings(), ending the read's transaction."""
    held = catalog.holdings(connection, now, before)
    connection.rollback()
    return held
