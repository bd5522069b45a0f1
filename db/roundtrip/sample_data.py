"""Representative rows for the tables of the application schemas, derived from the live
catalog, so that it keeps working as migrations add tables, columns, labels and CHECKs.

Every column gets a value (so that losing it is visible), by this rule, first match wins:
a hint in samples.SAMPLES; a foreign key: a row of the parent (the one of the same
number when the parent was filled in the same round); an enum, or a column that a CHECK
limits to a list (`col IN (…)`): the n-th value, and a round has as many rows as the
longest list, so that every label and value appears; otherwise a value of the column's
type that satisfies its own CHECKs (comparisons and BETWEEN, char_length bounds, regular
expressions, jsonb_typeof) and its length (varchar(n)). A row that still breaks a CHECK
over several columns is repaired (a nullable column of that CHECK set to NULL first, then
other values), and a row that cannot be made unique is left out. Identity and generated
columns are left to the server.
"""

from __future__ import annotations

import random
import re
import re._constants as sre
import re._parser as sre_parse
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from db import catalog
from db.errors import CheckFailed
from db.roundtrip.samples import SAMPLES

ROWS_PER_ROUND = 3
REPAIRS = 12
"""Attempts at one row that breaks a CHECK or a unique constraint."""

CHECK_VIOLATION, UNIQUE_VIOLATION = "23514", "23505"


class SampleDataError(CheckFailed):
    """A table could not be filled with rows that satisfy its constraints."""


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str  # pg_type.typname
    sql_type: str  # format_type(), e.g. "timestamp with time zone"
    is_enum: bool
    not_null: bool
    skip: bool  # identity or generated: the server fills it
    max_length: int | None = None  # varchar(n), char(n)
    labels: tuple[str, ...] = ()  # an enum's


@dataclass
class Rules:
    """What the column's own CHECK constraints allow."""

    values: list[str] | None = None  # col IN (…)
    low: float | None = None
    high: float | None = None
    min_length: int = 0
    max_length: int | None = None
    patterns: list[str] = field(default_factory=list)
    json_object: bool = False


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    # column -> (referenced table's qualified name, referenced column)
    references: dict[str, tuple[str, str]] = field(default_factory=dict)
    rules: dict[str, Rules] = field(default_factory=dict)
    checks: dict[str, list[str]] = field(default_factory=dict)  # constraint -> its columns

    @property
    def qualified(self) -> str:
        return catalog.quoted(self.schema, self.name)

    @property
    def shown_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def rows_per_round(self) -> int:
        lists = [len(c.labels) for c in self.columns if c.labels]
        lists += [len(r.values) for r in self.rules.values() if r.values]
        return max([ROWS_PER_ROUND, *lists])


def _variants(query: str, only: str) -> dict[bool, TextClause]:
    """`query` for every table (False) and for some (True, with the condition `only`): two
    statements, not one with `:everything OR …`, whose generic plan (psycopg prepares a
    statement run five times) would read every table's rows of the catalog each time."""
    return {False: text(query.format(only="")), True: text(query.format(only=only))}


_COLUMNS = _variants(
    """
    SELECT n.nspname, c.relname, a.attname, t.typname, format_type(a.atttypid, a.atttypmod),
           t.typtype = 'e', a.attnotnull, a.attidentity <> '' OR a.attgenerated <> '',
           CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4
                THEN a.atttypmod - 4 END,
           CASE WHEN t.typtype = 'e' THEN ARRAY(
                SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
                 ORDER BY e.enumsortorder) END
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_type t ON t.oid = a.atttypid
     WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p')
       {only}
       AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY n.nspname, c.relname, a.attnum
    """,
    "AND c.oid = ANY(:oids)",
)
_REFERENCES = _variants(
    """
    SELECT n.nspname, c.relname, a.attname, format('%I.%I', rn.nspname, rc.relname),
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
       {only}
    """,
    "AND co.conrelid = ANY(:oids)",
)
_CHECKS = _variants(
    """
    SELECT n.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid),
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = co.conrelid AND a.attnum = ANY(co.conkey))
      FROM pg_constraint co
      JOIN pg_class c ON c.oid = co.conrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE co.contype = 'c' AND n.nspname = ANY(:schemas)
       {only}
    """,
    "AND co.conrelid = ANY(:oids)",
)


_WANTED = text(
    """
    WITH named AS (  -- looked up one by one, not by naming every relation there is
        SELECT to_regclass(name)::oid AS oid FROM unnest(CAST(:names AS text[])) AS name
         WHERE to_regclass(name) IS NOT NULL)
    SELECT oid FROM named
    UNION
    SELECT co.confrelid FROM pg_constraint co JOIN named ON named.oid = co.conrelid
     WHERE co.contype = 'f'
    """
)


def read_tables(
    connection: Connection, schemas: list[str] | None = None, only: set[str] | None = None
) -> dict[str, Table]:
    """The application schemas' tables, keyed by qualified name; with `only`, just those
    tables and the ones their foreign keys refer to (a fill reads what it fills)."""
    schemas = catalog.app_schemas(connection) if schemas is None else schemas
    tables: dict[str, Table] = {}
    params: dict = {"schemas": schemas}
    some = only is not None
    if only is not None:
        params["oids"] = list(connection.execute(_WANTED, {"names": sorted(only)}).scalars())
    for row in connection.execute(_COLUMNS[some], params):
        schema, name, column, type_name, sql_type, is_enum, not_null, skip, length, labels = row
        table = tables.setdefault(catalog.quoted(schema, name), Table(schema, name))
        table.columns.append(
            Column(
                column, type_name, sql_type, is_enum, not_null, skip, length, tuple(labels or ())
            )
        )
    references = connection.execute(_REFERENCES[some], params)
    for schema, name, column, referred, referred_column in references:
        referred_schema, _, referred_name = referred.partition(".")
        if catalog.quoted(schema, name) not in tables:
            continue
        tables[catalog.quoted(schema, name)].references[column] = (
            catalog.quoted(referred_schema.strip('"'), referred_name.strip('"')),
            referred_column,
        )
    for schema, name, constraint, definition, columns in connection.execute(_CHECKS[some], params):
        table = tables[catalog.quoted(schema, name)]
        table.checks[constraint] = list(columns)
        if len(columns) == 1:
            _read_rule(table.rules.setdefault(columns[0], Rules()), columns[0], definition)
    return tables


# --- reading the common CHECK forms --------------------------------------------------------

_CAST = re.compile(r"::(?:[a-z_]+\.)?[a-z_ ]+(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?")
_NUMBER = r"\(?(-?\d+(?:\.\d+)?)\)?"
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def _read_rule(rules: Rules, column: str, definition: str) -> None:
    name = rf'\(?"?{re.escape(column)}"?\)?'
    plain = _CAST.sub("", definition)
    if found := re.search(rf"{name}\s*=\s*ANY\s*\(\s*\(?ARRAY\[(.*?)\]", plain):
        items = _LITERAL.findall(found[1]) or re.findall(r"-?\d+(?:\.\d+)?", found[1])
        rules.values = [item.replace("''", "'") for item in items]
    for op, number in re.findall(rf"{name}\s*(>=|>|<=|<|=)\s*{_NUMBER}", plain):
        _bound(rules, op, float(number))
    for number, op in re.findall(rf"{_NUMBER}\s*(>=|>|<=|<)\s*{name}", plain):
        _bound(rules, {">=": "<=", ">": "<", "<=": ">=", "<": ">"}[op], float(number))
    length = rf"(?:char_length|length)\({name}\)"
    for op, number in re.findall(rf"{length}\s*(>=|>|<=|<|=)\s*{_NUMBER}", plain):
        value = int(float(number))
        if op in (">=", ">", "="):
            rules.min_length = max(rules.min_length, value + (op == ">"))
        if op in ("<=", "<", "="):
            limit = value - (op == "<")
            rules.max_length = limit if rules.max_length is None else min(rules.max_length, limit)
    for pattern in re.findall(rf"{name}\s*~\*?\s*'((?:[^']|'')*)'", definition):
        rules.patterns.append(pattern.replace("''", "'"))
    if re.search(rf"jsonb?_typeof\({name}\)\s*=\s*'object'", plain):
        rules.json_object = True


def _bound(rules: Rules, op: str, number: float) -> None:
    if op in (">", ">="):
        low = number + (1 if op == ">" else 0)
        rules.low = low if rules.low is None else max(rules.low, low)
    elif op in ("<", "<="):
        high = number - (1 if op == "<" else 0)
        rules.high = high if rules.high is None else min(rules.high, high)
    else:
        rules.low = rules.high = number


# --- a string that matches a regular expression ---------------------------------------------

_POSIX = {
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:alnum:]": "a-zA-Z0-9",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": " ",
    "[:xdigit:]": "0-9a-fA-F",
}
_CATEGORY = {
    sre.CATEGORY_DIGIT: "0123456789",
    sre.CATEGORY_WORD: "abcdefghijklmnopqrstuvwxyz0123456789_",
    sre.CATEGORY_SPACE: " ",
}
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!"


def matching(pattern: str, seed: str) -> str | None:
    """A deterministic string that matches `pattern` (PostgreSQL's common forms)."""
    for posix, plain in _POSIX.items():
        pattern = pattern.replace(posix, plain)
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError):
        return None
    chance = random.Random(seed)
    try:
        return "".join(_emit(parsed, chance))
    except (ValueError, IndexError):
        return None


def _choices(items, chance: random.Random) -> str:
    allowed, negate = [], False
    for op, value in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            allowed.append(chr(value))
        elif op is sre.RANGE:
            allowed += [chr(c) for c in range(value[0], min(value[1], value[0] + 200) + 1)]
        elif op is sre.CATEGORY:
            allowed += list(_CATEGORY.get(value, "a"))
    if negate:
        allowed = [c for c in _ALPHABET if c not in allowed]
    return chance.choice(allowed)


def _emit(parsed, chance: random.Random) -> list[str]:
    out: list[str] = []
    for op, value in parsed:
        if op is sre.LITERAL:
            out.append(chr(value))
        elif op is sre.NOT_LITERAL:
            out.append(chance.choice([c for c in _ALPHABET if c != chr(value)]))
        elif op is sre.ANY:
            out.append(chance.choice(_ALPHABET))
        elif op is sre.IN:
            out.append(_choices(value, chance))
        elif op is sre.BRANCH:
            out += _emit(chance.choice(value[1]), chance)
        elif op is sre.SUBPATTERN:
            out += _emit(value[-1], chance)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, item = value
            high = low + 4 if high is sre.MAXREPEAT else high
            for _ in range(chance.randint(low, max(low, min(high, low + 4)))):
                out += _emit(item, chance)
        elif op in (sre.AT, sre.GROUPREF):
            continue
        else:
            raise ValueError(f"unsupported regular expression part {op}")
    return out


# --- values ------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _uuid(table: str, column: str, n: int) -> str:
    return f"md5({_quote(f'{table}.{column}.{n}')})::uuid"


def _text(table: Table, column: Column, rules: Rules, n: int) -> str:
    if rules.patterns:
        for attempt in range(20):
            found = matching(rules.patterns[0], f"{table.qualified}.{column.name}.{n}.{attempt}")
            if found is not None and _fits(found, column, rules):
                return found
    base = f"sample {table.name}.{column.name} {n}"
    longest = _longest(column, rules)
    if len(base) > longest:
        base = f"{n}"[-longest:] if longest else ""
    if len(base) < rules.min_length:
        base = base + "x" * (rules.min_length - len(base))
    return base


def _fits(value: str, column: Column, rules: Rules) -> bool:
    return rules.min_length <= len(value) <= _longest(column, rules)


def _longest(column: Column, rules: Rules) -> int:
    """The longest text the column takes: its CHECK's bound, its varchar(n), or 10,000."""
    return min(x for x in (rules.max_length, column.max_length, 10_000) if x is not None)


def _number(column: Column, rules: Rules, n: int) -> str:
    low = rules.low if rules.low is not None else (1 if rules.high is None else rules.high - 1000)
    high = rules.high if rules.high is not None else low + 1_000_000
    span = max(int(high - low), 0)
    value = low + (n % (span + 1) if span else 0)
    integer = column.type_name in ("int2", "int4", "int8")
    return str(int(value)) if integer else repr(float(value))


def typed_value(table: Table, column: Column, n: int) -> str | None:
    """A value of the column's type, within its own CHECKs, as an SQL expression."""
    rules = table.rules.get(column.name, Rules())
    if rules.values:
        return f"{_quote(rules.values[n % len(rules.values)])}::{column.sql_type}"
    if column.labels:
        return f"{_quote(column.labels[n % len(column.labels)])}::{column.sql_type}"
    type_name = column.type_name
    if type_name == "uuid":
        return _uuid(table.name, column.name, n)
    if type_name in ("text", "varchar", "bpchar", "citext", "name"):
        return _quote(_text(table, column, rules, n))
    if type_name in ("int2", "int4", "int8", "numeric", "float4", "float8"):
        return _number(column, rules, n)
    if type_name == "bool":
        return "true" if n % 2 else "false"
    if type_name in ("timestamptz", "timestamp"):
        return f"{type_name} '2024-01-01 00:00:00+00' + interval '{n} hours'"
    if type_name == "date":
        return f"date '2024-01-01' + {n}"
    if type_name in ("time", "timetz"):
        return f"time '00:00' + interval '{n % 1440} minutes'"
    if type_name == "interval":
        return f"interval '{n} minutes'"
    if type_name in ("jsonb", "json"):
        return f"'{{\"sample\": {n}}}'::{type_name}"
    if type_name == "bytea":
        return f"convert_to({_quote(f'sample {n}')}, 'UTF8')"
    if type_name in ("inet", "cidr"):
        return f"'10.0.{n // 250 % 250}.{n % 250}'::{type_name}"
    return None


class Filler:
    """Fills tables, a round at a time; numbers never repeat between rounds."""

    def __init__(self) -> None:
        self.next = 1
        self._only: set[str] | None = None
        self._filled: set[str] = set()

    def fill(self, connection: Connection, only: set[str] | None = None) -> dict[str, int]:
        """Insert a round of rows into every table of the application schemas (or those
        named in `only`, quoted and qualified); return the rows added per table."""
        self._only = only
        added: dict[str, int] = defaultdict(int)
        with connection.begin():
            tables = read_tables(connection, only=only)
            ordered = [
                t for t in _in_dependency_order(tables) if only is None or t.qualified in only
            ]
            count = max((t.rows_per_round() for t in ordered), default=ROWS_PER_ROUND)
            first = self.next
            self.next += count
            self._filled = set()
            for table in ordered:
                for n in range(first, first + table.rows_per_round()):
                    if self._insert(connection, tables, table, n, first):
                        added[table.qualified] += 1
                self._filled.add(table.qualified)
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
                and referred in self._filled
                and n < first + target.rows_per_round()
                and not SAMPLES.get(f"{target.name}.{referred_column}")
            ):
                return _uuid(target.name, referred_column, n)
            name = catalog.ident(referred_column)
            return (
                f"(SELECT {name} FROM {referred} ORDER BY {name} "
                f"OFFSET {n - 1} % greatest((SELECT count(*) FROM {referred}), 1) LIMIT 1)"
            )
        value = typed_value(table, column, n)
        if value is None and column.not_null:
            raise SampleDataError(
                f"cannot fill {table.shown_name}: no sample value for column {column.name} of "
                f"type {column.sql_type}.",
                f'add "{table.name}.{column.name}" to db/roundtrip/samples.py',
            )
        return value or "NULL"

    def _insert(
        self, connection: Connection, tables: dict[str, Table], table: Table, n: int, first: int
    ) -> bool:
        """Insert row n, repairing it if a CHECK or a unique constraint refuses it; False
        when it cannot be made unique (the table is full for these values)."""
        columns = [c for c in table.columns if not c.skip]
        values = {c.name: self._value(tables, table, c, n, first) for c in columns}
        names = ", ".join(catalog.ident(c.name) for c in columns)
        error = None
        for attempt in range(REPAIRS):
            statement = (
                f"INSERT INTO {table.qualified} ({names}) "
                f"VALUES ({', '.join(values[c.name] for c in columns)})"
            )
            try:
                with connection.begin_nested():
                    connection.execute(text(statement))
                return True
            except DBAPIError as exc:
                error = exc
            state = getattr(error.orig, "sqlstate", None)
            constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
            if state == CHECK_VIOLATION and constraint in table.checks:
                if not self._repair(tables, table, constraint, values, n, first, attempt):
                    break
            elif state == UNIQUE_VIOLATION:
                other = n + (attempt + 1) * 100_003
                for column in columns:
                    if column.name not in table.references and column.name in values:
                        values[column.name] = self._value(tables, table, column, other, first)
                if attempt == REPAIRS - 1:
                    return False
            else:
                break
        assert error is not None
        detail = " ".join(str(error.orig).split("\n")[0].split())
        constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        involved = table.checks.get(constraint or "", [])
        where = f" (constraint {constraint}" if constraint else ""
        if involved:
            where += f" on column(s) {', '.join(involved)}"
        raise SampleDataError(
            f"cannot fill {table.shown_name} with a sample row: {detail}"
            + (f"{where})" if where else "")
            + ".",
            "add values for those columns to db/roundtrip/samples.py "
            '("table.column": lambda n: "SQL expression"), or check that the constraint can '
            "be satisfied at all",
        ) from None

    def _repair(
        self,
        tables: dict[str, Table],
        table: Table,
        constraint: str,
        values: dict[str, str],
        n: int,
        first: int,
        attempt: int,
    ) -> bool:
        """Change one thing about a row that breaks a CHECK; False when out of ideas."""
        involved = [c for c in table.columns if c.name in table.checks[constraint]]
        nullable = [c for c in involved if not c.not_null and values.get(c.name) != "NULL"]
        if nullable:  # NULL keeps the other columns' labels and values covered
            values[nullable[0].name] = "NULL"
            return True
        changeable = [c for c in involved if c.name in values and c.name not in table.references]
        if not changeable:
            return False
        column = changeable[attempt % len(changeable)]
        values[column.name] = self._value(tables, table, column, n + attempt + 1, first)
        return True


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
