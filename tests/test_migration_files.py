"""Static checks over every migration file: they need no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import revisions
from db.roundtrip import static

FILES = static.migration_files(revisions.DEFAULT_VERSIONS)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_migration_file_is_well_formed(path: Path) -> None:
    problems = static.check_file(path)
    assert not problems, "\n".join(problems)


def test_chain_has_one_head_and_no_merges() -> None:
    problems = static.check_chain(revisions.script_directory())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            'revision = "003"\ndef upgrade(): ...\ndef downgrade(): op.x()\n',
            "revision id is '003', but the file name says '002'",
        ),
        (
            'from db.models import Task\nrevision = "002"\ndef upgrade(): ...\n'
            "def downgrade(): op.x()\n",
            "imports db.models",
        ),
        ('revision = "002"\ndef upgrade(): ...\n', "has no downgrade()"),
    ],
    ids=["wrong-id", "imports-models", "no-downgrade"],
)
def test_static_checks_catch(tmp_path: Path, source: str, problem: str) -> None:
    path = tmp_path / "002_example.py"
    path.write_text(source)
    problems = static.check_file(path)
    assert any(problem in p for p in problems), problems


def test_an_empty_downgrade_is_left_to_the_stairway(tmp_path: Path) -> None:
    """Static checks cannot tell a data-only migration (which may have an empty
    downgrade) from one that changes the schema: the stairway does."""
    path = tmp_path / "002_example.py"
    path.write_text('revision = "002"\ndef upgrade(): ...\ndef downgrade():\n    pass\n')
    assert static.check_file(path) == []
    assert static.downgrade_does_nothing(path)


def test_bad_file_name(tmp_path: Path) -> None:
    path = tmp_path / "2_Add-Things.py"
    path.write_text('revision = "002"\ndef upgrade(): ...\ndef downgrade(): op.x()\n')
    assert any("must be NNN_slug.py" in p for p in static.check_file(path))
