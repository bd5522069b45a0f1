"""The rollback guard's verdict on each kind of migration in the corpus: `migrate.down` at
head, with every table holding sample rows, refuses exactly when the rollback destroys
rows that existed before it (naming table and counts), and lets renames, online indexes
and harmless rollbacks through without --allow-data-loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import commands, render
from db.errors import MigrationFailed, Refused
from db.throwaway import Server
from tests.conftest import Filled
from tests.corpus import CASES, Case
from tests.corpus_run import filled_at_001, target, upgrade_and_fill, use_chain
from tests.helpers import current_revision

GUARDED = [c for c in CASES if c.guard is not None]


@pytest.mark.parametrize("case", GUARDED, ids=[c.name for c in GUARDED])
def test_guard_verdict(
    case: Case, pg_server: Server, filled_template: Filled, tmp_path: Path, monkeypatch, capsys
) -> None:
    assert case.guard is not None
    use_chain(case, tmp_path / "versions", monkeypatch)
    head = f"{len(case.migrations) + 1:03d}"
    with filled_at_001(pg_server, filled_template) as (url, filler):
        upgrade_and_fill(url, filler=filler)
        target(url, monkeypatch)
        try:
            render.deliver(commands.migrate_down())
        except (Refused, MigrationFailed) as stopped:
            message = stopped.render()
            assert not case.guard.ok, f"{case.name}: stopped, but should go ahead:\n{message}"
            expected = {"refused": 5, "fails": 4}[case.guard.step]
            assert stopped.exit_code == expected, f"{case.name}: exit {stopped.exit_code}"
            for word in case.guard.words:
                assert word in message, f"{case.name}: {word!r} missing from:\n{message}"
            assert current_revision(url) == head, "a refusal must change nothing"
            return
        output = capsys.readouterr().out
        assert case.guard.ok, f"{case.name}: went ahead, but should be refused:\n{output}"
        assert current_revision(url) == f"{len(case.migrations):03d}", output


def test_an_irreversible_migration_is_not_rolled_back(
    pg_server: Server, filled_template: Filled, tmp_path: Path, monkeypatch
) -> None:
    from tests.corpus import BY_NAME

    use_chain(BY_NAME["irreversible-in-the-middle"], tmp_path / "versions", monkeypatch)
    with filled_at_001(pg_server, filled_template) as (url, filler):
        upgrade_and_fill(url, rounds=1, filler=filler)
        target(url, monkeypatch)
        render.deliver(commands.migrate_down())  # 003 is reversible
        assert current_revision(url) == "002"
        with pytest.raises(Refused, match="declared irreversible \\(duplicate labels"):
            render.deliver(commands.migrate_down())
        assert current_revision(url) == "002"
