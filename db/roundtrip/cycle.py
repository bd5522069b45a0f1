"""Apply → rollback → reapply, with the real catalog and real rows compared at each step.

The policy (README, "Roundtrip"): a rollback must leave every row that existed before
the upgrade, in every table and column that existed before it, exactly as it was, and the
catalog of every application schema exactly as it was. Rows held only by objects the
upgrade itself created are lost by definition: they are listed, not failed. Tables and
columns are followed by identity (oid, attnum), so a rename is not a loss.

Stairway, for each revision R in order, on one database that keeps its rows:
  fill every table → snapshot S0, fingerprint every row → up R → snapshot S1 → fill
  again (now with R's new labels, columns and tables) → down R: the snapshot must be S0
  again and every row fingerprinted before up must still be there, unchanged; rows added
  at R to earlier tables must still be there → up R again: S1 again.
  A data-only migration (its upgrade changes no catalog) may have an empty downgrade;
  `irreversible = "why"` skips only R's own down; `downgrade_loses_data = "why"` turns
  a loss of earlier rows into a listed, declared loss.
Whole chain: base → head → base (must equal the empty start) → head (must equal the
first head); with irreversible migrations, down to the newest of them instead of base.
Models vs head: autogenerate (with enum labels) must find nothing, and every module
under db/models/ must be imported.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from alembic.script import Script
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from db import catalog, loss, revisions, runner
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

    def as_dict(self) -> dict:
        return {
            "server": self.server,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "results": [asdict(r) for r in self.results],
        }


OnResult = Callable[[Result], None]


def declared(script: Script, name: str) -> str | None:
    """A module-level declaration such as `downgrade_loses_data = "why"`."""
    value = getattr(script.module, name, None)
    return str(value) if value else None


def _failure_detail(script: Script, error: UserError, direction: str) -> str:
    detail = error.render()
    if direction == "down" and "NotImplementedError" in detail:
        detail += (
            f"\nLikely cause: downgrade() of {script.revision} is not written. Write it, or, if "
            'the migration cannot be undone, declare irreversible = "why" at module level '
            "(only its own rollback is then skipped)."
        )
    return detail


@dataclass
class _Tables:
    """Rows of every table, fingerprinted one by one, by table identity; the rows
    themselves are kept (they are few) to fingerprint again without some columns."""

    catalog: catalog.Catalog
    rows: dict[int, Counter]
    counts: dict[int, int]
    raw: dict[int, list[tuple]]

    def without_maintained(
        self, connection: Connection, now: catalog.Relation
    ) -> tuple[Counter, list[catalog.Column], list[str]] | None:
        """The fingerprint without the columns a trigger sets on every update of `now`."""
        columns = self.catalog.table_columns(now.oid)
        maintained = loss.columns_set_on_update(connection, now)
        if not maintained or now.oid not in self.raw:
            return None
        keep = [i for i, c in enumerate(columns) if c.name not in maintained]
        left = Counter(loss.row_text([row[i] for i in keep]) for row in self.raw[now.oid])
        return left, [columns[i] for i in keep], sorted(maintained)


def _fingerprint(connection: Connection, cat: catalog.Catalog) -> _Tables:
    rows, counts, raw = {}, {}, {}
    for oid, relation in cat.relations.items():
        if relation.kind not in ("r", "p"):
            continue
        raw[oid] = loss.row_values(connection, relation, cat.table_columns(oid))
        rows[oid] = Counter(loss.row_text(row) for row in raw[oid])
        counts[oid] = len(raw[oid])
    return _Tables(cat, rows, counts, raw)


def _counts(connection: Connection, cat: catalog.Catalog, oids: list[int]) -> dict[int, int]:
    return {
        oid: connection.execute(text(f"SELECT count(*) FROM {cat.relations[oid].sql}")).scalar_one()
        for oid in oids
    }


class Stairway:
    """Runs the per-revision cycle on one database, which keeps its rows throughout."""

    def __init__(self, server: Server, database: str, connection: Connection) -> None:
        self.server, self.database, self.connection = server, database, connection
        self.filler = sample_data.Filler()

    def _snapshot(self) -> str:
        return snapshot.take(self.server, self.database)

    def _catalog(self) -> catalog.Catalog:
        found = catalog.read(self.connection)
        self.connection.rollback()
        return found

    def _step(self, script: Script, direction: str) -> float:
        started = time.perf_counter()
        runner.run(self.connection, [runner.Step(script, direction)])
        return time.perf_counter() - started

    def _fill(self, rev: str) -> Result | None:
        try:
            self.filler.fill(self.connection)
        except UserError as error:
            if self.connection.in_transaction():
                self.connection.rollback()
            return Result(rev, "sample rows", FAIL, detail=error.render(), note=error.message)
        return None

    def revision(self, script: Script) -> list[Result]:
        """The cycle for one revision; the database must be at its parent."""
        rev = script.revision
        if failed := self._fill(rev):
            return [failed]
        before, cat_before = self._snapshot(), self._catalog()
        rows_before = _fingerprint(self.connection, cat_before)
        self.connection.rollback()
        try:
            results = [Result(rev, "up", OK, self._step(script, "up"))]
        except UserError as error:
            return [Result(rev, "up", FAIL, detail=_failure_detail(script, error, "up"))]
        after, cat_after = self._snapshot(), self._catalog()
        data_only = after == before

        if reason := declared(script, "irreversible"):
            return [*results, Result(rev, "down", SKIPPED, note=f"irreversible: {reason}")]
        if failed := self._fill(rev):
            return [*results, failed]
        created = loss.dropped(self.connection, cat_after, cat_before)
        kept = [oid for oid in cat_before.relations if oid in cat_after.relations]
        counts_at_rev = _counts(
            self.connection, cat_after, [o for o in kept if o in rows_before.rows]
        )
        self.connection.rollback()

        try:
            seconds = self._step(script, "down")
        except UserError as error:
            return [
                *results,
                Result(rev, "down", FAIL, detail=_failure_detail(script, error, "down")),
                Result(rev, "up again", SKIPPED, note="the down step failed"),
            ]
        actual = self._snapshot()
        if actual != before:
            cause = f"downgrade() of {rev} forgets something its upgrade() does."
            if static.downgrade_does_nothing(revisions.path_of(script)):
                cause = (
                    f"downgrade() of {rev} does nothing, but its upgrade() changes the schema. "
                    'Write it, or declare irreversible = "why" at module level.'
                )
            detail = (
                f"the schema after down of {rev} differs from the schema before up.\n"
                f"Likely cause: {cause}\n"
                + snapshot.diff(before, actual, f"{rev} before up", f"{rev} after down")
            )
            return [
                *results,
                Result(rev, "down", FAIL, seconds, detail, note="schema differs after down"),
                Result(rev, "data", SKIPPED, note="the schema after down differs"),
                Result(rev, "up again", SKIPPED, note="the schema after down differs"),
            ]
        results.append(Result(rev, "down", OK, seconds))
        results.append(
            self._data_result(script, cat_before, rows_before, counts_at_rev, created, data_only)
        )
        try:
            seconds = self._step(script, "up")
        except UserError as error:
            detail = (
                f"{rev} went up, down and then failed to go up again, with rows present.\n"
                + _failure_detail(script, error, "up")
            )
            return [*results, Result(rev, "up again", FAIL, detail=detail)]
        again = self._snapshot()
        detail = ""
        if again != after:
            detail = (
                f"the schema after up again of {rev} differs from the schema after the first "
                "up.\nLikely cause: the upgrade depends on something the first run left "
                "behind, or on the data.\n"
                + snapshot.diff(after, again, f"{rev} after up", f"{rev} after up again")
            )
        results.append(Result(rev, "up again", FAIL if detail else OK, seconds, detail))
        return results

    def _data_result(
        self,
        script: Script,
        cat_before: catalog.Catalog,
        rows_before: _Tables,
        counts_at_rev: dict[int, int],
        created: loss.Loss,
        data_only: bool,
    ) -> Result:
        rev = script.revision
        if data_only and static.downgrade_does_nothing(revisions.path_of(script)):
            return Result(
                rev,
                "data",
                OK,
                note="data-only migration: its empty downgrade leaves the data as up made it",
            )
        now = self._catalog()
        problems, ignored = [], []
        for oid, before_rows in rows_before.rows.items():
            relation = cat_before.relations[oid]
            current = now.relation_named(relation.shown)
            if current is None:
                continue  # the schema comparison reports a missing table
            columns = now.table_columns(current.oid)
            now_rows = loss.row_multiset(self.connection, current, columns)
            missing = sum((before_rows - now_rows).values())
            if missing and (kept := rows_before.without_maintained(self.connection, current)):
                # A backfill fires the table's updated_at trigger: not the rollback's doing.
                left, columns_left, maintained = kept
                now_rows = loss.row_multiset(self.connection, current, columns_left)
                missing = sum((left - now_rows).values())
                ignored += [f"{relation.shown}.{name}" for name in maintained]
            if missing:
                total = catalog.counted(rows_before.counts[oid], "row")
                problems.append(
                    f"  {relation.shown}: {missing} of {total} that existed before up are gone "
                    "or changed"
                )
            if oid in counts_at_rev and sum(now_rows.values()) < counts_at_rev[oid]:
                lost = counts_at_rev[oid] - sum(now_rows.values())
                problems.append(
                    f"  {relation.shown}: {catalog.counted(lost, 'row')} added at {rev} "
                    "deleted by down"
                )
        self.connection.rollback()
        dropped = "; ".join(created.lines)
        if not problems:
            note = f"drops what {rev} created: {dropped}" if dropped else "no rows lost"
            if ignored:
                note += f" (set by triggers on update, not compared: {', '.join(ignored)})"
            return Result(rev, "data", OK, note=note, detail=note if dropped or ignored else "")
        detail = (
            f"rows changed across down of {rev}, in tables that existed before its upgrade.\n"
            "Likely cause: the downgrade deletes, rewrites or truncates rows it does not own "
            "(or narrows a type).\n" + "\n".join(problems)
        )
        if reason := declared(script, "downgrade_loses_data"):
            return Result(rev, "data", DECLARED, detail=f"{reason}; {detail}", note=reason)
        detail += (
            '\nPreserve the data, or declare downgrade_loses_data = "why" in the migration '
            "so that reviewers see it."
        )
        return Result(rev, "data", FAIL, detail=detail, note="rows lost on rollback")


def _engine(server: Server, database: str) -> Engine:
    return create_engine(server.admin_url.set(database=database), poolclass=NullPool)


def _timed(results: list[Result], on_result: OnResult | None, result: Result) -> None:
    results.append(result)
    if on_result is not None:
        on_result(result)


def whole_chain(server: Server, on_result: OnResult | None = None) -> list[Result]:
    """base → head → base → head on a fresh database, comparing snapshots; then models.

    Past an irreversible migration there is no way back: the chain goes down to the
    newest irreversible migration instead of base, and back up.
    """
    results: list[Result] = []
    script = revisions.script_directory()
    chain = revisions.chain(script)
    blockers = [s for s in chain if declared(s, "irreversible")]
    floor = blockers[-1].revision if blockers else None
    url = server.create_database()
    engine = _engine(server, url.database)
    try:
        with engine.connect() as connection:
            bottom = snapshot.take(server, url.database) if floor is None else None
            label = "base" if floor is None else floor
            if floor is not None:
                runner.run(connection, runner.plan_upgrade(script, None, floor))
                bottom = snapshot.take(server, url.database)
            first_head: str | None = None
            steps = [
                (f"{label} → head", "head"),
                (f"head → {label}", floor or "base"),
                (f"{label} → head again", "head"),
            ]
            for step, target in steps:
                current = runner.current_revision(connection)
                if target == "head":
                    plan = runner.plan_upgrade(script, current, "head")
                else:
                    plan = runner.plan_downgrade(script, current, steps=None, target=target)
                if not plan:
                    note = f"{floor} is irreversible and is the head" if floor else "empty chain"
                    _timed(results, on_result, Result("chain", step, SKIPPED, note=note))
                    continue
                started = time.perf_counter()
                try:
                    runner.run(connection, plan)
                except UserError as error:
                    _timed(results, on_result, Result("chain", step, FAIL, detail=error.render()))
                    break
                seconds = time.perf_counter() - started
                now = snapshot.take(server, url.database)
                if target == "head" and first_head is None:
                    first_head = now
                expected, what = (
                    (first_head, "the first head")
                    if target == "head"
                    else (bottom, f"the schema at {label}")
                )
                detail = ""
                if now != expected:
                    detail = f"after {step} the schema differs from {what}.\n" + snapshot.diff(
                        expected or "", now, what, f"after {step}"
                    )
                _timed(
                    results,
                    on_result,
                    Result("chain", step, FAIL if detail else OK, seconds, detail),
                )
                if detail:
                    skipped = Result("chain", steps[-1][0], SKIPPED, note=f"{step} failed")
                    if step != steps[-1][0]:
                        _timed(results, on_result, skipped)
                    break
            if runner.current_revision(connection) != (chain[-1].revision if chain else None):
                runner.run(
                    connection,
                    runner.plan_upgrade(script, runner.current_revision(connection), "head"),
                )
            _timed(results, on_result, models_match(connection))
    finally:
        engine.dispose()
        server.drop_database(url.database)
    return results


def unimported_model_modules() -> list[str]:
    """Modules under db/models/ that importing db.models does not import: their tables are
    in no metadata, so no check would see them."""
    import importlib
    import pkgutil
    import sys

    package = importlib.import_module("db.models")
    return sorted(
        f"db/models/{info.name}.py"
        for info in pkgutil.iter_modules(package.__path__)
        if f"db.models.{info.name}" not in sys.modules
    )


def _difference(entry: object) -> str:
    """One autogenerate difference, readable: enum labels spelled out."""
    if isinstance(entry, tuple) and entry and entry[0] == "sync_enum_values":
        _, database, models, columns = entry
        name = ", ".join(f"{c.table_name}.{c.column_name}" for c in columns) or "an enum"
        extra = [v for v in database if v not in models]
        missing = [v for v in models if v not in database]
        return (
            f"enum of {name}: the database has {database}, the models have {models}"
            + (f" (not in the models: {', '.join(extra)})" if extra else "")
            + (f" (not in the database: {', '.join(missing)})" if missing else "")
        )
    return repr(entry)[:300]


def models_match(connection: Connection) -> Result:
    """Autogenerate (with enum labels) finds no difference between the models and the
    database at head, and every model module is imported."""
    # Enum labels: Alembic's autogenerate does not compare them; this maintained plugin does.
    import alembic_postgresql_enum  # noqa: F401
    from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
    from alembic.migration import MigrationContext

    from db.models import metadata  # the roundtrip checks them; migrations never import them

    started = time.perf_counter()
    problems = []
    if orphans := unimported_model_modules():
        problems.append(
            f"model module(s) that db/models/__init__.py does not import: {', '.join(orphans)}. "
            "Their tables are in no metadata, so no migration is checked against them. "
            "Import them in db/models/__init__.py."
        )
    options = {"compare_type": True, "compare_server_default": True}
    context = MigrationContext.configure(connection, opts=options)
    diff = compare_metadata(context, metadata)
    if diff:
        ops = render_python_code(produce_migrations(context, metadata).upgrade_ops)
        problems.append(
            "the models and the migrated database disagree. Likely cause: a model changed "
            "without a migration, or the reverse (enum labels included).\n"
            + "\n".join(f"  {_difference(d)}" for d in diff)
            + "\nWhat a migration would need:\n"
            + ops
        )
    connection.rollback()
    return Result(
        "head",
        "models vs head",
        FAIL if problems else OK,
        time.perf_counter() - started,
        "\n".join(problems),
    )


def run(server: Server, on_result: OnResult | None = None) -> Report:
    """Static checks, the stairway over every revision, the whole chain, models vs head."""
    started = time.perf_counter()
    report = Report(server=f"{server.kind}, PostgreSQL {server.version}")
    problems, usable = static.check_all()
    _timed(
        report.results,
        on_result,
        Result("files", "static checks", FAIL if problems else OK, detail="\n".join(problems)),
    )
    if not usable:
        _timed(
            report.results,
            on_result,
            Result("chain", "stairway", SKIPPED, note="the chain cannot be run (see above)"),
        )
        report.seconds = time.perf_counter() - started
        return report
    url = server.create_database()
    engine = _engine(server, url.database)
    stopped = None
    try:
        with engine.connect() as connection:
            stairway = Stairway(server, url.database, connection)
            for script in revisions.chain(revisions.script_directory()):
                if stopped is not None:
                    _timed(
                        report.results,
                        on_result,
                        Result(script.revision, "stairway", SKIPPED, note=stopped),
                    )
                    continue
                results = stairway.revision(script)
                for result in results:
                    _timed(report.results, on_result, result)
                if any(
                    r.status == FAIL and r.step in ("sample rows", "up", "down", "up again")
                    for r in results
                ):
                    # The database is no longer where the next revision expects it.
                    stopped = f"not run: {script.revision} failed above"
    finally:
        engine.dispose()
        server.drop_database(url.database)
    if report.ok:
        report.results += whole_chain(server, on_result)
    else:
        _timed(
            report.results,
            on_result,
            Result("chain", "whole chain", SKIPPED, note="not run: the stairway failed above"),
        )
    report.seconds = time.perf_counter() - started
    return report
