"""Measuring what a change destroys, rather than guessing it from what it drops.

Tables, materialized views and columns are followed by identity (pg_class.oid,
pg_attribute.attnum), so a rename is never a loss. Loss is:
- the rows of a table or materialized view that goes away, and the values of a column
  that goes away (counted in the data as it is before the change);
- rows of a surviving table that the change deletes or rewrites: any table whose rows
  were updated or deleted (pg_stat_xact_user_tables) or whose storage was rewritten
  (TRUNCATE, ALTER COLUMN TYPE) is compared row by row, before and after, over the
  columns that exist on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db.catalog import Catalog, Column, Relation, counted, ident

_STATS = text(
    "SELECT relid, n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables WHERE relid = ANY(:oids)"
)


@dataclass
class Loss:
    """What a change destroys, one line each, and the tables a backup should hold."""

    lines: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lines)


def touched_counts(connection: Connection, catalog: Catalog) -> dict[int, int]:
    """Rows updated or deleted so far in this transaction, per table of `catalog`."""
    oids = [r.oid for r in catalog.relations.values() if r.kind in ("r", "p")]
    return {oid: n for oid, n in connection.execute(_STATS, {"oids": oids})}


def surviving_columns(before: Catalog, after: Catalog, oid: int) -> list[tuple[Column, Column]]:
    """(before, after) for each column of table `oid` that exists on both sides."""
    now = {c.attnum: c for c in after.table_columns(oid)}
    return [(c, now[c.attnum]) for c in before.table_columns(oid) if c.attnum in now]


def rewritten_tables(
    before: Catalog, after: Catalog, counts_before: dict[int, int], counts_after: dict[int, int]
) -> list[int]:
    """Surviving tables whose rows may have been deleted or changed by the change."""
    found = []
    for oid, old in before.relations.items():
        now = after.relations.get(oid)
        if now is None or old.kind not in ("r", "p"):
            continue
        pairs = surviving_columns(before, after, oid)
        if (
            counts_after.get(oid, 0) > counts_before.get(oid, 0)
            or now.filenode != old.filenode
            or any(b.type != a.type for b, a in pairs)
        ):
            found.append(oid)
    return found


def row_hashes_sql(relation: Relation, columns: list[Column]) -> str:
    """One md5 per row over `columns`, by their names in the catalog they come from."""
    row = ", ".join(f"{ident(c.name)}::text" for c in columns) or "NULL"
    return f"SELECT md5(ROW({row})::text) AS h FROM {relation.sql}"


def row_values(connection: Connection, relation: Relation, columns: list[Column]) -> list[tuple]:
    """Every row over `columns`, each value as text (NULL stays None)."""
    if not columns:
        count = connection.execute(text(f"SELECT count(*) FROM {relation.sql}")).scalar_one()
        return [()] * count
    values = ", ".join(f"{ident(c.name)}::text" for c in columns)
    return [tuple(r) for r in connection.execute(text(f"SELECT {values} FROM {relation.sql}"))]


_UPDATABLE = text(
    "SELECT attname FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
    "AND NOT attisdropped AND attidentity <> 'a' AND attgenerated = '' ORDER BY attnum LIMIT 1"
)


def columns_set_on_update(connection: Connection, relation: Relation) -> set[str]:
    """Columns a trigger rewrites on every update (updated_at): found by updating one row
    to itself inside a savepoint and seeing what changed."""
    nested = connection.begin_nested() if connection.in_transaction() else connection.begin()
    try:
        found = connection.execute(
            text(f"SELECT ctid, to_jsonb(t) FROM {relation.sql} AS t LIMIT 1")
        ).first()
        # A column that can be set to itself: not GENERATED ALWAYS (an identity key
        # first, as many tables have, would refuse the update and hide the trigger).
        first = connection.execute(_UPDATABLE, {"oid": relation.oid}).scalar()
        if found is None or first is None:
            return set()
        ctid, before = found
        after = connection.execute(
            text(
                f"UPDATE {relation.sql} AS t SET {ident(first)} = {ident(first)} "
                "WHERE ctid = :ctid RETURNING to_jsonb(t)"
            ),
            {"ctid": ctid},
        ).scalar_one()
    except Exception:  # a trigger that refuses updates: nothing to learn
        return set()
    finally:
        nested.rollback()
    return {name for name, value in before.items() if after.get(name) != value}


def dropped(connection: Connection, before: Catalog, after: Catalog) -> Loss:
    """Rows of relations and values of columns in `before` and not in `after`, counted on
    `connection`, whose data must be as it is in `before`."""
    loss = Loss()
    for oid, relation in sorted(before.relations.items(), key=lambda kv: kv[1].shown):
        if not relation.holds_rows or oid in after.relations:
            continue
        if relation.kind == "m" and not relation.populated:
            continue
        rows = connection.execute(text(f"SELECT count(*) FROM {relation.sql}")).scalar_one()
        if rows:
            kind = "materialized view" if relation.kind == "m" else "table"
            loss.lines.append(f"{kind} {relation.shown} ({counted(rows, 'row')})")
            loss.tables.append(relation.sql)
    for (oid, attnum), column in sorted(
        before.columns.items(), key=lambda kv: (before.relations[kv[0][0]].shown, kv[0][1])
    ):
        relation = before.relations[oid]
        if relation.kind not in ("r", "p") or oid not in after.relations:
            continue
        if (oid, attnum) in after.columns:
            continue
        values = connection.execute(
            text(f"SELECT count({ident(column.name)}) FROM {relation.sql}")
        ).scalar_one()
        if values:
            loss.lines.append(f"column {relation.shown}.{column.name} ({counted(values, 'value')})")
            if relation.sql not in loss.tables:
                loss.tables.append(relation.sql)
    return loss
