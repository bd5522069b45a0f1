"""A history that is not a line (a merge, two heads) is refused by every command with one
message naming the merge or the heads, before anything runs; never an IndexError."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.corpus import BY_NAME, write_chain
from tests.helpers import as_env, current_revision


@pytest.mark.parametrize(
    ("case", "words"),
    [("merge", "004 merges 002, 003"), ("two-heads", "2 heads: 002, 003")],
)
@pytest.mark.parametrize("command", ["migrate.up", "migrate.status", "migrate.plan"])
def test_a_chain_that_is_not_a_line_is_refused(
    invoke, initial_db: URL, tmp_path: Path, case: str, words: str, command: str
) -> None:
    folder = tmp_path / "versions"
    write_chain(folder, BY_NAME[case])
    result = invoke(command, env={**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(folder)})
    assert result.returncode == 2, result.explain()
    assert words in result.stderr, result.explain()
    assert "Traceback" not in result.output and "IndexError" not in result.output
    assert current_revision(initial_db) == "001"
