"""Apply → rollback → reapply, with the real catalog and real rows compared at each step.

Stairway, for each revision R in order, on one database that keeps its rows:
  fill every table; snapshot S0 → up R → snapshot S1; fill again; note what the tables
  and columns new in R hold → down R: the snapshot must be S0 again, and every row of the
  tables that exist on both sides must be unchanged → up R again: S1 again, rows unchanged.
  Rows held only by R's new tables or columns are destroyed by its downgrade: R must
  declare `downgrade_loses_data = "why"`, and the report lists it.
Whole chain: base → head → base (must equal the empty start) → head (must equal the
first head). Models vs head: autogenerate must find nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.script import Script
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from db import catalog, revisions, runner
from db.errors import UserError
from db.roundtrip import sample_data, snapshot, static
from db.throwaway import Server

OK, FAIL, DECLARED, SKIPPED = "ok", "FAIL", "declared", "skipped"


@dataclass
class Result:
    revision: str
    step: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    """Everything a reader needs: the diff, the revision, the database error."""
    note: str = ""
    """One short line for the summary table."""


@dataclass
class Report:
    server: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failures


OnResult = Callable[[Result], None]


def declared(script: Script, name: str) -> str | None:
    """A module-level declaration such as `downgrade_loses_data = "why"`."""
    value = getattr(script.module, name, None)
    return str(value) if value else None


class Stairway:
    """Runs the per-revision cycle on one database, which keeps its rows throughout."""

    def __init__(self, server: Server, database: str, connection: Connection) -> None:
        self.server, self.database, self.connection = server, database, connection
        self.filler = sample_data.Filler()

    def _snapshot(self) -> str:
        return snapshot.take(self.server, self.database)

    def _step(self, script: Script, direction: str) -> float:
        started = time.perf_counter()
        runner.run(self.connection, [runner.Step(script, direction)])
        return time.perf_counter() - started

    def revision(self, script: Script) -> list[Result]:
        """The cycle for one revision; the database must be at its parent."""
        rev = script.revision
        results: list[Result] = []
        self.filler.fill(self.connection)
        before = self._snapshot()
        shape_before = sample_data.shape(self.connection)
        try:
            results.append(Result(rev, "up", OK, self._step(script, "up")))
        except UserError as error:
            return [*results, Result(rev, "up", FAIL, detail=error.render())]
        after = self._snapshot()
        self.filler.fill(self.connection)
        shape_after = sample_data.shape(self.connection)
        common = sample_data.common_shape(shape_before, shape_after)
        rows = sample_data.fingerprint(self.connection, common)
        held = sample_data.holdings(self.connection, shape_after, shape_before)

        if reason := declared(script, "irreversible"):
            return [*results, Result(rev, "down", SKIPPED, note=f"irreversible: {reason}")]
        for direction, expected, label in (
            ("down", before, "before up"),
            ("up", after, "after up"),
        ):
            step = "down" if direction == "down" else "up again"
            try:
                seconds = self._step(script, direction)
            except UserError as error:
                return [*results, Result(rev, step, FAIL, detail=error.render())]
            problems = self._compare(rev, step, expected, label, common, rows)
            results.append(
                Result(rev, step, FAIL if problems else OK, seconds, "\n".join(problems))
            )
            if direction == "down":
                results.append(self._data_result(script, held))
        return results

    def _compare(self, rev, step, expected, label, common, rows) -> list[str]:
        problems = []
        actual = self._snapshot()
        if actual != expected:
            problems.append(
                f"the schema after {step} of {rev} differs from the schema {label}.\n"
                f"Likely cause: {'downgrade' if step == 'down' else 'upgrade'}() of {rev} "
                "forgets something the other direction does.\n"
                + snapshot.diff(expected, actual, f"{rev} {label}", f"{rev} after {step}")
            )
        now = sample_data.fingerprint(self.connection, common)
        changed = [
            f"  {catalog.shown(table)}: {rows[table].rows} rows (md5 {rows[table].digest}) "
            f"before, {now[table].rows} rows (md5 {now[table].digest}) after"
            for table in common
            if now[table] != rows[table]
        ]
        if changed:
            problems.append(
                f"rows changed across {step} of {rev}, in tables that exist on both sides.\n"
                "Likely cause: the migration rewrites, deletes or truncates rows it does not "
                "own.\n" + "\n".join(changed)
            )
        return problems

    def _data_result(self, script: Script, held: list[str]) -> Result:
        rev = script.revision
        if not held:
            return Result(rev, "data", OK, note="no rows lost on rollback")
        lost = "; ".join(held)
        if reason := declared(script, "downgrade_loses_data"):
            return Result(
                rev, "data", DECLARED, detail=f"{reason}; rolled back: {lost}", note=reason
            )
        return Result(
            rev,
            "data",
            FAIL,
            detail=f"downgrade of {rev} destroyed rows without declaring it: {lost}.\n"
            "Likely cause: it drops a table or column that holds data. Preserve the data, or "
            'declare downgrade_loses_data = "why" in the migration so that reviewers see it.',
        )


def _engine(server: Server, database: str) -> Engine:
    return create_engine(server.admin_url.set(database=database), poolclass=NullPool)


def _timed(results: list[Result], on_result: OnResult | None, result: Result) -> None:
    results.append(result)
    if on_result is not None:
        on_result(result)


def whole_chain(server: Server, on_result: OnResult | None = None) -> list[Result]:
    """base → head → base → head on a fresh database, comparing snapshots; then models."""
    results: list[Result] = []
    script = revisions.script_directory()
    chain = revisions.chain(script)
    if blocker := next((s for s in chain if declared(s, "irreversible")), None):
        reason = f"{blocker.revision} is irreversible"
        _timed(results, on_result, Result("chain", "base → head → base", SKIPPED, note=reason))
        return results
    url = server.create_database()
    engine = _engine(server, url.database)
    try:
        with engine.connect() as connection:
            empty = snapshot.take(server, url.database)
            first_head: str | None = None
            for step, target in (
                ("base → head", "head"),
                ("head → base", "base"),
                ("base → head again", "head"),
            ):
                current = runner.current_revision(connection)
                if target == "head":
                    plan = runner.plan_upgrade(script, current, "head")
                else:
                    plan = runner.plan_downgrade(script, current, steps=None, target="base")
                started = time.perf_counter()
                runner.run(connection, plan)
                seconds = time.perf_counter() - started
                now = snapshot.take(server, url.database)
                if target == "head" and first_head is None:
                    first_head = now
                expected, label = (
                    (empty, "the empty start")
                    if target == "base"
                    else (first_head, "the first head")
                )
                detail = ""
                if now != expected:
                    detail = f"after {step} the schema differs from {label}.\n" + snapshot.diff(
                        expected, now, label, f"after {step}"
                    )
                result = Result("chain", step, FAIL if detail else OK, seconds, detail)
                _timed(results, on_result, result)
            _timed(results, on_result, models_match(connection))
    finally:
        engine.dispose()
        server.drop_database(url.database)
    return results


def models_match(connection: Connection) -> Result:
    """Autogenerate finds no difference between the models and the database at head."""
    from db.models import metadata  # the roundtrip checks them; migrations never import them

    started = time.perf_counter()
    options = {"compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(connection, opts=options)
    diff = compare_metadata(context, metadata)
    detail = ""
    if diff:
        ops = render_python_code(produce_migrations(context, metadata).upgrade_ops)
        detail = (
            "the models and the migrated database disagree. Likely cause: a model changed "
            "without a migration, or the reverse. What a migration would need:\n" + ops
        )
    connection.rollback()
    return Result(
        "head", "models vs head", FAIL if diff else OK, time.perf_counter() - started, detail
    )


def run(server: Server, on_result: OnResult | None = None) -> Report:
    """Static checks, the stairway over every revision, the whole chain, models vs head."""
    started = time.perf_counter()
    report = Report(server=f"{server.kind}, PostgreSQL {server.version}")
    problems = static.check_all()
    _timed(
        report.results,
        on_result,
        Result("files", "static checks", FAIL if problems else OK, detail="\n".join(problems)),
    )
    if any("heads" in p or "cannot be read" in p for p in problems):
        report.seconds = time.perf_counter() - started
        return report
    url = server.create_database()
    engine = _engine(server, url.database)
    try:
        with engine.connect() as connection:
            stairway = Stairway(server, url.database, connection)
            for script in revisions.chain(revisions.script_directory()):
                results = stairway.revision(script)
                for result in results:
                    _timed(report.results, on_result, result)
                if any(r.status == FAIL and r.step in ("up", "down", "up again") for r in results):
                    break  # the database is no longer where the next revision expects it
    finally:
        engine.dispose()
        server.drop_database(url.database)
    if report.ok:
        report.results += whole_chain(server, on_result)
    report.seconds = time.perf_counter() - started
    return report
