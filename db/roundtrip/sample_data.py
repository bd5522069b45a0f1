"""Representative rows for the tables of the application schemas, derived from the live
catalog, so that it keeps working as migrations add tables, columns, labels and CHECKs.

Every column gets a value (so that losing it is visible), by this rule, first match wins:
a hint in samples.SAMPLES; a foreign key: a row of the parent (the one of the same
number when the parent was filled in the same round); an enum, or a column that a CHECK
limits to a list (`col IN (…)`): the n-th value, and a round has as many rows as the
longest list, so that every label and value appears; otherwise a value of the column's
type that satisfies its own CHECKs (comparisons and BETWEEN, char_length bounds, regular
expressions, jsonb_typeof) and its length (varchar(n)). The last row of each round holds
NULL in every nullable column, so that a rollback that turns NULL into a value is seen. A
row that still breaks a CHECK over several columns is repaired (a nullable column of that
CHECK set to NULL first, then other values, foreign keys last: another parent row), and a
row that cannot be made unique is left out. Identity and generated columns are left to the
server.

Foreign keys that form a cycle are filled by inserting one table of the cycle with its
cycle-closing keys NULL (or, when DEFERRABLE, deferred), and setting them once their
parents have rows; a cycle of NOT NULL, non-deferrable keys gets a row of each table per
statement (writable CTEs: PostgreSQL checks those keys at the end of the statement).

With `allowed` (db/roundtrip/relaxed.py), a round also adds a row per thing the revision
newly allows: a NULL, an orphan, a duplicate, a value outside the old CHECK, so that a
downgrade that blindly restores the constraint fails as it would in production.
"""

from __future__ import annotations

import contextlib
import random
import re
import re._constants as sre
import re._parser as sre_parse
from collections import defaultdict
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

import psycopg
from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, NoResultFound

from db import catalog
from db.errors import CheckFailed
from db.roundtrip.relaxed import CHECK, DUPLICATE, NULL, ORPHAN, Allowed
from db.roundtrip.samples import EMPTY, SAMPLES

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
    # foreign-key column -> its constraint, qualified and quoted (for SET CONSTRAINTS)
    key_names: dict[str, str] = field(default_factory=dict)
    deferrable: set[str] = field(default_factory=set)  # foreign-key columns

    @property
    def qualified(self) -> str:
        return catalog.quoted(self.schema, self.name)

    @property
    def shown_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def rows_per_round(self) -> int:
        # A nullable column's list needs a row more: the round's last row holds its NULL.
        nullable = {c.name for c in self.columns if not c.not_null}
        lists = [len(c.labels) + (c.name in nullable) for c in self.columns if c.labels]
        lists += [len(r.values) + (n in nullable) for n, r in self.rules.items() if r.values]
        return max([ROWS_PER_ROUND, *lists])

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def breakable(self, column: str) -> bool:
        """Whether this foreign key can wait for its parent: nullable or deferrable."""
        return column in self.deferrable or not self.column(column).not_null


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
           ra.attname, format('%I.%I', n.nspname, co.conname), co.condeferrable
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
    for schema, name, column, referred, referred_column, key, deferrable in references:
        referred_schema, _, referred_name = referred.partition(".")
        child = tables.get(catalog.quoted(schema, name))
        if child is None:
            continue
        child.references[column] = (
            catalog.quoted(referred_schema.strip('"'), referred_name.strip('"')),
            referred_column,
        )
        child.key_names[column] = key
        if deferrable:
            child.deferrable.add(column)
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


def _derived_uuid(table: Table, column: Column) -> bool:
    """Whether row n of `table` holds _uuid(table, column, n) in `column`."""
    return (
        column.type_name == "uuid"
        and not column.skip
        and f"{table.name}.{column.name}" not in SAMPLES
        and not table.rules.get(column.name, Rules()).values
    )


def _cannot_fill(table: Table, error: DBAPIError) -> SampleDataError:
    detail = " ".join(str(error.orig).split("\n")[0].split())
    constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
    involved = table.checks.get(constraint or "", [])
    where = f" (constraint {constraint}" if constraint else ""
    if involved:
        where += f" on column(s) {', '.join(involved)}"
    return SampleDataError(
        f"cannot fill {table.shown_name} with a sample row: {detail}"
        + (f"{where})" if where else "")
        + ".",
        "add values for those columns to db/roundtrip/samples.py "
        '("table.column": lambda n: "SQL expression"), or check that the constraint can '
        "be satisfied at all",
    )


class _NotUsed(Exception):
    """The row went in but does not use what it was meant to: it is taken out again."""


@dataclass
class _Waiting:
    """A row whose cycle-closing foreign keys are set once their parents have rows."""

    table: Table
    n: int
    partition: int  # ctid is unique within a partition only
    ctid: str
    columns: list[str]


def _insert_row(connection: Connection, statement: str) -> tuple:
    """The one row `statement` inserts and returns, as begin_nested() around it would, in
    one round trip instead of three: the savepoint, the INSERT and the release go
    together (most of a fill's statements were savepoints and releases). A refused row
    rolls back to the savepoint and raises the DBAPIError SQLAlchemy would. Sent as it is:
    no bind parameters, as text() found none."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)  # the only driver we configure
    try:
        cursor = driver.execute(f"SAVEPOINT sample_row; {statement}; RELEASE SAVEPOINT sample_row")
    except psycopg.Error as exc:
        lost = driver.broken or driver.closed
        if lost:
            # What SQLAlchemy's own execute does: else the transaction's ROLLBACK on the
            # dead connection fails, and its error replaces this one.
            connection.invalidate()
        else:
            # Should this fail too, the first error is still the one to tell.
            with contextlib.suppress(psycopg.Error):
                driver.execute("ROLLBACK TO SAVEPOINT sample_row; RELEASE SAVEPOINT sample_row")
        raise DBAPIError.instance(
            statement, None, exc, psycopg.Error, connection_invalidated=lost
        ) from None
    cursor.nextset()  # the INSERT's RETURNING, after the SAVEPOINT's status
    row = cursor.fetchone()
    if row is None:  # a trigger or rule kept the row out: as .one() says it
        raise NoResultFound("No row was found when one was required")
    return row


class Filler:
    """Fills tables, a round at a time; numbers never repeat between rounds."""

    def __init__(self) -> None:
        self.next = 1
        self._filled: set[str] = set()
        self._postponed: set[tuple[str, str]] = set()
        self._waiting: list[_Waiting] = []
        self._together: set[str] = set()
        self.unused: list[str] = []
        """What the last round was asked to use (`allowed`) and no row could."""

    def fill(
        self,
        connection: Connection,
        only: set[str] | None = None,
        allowed: dict[str, list[Allowed]] | None = None,
    ) -> dict[str, int]:
        """Insert a round of rows into every table of the application schemas (or those
        named in `only`, quoted and qualified), and with `allowed` a row more for each thing
        a table newly allows (db/roundtrip/relaxed.py); return the rows added per table."""
        allowed = allowed or {}
        added: dict[str, int] = defaultdict(int)
        self.unused = []
        with connection.begin():
            tables = read_tables(connection, only=only)
            wanted = {
                q: t
                for q, t in tables.items()
                if (only is None or q in only) and not {t.name, t.shown_name} & EMPTY
            }
            steps, self._postponed = _in_dependency_order(wanted)
            count = max(
                (
                    max(t.rows_per_round() for t in step) + len(allowed.get(t.qualified, []))
                    for step in steps
                    for t in step
                ),
                default=ROWS_PER_ROUND,
            )
            first = self.next
            self.next += count
            self._filled, self._waiting = set(), []
            deferred = sorted(
                {tables[q].key_names[c] for q, c in self._postponed if c in tables[q].deferrable}
            )
            if deferred:
                connection.execute(text(f"SET CONSTRAINTS {', '.join(deferred)} DEFERRED"))
            for step in steps:
                if len(step) > 1:
                    last = first + self._insert_together(connection, tables, step, first)
                    added.update({t.qualified: last - first for t in step})
                for table in step:
                    if len(step) == 1:
                        last = first + table.rows_per_round()
                        for n in range(first, last):
                            if self._insert(connection, tables, table, n, first):
                                added[table.qualified] += 1
                    self._use_all(connection, tables, table, allowed, last, first, added)
            self._set_waiting(connection, tables, first, bool(deferred))
        return dict(added)

    def _use_all(
        self,
        connection: Connection,
        tables: dict[str, Table],
        table: Table,
        allowed: dict[str, list[Allowed]],
        last: int,
        first: int,
        added: dict[str, int],
    ) -> None:
        """The rows that use what the table newly allows; then the table counts as filled."""
        for k, thing in enumerate(allowed.get(table.qualified, [])):
            if self._use(connection, tables, table, thing, last + k, first):
                added[table.qualified] += 1
            else:
                self.unused.append(f"{table.shown_name}: {thing.kind} {thing.name}")
        self._filled.add(table.qualified)

    def _insert_together(
        self, connection: Connection, tables: dict[str, Table], step: list[Table], first: int
    ) -> int:
        """A row of each table of a NOT NULL, non-deferrable cycle per statement, each naming
        the others' keys of the same number (no repairs: an error names the tables)."""
        self._together = {t.qualified for t in step}
        rows = max(t.rows_per_round() for t in step)
        try:
            for n in range(first, first + rows):
                parts = []
                for table in step:
                    columns = [c for c in table.columns if not c.skip]
                    values = {c.name: self._value(tables, table, c, n, first) for c in columns}
                    if n == first + table.rows_per_round() - 1:
                        values |= {c.name: "NULL" for c in columns if not c.not_null}
                    parts.append(
                        f"INSERT INTO {table.qualified} "
                        f"({', '.join(catalog.ident(c.name) for c in columns)}) "
                        f"VALUES ({', '.join(values[c.name] for c in columns)})"
                    )
                statement = "WITH " + ", ".join(
                    f"row_{i} AS ({part})" for i, part in enumerate(parts[:-1])
                )
                with connection.begin_nested():
                    connection.execute(text(f"{statement} {parts[-1]}"))
        except DBAPIError as error:
            detail = " ".join(str(error.orig).split("\n")[0].split())
            raise SampleDataError(
                f"cannot fill {', '.join(t.shown_name for t in step)}, a cycle of NOT NULL "
                f"foreign keys filled a row of each at a time: {detail}.",
                "add values for those columns to db/roundtrip/samples.py, or make one of "
                "the keys DEFERRABLE or nullable",
            ) from None
        finally:
            self._together = set()
        return rows

    def _value(self, tables: dict[str, Table], table: Table, column: Column, n: int, first: int):
        hint = SAMPLES.get(f"{table.name}.{column.name}")
        if hint is not None:
            return hint(n)
        if column.name in table.references:
            return self._reference(tables, table, column, n, first)
        value = typed_value(table, column, n)
        if value is None and column.not_null:
            raise SampleDataError(
                f"cannot fill {table.shown_name}: no sample value for column {column.name} of "
                f"type {column.sql_type}.",
                f'add "{table.name}.{column.name}" to db/roundtrip/samples.py',
            )
        return value or "NULL"

    def _reference(
        self,
        tables: dict[str, Table],
        table: Table,
        column: Column,
        n: int,
        first: int,
        *,
        now: bool = False,
    ) -> str:
        """A parent row's key: the parent row of the same number when the parent was filled
        in this round, else one of its rows. `now`: the parent has its rows, even if this
        key closes a cycle."""
        referred, referred_column = table.references[column.name]
        target = tables.get(referred)
        parent = target.column(referred_column) if target and target.has(referred_column) else None
        derived = target is not None and parent is not None and _derived_uuid(target, parent)
        if referred in self._together and referred != table.qualified and target and parent:
            return self._value(tables, target, parent, n, first)  # the same statement's row
        if not now and (table.qualified, column.name) in self._postponed:
            if not column.not_null or target is None or parent is None:
                return "NULL"  # set once the parent has rows
            # Deferred, so any value of the type will do until it is set again.
            if derived:
                return _uuid(target.name, referred_column, n)
            return typed_value(target, parent, n) or "NULL"
        rows = first + table.rows_per_round()
        if referred == table.qualified and derived:  # self-reference: the previous row
            if first < n < rows:
                return _uuid(table.name, referred_column, n - 1)
            if n == first:  # the round's first row: NULL, or the row itself
                return "NULL" if not column.not_null else _uuid(table.name, referred_column, n)
        elif (
            derived
            and target is not None
            and referred in self._filled
            and n < first + target.rows_per_round()
        ):
            return _uuid(target.name, referred_column, n)
        name = catalog.ident(referred_column)
        return (
            f"(SELECT {name} FROM {referred} ORDER BY {name} "
            f"OFFSET {n - 1} % greatest((SELECT count(*) FROM {referred}), 1) LIMIT 1)"
        )

    def _insert(
        self,
        connection: Connection,
        tables: dict[str, Table],
        table: Table,
        n: int,
        first: int,
        fixed: dict[str, str] | None = None,
        verify: str | None = None,
    ) -> bool:
        """Insert row n, repairing it if a CHECK or a unique constraint refuses it; False
        when it cannot be made unique (the table is full for these values). `fixed`: values
        no repair changes; `verify`: an expression over the row (alias __row) that must be
        true, else the row is taken out again and the result is False."""
        columns = [c for c in table.columns if not c.skip]
        values = {c.name: self._value(tables, table, c, n, first) for c in columns}
        nullable = {c.name for c in columns if not c.not_null}
        null_row = n == first + table.rows_per_round() - 1
        if null_row:  # the round's last row: NULL wherever the schema allows it
            values |= dict.fromkeys(nullable, "NULL")
        fixed = fixed or {}
        values |= fixed
        names = ", ".join(catalog.ident(c.name) for c in columns)
        error = None
        for attempt in range(REPAIRS):
            statement = (
                f"INSERT INTO {table.qualified}{' AS __row' if verify else ''} ({names}) "
                f"VALUES ({', '.join(values[c.name] for c in columns)}) "
                f"RETURNING tableoid::oid, ctid::text, {verify or 'true'}"
            )
            try:
                if verify is None:
                    partition, ctid, used = _insert_row(connection, statement)
                else:
                    with connection.begin_nested():
                        partition, ctid, used = connection.execute(text(statement)).one()
                        if not used:
                            raise _NotUsed
            except _NotUsed:
                return False
            except DBAPIError as exc:
                error = exc
            else:
                waiting = sorted(
                    c
                    for q, c in self._postponed
                    if q == table.qualified and c not in fixed and not (null_row and c in nullable)
                )
                if waiting:
                    self._waiting.append(_Waiting(table, n, partition, ctid, waiting))
                return True
            state = getattr(error.orig, "sqlstate", None)
            constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
            if state == CHECK_VIOLATION and constraint in table.checks:
                if not self._repair(tables, table, constraint, values, n, first, attempt, fixed):
                    break
            elif state == UNIQUE_VIOLATION:
                other = n + (attempt + 1) * 100_003
                kept = set(fixed) | set(table.references) | (nullable if null_row else set())
                for column in columns:
                    if column.name not in kept:
                        values[column.name] = self._value(tables, table, column, other, first)
                if attempt == REPAIRS - 1:
                    return False
            else:
                break
        assert error is not None
        raise _cannot_fill(table, error) from None

    def _repair(
        self,
        tables: dict[str, Table],
        table: Table,
        constraint: str,
        values: dict[str, str],
        n: int,
        first: int,
        attempt: int,
        fixed: dict[str, str],
    ) -> bool:
        """Change one thing about a row that breaks a CHECK; False when out of ideas."""
        involved = [
            c for c in table.columns if c.name in table.checks[constraint] and c.name not in fixed
        ]
        nullable = [c for c in involved if not c.not_null and values.get(c.name) != "NULL"]
        if nullable:  # NULL keeps the other columns' labels and values covered
            values[nullable[0].name] = "NULL"
            return True
        # Foreign keys last: another parent row (two keys to one parent that must differ).
        changeable = [c for c in involved if c.name in values and c.name not in table.references]
        changeable += [c for c in involved if c.name in values and c.name in table.references]
        if not changeable:
            return False
        column = changeable[attempt % len(changeable)]
        values[column.name] = self._value(tables, table, column, n + attempt + 1, first)
        return True

    def _set_waiting(
        self, connection: Connection, tables: dict[str, Table], first: int, deferred: bool
    ) -> None:
        """Set the cycle-closing foreign keys, now that every parent has its rows."""
        for waiting in self._waiting:
            table = waiting.table
            assignments = ", ".join(
                f"{catalog.ident(c)} = "
                + self._reference(tables, table, table.column(c), waiting.n, first, now=True)
                for c in waiting.columns
            )
            try:
                with connection.begin_nested():
                    connection.execute(
                        text(
                            f"UPDATE {table.qualified} SET {assignments} "
                            f"WHERE tableoid = {waiting.partition} "
                            f"AND ctid = {_quote(waiting.ctid)}::tid"
                        )
                    )
            except DBAPIError as error:
                if not any(table.column(c).not_null for c in waiting.columns):
                    continue  # nullable keys: the NULL they hold is a valid row too
                raise _cannot_fill(table, error) from None
        if deferred:  # a key still wrong fails here, with its table named, not at COMMIT
            try:
                with connection.begin_nested():
                    connection.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
            except DBAPIError as error:
                raise SampleDataError(
                    "cannot fill a cycle of foreign keys: "
                    + " ".join(str(error.orig).split("\n")[0].split())
                    + ".",
                    "add values for the foreign-key columns to db/roundtrip/samples.py",
                ) from None

    # --- rows that use what a revision newly allows ----------------------------------------

    def _use(
        self,
        connection: Connection,
        tables: dict[str, Table],
        table: Table,
        thing: Allowed,
        n: int,
        first: int,
    ) -> bool:
        """Insert row n so that it uses `thing`: the first of the attempts that goes in and
        does use it (its check expression says so); False when none does."""
        for fixed, verify in self._attempts(connection, table, thing, n):
            try:
                if self._insert(connection, tables, table, n, first, fixed, verify):
                    return True
            except SampleDataError:
                continue
        return False

    def _attempts(
        self, connection: Connection, table: Table, thing: Allowed, n: int
    ) -> list[tuple[dict[str, str], str | None]]:
        """Values to try, each with the expression that proves the row uses `thing`."""
        if not all(table.has(c) for c in (*thing.columns, *thing.also)):
            return []
        keys = [catalog.ident(c) for c in thing.columns]
        if thing.kind == NULL:
            return [({thing.columns[0]: "NULL"}, None)]
        if thing.kind == DUPLICATE and keys:  # the key of a row already there
            present = [f"{k} IS NOT NULL" for k in keys]
            where = " AND ".join(present + ([f"({thing.expression})"] if thing.expression else []))
            copied = {
                c: f"(SELECT {catalog.ident(c)} FROM {table.qualified} WHERE {where} "
                "ORDER BY ctid LIMIT 1)"
                for c in dict.fromkeys((*thing.columns, *thing.also))
            }
            return [(copied, " AND ".join(present))]
        if thing.kind == ORPHAN:  # a key no parent row has
            verify = None
            if connection.execute(
                text("SELECT to_regclass(:name)"), {"name": thing.parent}
            ).scalar():
                pairs = " AND ".join(
                    f"__parent.{catalog.ident(p)} = __row.{k}"
                    for p, k in zip(thing.parent_columns, keys, strict=False)
                )
                verify = f"NOT EXISTS (SELECT 1 FROM {thing.parent} AS __parent WHERE {pairs})"
            candidates = [_orphans(table, table.column(c), n) for c in thing.columns]
            return [
                (dict(zip(thing.columns, values, strict=True)), verify)
                for values in zip(*candidates, strict=False)
            ]
        if thing.kind == CHECK:  # one column at a time, outside what the old CHECK allowed
            verify = f"({thing.expression}) IS FALSE"
            return [
                ({name: value}, verify)
                for name in thing.columns
                if not table.column(name).skip
                for value in _outside(table, table.column(name), thing.expression, n)
            ]
        return []


def _orphans(table: Table, column: Column, n: int) -> list[str]:
    """Values of the column that no parent row is likely to hold."""
    if column.type_name == "uuid":
        return [
            f"md5({_quote(f'orphan {table.name}.{column.name}.{n}.{k}')})::uuid" for k in (1, 2)
        ]
    found = [typed_value(table, column, n + 7_919 * k) for k in (1, 2)]
    if column.type_name in ("int2", "int4", "int8", "numeric", "float4", "float8"):
        found = [str(-n), str(-n - 7_919), *found]
    if column.type_name in ("text", "varchar", "bpchar", "citext"):
        found.append(_quote(f"orphan {n}"))
    return [value for value in found if value is not None]


def _outside(table: Table, column: Column, expression: str, n: int) -> list[str]:
    """Values that an old CHECK may refuse and the column may take now: values a list now
    has, numbers past the old bounds, texts past the old lengths, other values."""
    old = Rules()
    _read_rule(old, column.name, expression)
    now = table.rules.get(column.name, Rules())
    found: list[str] = []
    listed = now.values or list(column.labels)
    found += [
        f"{_quote(v)}::{column.sql_type}" for v in listed if not old.values or v not in old.values
    ]
    if column.type_name in ("int2", "int4", "int8", "numeric", "float4", "float8"):
        integer = column.type_name.startswith("int")
        bounds = [old.low - 1 if old.low is not None else None]
        bounds += [old.high + 1 if old.high is not None else None, now.low, now.high, 0, -1]
        found += [str(int(b)) if integer else repr(float(b)) for b in bounds if b is not None]
    if column.type_name in ("text", "varchar", "bpchar", "citext"):
        if old.min_length:
            found.append(_quote("x" * (old.min_length - 1)))
        if old.max_length is not None:
            found.append(_quote("x" * (old.max_length + 1)))
        found += [_quote(f"outside {n}"), "''"]
    if column.type_name == "bool":
        found += ["true", "false"]
    found += [v for v in (typed_value(table, column, n + k) for k in (1, 2)) if v is not None]
    return list(dict.fromkeys(found))[:12]


def _in_dependency_order(
    tables: dict[str, Table],
) -> tuple[list[list[Table]], set[tuple[str, str]]]:
    """Parents first, in steps of one table, or of several that a row each at a time fill
    in one statement (a cycle of NOT NULL, non-deferrable keys: PostgreSQL checks those at
    the end of the statement); and the foreign keys (table, column) that close a cycle
    through a nullable or deferrable key: NULL or deferred, set once their parents have
    rows."""
    steps: list[list[Table]] = []
    placed: set[str] = set()
    postponed: set[tuple[str, str]] = set()
    pending = dict(tables)
    while pending:
        ready = [
            q
            for q, t in pending.items()
            if all(
                ref == q or ref in placed or ref not in tables for ref, _ in t.references.values()
            )
        ]
        if ready:
            steps += [[pending.pop(q)] for q in sorted(ready)]
            placed.update(ready)
            continue
        waits = {
            q: [c for c, (ref, _) in t.references.items() if ref in pending and ref != q]
            for q, t in pending.items()
        }
        can_wait = sorted(
            (sum(pending[q].column(c).not_null for c in cs), q)
            for q, cs in waits.items()
            if all(pending[q].breakable(c) for c in cs)
        )
        if can_wait:
            q = can_wait[0][1]
            postponed |= {(q, c) for c in waits[q]}
            steps.append([pending.pop(q)])
            placed.add(q)
            continue
        cycle = _strict_cycle(pending, waits)
        for q in cycle:
            outside = [c for c in waits[q] if pending[q].references[c][0] not in cycle]
            if not all(pending[q].breakable(c) for c in outside):
                raise _cycle_error(pending, waits, cycle, "")
            postponed |= {(q, c) for c in outside}
            for c in waits[q]:
                parent_name, key = pending[q].references[c]
                parent = pending.get(parent_name)
                if parent is not None and (parent.column(key).skip or key in parent.references):
                    raise _cycle_error(pending, waits, cycle, f"{parent.name}.{key}")
        steps.append([pending.pop(q) for q in sorted(cycle)])
        placed.update(cycle)
    return steps, postponed


def _strict_cycle(pending: dict[str, Table], waits: dict[str, list[str]]) -> set[str]:
    """A cycle of foreign keys that cannot wait (NOT NULL, not deferrable)."""
    graph = {
        q: {pending[q].references[c][0] for c in cs if not pending[q].breakable(c)}
        for q, cs in waits.items()
    }
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return set(error.args[1])
    return set(pending)


def _cycle_error(
    pending: dict[str, Table], waits: dict[str, list[str]], cycle: set[str], generated: str
) -> SampleDataError:
    members = [pending[q] for q in sorted(cycle)]
    keys = [
        f"{t.name}.{c} → {catalog.shown(t.references[c][0])}"
        for t in members
        for c in waits[t.qualified]
        if t.references[c][0] in cycle
    ]
    why = (
        f"{generated} is set by the server, so the rows cannot name each other beforehand"
        if generated
        else "and a key to a table outside the cycle is NOT NULL too"
    )
    names = ", ".join(f'"{t.name}"' for t in members)
    return SampleDataError(
        f"cannot fill {', '.join(t.shown_name for t in members)}: their foreign keys form a "
        f"cycle ({'; '.join(keys)}) in which every key is NOT NULL and not DEFERRABLE, "
        f"{why}.",
        "make one of these keys DEFERRABLE (INITIALLY IMMEDIATE keeps what the application "
        f"sees) or nullable; or add {names} to EMPTY in db/roundtrip/samples.py to leave "
        "these tables without sample rows (their rows are then not checked)",
    )
