"""Lint's prediction and the measured locks agree on the corpus: squawk's findings for
each migration against what its rehearsal measured (db/impact_rules.py), on a database
whose tables hold rows. Each migration is rehearsed on its own, from the database its
file is linted against, so that no lock of an earlier one hides its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import impact_rules, lint, planning, preview, revisions, runner
from db.roundtrip import sample_data
from db.throwaway import Server
from tests.conftest import Filled, make_engine
from tests.corpus import CASES, Case
from tests.corpus_run import case_scripts, filled_at_001, use_chain

LINEAR = [c for c in CASES if c.roundtrip.step != "static checks"]
"""Every case but the merges and two heads, which no plan can run."""

ALLOWED: dict[tuple[str, str], str] = {
    # squawk flags every ALTER COLUMN … TYPE; varchar(5) → text is binary coercible, and
    # PostgreSQL changes only the catalog (measured: no rewrite, no scan). squawk reads
    # no catalog and cannot tell; the measurement is right.
    ("type-narrow-in-downgrade", "003"): "changing-column-type",
}
"""(case, revision) → the squawk rule whose prediction the measurement may contradict
there. An entry must still be needed: the test fails when that mismatch is gone."""


@pytest.mark.parametrize("case", LINEAR, ids=[c.name for c in LINEAR])
def test_lint_and_measured_locks_agree(
    case: Case, pg_server: Server, filled_template: Filled, tmp_path: Path, monkeypatch
) -> None:
    use_chain(case, tmp_path / "versions", monkeypatch)
    # The rehearsal measures upgrades: lint's findings on downgrades are not compared, nor
    # an upgrade lint could not render (it reads the database, or is not written yet).
    # 001 is the same in every case, and linted by test_the_chain_passes_lint.
    reports = lint.lint_chain(case_scripts())
    findings = {
        r.revision: {f.rule for f in r.findings if f.function == "upgrade()"} for r in reports
    }
    unrendered = {
        r.revision for r in reports if any(u.startswith("upgrade()") for u in r.unchecked)
    }
    problems: list[str] = []
    with filled_at_001(pg_server, filled_template) as (url, filler):
        engine = make_engine(url)
        with engine.connect() as connection:
            script = revisions.script_directory()
            with connection.begin():
                at_001 = set(sample_data.read_tables(connection))
            for migration in case_scripts():
                plan = planning.plan_upgrade(script, migration.down_revision, migration.revision)
                if migration.revision in unrendered:
                    break  # it cannot run either (not written), or lint saw only part of it
                rehearsed = preview.rehearse_and_roll_back(connection, plan, measure=True)
                assert rehearsed.rehearsal.stopped_before is None, rehearsed.rehearsal.reason
                [step] = rehearsed.impact
                found = impact_rules.mismatches(findings[migration.revision], step)
                allowed = ALLOWED.get((case.name, migration.revision))
                if allowed is not None:
                    kept = [m for m in found if f" {allowed} " not in m]
                    assert kept != found, f"{case.name} {migration.revision}: ALLOWED is stale"
                    found = kept
                problems += found
                runner.run(connection, plan)
                # Tables an earlier migration created hold rows too, as they would live
                # (where they can: a case may be about a table no row satisfies); 001's
                # hold the template's.
                with connection.begin():
                    created = set(sample_data.read_tables(connection)) - at_001
                try:
                    if created:
                        filler.fill(connection, only=created)
                except sample_data.SampleDataError:
                    connection.rollback()
        engine.dispose()
    assert not problems, f"{case.name}:\n" + "\n".join(problems)
