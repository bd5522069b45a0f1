"""Seeing a change before making it: the dry run (offline SQL), and the rehearsal in a
rolled-back transaction behind `migrate.plan` and the destructive-rollback guard."""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from sqlalchemy.engine import URL, Connection

from db import catalog, history, pgdump, revisions, runner, urls
from db.errors import Refused


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _history_insert(step: runner.Step, who: history.Who) -> str:
    values = [
        step.revision,
        step.from_revision,
        step.to_revision,
        step.direction,
        step.description,
        history.checksum(step.path),
        who.os_user,
        who.host,
        who.tool_version,
    ]
    return (
        "-- history row: the real run records its measured start and duration\n"
        f"INSERT INTO {history.TABLE} (revision, from_revision, to_revision, direction, "
        "description, checksum, os_user, host, tool_version, started_at, duration_ms, success)"
        f"\nVALUES ({', '.join(_literal(v) for v in values)}, now(), 0, true)"
    )


def offline_sql(current: str | None, plan: list[runner.Step], bookkeeping: bool = True) -> str:
    """The SQL the plan would run from `current`, as Alembic's offline mode renders it."""
    config = revisions.alembic_config()
    config.output_buffer = io.StringIO()
    who = history.Who.here()
    steps = iter(plan)
    if bookkeeping:
        # env.py already creates the schema; the rest is the history table's DDL.
        config.attributes["offline_preamble"] = [
            statement for statement in history.DDL if not statement.startswith("CREATE SCHEMA")
        ]
        config.attributes["configure_options"] = {
            "on_version_apply": lambda *, ctx, step, heads, run_args: ctx.execute(
                _history_insert(next(steps), who)
            )
        }
    start, end = current or revisions.BASE, plan[-1].to_revision or revisions.BASE
    if plan[0].direction == "up":
        command.upgrade(config, f"{start}:{end}", sql=True)
    else:
        command.downgrade(config, f"{start}:{end}", sql=True)
    return config.output_buffer.getvalue()


@dataclass
class Rehearsed:
    rehearsal: runner.Rehearsal
    inventory_before: list[str]
    inventory_after: list[str]
    shape_before: dict[str, list[str]]
    shape_after: dict[str, list[str]]

    def schema_diff(self) -> list[str]:
        before, after = set(self.inventory_before), set(self.inventory_after)
        return [f"- {line}" for line in sorted(before - after)] + [
            f"+ {line}" for line in sorted(after - before)
        ]


def rehearse(connection: Connection, plan: list[runner.Step]) -> Rehearsed:
    """Run the plan in one transaction, look at the result, and roll it all back."""
    connection.begin()
    try:
        inventory_before = catalog.app_inventory(connection, end_transaction=False)
        shape_before = catalog.table_columns(connection)
        rehearsal = runner.rehearse(connection, plan)
        inventory_after = catalog.app_inventory(connection, end_transaction=False)
        shape_after = catalog.table_columns(connection)
    finally:
        connection.rollback()
    return Rehearsed(rehearsal, inventory_before, inventory_after, shape_before, shape_after)


def data_at_risk(connection: Connection, rehearsed: Rehearsed) -> list[str]:
    """What the rehearsed change would destroy: rows of dropped tables, values of dropped
    columns, counted in the committed data."""
    held = catalog.holdings(connection, rehearsed.shape_before, rehearsed.shape_after)
    connection.rollback()
    return held


def affected_tables(rehearsed: Rehearsed) -> list[str]:
    """Tables the change drops, or drops columns from."""
    after = rehearsed.shape_after
    return sorted(
        table
        for table, columns in rehearsed.shape_before.items()
        if table not in after or set(columns) - set(after[table])
    )


def backup(url: URL, server_major: int, tables: list[str], path: Path) -> None:
    """pg_dump (schema and data) of `tables` into `path`, by a pg_dump of the server's version."""
    try:
        binary = pgdump.matching_pg_dump(server_major)
    except RuntimeError as error:
        raise Refused(f"cannot write the backup: {error}.") from None
    conninfo, env = urls.libpq_handoff(url)
    args = [str(binary), "-d", conninfo, "--no-owner", "-f", str(path)]
    for table in tables:
        args += ["--table", table]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise Refused(
            f"the backup to {path} failed: {done.stderr.strip()}", "nothing was rolled back"
        )
