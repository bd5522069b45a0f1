"""The stairway: apply → rollback → reapply for each revision in order, on one database
that keeps its rows, with the real catalog and real rows compared at each step.

The policy (README, "Roundtrip"): a rollback must leave every row that existed before
the upgrade, in every table and column that existed before it, exactly as it was, and the
catalog of every application schema exactly as it was. Rows held only by objects the
upgrade itself created are lost by definition: they are listed, not failed. Tables and
columns are followed by identity (oid, attnum), so a rename is not a loss.

For each revision R in order:
  fill every table → snapshot S0, fingerprint every row → up R → snapshot S1 → fill
  again (now with R's new labels, columns and tables) → down R: the snapshot must be S0
  again and every row fingerprinted before up must still be there, unchanged; rows added
  at R to earlier tables must still be there → up R again: S1 again.
  A data-only migration (its upgrade changes no catalog) may have an empty downgrade;
  `irreversible = "why"` skips only R's own down; `downgrade_loses_data = "why"` turns
  a loss of earlier rows into a listed, declared loss.
  A failure does not stop the stairway: the database is put back at R (`Stairway.climb`)
  and the next revision runs, so one run reports every defect. Only a failed upgrade
  of R stops it.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from alembic.script import Script, ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from db import catalog, loss, planning, revisions, runner
from db.errors import CheckFailed, UserError
from db.roundtrip import ddl_log, relaxed, sample_data, scratch, snapshot, static
from db.roundtrip.results import DECLARED, FAIL, OK, SKIPPED, OnResult, Result, timed
from db.throwaway import Server


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
# The filler's messages start with the table they are about.
_UNFILLABLE = re.compile(r"cannot fill (\S+?)(?::| with )")
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


def _shape(cat: catalog.Catalog, oid: int) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in cat.table_columns(oid)]


@dataclass
class _Cycle:
    """One revision's cycle: what each step found, for the steps after it."""

    script: Script
    before: catalog.Catalog
    rows_before: dict[int, list[tuple]]
    results: list[Result]
    after: catalog.Catalog = field(default_factory=catalog.Catalog)
    down: catalog.Catalog = field(default_factory=catalog.Catalog)
    """The catalog after down, where the second up starts."""
    changed_up: set[int] = field(default_factory=set)
    suspects: set[int] = field(default_factory=set)
    """Tables some step wrote to or changed: the others need no row comparison."""
    created: loss.Loss | None = None
    counts_at_rev: dict[int, int] = field(default_factory=dict)


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
        filled_by: sample_data.Filler | None = None,
    ) -> None:
        """`filled_by`: the tables hold a round of this Filler's rows already (a copy of
        a database it filled), so the first revision starts without one of its own."""
        self.server, self.database, self.connection = server, database, connection
        self.scripts = scripts or revisions.script_directory()
        self.filler = filled_by or sample_data.Filler()
        self._prefilled = filled_by is not None
        self.catalog: catalog.Catalog | None = None
        self.rows: dict[int, list[tuple]] = {}
        """The rows of every table now, by table identity, each value as text."""
        self.logged = ddl_log.install(connection)
        self.check_reads = os.environ.get(CHECK_READS) == "1"
        self.reads: Counter[str] = Counter()
        """How many catalog reads were full, and how many partial."""
        self.blocked: str | None = None
        self.needs_rebuild: str | None = None
        self.unfillable: dict[str, str] = {}
        """Tables that could not be filled, and the revision that first said so."""
        self._owned: Engine | None = None
        """The engine of a database that a rebuild created, which close() drops."""
        self._checkpoint: tuple[str, str] | None = None
        """The last rebuild's database at its revision, without rows: the next one's start."""

    def _read(self) -> catalog.Catalog:
        self.reads["full"] += 1
        found = catalog.read(self.connection)
        self.connection.rollback()
        return found

    def _read_after(self, before: catalog.Catalog, tables: set[int] | None) -> catalog.Catalog:
        """The catalog after a step that changed only `tables` (None: anything)."""
        if tables is None:
            return self._read()
        found = catalog.reread(self.connection, before, tables)
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
        step = planning.Step(script, direction)
        touched: set[int] = set()
        oids = [o for o, r in cat.relations.items() if r.kind in ("r", "p")]
        logged: list[set[int] | None] = [None]

        def inside(step: planning.Step, seconds: float) -> None:
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

    def _fill(
        self,
        rev: str,
        cat: catalog.Catalog,
        oids: set[int],
        allowed: dict[int, list[relaxed.Allowed]] | None = None,
        *,
        first_time: bool = True,
    ) -> Result | None:
        """A round of rows in tables `oids`. A table that cannot be filled is left out and
        the others are filled still: the steps after it compare rows wherever there are
        some. A table is reported the first time it fails; afterwards it is only named,
        or every later revision that touches it would fail again for the same reason.
        `first_time=False` (a rebuild): report nothing, remember nothing.
        With `allowed`, rows that use what the revision newly allows, too."""
        oids = oids | set(allowed or {})
        names = {cat.relations[o].sql for o in oids if o in cat.relations}
        uses = {cat.relations[o].sql: things for o, things in (allowed or {}).items()}
        new: list[UserError] = []
        again: list[str] = []
        while names:
            try:
                self.filler.fill(self.connection, only=names, allowed=uses)
                break
            except UserError as error:
                if self.connection.in_transaction():
                    self.connection.rollback()
                match = _UNFILLABLE.match(error.message)
                table = cat.relation_named(match.group(1)) if match else None
                if table is None or table.sql not in names:
                    new.append(error)  # not narrowed to one table: nothing is filled
                    break
                names.discard(table.sql)
                if table.shown in self.unfillable:
                    if self.unfillable[table.shown] != rev:  # said at this revision already
                        again.append(f"{table.shown} (see {self.unfillable[table.shown]})")
                    continue
                new.append(error)
                if first_time:
                    self.unfillable[table.shown] = rev
        self._refresh(cat, oids)
        if new:
            detail = "\n".join(e.render() for e in new)
            if len(new) > 1 or again:
                also = [e.message for e in new[1:]] + again
                detail += "\nAlso left without rows (may follow from the first):\n  " + (
                    "\n  ".join(also)
                )
            return Result(rev, "sample rows", FAIL, detail=detail, note=new[0].message)
        if again:
            note = f"left without rows, as before: {', '.join(again)}"
            return Result(rev, "sample rows", SKIPPED, note=note)
        return None

    def revision(self, script: Script) -> list[Result]:
        """The cycle for one revision; the database must be at its parent.

        Each step returns False when the steps after it cannot mean anything. Afterwards
        `blocked` says why no later revision can run (R's upgrade fails), and
        `needs_rebuild` why the database is not at R's "up" state with rows (`rebuild`)."""
        self.blocked = self.needs_rebuild = None
        steps = _Cycle(script, *self._start(script.revision))
        for step in (self._up, self._fill_at_revision, self._down, self._up_again):
            if not step(steps):
                break
        return steps.results

    def _start(self, rev: str) -> tuple[catalog.Catalog, dict[int, list[tuple]], list[Result]]:
        """The catalog and rows before up; at the first revision, rows in whatever is
        there already."""
        results = []
        if self.catalog is None:
            self.catalog = self._read()
            self._refresh(self.catalog, set(self.catalog.relations))
            if not self._prefilled and (failed := self._fill(rev, self.catalog, set(self.rows))):
                results.append(failed)
        return self.catalog, dict(self.rows), results

    def _up(self, steps: _Cycle) -> bool:
        script, rev = steps.script, steps.script.revision
        try:
            seconds, touched, steps.after, steps.changed_up = self._step(script, "up", steps.before)
        except UserError as error:
            steps.results.append(
                Result(rev, "up", FAIL, detail=_failure_detail(script, error, "up"))
            )
            self.blocked = f"not run: {rev}'s upgrade fails"
            return False
        steps.results.append(Result(rev, "up", OK, seconds))
        steps.suspects |= touched | steps.changed_up
        self.catalog = steps.after
        self._refresh(steps.after, touched | steps.changed_up)
        return True

    def _fill_at_revision(self, steps: _Cycle) -> bool:
        """Rows at R, in what R created or changed: new labels, new columns, new tables.
        An irreversible R gets them too: the revisions after it need them."""
        rev, before, after = steps.script.revision, steps.before, steps.after
        # Rows that use what R newly allows too (NULLs, orphans, duplicates, wider CHECKs).
        if failed := self._fill(
            rev,
            after,
            steps.changed_up | _tables_of_changed_types(before, after),
            relaxed.newly_allowed(before, after),
        ):
            steps.results.append(failed)  # the other tables have rows: the cycle goes on
        if reason := declared(steps.script, "irreversible"):
            steps.results.append(Result(rev, "down", SKIPPED, note=f"irreversible: {reason}"))
            return False
        steps.created = loss.dropped(self.connection, after, before)
        self.connection.rollback()
        steps.counts_at_rev = {oid: len(self.rows.get(oid, [])) for oid in steps.rows_before}
        return True

    def _down(self, steps: _Cycle) -> bool:
        script, rev = steps.script, steps.script.revision
        try:
            seconds, touched, down, changed = self._step(script, "down", steps.after)
        except UserError as error:
            detail = _failure_detail(script, error, "down")
            steps.results += [
                Result(rev, "down", FAIL, detail=detail),
                Result(rev, "up again", SKIPPED, note="the down step failed"),
            ]
            if not self._still_at(rev, steps.after, planning.Step(script, "down").online):
                self.needs_rebuild = "its failed down left the database between revisions"
            return False
        steps.suspects |= touched | changed
        self.catalog = steps.down = down
        self._refresh(down, touched | changed)
        schema_ok = down.lines() == steps.before.lines()
        if not schema_ok:
            steps.results.append(
                Result(
                    rev,
                    "down",
                    FAIL,
                    seconds,
                    _schema_differs(script, "down", steps.before, down, "before up"),
                    note="schema differs after down",
                )
            )
        else:
            steps.results.append(Result(rev, "down", OK, seconds))
        # Compared even when the schema differs, in the tables it did not change: a
        # forgotten column must not hide the same downgrade's DELETE.
        steps.results.append(self._data_result(steps, down))
        if not schema_ok:
            steps.results.append(
                Result(rev, "up again", SKIPPED, note="the schema after down differs")
            )
            self.needs_rebuild = "the schema after its down differs"
        return schema_ok

    def _up_again(self, steps: _Cycle) -> bool:
        script, rev = steps.script, steps.script.revision
        try:
            seconds, touched, again, changed = self._step(script, "up", steps.down)
        except UserError as error:
            detail = (
                f"{rev} went up, down and then failed to go up again, with rows present.\n"
                + _failure_detail(script, error, "up")
            )
            steps.results.append(Result(rev, "up again", FAIL, detail=detail))
            self.needs_rebuild = "it failed to go up again"
            return False
        self.catalog = again
        self._refresh(again, touched | changed)
        if again.lines() != steps.after.lines():
            detail = _schema_differs(script, "up again", steps.after, again, "after up")
            steps.results.append(Result(rev, "up again", FAIL, seconds, detail))
            self.needs_rebuild = "the schema after its second up differs"
            return False
        steps.results.append(Result(rev, "up again", OK, seconds))
        # What the down dropped comes back empty: rows again, for the revisions after this.
        if failed := self._fill(rev, again, changed):
            steps.results.append(failed)
        return True

    def _still_at(self, rev: str, expected: catalog.Catalog, online: bool) -> bool:
        """After a failed step: whether its rollback left the database at `rev` with the
        schema `expected` (an online step commits as it goes, so never)."""
        if online or planning.current_revision(self.connection) != rev:
            return False
        return self._read().lines() == expected.lines()

    def rebuild(self, rev: str) -> Result:
        """A new database at `rev` with rows in every table, instead of the current one,
        which a failed step left elsewhere. See `climb` for why a rebuild, not templates.

        It starts from a copy of the previous rebuild's database (a checkpoint, taken
        before rows and the DDL log), so a chain with many failures replays each
        migration once or so, not base → R again for each of them."""
        started = time.perf_counter()
        base, start = self._checkpoint or (None, None)
        database = scratch.create(self.server, template=base)
        engine = scratch.engine(self.server, database)
        try:
            with engine.connect() as connection:
                plan = planning.plan_upgrade(self.scripts, start, rev)
                runner.run(connection, plan, scripts=self.scripts)
            # Only now: CREATE DATABASE … TEMPLATE wants no other connection to its source.
            checkpoint = scratch.create(self.server, template=database)
            connection = engine.connect()
        except BaseException:
            engine.dispose()
            self.server.drop_database(database)
            raise
        self._drop_owned()
        if base is not None:
            self.server.drop_database(base)
        self._checkpoint = (checkpoint, rev)
        self.database, self.connection, self._owned = database, connection, engine
        self.logged = ddl_log.install(connection)
        self.rows = {}
        self.catalog = self._read()
        note = f"{start or 'base'} → {rev} in a new database, rows in every table"
        everything = set(self.catalog.relations)
        if failed := self._fill(rev, self.catalog, everything, first_time=False):
            note += f" but: {failed.note}"
        return Result(rev, "rebuilt", OK, time.perf_counter() - started, note=note)

    def _drop_owned(self) -> None:
        if self._owned is not None:
            self.connection.close()
            self._owned.dispose()
            self.server.drop_database(self.database)
            self._owned = None

    def close(self) -> None:
        """Drop the databases rebuilds created (the caller owns the first one)."""
        self._drop_owned()
        if self._checkpoint is not None:
            self.server.drop_database(self._checkpoint[0])
            self._checkpoint = None

    def climb(self, chain: list[Script], on_result: OnResult | None = None) -> list[Result]:
        """Every revision's cycle, so that one run reports every defect of the chain.

        After a failed step that its rollback did not undo (a schema that differs after
        down, a failed second up, a failed online step), the database is rebuilt at the
        failed revision: a new database, base → R in one run, a round of rows in every
        table, so the next revision starts from R's "up" state, as it would have.
        A failed down inside its transaction, a data loss, or sample rows that cannot
        be inserted leave the database at R: no rebuild. Only R's own failed upgrade stops
        the climb: nothing after it can be run.

        Why a rebuild on failure, not templates: a template per revision (CREATE DATABASE
        … TEMPLATE, with every other connection to the source closed) costs on every
        revision of every run, passing or not; the happy path must not pay for failures.
        Measured on a generated 50-migration chain (benchmarks/chain.py, embedded 18, a
        busy 2-core machine): the climb took 4.2 to 4.8 s; one rebuild 0.6 to 0.8 s, at
        revision 26 as at 51; one template copy 0.2 to 0.9 s, so a template per revision
        would have added 12 s or more to every run, to pay for failures it rarely has.
        On a public 116-migration chain with 29 defects (17 of them needing a rebuild),
        one run took 124 s, 62 s of it rebuilding; replaying base → R for each rebuild,
        without the checkpoint copy (`rebuild`), it took 184 s, 116 s of it rebuilding.
        """
        results: list[Result] = []
        for index, script in enumerate(chain):
            for result in self.revision(script):
                timed(results, on_result, result)
            if self.needs_rebuild and index + 1 < len(chain):
                timed(results, on_result, self._rebuild_after(script.revision))
            if self.blocked:
                if rest := chain[index + 1 :]:
                    ids = rest[0].revision + (f"-{rest[-1].revision}" if len(rest) > 1 else "")
                    note = f"{self.blocked} ({catalog.counted(len(rest), 'revision')})"
                    timed(results, on_result, Result(ids, "stairway", SKIPPED, note=note))
                break
        return results

    def _rebuild_after(self, rev: str) -> Result:
        why = f"{rev}: {self.needs_rebuild}"
        try:
            rebuilt = self.rebuild(rev)
        except UserError as error:
            # base → R in one run fails where the stairway's steps passed: a defect too.
            self.blocked = f"not run: the database could not be rebuilt at {rev}"
            return Result(rev, "rebuilt", FAIL, detail=f"{why}.\n{error.render()}", note=why)
        rebuilt.note = f"{self.needs_rebuild}: {rebuilt.note}"
        return rebuilt

    def _data_result(self, steps: _Cycle, cat_down: catalog.Catalog) -> Result:
        """Rows across down, in every table whose columns are as they were before up (all
        of them when the schema after down is right; the others are the schema's defect)."""
        script, rev, cat_before = steps.script, steps.script.revision, steps.before
        counts_at_rev = steps.counts_at_rev
        data_only = steps.after.lines() == cat_before.lines()
        if data_only and static.downgrade_does_nothing(revisions.path_of(script)):
            return Result(
                rev,
                "data",
                OK,
                note="data-only migration: its empty downgrade leaves the data as up made it",
            )
        problems, ignored = [], []
        for oid, before in steps.rows_before.items():
            relation = cat_before.relations[oid]
            current = cat_down.relation_named(relation.shown)
            if current is None or _shape(cat_down, current.oid) != _shape(cat_before, oid):
                continue  # the schema comparison reports a missing or reshaped table
            if oid not in steps.suspects and current.oid == oid:
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
        dropped = "; ".join(steps.created.lines) if steps.created else ""
        if cat_down.lines() != cat_before.lines():
            dropped = ""  # what up created may still be there: the schema failure says
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
