"""`nox -s alembic_plugin_corpus -- NAME…` (tests_pytest_alembic/corpus.py) picks cases by
name: a name it does not know must not pass as a run that checked nothing."""

from __future__ import annotations

import pytest

from tests_pytest_alembic.corpus import main


def test_an_unknown_case_name_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["enum-label-add", "no-such-case"]) == 2
    out, err = capsys.readouterr()
    assert "no-such-case" in err and "tests/corpus.py" in err, err
    assert "enum-label-add" not in out, "a case ran before the name was refused"
