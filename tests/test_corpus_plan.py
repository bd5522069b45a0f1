"""What `migrate.plan` says about each kind of migration in the corpus, up from 001 and
down from head: in human terms (a table on one line, renames, enum labels, types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import commands, render
from db.throwaway import Server
from tests.corpus import CASES, Case
from tests.corpus_run import database_at_001, target, upgrade_and_fill, use_chain
from tests.helpers import current_revision

PLANNED = [c for c in CASES if c.plan or c.plan_down]


@pytest.mark.parametrize("case", PLANNED, ids=[c.name for c in PLANNED])
def test_plan_says(
    case: Case, pg_server: Server, initial_template: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    use_chain(case, tmp_path / "versions", monkeypatch)
    with database_at_001(pg_server, initial_template) as url:
        target(url, monkeypatch)
        if case.plan:
            render.deliver(commands.migrate_plan())
            output = capsys.readouterr().out
            for words in case.plan:
                assert words in output, f"{case.name}: {words!r} missing from:\n{output}"
            assert current_revision(url) == "001", "a plan changes nothing"
        if case.plan_down:
            upgrade_and_fill(url, rounds=1)
            render.deliver(commands.migrate_plan(down=True))
            output = capsys.readouterr().out
            for words in case.plan_down:
                assert words in output, f"{case.name}: {words!r} missing from:\n{output}"
            assert "relation " not in output and "type _" not in output, output
