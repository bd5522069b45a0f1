"""The roundtrip's verdict on each kind of migration in the corpus (tests/corpus.py): the
right failure, at the right step, with the right words, and passes that are passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.roundtrip import check
from db.roundtrip.models_check import unimported_model_modules
from db.roundtrip.results import FAIL, OK, SKIPPED
from db.throwaway import Server
from tests.conftest import Filled
from tests.corpus import BY_NAME, CASES, Case
from tests.corpus_run import (
    MODELS_AT_001,
    chain_results,
    check_verdict,
    filled_at_001,
    stairway_from_001,
    use_chain,
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_roundtrip_verdict(
    case: Case, pg_server: Server, filled_template: Filled, tmp_path: Path, monkeypatch
) -> None:
    use_chain(case, tmp_path / "versions", monkeypatch)
    if case.whole_chain:
        results = chain_results(check.run(pg_server).results)
    else:
        # 001's tables filled as the stairway's first round would fill them.
        with filled_at_001(pg_server, filled_template) as (url, filler):
            results = stairway_from_001(pg_server, url, filler)
    check_verdict(results, case.roundtrip, case.name)


def test_irreversible_skips_only_its_own_rollback(
    pg_server: Server, tmp_path: Path, monkeypatch
) -> None:
    use_chain(BY_NAME["irreversible-in-the-middle"], tmp_path / "versions", monkeypatch)
    report = check.run(pg_server)
    steps = {(r.revision, r.step): r for r in report.results}
    assert steps[("002", "down")].status == SKIPPED
    assert steps[("003", "down")].status == OK, "later migrations are still checked"
    assert steps[("chain", "head → 002")].status == OK, "the chain goes down to 002"
    if MODELS_AT_001:
        assert steps[("head", "models vs head")].status == OK, "models are still compared"
    assert not chain_results(report.failures), report.failures


def test_models_vs_head_sees_enum_labels(pg_server: Server, tmp_path: Path, monkeypatch) -> None:
    """A label added by a migration but not to TaskStatus: autogenerate alone misses it."""
    use_chain(BY_NAME["enum-label-add"], tmp_path / "versions", monkeypatch)
    report = check.run(pg_server)
    models = next(r for r in report.results if r.step == "models vs head")
    assert models.status == FAIL, report.results
    assert "on_hold" in models.detail, models.detail


def test_a_model_module_nothing_imports_is_named(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "orphan_models"
    package.mkdir()
    (package / "__init__.py").write_text("from orphan_models import tasks  # noqa: F401\n")
    (package / "tasks.py").write_text('"""Imported."""\n')
    (package / "reminders.py").write_text('"""Nothing imports this one."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert unimported_model_modules("orphan_models") == ["orphan_models/reminders.py"]
    assert unimported_model_modules() == [], "every module of db/models is imported"
