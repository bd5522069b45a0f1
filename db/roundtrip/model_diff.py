"""What "models vs head" says when autogenerate finds differences: one readable line per
difference (autogenerate's own entries are tuples of SQLAlchemy objects), and the fix that
fits this schema (enum labels are not synced by rebuilding the type blindly: see README,
"Enum labels")."""

from __future__ import annotations

from typing import Any

IN_MODELS = "in the models, not in the database"
IN_DATABASE = "in the database, not in the models"
ENUM_OPS = {"SyncEnumValuesOp", "AddEnumValuesOp"}
"""alembic-postgresql-enum's label operations: `describe_enum_fixes` replaces them."""


def _table(table: Any) -> str:
    return f"{table.schema or 'public'}.{table.name}"


def _where(schema: str | None, table: str, column: str | None = None) -> str:
    return f"{schema or 'public'}.{table}" + (f".{column}" if column else "")


def _columns(constraint: Any) -> str:
    return ", ".join(c.name for c in getattr(constraint, "columns", [])) or "?"


def _default(value: Any) -> str:
    """A server default as SQL ('todo'::task_status), or "none"."""
    if value is None or value is False:
        return "none"
    value = getattr(value, "arg", value)
    return str(getattr(value, "text", value))


def _enum(entry: tuple) -> str:
    _, database, models, columns = entry
    name = ", ".join(_where(c.table_schema, c.table_name, c.column_name) for c in columns)
    extra = [v for v in database if v not in models]
    missing = [v for v in models if v not in database]
    said = [f"enum of {name or 'no column'}: labels {list(database)} in the database"]
    said.append(f"{list(models)} in the models")
    if missing:
        said.append(f"(only in the models: {', '.join(missing)})")
    if extra:
        said.append(f"(only in the database: {', '.join(extra)})")
    if not missing and not extra:
        said.append("(same labels, another order)")
    return ", ".join(said[:2]) + " " + " ".join(said[2:])


def _constraint(kind: str, constraint: Any) -> str:
    table = _table(constraint.table) if getattr(constraint, "table", None) is not None else "?"
    name = constraint.name or "(unnamed)"
    if kind.endswith("_fk"):
        target = ", ".join(e.target_fullname for e in constraint.elements)
        return f"foreign key {name} on {table} ({_columns(constraint)}) → {target}"
    label = type(constraint).__name__.replace("Constraint", "").lower() or "constraint"
    return f"{label} constraint {name} on {table} ({_columns(constraint)})"


def describe(entry: Any) -> str:
    """One autogenerate difference as a line: what exists where (a column's several
    changes, which autogenerate lists together, one line each)."""
    if isinstance(entry, list):
        return "\n  ".join(describe(e) for e in entry)
    if not isinstance(entry, tuple) or not entry:
        return repr(entry)[:300]
    kind = entry[0]
    side = IN_MODELS if kind.startswith(("add_", "create_")) else IN_DATABASE
    if kind in ("change_enum_variants", "add_enum_value"):
        return _enum(entry)
    if kind in ("create_enum", "drop_enum"):
        _, name, schema, values = entry
        return f"enum type {schema or 'public'}.{name} ({', '.join(values)}): {side}"
    if kind in ("add_table", "remove_table"):
        return f"table {_table(entry[1])}: {side}"
    if kind in ("add_column", "remove_column"):
        _, schema, table, column = entry
        return f"column {_where(schema, table, column.name)} ({column.type}): {side}"
    if kind in ("add_index", "remove_index"):
        index = entry[1]
        unique = "unique " if index.unique else ""
        columns = ", ".join(str(getattr(e, "name", e)) for e in index.expressions)
        return f"{unique}index {index.name} on {_table(index.table)} ({columns}): {side}"
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        return f"{_constraint(kind, entry[1])}: {side}"
    if kind in ("add_table_comment", "remove_table_comment"):
        table = entry[1]
        return f"comment of table {_table(table)}: {table.comment!r} in the models" + (
            f", {entry[2]!r} in the database" if len(entry) > 2 else ", none in the database"
        )
    if kind.startswith("modify_"):
        _, schema, table, column, _options, database, models = entry
        where = f"column {_where(schema, table, column)}"
        if kind == "modify_type":
            return f"{where}: type {database} in the database, {models} in the models"
        if kind == "modify_nullable":

            def null(nullable: bool) -> str:
                return "NULL allowed" if nullable else "NOT NULL"

            return f"{where}: {null(database)} in the database, {null(models)} in the models"
        if kind == "modify_default":
            return (
                f"{where}: default {_default(database)} in the database, "
                f"{_default(models)} in the models"
            )
        if kind == "modify_comment":
            return f"{where}: comment {database!r} in the database, {models!r} in the models"
    return repr(entry)[:300]


def describe_enum_fixes(ops: list) -> tuple[list, list[str]]:
    """`ops` without alembic-postgresql-enum's label operations, and what to write instead.

    Its `sync_enum_values` rebuilds the type, which cannot drop a label that a CHECK
    constraint uses (ck_tasks_completed_at_status uses task_status), and its
    `add_enum_value(before_value=…)` comes out as AFTER."""
    kept, advice = [], []
    for op in ops:
        if type(op).__name__ not in ENUM_OPS:
            kept.append(op)
            continue
        name = f"{op.schema}.{op.name}" if getattr(op, "schema", None) else op.name
        old, new = list(op.old_values), list(op.new_values)
        for label in (v for v in new if v not in old):
            after = new[new.index(label) - 1] if new.index(label) else None
            place = f" AFTER '{after}'" if after else f" BEFORE '{new[1]}'" if len(new) > 1 else ""
            advice.append(
                f"label '{label}' of {name}: in upgrade(), "
                "with op.get_context().autocommit_block(): "
                f"op.execute(\"ALTER TYPE {name} ADD VALUE IF NOT EXISTS '{label}'{place}\"); "
                "in downgrade(), move the rows off it and rebuild the type "
                "(ENUM_REBUILD in tests/corpus.py), not op.sync_enum_values"
            )
        for label in (v for v in old if v not in new):
            advice.append(
                f"label '{label}' of {name} is only in the database: if a migration added it, "
                "add it to the model's enum; if it must go, a migration moves the rows off it "
                "and rebuilds the type (ENUM_REBUILD in tests/corpus.py)"
            )
        if set(old) == set(new):
            advice.append(
                f"labels of {name} in another order: put the model's enum in the database's "
                "order (a label's place cannot change without rebuilding the type)"
            )
    return kept, advice
