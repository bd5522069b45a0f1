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

import os
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alembic.script import Script, ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from db import catalog, loss, revisions, runner, settings
from db.errors import CheckFailed, UserError
from db.roundtrip import ddl_log, sample_data, snapshot, static
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


# pg_stat_xact_user_tables' three counters, without the view's other dozen per table.
_TOUCHED = text(
    "SELECT oid FROM unnest(CAST(:oids AS oid[])) AS oid "
    "WHERE pg_stat_get_xact_tuples_inserted(oid) + pg_stat_get_xact_tuples_updated(oid) "
    "+ pg_stat_get_xact_tuples_deleted(oid) > 0"
)
CHECK_READS = "WORKTRACKER_ROUNDTRIP_CHECK_READS"
"""Set to 1 (the tests do), every partial catalog read is compared with a full one."""


def _changed_tables(
    before: catalog.Catalog, after: catalog.Catalog, among: set[int] | None = None
) -> set[int]:
    """Tables of `after` whose rows may read differently than in `before`: new ones,
    rewritten ones, and those whose columns changed (added, dropped, retyped, renamed).
    `among`: the only tables that can have changed, when the step's DDL log says so."""
    changed = set()
    candidates = after.relations if among is None else among & after.relations.keys()
    for oid in candidates:
        relation = after.relations[oid]
        if relation.kind not in ("r", "p"):
            continue
        old = before.relations.get(oid)
        if old is None or old.filenode != relation.filenode:
            changed.add(oid)
            continue
        columns_b = [(c.attnum, c.name, c.type) for c in before.table_columns(oid)]
        columns_a = [(c.attnum, c.name, c.type) for c in after.table_columns(oid)]
        if columns_b != columns_a:
            changed.add(oid)
    return changed


def _tables_of_changed_types(before: catalog.Catalog, after: catalog.Catalog) -> set[int]:
    """Tables with a column of an enum whose labels changed: they get rows with the new
    labels."""
    if after.enums is before.enums:  # read again for some tables only: no enum changed
        return set()
    labels_b = {e.shown: [lb for _, lb in e.labels] for e in before.enums.values()}
    changed = {
        oid for oid, e in after.enums.items() if labels_b.get(e.shown) != [lb for _, lb in e.labels]
    }
    if not changed:
        return set()
    return {c.table for c in after.columns.values() if c.type_oid in changed}


def _same_as_full_read(partial: catalog.Catalog, full: catalog.Catalog, tables: set[int]) -> None:
    """WORKTRACKER_ROUNDTRIP_CHECK_READS: a partial read must equal a full one, or the
    DDL log missed something; the step fails, since the verdicts would rest on it."""
    if differ := partial.differences(full):
        changes = "; ".join(catalog.changes(full, partial)) or "file nodes or identities"
        raise CheckFailed(
            f"the roundtrip's catalog read again for tables {sorted(tables)} differs from a "
            f"full read in {', '.join(differ)} ({changes}): its DDL log missed a change.",
            "a bug in db/roundtrip/ddl_log.py: report it with this migration; add the DDL "
            "to CHANGES in tests/test_catalog_reads.py to reproduce it",
        )


class Stairway:
    """Runs the per-revision cycle on one database, which keeps its rows throughout.

    Its cost depends on what each revision changes, not on the size of the schema: rows
    go only into the tables a revision creates or changes, and the rows of a table are
    read again only after a step touched it (pg_stat_xact_user_tables inside the step's
    transaction, or a change of the table in the catalog). Schemas are compared with the
    in-process catalog, read again after a step only for the tables its DDL touched
    (ddl_log); the whole chain compares pg_dump snapshots once.
    """

    def __init__(
        self,
        server: Server,
        database: str,
        connection: Connection,
        scripts: ScriptDirectory | None = None,
    ) -> None:
        self.server, self.database, self.connection = server, database, connection
        self.scripts = scripts or revisions.script_directory()
        self.filler = sample_data.Filler()
        self.catalog: catalog.Catalog | None = None
        self.rows: dict[int, list[tuple]] = {}
        """The rows of every table now, by table identity, each value as text."""
        self.logged = ddl_log.install(connection)
        self.check_reads = os.environ.get(CHECK_READS) == "1"
        self.reads: Counter[str] = Counter()
        """How many catalog reads were full, and how many partial."""

    def _read(self) -> catalog.Catalog:
        self.reads["full"] += 1
        found = catalog.read(self.connection)
        self.connection.rollback()
        return found

    def _read_after(self, before: catalog.Catalog, tables: set[int] | None) -> catalog.Catalog:
        """The catalog after a step that changed only `tables` (None: anything)."""
        found = None if tables is None else catalog.reread(self.connection, before, tables)
        if found is None:
            return self._read()
        self.reads["partial"] += 1
        self.connection.rollback()
        if self.check_reads:
            _same_as_full_read(found, self._read(), tables)
        return found

    def _refresh(self, cat: catalog.Catalog, oids: set[int]) -> None:
        for oid in oids:
            relation = cat.relations.get(oid)
            if relation is None or relation.kind not in ("r", "p"):
                continue
            self.rows[oid] = loss.row_values(self.connection, relation, cat.table_columns(oid))
        for oid in [o for o in self.rows if o not in cat.relations]:
            del self.rows[oid]
        self.connection.rollback()

    def _step(
        self, script: Script, direction: str, cat: catalog.Catalog
    ) -> tuple[float, set[int], catalog.Catalog, set[int]]:
        """One step: the seconds it took, the tables whose rows it wrote, the catalog
        after it, and the tables whose rows may now read differently (_changed_tables)."""
        step = runner.Step(script, direction)
        touched: set[int] = set()
        oids = [o for o, r in cat.relations.items() if r.kind in ("r", "p")]
        logged: list[set[int] | None] = [None]

        def inside(step: runner.Step, seconds: float) -> None:
            # Still inside the step's transaction: its own row counts are visible here.
            touched.update(self.connection.execute(_TOUCHED, {"oids": oids}).scalars())
            if self.logged:
                logged[0] = ddl_log.take(self.connection, cat)

        started = time.perf_counter()
        runner.run(self.connection, [step], on_step=inside, scripts=self.scripts)
        seconds = time.perf_counter() - started
        if step.online:  # statements committed on their own: not counted, nor logged
            touched.update(oids)
            logged[0] = None
        after = self._read_after(cat, logged[0])
        return seconds, touched, after, _changed_tables(cat, after, among=logged[0])

    def _fill(self, rev: str, cat: catalog.Catalog, oids: set[int]) -> Result | None:
        names = {cat.relations[o].sql for o in oids if o in cat.relations}
        if not names:
            return None
        try:
            self.filler.fill(self.connection, only=names)
        except UserError as error:
            if self.connection.in_transaction():
                self.connection.rollback()
            return Result(rev, "sample rows", FAIL, detail=error.render(), note=error.message)
        self._refresh(cat, oids)
        return None

    def revision(self, script: Script) -> list[Result]:
        """The cycle for one revision; the database must be at its parent."""
        rev = script.revision
        if self.catalog is None:  # the first revision: rows in whatever is there already
            self.catalog = self._read()
            self._refresh(self.catalog, set(self.catalog.relations))
            if failed := self._fill(rev, self.catalog, set(self.rows)):
                return [failed]
        cat_before = self.catalog
        rows_before = dict(self.rows)
        try:
            seconds, touched_up, cat_after, changed_up = self._step(script, "up", cat_before)
        except UserError as error:
            return [Result(rev, "up", FAIL, detail=_failure_detail(script, error, "up"))]
        results = [Result(rev, "up", OK, seconds)]
        self.catalog = cat_after
        self._refresh(cat_after, touched_up | changed_up)
        lines_before, lines_after = cat_before.lines(), cat_after.lines()
        data_only = lines_after == lines_before

        if reason := declared(script, "irreversible"):
            return [*results, Result(rev, "down", SKIPPED, note=f"irreversible: {reason}")]
        # Rows at R, in what R created or changed: new labels, new columns, new tables.
        if failed := self._fill(
            rev, cat_after, changed_up | _tables_of_changed_types(cat_before, cat_after)
        ):
            return [*results, failed]
        created = loss.dropped(self.connection, cat_after, cat_before)
        self.connection.rollback()
        counts_at_rev = {oid: len(self.rows.get(oid, [])) for oid in rows_before}

        try:
            seconds, touched_down, cat_down, changed_down = self._step(script, "down", cat_after)
        except UserError as error:
            return [
                *results,
                Result(rev, "down", FAIL, detail=_failure_detail(script, error, "down")),
                Result(rev, "up again", SKIPPED, note="the down step failed"),
            ]
        self.catalog = cat_down
        self._refresh(cat_down, touched_down | changed_down)
        if cat_down.lines() != lines_before:
            return [
                *results,
                Result(
                    rev,
                    "down",
                    FAIL,
                    seconds,
                    _schema_differs(script, "down", cat_before, cat_down, "before up"),
                    note="schema differs after down",
                ),
                Result(rev, "data", SKIPPED, note="the schema after down differs"),
                Result(rev, "up again", SKIPPED, note="the schema after down differs"),
            ]
        results.append(Result(rev, "down", OK, seconds))
        suspects = touched_up | changed_up | touched_down | changed_down
        results.append(
            self._data_result(
                script,
                cat_before,
                cat_down,
                rows_before,
                counts_at_rev,
                suspects,
                created,
                data_only,
            )
        )
        try:
            seconds, touched_again, cat_again, changed_again = self._step(script, "up", cat_down)
        except UserError as error:
            detail = (
                f"{rev} went up, down and then failed to go up again, with rows present.\n"
                + _failure_detail(script, error, "up")
            )
            return [*results, Result(rev, "up again", FAIL, detail=detail)]
        self.catalog = cat_again
        self._refresh(cat_again, touched_again | changed_again)
        detail = ""
        if cat_again.lines() != lines_after:
            detail = _schema_differs(script, "up again", cat_after, cat_again, "after up")
        results.append(Result(rev, "up again", FAIL if detail else OK, seconds, detail))
        # What the down dropped comes back empty: rows again, for the revisions after this.
        if not detail and (failed := self._fill(rev, cat_again, changed_again)):
            results.append(failed)
        return results

    def _data_result(
        self,
        script: Script,
        cat_before: catalog.Catalog,
        cat_down: catalog.Catalog,
        rows_before: dict[int, list[tuple]],
        counts_at_rev: dict[int, int],
        suspects: set[int],
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
        problems, ignored = [], []
        for oid, before in rows_before.items():
            relation = cat_before.relations[oid]
            current = cat_down.relation_named(relation.shown)
            if current is None:
                continue  # the schema comparison reports a missing table
            if oid not in suspects and current.oid == oid:
                continue  # no step wrote to it, and its columns are as they were
            now = self.rows.get(current.oid, [])
            missing = sum((Counter(before) - Counter(now)).values())
            if missing:
                # A backfill fires the table's updated_at trigger: not the rollback's doing.
                maintained = loss.columns_set_on_update(self.connection, current)
                self.connection.rollback()
                if maintained:
                    columns = cat_down.table_columns(current.oid)
                    keep = [i for i, c in enumerate(columns) if c.name not in maintained]
                    missing = sum(
                        (
                            Counter(tuple(r[i] for i in keep) for r in before)
                            - Counter(tuple(r[i] for i in keep) for r in now)
                        ).values()
                    )
                    ignored += [f"{relation.shown}.{name}" for name in sorted(maintained)]
            if missing:
                total = catalog.counted(len(before), "row")
                problems.append(
                    f"  {relation.shown}: {missing} of {total} that existed before up are gone "
                    "or changed"
                )
            if len(now) < counts_at_rev.get(oid, 0):
                lost = counts_at_rev[oid] - len(now)
                problems.append(
                    f"  {relation.shown}: {catalog.counted(lost, 'row')} added at {rev} "
                    "deleted by down"
                )
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


def _schema_differs(
    script: Script, step: str, expected: catalog.Catalog, actual: catalog.Catalog, label: str
) -> str:
    rev = script.revision
    if step == "down":
        cause = f"downgrade() of {rev} forgets something its upgrade() does."
        if static.downgrade_does_nothing(revisions.path_of(script)):
            cause = (
                f"downgrade() of {rev} does nothing, but its upgrade() changes the schema. "
                'Write it, or declare irreversible = "why" at module level.'
            )
    else:
        cause = "the upgrade depends on something the first run left behind, or on the data."
    changes = "\n".join(f"  {line}" for line in catalog.changes(expected, actual))
    return (
        f"the schema after {step} of {rev} differs from the schema {label}.\n"
        f"Likely cause: {cause}\n"
        f"What differs ({label} → after {step}):\n{changes}\n"
        + snapshot.diff(
            "\n".join(expected.lines()) + "\n",
            "\n".join(actual.lines()) + "\n",
            f"{rev} {label}",
            f"{rev} after {step}",
        )
    )


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
                runner.run(connection, runner.plan_upgrade(script, None, floor), scripts=script)
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
                    runner.run(connection, plan, scripts=script)
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
                    scripts=script,
                )
            _timed(results, on_result, models_match(connection))
    finally:
        engine.dispose()
        server.drop_database(url.database)
    return results


def unimported_model_modules(package_name: str = "db.models") -> list[str]:
    """Modules of the models package that importing it does not import: their tables are
    in no metadata, so no check would see them."""
    import importlib
    import pkgutil
    import sys

    package = importlib.import_module(package_name)
    folder = package_name.replace(".", "/")
    return sorted(
        f"{folder}/{info.name}.py"
        for info in pkgutil.iter_modules(package.__path__)
        if f"{package_name}.{info.name}" not in sys.modules
    )


def _difference(entry: object) -> str:
    """One autogenerate difference as a readable line (db/roundtrip/model_diff.py)."""
    from db.roundtrip import model_diff

    return model_diff.describe(entry)


def models_match(connection: Connection) -> Result:
    """Autogenerate (with enum labels) finds no difference between the models and the
    database at head, and every model module is imported."""
    # Enum labels: Alembic's autogenerate does not compare them; this maintained plugin does.
    import alembic_postgresql_enum  # noqa: F401
    from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
    from alembic.migration import MigrationContext

    started = time.perf_counter()
    try:
        from db.models import metadata  # the roundtrip checks them; migrations never do
    except Exception as error:  # a model module that does not even import
        where = next(
            (
                f"{Path(f.filename).name}:{f.lineno}"
                for f in reversed(traceback.extract_tb(error.__traceback__))
                if "/db/models/" in f.filename
            ),
            "db/models",
        )
        return Result(
            "head",
            "models vs head",
            FAIL,
            detail=f"the models do not import: {where}: {type(error).__name__}: {error}",
            note="the models do not import",
        )
    problems = []
    if orphans := unimported_model_modules():
        problems.append(
            f"model module(s) that db/models/__init__.py does not import: {', '.join(orphans)}. "
            "Their tables are in no metadata, so no migration is checked against them. "
            "Import them in db/models/__init__.py."
        )
    options = {
        "compare_type": True,
        "compare_server_default": True,
        "include_schemas": True,  # as env.py: models in any application schema
        "include_name": settings.in_app_schemas,
    }
    context = MigrationContext.configure(connection, opts=options)
    diff = compare_metadata(context, metadata)
    if diff:
        from db.roundtrip import model_diff

        upgrade_ops = produce_migrations(context, metadata).upgrade_ops
        upgrade_ops.ops, enum_fixes = model_diff.describe_enum_fixes(upgrade_ops.ops)
        needed = (render_python_code(upgrade_ops) + "\n") if upgrade_ops.ops else ""
        needed += "".join(f"  {fix}\n" for fix in enum_fixes)
        problems.append(
            "the models and the migrated database disagree: a model changed without a "
            "migration, or a migration without its model.\n"
            + "\n".join(f"  {_difference(d)}" for d in diff)
            + "\nFix: write the migration (`invoke migrate.new --autogenerate MESSAGE`, then "
            "review it), or change the models to match the migrations. What a migration "
            "would need:\n" + needed.rstrip("\n")
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
            scripts = revisions.script_directory()
            stairway = Stairway(server, url.database, connection, scripts)
            for script in revisions.chain(scripts):
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
