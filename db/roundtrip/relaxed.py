"""What a revision newly allows in its tables: the constraints its upgrade dropped or
relaxed, read by comparing the catalog before and after it.

A downgrade that blindly re-adds such a constraint fails on rows that are valid at the
revision, but only if some row uses the new freedom: the rows added at the revision do
(db/roundtrip/sample_data.py), one row per relaxation found here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from db import catalog

NULL, ORPHAN, DUPLICATE, CHECK = "null", "orphan", "duplicate", "check"


@dataclass(frozen=True)
class Allowed:
    """One thing a row may now do: hold NULL in a column that lost NOT NULL, refer to no
    parent row (a dropped foreign key), repeat another row's key (a dropped UNIQUE,
    PRIMARY KEY or unique index), or break a CHECK as it was before (dropped or widened)."""

    kind: str
    name: str  # the column, constraint or index
    columns: tuple[str, ...]  # the key, foreign-key or nullable columns
    expression: str = ""  # CHECK: its old expression; DUPLICATE: a unique index's WHERE
    parent: str = ""  # ORPHAN: the referenced table, as pg_get_constraintdef names it
    parent_columns: tuple[str, ...] = ()
    also: tuple[str, ...] = ()  # DUPLICATE: columns of the index's WHERE, copied as well


def newly_allowed(before: catalog.Catalog, after: catalog.Catalog) -> dict[int, list[Allowed]]:
    """By table identity: what rows of each table kept by the upgrade may now hold."""
    found: dict[int, list[Allowed]] = {}

    def table_kept(oid: int | None) -> bool:
        relation = after.relations.get(oid) if oid is not None else None
        return relation is not None and relation.kind in ("r", "p") and oid in before.relations

    for key, column in after.columns.items():
        old = before.columns.get(key)
        if old is not None and old.not_null and not column.not_null and table_kept(column.table):
            found.setdefault(column.table, []).append(Allowed(NULL, column.name, (column.name,)))
    still = {(t.table, t.kind, _without_name(t)) for t in after.things}
    for thing in before.things:
        table = thing.table
        if table is None or not table_kept(table):
            continue
        if (table, thing.kind, _without_name(thing)) in still:
            continue
        if allowed := _read(thing, [c.name for c in after.table_columns(table)]):
            found.setdefault(table, []).append(allowed)
    return found


def _without_name(thing: catalog.Thing) -> str:
    """A renamed index or constraint, or a new comment on it, is the same rule."""
    if thing.kind == "index":
        return thing.definition.replace(f" INDEX {thing.name} ON ", " INDEX ON ", 1)
    return thing.definition.split(" comment ", 1)[0]


_FOREIGN = re.compile(r"^FOREIGN KEY \(([^)]*)\) REFERENCES (.+?)\(([^)]*)\)")
_UNIQUE = re.compile(r"^(?:UNIQUE(?: NULLS NOT DISTINCT)?|PRIMARY KEY) \(([^)]*)\)")
_UNIQUE_INDEX = re.compile(r"^CREATE UNIQUE INDEX .*? USING \w+ ")


def _read(thing: catalog.Thing, names: list[str]) -> Allowed | None:
    definition = thing.definition
    if thing.kind == "constraint":
        if definition.startswith("CHECK "):
            expression = _parenthesised(definition, len("CHECK "))
            return Allowed(CHECK, thing.name, tuple(_mentioned(expression, names)), expression)
        if found := _FOREIGN.match(definition):
            return Allowed(
                ORPHAN,
                thing.name,
                _split(found[1]),
                parent=found[2],
                parent_columns=_split(found[3]),
            )
        if found := _UNIQUE.match(definition):
            return Allowed(DUPLICATE, thing.name, _split(found[1]))
        return None
    if thing.kind == "index" and (found := _UNIQUE_INDEX.match(definition)):
        keys = _parenthesised(definition, found.end())
        where = ""
        if " WHERE " in definition:
            where = definition.split(" WHERE ", 1)[1].removesuffix(" INVALID")
        return Allowed(
            DUPLICATE,
            thing.name,
            tuple(_mentioned(keys, names)),
            expression=where,
            also=tuple(_mentioned(where, names)),
        )
    return None


def _parenthesised(text: str, start: int) -> str:
    """The balanced parenthesised text that starts at `start`, without its outer pair."""
    depth, quoted = 0, False
    for position in range(start, len(text)):
        char = text[position]
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : position]
    return text[start:]


def _split(columns: str) -> tuple[str, ...]:
    return tuple(
        c.strip()[1:-1].replace('""', '"') if c.strip().startswith('"') else c.strip()
        for c in columns.split(",")
    )


def _mentioned(expression: str, names: list[str]) -> list[str]:
    """The table's columns that `expression` names (outside string literals)."""
    plain = re.sub(r"'(?:[^']|'')*'", "''", expression)
    return [
        name
        for name in names
        if re.search(rf'(?<![\w"]){re.escape(name)}(?![\w"])', plain)
        or catalog.ident(name) in plain
    ]
