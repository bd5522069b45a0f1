"""Seeing a change before making it: the dry run (offline SQL), and the rehearsal in a
rolled-back transaction behind `migrate.plan` and the destructive-rollback guard."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import catalog, history, impact, loss, pgdump, revisions, urls
from db.errors import ConfigError, Refused
from db.planning import Step
from db.rehearsal import Rehearsal, run_in_transaction


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _history_insert(step: Step, who: history.Who) -> str:
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


class _Traced(io.StringIO):
    """Alembic's offline output, noting for each statement the line of the migration file
    that wrote it (the innermost frame in one of `paths`), so that lint can point there."""

    def __init__(self, paths: set[str]) -> None:
        super().__init__()
        self.paths = paths
        self.lines = 0
        self.origins: list[tuple[int, int | None]] = []

    def write(self, text: str) -> int:
        frame: FrameType | None = sys._getframe(1)
        line = None
        while frame is not None:
            if frame.f_code.co_filename in self.paths:
                line = frame.f_lineno
                break
            frame = frame.f_back
        self.origins.append((self.lines, line))
        self.lines += text.count("\n")
        return super().write(text)


@dataclass
class NotOffline:
    """A migration whose code cannot run without a database, so has no offline SQL."""

    step: Step
    why: str
    """What it does, to follow its revision: "reads the database (op.get_bind())"."""
    line: int
    """Where in its file the rendering stopped."""

    @property
    def sentence(self) -> str:
        return f"{self.step.revision} {self.why}"


@dataclass
class Rendered:
    sql: str
    origins: list[tuple[int, int | None]]
    """(first line in `sql`, line in the migration file or None) of each piece of output."""
    failed: NotOffline | None = None
    """Set when a migration stopped the rendering: `sql` is what came before."""

    def source_line(self, sql_line: int) -> int | None:
        """The line of the migration file that wrote line `sql_line` (from 0) of `sql`."""
        found = None
        for first, line in self.origins:
            if first > sql_line:
                break
            found = line
        return found


_READS = re.compile(r"\bget_bind\s*\(|\.bind\b|\.connection\b|\binspect\s*\(")
"""What a migration writes to use the database itself (op.get_bind(), context.bind,
sa.inspect(...)): offline, that connection is a mock that returns nothing."""


def _not_offline(plan: list[Step], error: BaseException) -> NotOffline | None:
    """Which migration of `plan` stopped an offline rendering, and why; None if the error
    did not come from a migration's own code."""
    steps = {str(step.path): step for step in plan}
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in steps]
    if not frames:
        return None
    step, frame = steps[frames[-1].filename], frames[-1]
    function = f"{step.direction}grade()"
    if isinstance(error, NotImplementedError) and frame.name == function[:-2]:
        why = f"has no {function} yet (it raises NotImplementedError)"
    elif _READS.search(step.path.read_text()):
        why = "reads the database (op.get_bind())"
    else:
        text = " ".join(str(error).split())[:120]
        why = f"raises {type(error).__name__} offline at {step.path.name}:{frame.lineno}: {text}"
    return NotOffline(step, why, frame.lineno or 0)


def render(current: str | None, plan: list[Step], bookkeeping: bool = True) -> Rendered:
    """The SQL the plan would run from `current`, as Alembic's offline mode renders it; a
    migration that cannot run offline stops it (see Rendered.failed)."""
    config = revisions.alembic_config()
    # Rendering applies nothing: the models (autogenerate's) need not be imported.
    config.attributes["models"] = False
    buffer = _Traced({str(step.path) for step in plan})
    config.output_buffer = buffer
    steps = iter(plan)
    if bookkeeping:
        who = history.Who.here()
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
    # What alembic.command.upgrade/downgrade(sql=True) do, on the chain already loaded:
    # they would import every migration file again, and lint renders each file twice.
    script = revisions.script_directory()
    up = plan[0].direction == "up"

    def walk(rev, context):
        return script._upgrade_revs(end, rev) if up else script._downgrade_revs(end, rev)

    try:
        with EnvironmentContext(
            config, script, fn=walk, as_sql=True, starting_rev=start, destination_rev=end
        ):
            script.run_env()
    except Exception as error:
        failed = _not_offline(plan, error)
        if failed is None:
            raise
        return Rendered(buffer.getvalue(), buffer.origins, failed)
    return Rendered(buffer.getvalue(), buffer.origins)


class OfflineImpossible(ConfigError):
    """Some migrations of a dry run cannot be shown as SQL without a database."""

    def __init__(self, failed: list[NotOffline]) -> None:
        down = failed[0].step.direction == "down"
        if len(failed) == 1:
            message = f"{failed[0].sentence} and cannot be shown as SQL offline."
        else:
            sentences = "; ".join(f.sentence for f in failed)
            message = f"these migrations cannot be shown as SQL offline: {sentences}."
        if all("NotImplementedError" in f.why for f in failed):
            functions = [f"{f.step.revision}'s {f.step.direction}grade()" for f in failed]
            hint = f"write {' and '.join(functions)} first"
        else:
            hint = f"use migrate.plan{' --down' if down else ''} to rehearse it on the database"
        super().__init__(message, hint)
        self.failed = failed


def offline_sql(current: str | None, plan: list[Step], bookkeeping: bool = True) -> str:
    """render(), or OfflineImpossible naming every migration of the plan that cannot be
    rendered (each one after the first is tried alone)."""
    rendered = render(current, plan, bookkeeping)
    if rendered.failed is None:
        return rendered.sql
    failed = [rendered.failed]
    for step in plan[plan.index(rendered.failed.step) + 1 :]:
        if (alone := render(step.from_revision, [step], bookkeeping=False).failed) is not None:
            failed.append(alone)
    raise OfflineImpossible(failed)


@dataclass
class Rehearsed:
    rehearsal: Rehearsal
    before: catalog.Catalog
    after: catalog.Catalog
    loss: loss.Loss = field(default_factory=loss.Loss)
    """What the change destroys (rows of dropped tables, values of dropped columns, rows
    deleted or rewritten), measured in the rehearsal."""
    impact: list[impact.StepImpact] = field(default_factory=list)
    """Per migration and statement: locks, rewrites, scans, rows (with `measure`)."""

    def schema_diff(self) -> list[str]:
        return catalog.changes(self.before, self.after)


_START = "rehearsal_start"


def rehearse_and_roll_back(
    connection: Connection, plan: list[Step], measure: bool = False
) -> Rehearsed:
    """Run the plan in one transaction, look at the result, and roll it all back.

    What the change destroys is measured, not guessed: see db/loss.py. When it deletes
    or rewrites rows of a table that survives, the plan runs a second time, after the
    rows it touches were fingerprinted. With `measure`, the first run also measures
    each statement's locks and effects (db/impact.py).
    """
    connection.begin()
    try:
        before = catalog.read(connection)
        counts_before = loss.touched_counts(connection, before)
        connection.execute(text(f"SAVEPOINT {_START}"))
        with impact.measuring(connection, measure) as measured:
            rehearsal = run_in_transaction(connection, plan, on_step=measured.step_done)
        after = catalog.read(connection)
        touched = loss.rewritten_tables(
            before, after, counts_before, loss.touched_counts(connection, before)
        )
        connection.execute(text(f"ROLLBACK TO SAVEPOINT {_START}"))
        result = Rehearsed(rehearsal, before, after, impact=measured.steps)
        result.loss = loss.dropped(connection, before, after)
        if touched:
            _measure_rewrites(connection, plan, result, touched)
    finally:
        connection.rollback()
    return result


_ROWS = "pg_temp.worktracker_rehearsal_rows"


def _measure_rewrites(
    connection: Connection, plan: list[Step], result: Rehearsed, touched: list[int]
) -> None:
    """Fingerprint each touched table's rows, run the plan again, and count the rows that
    are no longer there as they were (over the columns on both sides)."""
    before, after = result.before, result.after
    connection.execute(text(f"CREATE TEMP TABLE {_ROWS} (rel oid, h text) ON COMMIT DROP"))
    totals, compared = {}, {}
    for oid in touched:
        # A rollback that updates rows fires their updated_at trigger: not a loss.
        maintained = loss.columns_set_on_update(connection, before.relations[oid])
        pairs = [
            (b, a)
            for b, a in loss.surviving_columns(before, after, oid)
            if b.name not in maintained
        ]
        compared[oid] = pairs
        hashes = loss.row_hashes_sql(before.relations[oid], [b for b, _ in pairs])
        connection.execute(text(f"INSERT INTO {_ROWS} SELECT {oid}, h FROM ({hashes}) AS r"))
        totals[oid] = connection.execute(
            text(f"SELECT count(*) FROM {_ROWS} WHERE rel = {oid}")
        ).scalar_one()
    run_in_transaction(connection, plan)
    for oid in touched:
        if not totals[oid]:
            continue
        relation = after.relations[oid]
        hashes = loss.row_hashes_sql(relation, [a for _, a in compared[oid]])
        gone = connection.execute(
            text(
                f"SELECT count(*) FROM (SELECT h FROM {_ROWS} WHERE rel = {oid} "
                f"EXCEPT ALL {hashes}) AS d"
            )
        ).scalar_one()
        if not gone:
            continue
        remaining = connection.execute(text(f"SELECT count(*) FROM {relation.sql}")).scalar_one()
        deleted = max(0, totals[oid] - remaining)
        parts = []
        if deleted:
            parts.append(f"{deleted} deleted")
        if gone - deleted > 0:
            parts.append(f"{gone - deleted} changed")
        result.loss.lines.append(
            f"table {before.relations[oid].shown}: {' and '.join(parts)} of "
            f"{catalog.counted(totals[oid], 'row')}"
        )
        if before.relations[oid].sql not in result.loss.tables:
            result.loss.tables.append(before.relations[oid].sql)


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
