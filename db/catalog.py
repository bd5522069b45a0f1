"""What the application schemas hold, read from pg_catalog in one round of queries.

A `Catalog` keeps every object with its identity (pg_class.oid, pg_attribute.attnum,
pg_enum.oid), because PostgreSQL keeps those across renames: a table or column renamed
and renamed back is the same object holding the same rows, not a loss and a new one.

- `lines()`: one sorted, name-based line per object; two catalogs with equal lines hold
  the same objects under the same names (what "the schema is as it was" means).
- `changes(before, after)`: the difference in human terms (a new table on one line, a
  rename, an enum label, a type change), for `migrate.plan` and failure messages.
- `app_schemas()`: every schema the application owns.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db import settings

# The namespaces `n` the application owns when app_schemas is not configured (:excluded is
# _excluded()); read() asks the same in its first statement.
_APP_NAMESPACE = "n.nspname <> ALL(:excluded) AND n.nspname !~ '^pg_'"
_SCHEMAS = text(f"SELECT n.nspname FROM pg_namespace n WHERE {_APP_NAMESPACE} ORDER BY 1")


def _excluded() -> list[str]:
    return ["information_schema", settings.BOOKKEEPING_SCHEMA]


def app_schemas(connection: Connection) -> list[str]:
    """The schemas the application owns: `[tool.worktracker] app_schemas`, or every
    non-system schema but the bookkeeping one. Reads inside the caller's transaction."""
    configured = settings.app_schemas()
    if configured is not None:
        return list(configured)
    return list(connection.execute(_SCHEMAS, {"excluded": _excluded()}).scalars())


def quoted(schema: str, name: str) -> str:
    """A qualified name safe to put in SQL."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), name.replace('"', '""'))


def ident(name: str) -> str:
    return '"{}"'.format(name.replace('"', '""'))


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    filenode: int
    comment: str | None
    definition: str | None  # views and materialized views
    populated: bool
    options: str  # persistence, storage options, RLS, replica identity, partitioning
    owner: int
    """The table an index belongs to; the relation itself for any other kind. Its lines
    are grouped under it, and read again with it."""

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return quoted(self.schema, self.name)

    @property
    def holds_rows(self) -> bool:
        return self.kind in ("r", "p", "m")


@dataclass(frozen=True)
class Column:
    table: int  # pg_class.oid
    attnum: int
    name: str
    type: str
    type_oid: int
    not_null: bool
    default: str | None
    comment: str | None
    identity: str
    generated: str
    collation: str | None
    options: str
    """Storage, compression and statistics target where not the default; the sequence of
    an identity or serial column, with its options."""

    def described(self) -> str:
        text_ = self.type + (f" collate {self.collation}" if self.collation else "")
        text_ += " not null" if self.not_null else ""
        if self.default is not None:
            text_ += f" default {self.default}"
        if self.identity:
            text_ += " identity"
        if self.generated:
            text_ += " generated"
        if self.options:
            text_ += f" ({self.options})"
        return text_


@dataclass(frozen=True)
class Enum:
    oid: int
    schema: str
    name: str
    labels: tuple[tuple[int, str], ...]  # (pg_enum.oid, label) in sort order
    comment: str | None

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Thing:
    """Any other object, named within a schema or a table: what it is and its definition."""

    kind: str  # 'index', 'constraint', 'trigger', 'function', 'type', 'sequence', ...
    schema: str
    table: int | None  # the pg_class.oid it belongs to, if any
    name: str
    definition: str


@dataclass
class Catalog:
    schemas: dict[str, str | None] = field(default_factory=dict)  # name -> comment
    relations: dict[int, Relation] = field(default_factory=dict)
    columns: dict[tuple[int, int], Column] = field(default_factory=dict)
    enums: dict[int, Enum] = field(default_factory=dict)
    things: list[Thing] = field(default_factory=list)
    extensions: list[str] = field(default_factory=list)
    _by_table: dict[int, list[Column]] | None = field(default=None, repr=False, compare=False)
    _lines: list[str] | None = field(default=None, repr=False, compare=False)
    _groups: dict[int | None, list[str]] | None = field(default=None, repr=False, compare=False)
    _by_name: dict[str, Relation] | None = field(default=None, repr=False, compare=False)

    def table_columns(self, oid: int) -> list[Column]:
        """The columns of table `oid`, in order."""
        if self._by_table is None:
            self._by_table = {}
            for (table, _), column in sorted(self.columns.items()):
                self._by_table.setdefault(table, []).append(column)
        return self._by_table.get(oid, [])

    def relation_named(self, shown: str) -> Relation | None:
        if self._by_name is None:  # asked once per table per revision: not a scan each time
            self._by_name = {r.shown: r for r in self.relations.values()}
        return self._by_name.get(shown)

    def differences(self, other: Catalog) -> list[str]:
        """The parts in which two reads differ, identities and file nodes included: none
        for two reads of one database in one state."""
        parts = {
            "lines": (self.lines(), other.lines()),
            "relations": (self.relations, other.relations),
            "columns": (self.columns, other.columns),
            "things": (Counter(self.things), Counter(other.things)),
            "enums": (self.enums, other.enums),
            "schemas": (self.schemas, other.schemas),
            "extensions": (self.extensions, other.extensions),
        }
        return [name for name, (mine, theirs) in parts.items() if mine != theirs]

    def _owner(self, oid: int | None) -> str:
        relation = self.relations.get(oid) if oid is not None else None
        return relation.shown if relation else ""

    def lines(self) -> list[str]:
        """One line per object, by name: equal lines mean the same schema. Computed once:
        a catalog is not changed after it was read (the stairway compares each twice)."""
        if self._lines is None:
            self._lines = sorted(itertools.chain.from_iterable(self._line_groups().values()))
        return self._lines

    def _line_groups(self) -> dict[int | None, list[str]]:
        """The lines by the table they belong to (None: schemas, enums, functions...), so
        that a catalog read again for a few tables renders only theirs."""
        if self._groups is None:
            self._groups = self._render(
                self.relations.values(), self.columns.values(), self.things, schema_level=True
            )
        return self._groups

    def _render(
        self,
        relations: Iterable[Relation],
        columns: Iterable[Column],
        things: Iterable[Thing],
        *,
        schema_level: bool,
    ) -> dict[int | None, list[str]]:
        groups: dict[int | None, list[str]] = {}
        if schema_level:
            top = groups.setdefault(None, [])
            top += [f"schema {n}" + (f" comment {c}" if c else "") for n, c in self.schemas.items()]
            top += [f"extension {e}" for e in self.extensions]
            for enum in self.enums.values():
                labels = ", ".join(label for _, label in enum.labels)
                comment = f" comment {enum.comment}" if enum.comment else ""
                top.append(f"enum {enum.shown} ({labels}){comment}")
        for relation in relations:
            if relation.kind == "i" and not relation.comment:
                continue  # in its index line
            line = f"relation {relation.kind} {relation.shown}"
            if relation.options:
                line += f" ({relation.options})"
            if relation.comment:
                line += f" comment {relation.comment}"
            if relation.definition:
                line += f" as {relation.definition}"
            groups.setdefault(relation.owner, []).append(line)
        position: dict[int, int] = {}
        for column in sorted(columns, key=lambda c: (c.table, c.attnum)):
            # The order of columns is part of the schema (pg_dump shows it), attnums are not.
            position[column.table] = position.get(column.table, 0) + 1
            groups.setdefault(column.table, []).append(
                f"column {self._owner(column.table)}.{column.name} #{position[column.table]} "
                f"{column.described()}" + (f" comment {column.comment}" if column.comment else "")
            )
        for thing in things:
            owner = self._owner(thing.table)
            where = f"{owner}." if owner else f"{thing.schema}."
            groups.setdefault(thing.table, []).append(
                f"{thing.kind} {where}{thing.name} {thing.definition}"
            )
        return groups


_RELATIONS = """
    SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relfilenode,
           ds.description,
           CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
           c.relispopulated,
           concat_ws(' ', CASE c.relpersistence WHEN 'u' THEN 'unlogged' END,
                     array_to_string(c.reloptions, ','),
                     CASE WHEN c.relrowsecurity THEN 'rls' END,
                     CASE WHEN c.relforcerowsecurity THEN 'force-rls' END,
                     CASE WHEN c.relkind IN ('r', 'p', 'm') AND c.relreplident <> 'd'
                          THEN 'replica-identity-' || c.relreplident::text END,
                     CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                     pg_get_expr(c.relpartbound, c.oid)),
           coalesce(x.indrelid, c.oid)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_index x ON x.indexrelid = c.oid
      -- A join, not obj_description() per row: half the query's time at 200 tables.
      LEFT JOIN pg_description ds ON ds.objoid = c.oid AND ds.classoid = 'pg_class'::regclass
                                 AND ds.objsubid = 0
     WHERE n.nspname = ANY(:schemas)
       AND c.relkind <> 'c'  -- composite types are listed with the types
       AND NOT (c.relkind = 'S' AND EXISTS (  -- identity and serial sequences: with their column
            SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
               AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
       {only}
    """
_COLUMNS = """
    SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid,
           a.attnotnull, pg_get_expr(d.adbin, d.adrelid), ds.description,
           a.attidentity::text, a.attgenerated::text,
           CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
           concat_ws(', ',
               CASE WHEN a.attstorage <> t.typstorage THEN 'storage ' || CASE a.attstorage
                   WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main'
                   ELSE 'extended' END END,
               CASE a.attcompression WHEN 'p' THEN 'compression pglz'
                                     WHEN 'l' THEN 'compression lz4' END,
               CASE WHEN coalesce(a.attstattarget, -1) <> -1
                    THEN 'statistics ' || a.attstattarget END,
               -- An identity or serial column's sequence: its name and options.
               CASE WHEN a.attidentity <> '' OR d.adbin IS NOT NULL THEN (
                   SELECT format('sequence %s start %s increment %s min %s max %s cache %s%s',
                                 sc.oid::regclass, q.seqstart, q.seqincrement, q.seqmin,
                                 q.seqmax, q.seqcache,
                                 CASE WHEN q.seqcycle THEN ' cycle' ELSE '' END)
                     FROM pg_depend dp JOIN pg_sequence q ON q.seqrelid = dp.objid
                     JOIN pg_class sc ON sc.oid = dp.objid
                    WHERE dp.classid = 'pg_class'::regclass
                      AND dp.refclassid = 'pg_class'::regclass AND dp.refobjid = a.attrelid
                      AND dp.refobjsubid = a.attnum AND dp.deptype IN ('a', 'i')
                    LIMIT 1) END)
      FROM pg_attribute a
      JOIN pg_type t ON t.oid = a.atttypid
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      LEFT JOIN pg_description ds ON ds.objoid = a.attrelid
                                 AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum
     WHERE n.nspname = ANY(:schemas) AND a.attnum > 0 AND NOT a.attisdropped
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f') {only}
    """
_ENUMS = text(
    """
    SELECT t.oid, n.nspname, t.typname, obj_description(t.oid, 'pg_type'),
           coalesce(array_agg(e.oid ORDER BY e.enumsortorder) FILTER (WHERE e.oid IS NOT NULL),
                    '{}'),
           coalesce(array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                    FILTER (WHERE e.oid IS NOT NULL), '{}')
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      LEFT JOIN pg_enum e ON e.enumtypid = t.oid
     WHERE n.nspname = ANY(:schemas) AND t.typtype = 'e'
     GROUP BY t.oid, n.nspname, t.typname
    """
)
# Each part, with the column naming the table its objects belong to (None: schema-level).
_THING_PARTS: list[tuple[str | None, str]] = [
    (
        "i.indrelid",
        """
    SELECT 'index', n.nspname, i.indrelid, c.relname,
           pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas)
       AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                          AND k.contype IN ('p', 'u', 'x')) {only}
    """,
    ),
    (
        "co.conrelid",
        """
    SELECT 'constraint', n.nspname, nullif(co.conrelid, 0), co.conname,
           pg_get_constraintdef(co.oid)
           || CASE WHEN co.contypid <> 0 THEN ' on domain ' || co.contypid::regtype::text
                   ELSE '' END
           || coalesce(' comment ' || ds.description, '')
      FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
      LEFT JOIN pg_description ds ON ds.objoid = co.oid
                                 AND ds.classoid = 'pg_constraint'::regclass
     WHERE n.nspname = ANY(:schemas)
       AND co.contype <> 'n' {only}  -- NOT NULL: on the column
    """,
    ),
    (
        "tg.tgrelid",
        """
    SELECT 'trigger', n.nspname, tg.tgrelid, tg.tgname,
           pg_get_triggerdef(tg.oid) || coalesce(' comment ' || ds.description, '')
      FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
      LEFT JOIN pg_description ds ON ds.objoid = tg.oid
                                 AND ds.classoid = 'pg_trigger'::regclass
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND NOT tg.tgisinternal {only}
    """,
    ),
    (
        None,
        """
    SELECT 'function', n.nspname, NULL, p.oid::regprocedure::text,
           md5(pg_get_functiondef(p.oid)) || coalesce(' comment ' || obj_description(p.oid,
           'pg_proc'), '')
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = ANY(:schemas) AND p.prokind IN ('f', 'p', 'w')
    """,
    ),
    (
        None,
        """
    SELECT 'aggregate', n.nspname, NULL, p.oid::regprocedure::text, ''
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = ANY(:schemas) AND p.prokind = 'a'
    """,
    ),
    (
        None,
        """
    SELECT 'type', n.nspname, NULL, t.typname,
           CASE t.typtype WHEN 'd' THEN 'domain over ' || format_type(t.typbasetype, t.typtypmod)
                          WHEN 'c' THEN 'composite' WHEN 'r' THEN 'range' ELSE t.typtype::text
           END || coalesce(' comment ' || obj_description(t.oid, 'pg_type'), '')
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      LEFT JOIN pg_class c ON c.oid = t.typrelid
     WHERE n.nspname = ANY(:schemas) AND t.typtype IN ('d', 'c', 'r', 'b')
       AND (t.typrelid = 0 OR c.relkind = 'c') AND t.typelem = 0
    """,
    ),
    (
        None,
        """
    SELECT 'sequence', n.nspname, NULL, c.relname,
           format('start %s increment %s min %s max %s cache %s%s', s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
    """,
    ),
    (
        "pol.polrelid",
        """
    SELECT 'policy', n.nspname, pol.polrelid, pol.polname,
           pol.polcmd::text || ' ' || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '')
           || coalesce(' check ' || pg_get_expr(pol.polwithcheck, pol.polrelid), '')
           || CASE WHEN pol.polpermissive THEN '' ELSE ' restrictive' END
           || ' to ' || array_to_string(ARRAY(
                  SELECT CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END
                    FROM unnest(pol.polroles) AS r ORDER BY 1), ',')
      FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) {only}
    """,
    ),
    (
        "st.stxrelid",
        """
    SELECT 'statistics', n.nspname, st.stxrelid, st.stxname, pg_get_statisticsobjdef(st.oid)
      FROM pg_statistic_ext st JOIN pg_namespace n ON n.oid = st.stxnamespace
     WHERE n.nspname = ANY(:schemas) {only}
    """,
    ),
    (
        "r.ev_class",
        """
    SELECT 'rule', n.nspname, r.ev_class, r.rulename, pg_get_ruledef(r.oid)
      FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND r.rulename <> '_RETURN' {only}
    """,
    ),
]


_INVALID = text(
    """
    SELECT format('%I.%I', n.nspname, c.relname)
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY(:schemas) AND NOT i.indisvalid
     ORDER BY 1
    """
)


_TABLES = "ANY(CAST(:tables AS oid[]))"
_FULL = (
    text(_RELATIONS.format(only="")),
    text(_COLUMNS.format(only="")),
    text("UNION ALL".join(part.format(only="") for _, part in _THING_PARTS)),
)
# Only what belongs to some tables: their own rows, indexes, columns and table-level things.
_SOME = (
    text(
        _RELATIONS.format(
            only="AND c.oid = ANY(CAST(:tables AS oid[]) || ARRAY(SELECT indexrelid FROM pg_index "
            f"WHERE indrelid = {_TABLES}))"
        )
    ),
    text(_COLUMNS.format(only=f"AND a.attrelid = {_TABLES}")),
    text(
        "UNION ALL".join(
            part.format(only=f"AND {owner} = {_TABLES}")
            for owner, part in _THING_PARTS
            if owner is not None
        )
    ),
)
_INHERITANCE = text(
    f"SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = {_TABLES} OR inhrelid = {_TABLES})"
)


# Definitions name what is not on the search_path with its schema: a read must not depend
# on a path a migration set for its session, nor on a temporary table that shadows one.
_PINNED = "set_config('search_path', 'pg_catalog, public, pg_temp', true)"
_PIN_PATH = text(f"SELECT current_setting('search_path'), {_PINNED}")
_RESTORE_PATH = text("SELECT set_config('search_path', :path, true)")


def _objects(found: Catalog, connection: Connection, queries: tuple, params: dict) -> None:
    """Relations, columns and things (_FULL or _SOME), under a pinned search_path."""
    relations, columns, things = queries
    for row in connection.execute(relations, params):
        found.relations[row[0]] = Relation(*row)
    for row in connection.execute(columns, params):
        found.columns[(row[0], row[1])] = Column(*row)
    found.things += [Thing(*row) for row in connection.execute(things, params)]


def _fill(found: Catalog, connection: Connection, queries: tuple, params: dict) -> None:
    path = connection.execute(_PIN_PATH).scalar()
    _objects(found, connection, queries, params)
    connection.execute(_RESTORE_PATH, {"path": path})


# A read's first statement: it pins the search_path (_PIN_PATH) and reads the schemas, their
# comments and extensions, in one round trip (a full read is 6 statements, not 9: the
# roundtrip reads the catalog around every step, over a thousand times in the tests).
_OPENING = f"""
    WITH pinned AS MATERIALIZED (SELECT current_setting('search_path') AS path, {_PINNED})
    SELECT pinned.path, n.nspname, obj_description(n.oid, 'pg_namespace'),
           ARRAY(SELECT e.extname::text FROM pg_extension e WHERE e.extnamespace = n.oid)
      FROM pinned LEFT JOIN pg_namespace n ON {{schemas}}
    """
_OPENING_GIVEN = text(_OPENING.format(schemas="n.nspname = ANY(:schemas)"))
_OPENING_APP = text(_OPENING.format(schemas=_APP_NAMESPACE))


def read(connection: Connection, schemas: list[str] | None = None) -> Catalog:
    """Everything in the app schemas, inside the caller's transaction (left open)."""
    given = settings.app_schemas() if schemas is None else schemas
    if given is None:
        rows = connection.execute(_OPENING_APP, {"excluded": _excluded()}).all()
    else:
        rows = connection.execute(_OPENING_GIVEN, {"schemas": list(given)}).all()
    path = rows[0][0]  # one row even where no schema matched (LEFT JOIN): nspname NULL
    found_schemas = [row for row in rows if row[1] is not None]
    schemas = sorted(row[1] for row in found_schemas) if given is None else list(given)
    found = Catalog()
    found.schemas = dict(sorted((row[1], row[2]) for row in found_schemas))
    found.extensions = sorted(name for row in found_schemas for name in row[3])
    params = {"schemas": schemas}
    _objects(found, connection, _FULL, params)
    for oid, schema, name, comment, label_oids, labels in connection.execute(_ENUMS, params):
        found.enums[oid] = Enum(
            oid, schema, name, tuple(zip(label_oids, labels, strict=True)), comment
        )
    connection.execute(_RESTORE_PATH, {"path": path})
    return found


def reread(connection: Connection, previous: Catalog, tables: set[int]) -> Catalog | None:
    """`previous` with only `tables` read again: their rows in pg_class, their indexes,
    columns, constraints, triggers, policies and rules. For a change that touched nothing
    else, the result equals a full read() (the roundtrip's tests check that it does).

    None when a full read is needed instead: a table or column of `tables` was renamed,
    or one is part of an inheritance or partition tree. Either changes lines of other
    tables too (a foreign key or view that names it; columns that ALTER TABLE passes on).
    Inside the caller's transaction (left open).
    """
    if not tables:
        return previous
    ids = sorted(tables)
    if any(previous.relations[o].kind == "p" for o in ids if o in previous.relations):
        return None
    params = {"schemas": list(previous.schemas), "tables": ids}
    if connection.execute(_INHERITANCE, params).scalar():
        return None
    fresh = Catalog(schemas=previous.schemas)
    _fill(fresh, connection, _SOME, params)
    for oid, relation in fresh.relations.items():
        old = previous.relations.get(oid)
        if relation.kind == "p":
            return None
        if old is not None and old.shown != relation.shown and relation.kind != "i":
            return None  # an index's name shows on its own table's lines only
    for key, column in fresh.columns.items():
        old_column = previous.columns.get(key)
        if old_column is not None and old_column.name != column.name:
            return None
    found = Catalog(
        schemas=previous.schemas,
        enums=previous.enums,
        extensions=previous.extensions,
    )
    found.relations = {
        o: r for o, r in previous.relations.items() if r.owner not in tables
    } | fresh.relations
    found.columns = {k: c for k, c in previous.columns.items() if k[0] not in tables}
    found.columns |= fresh.columns
    found.things = [t for t in previous.things if t.table not in tables] + fresh.things
    groups = {k: v for k, v in previous._line_groups().items() if k not in tables}
    groups |= found._render(
        fresh.relations.values(), fresh.columns.values(), fresh.things, schema_level=False
    )
    found._groups = groups
    return found


def invalid_indexes(connection: Connection, schemas: list[str] | None = None) -> list[str]:
    """Indexes left INVALID (a failed CREATE INDEX CONCURRENTLY), inside the caller's
    transaction."""
    schemas = app_schemas(connection) if schemas is None else schemas
    return list(connection.execute(_INVALID, {"schemas": schemas}).scalars())


def app_inventory(connection: Connection, *, end_transaction: bool = True) -> list[str]:
    """Catalog.lines() of the database now.

    With end_transaction=False it reads inside the caller's transaction and leaves it open.
    """
    lines = read(connection).lines()
    if end_transaction and connection.in_transaction():
        connection.rollback()
    return lines


def shown(qualified: str) -> str:
    """A quoted qualified name as people write it: public.tasks."""
    return qualified.replace('"', "")


def counted(count: int, noun: str) -> str:
    plural = {"index": "indexes"}.get(noun, f"{noun}s")
    return f"{count} {noun}" if count == 1 else f"{count} {plural}"


# --- the difference in human terms -----------------------------------------------------


def _pair(before: dict, after: dict, name) -> tuple[list, list, list]:
    """Match objects by identity first, then by name: (pairs, only before, only after)."""
    pairs = [(before[k], after[k]) for k in before if k in after]
    gone = {k: v for k, v in before.items() if k not in after}
    new = {k: v for k, v in after.items() if k not in before}
    by_name = {name(v): k for k, v in new.items()}
    only_before = []
    for old in gone.values():
        match = by_name.pop(name(old), None)
        if match is not None:
            pairs.append((old, new.pop(match)))
        else:
            only_before.append(old)
    return pairs, only_before, list(new.values())


_KIND = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
}


def new_indexes(before: Catalog, after: Catalog) -> list[str]:
    """Indexes in `after` and not in `before`, as schema.name: what a failed online step
    left behind, to drop."""

    def names(catalog: Catalog) -> set[str]:
        return {f"{t.schema}.{t.name}" for t in catalog.things if t.kind == "index"}

    return sorted(names(after) - names(before))


def as_in(other: Catalog, reference: Catalog) -> Catalog:
    """`other`, a catalog of another database, with its identities replaced by those of
    `reference`'s objects of the same kind and name, so that changes(reference, result)
    compares the two databases by name: oids and attnums mean nothing across databases.
    An object `reference` does not have gets an identity of its own."""
    fresh = itertools.count(-1, -1)
    named = {(r.schema, r.name, r.kind): r.oid for r in reference.relations.values()}
    oids = {
        r.oid: named.get((r.schema, r.name, r.kind)) or next(fresh)
        for r in other.relations.values()
    }
    out = Catalog(schemas=dict(other.schemas), extensions=list(other.extensions))
    out.relations = {
        oids[r.oid]: replace(r, oid=oids[r.oid], owner=oids.get(r.owner, r.owner))
        for r in other.relations.values()
    }
    attnums = {(c.table, c.name): c.attnum for c in reference.columns.values()}
    spare = itertools.count(max((c.attnum for c in reference.columns.values()), default=0) + 1)
    for column in sorted(other.columns.values(), key=lambda c: (c.table, c.attnum)):
        table = oids.get(column.table, column.table)
        attnum = attnums.get((table, column.name)) or next(spare)
        out.columns[(table, attnum)] = replace(column, table=table, attnum=attnum)
    enums = {(e.schema, e.name): e for e in reference.enums.values()}
    for enum in other.enums.values():
        like = enums.get((enum.schema, enum.name))
        if like is None:
            out.enums[next(fresh)] = enum
            continue
        label_oids = {label: oid for oid, label in like.labels}
        labels = tuple((label_oids.get(label) or next(fresh), label) for _, label in enum.labels)
        out.enums[like.oid] = replace(enum, oid=like.oid, labels=labels)
    out.things = [
        replace(t, table=oids.get(t.table, t.table)) if t.table else t for t in other.things
    ]
    return out


def _table_summary(catalog: Catalog, relation: Relation) -> str:
    columns = catalog.table_columns(relation.oid)
    parts = [counted(len(columns), "column")]
    things = Counter(t.kind for t in catalog.things if t.table == relation.oid)
    for kind in ("index", "constraint", "trigger"):
        if things[kind]:
            parts.append(counted(things[kind], kind))
    return ", ".join(parts)


def changes(before: Catalog, after: Catalog) -> list[str]:
    """What changed from `before` to `after`, one line per change, in human terms.

    `+` added, `-` removed, `~` changed. A new or dropped table is one line; its columns,
    indexes, constraints and triggers are not listed again.
    """
    out: list[str] = []
    for noun, names_b, names_a in (
        ("schema", set(before.schemas), set(after.schemas)),
        ("extension", set(before.extensions), set(after.extensions)),
    ):
        out += [f"+ {noun} {name}" for name in sorted(names_a - names_b)]
        out += [f"- {noun} {name}" for name in sorted(names_b - names_a)]

    # Indexes and sequences have lines of their own, with their definitions (things).
    relations_b = {k: r for k, r in before.relations.items() if r.kind not in ("i", "S")}
    relations_a = {k: r for k, r in after.relations.items() if r.kind not in ("i", "S")}
    pairs, gone, new = _pair(relations_b, relations_a, lambda r: r.shown)
    whole_b = {r.oid for r in gone}  # tables that went or came whole: no detail
    whole_a = {r.oid for r in new}
    for sign, relations, side in (("+", new, after), ("-", gone, before)):
        for relation in sorted(relations, key=lambda r: r.shown):
            kind = _KIND.get(relation.kind, f"relation {relation.kind}")
            summary = _table_summary(side, relation) if relation.kind in ("r", "p") else ""
            out.append(f"{sign} {kind} {relation.shown}" + (f" ({summary})" if summary else ""))
    table_pairs: dict[int, int] = {}
    for old, now in sorted(pairs, key=lambda p: p[1].shown):
        table_pairs[old.oid] = now.oid
        kind = _KIND.get(now.kind, f"relation {now.kind}")
        if old.oid != now.oid:
            out.append(f"~ {kind} {now.shown} dropped and created again")
        elif old.shown != now.shown:
            out.append(f"~ {kind} {old.shown} renamed to {now.shown}")
        if old.comment != now.comment:
            out.append(f"~ comment on {kind} {now.shown}: {old.comment!r} → {now.comment!r}")
        if old.definition != now.definition:
            out.append(f"~ {kind} {now.shown} definition changed")
    out += _column_changes(before, after, table_pairs)
    out += _enum_changes(before, after)
    out += _thing_changes(before, after, whole_b, whole_a, table_pairs)
    return out


def _column_changes(before: Catalog, after: Catalog, table_pairs: dict[int, int]) -> list[str]:
    out = []
    for old_oid, new_oid in table_pairs.items():
        table = after.relations[new_oid].shown
        cols_b: dict[int | str, Column] = {c.attnum: c for c in before.table_columns(old_oid)}
        cols_a: dict[int | str, Column] = {c.attnum: c for c in after.table_columns(new_oid)}
        if old_oid != new_oid:  # recreated: attnums mean nothing across tables
            cols_b = {c.name: c for c in cols_b.values()}
            cols_a = {c.name: c for c in cols_a.values()}
        pairs, gone, new = _pair(cols_b, cols_a, lambda c: c.name)
        # Lines number columns by position: a column dropped and added again at the end
        # differs in them only, and pairs by name with nothing else to say.
        renamed = {old.name: now.name for old, now in pairs}
        order_b = [renamed[c.name] for c in before.table_columns(old_oid) if c.name in renamed]
        order_a = [c.name for c in after.table_columns(new_oid) if c.name in renamed.values()]
        if order_b != order_a:
            out.append(
                f"~ table {table}: column order differs: ({', '.join(order_b)}) → "
                f"({', '.join(order_a)})"
            )
        for column in new:
            out.append(f"+ column {table}.{column.name} {column.described()}")
        for column in gone:
            out.append(f"- column {table}.{column.name} {column.type}")
        for old, now in pairs:
            where = f"{table}.{now.name}"
            if old.name != now.name:
                out.append(f"~ column {table}.{old.name} renamed to {now.name}")
            if old.type != now.type:
                out.append(f"~ column {where} type {old.type} → {now.type}")
            if old.not_null != now.not_null:
                out.append(f"~ column {where} {'set' if now.not_null else 'drop'} NOT NULL")
            if old.default != now.default:
                was, becomes = old.default or "none", now.default or "none"
                out.append(f"~ column {where} default: {was} → {becomes}")
            if (old.identity, old.generated) != (now.identity, now.generated):
                out.append(f"~ column {where} identity/generated changed")
            if old.comment != now.comment:
                out.append(f"~ comment on column {where}: {old.comment!r} → {now.comment!r}")
            if old.options != now.options:
                out.append(
                    f"~ column {where} {old.options or 'default options'} → "
                    f"{now.options or 'default options'}"
                )
    return out


def _enum_changes(before: Catalog, after: Catalog) -> list[str]:
    out = []
    pairs, gone, new = _pair(before.enums, after.enums, lambda e: e.shown)
    for enum in new:
        out.append(f"+ enum {enum.shown} ({', '.join(label for _, label in enum.labels)})")
    for enum in gone:
        out.append(f"- enum {enum.shown} ({', '.join(label for _, label in enum.labels)})")
    for old, now in pairs:
        if old.shown != now.shown:
            out.append(f"~ enum {old.shown} renamed to {now.shown}")
        labels_b, labels_a = dict(old.labels), dict(now.labels)
        if old.oid != now.oid:  # rebuilt: match labels by text
            labels_b = {label: label for label in labels_b.values()}
            labels_a = {label: label for label in labels_a.values()}
        for key, label in labels_a.items():
            if key not in labels_b:
                out.append(f"+ enum label {now.shown} '{label}'")
            elif labels_b[key] != label:
                out.append(f"~ enum label {now.shown} '{labels_b[key]}' renamed to '{label}'")
        for key, label in labels_b.items():
            if key not in labels_a:
                out.append(f"- enum label {now.shown} '{label}'")
        order_b = [lb for _, lb in old.labels if lb in {x for _, x in now.labels}]
        order_a = [lb for _, lb in now.labels if lb in set(order_b)]
        if order_b != order_a:
            out.append(f"~ enum {now.shown} labels reordered: {', '.join(order_a)}")
        if old.oid != now.oid and old.shown == now.shown:
            out.append(f"~ enum {now.shown} dropped and created again")
        if old.comment != now.comment:
            out.append(f"~ comment on enum {now.shown}: {old.comment!r} → {now.comment!r}")
    return out


def _thing_changes(
    before: Catalog,
    after: Catalog,
    whole_b: set[int],
    whole_a: set[int],
    table_pairs: dict[int, int],
) -> list[str]:
    def keyed(catalog: Catalog, skip: set[int], oids: dict[int, int]) -> dict:
        return {
            (t.kind, oids.get(t.table, t.table) if t.table else t.schema, t.name): t
            for t in catalog.things
            if t.table not in skip
        }

    things_b = keyed(before, whole_b, table_pairs)
    things_a = keyed(after, whole_a, {})
    out = []

    def where(catalog: Catalog, thing: Thing) -> str:
        owner = catalog.relations.get(thing.table) if thing.table else None
        return f" on {owner.shown}" if owner else f" in {thing.schema}"

    for key in sorted(set(things_a) - set(things_b)):
        thing = things_a[key]
        definition = f": {thing.definition}" if thing.kind not in ("function", "aggregate") else ""
        out.append(f"+ {thing.kind} {thing.name}{where(after, thing)}{definition}")
    for key in sorted(set(things_b) - set(things_a)):
        thing = things_b[key]
        out.append(f"- {thing.kind} {thing.name}{where(before, thing)}")
    for key in sorted(set(things_a) & set(things_b)):
        old, now = things_b[key], things_a[key]
        if old.definition != now.definition:
            change = _short(now)
            if change != "definition changed":
                change = f"{_short(old)} → {change}"
            out.append(f"~ {now.kind} {now.name}{where(after, now)}: {change}")
    return out


def _short(thing: Thing) -> str:
    if thing.kind in ("function", "aggregate"):
        return "definition changed"
    return thing.definition
