"""What `migrate.lint` (squawk) says about the corpus: online indexes pass; a blocking
index build, renames, serial ids and a blocking NOT NULL are named by rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import commands, render
from db.errors import CheckFailed
from tests.corpus import CASES, Case
from tests.corpus_run import use_chain

LINTED = [c for c in CASES if c.lint is not None]


@pytest.mark.parametrize("case", LINTED, ids=[c.name for c in LINTED])
def test_lint_verdict(case: Case, tmp_path: Path, monkeypatch, capsys) -> None:
    assert case.lint is not None
    use_chain(case, tmp_path / "versions", monkeypatch)
    try:
        render.deliver(commands.migrate_lint())
    except CheckFailed as failed:
        output = capsys.readouterr().out + failed.render()
        assert not case.lint.ok, f"{case.name}: squawk found problems:\n{output}"
        for rule in case.lint.words:
            assert rule in output, f"{case.name}: {rule!r} missing from:\n{output}"
        return
    output = capsys.readouterr().out
    assert case.lint.ok, f"{case.name}: squawk should have found {case.lint.words}:\n{output}"
    for words in case.lint.words:
        assert words in output, f"{case.name}: {words!r} missing from:\n{output}"
