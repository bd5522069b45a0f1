"""A new migration file that does not load (a syntax error, a missing import, a parent
that does not exist) is named with its error, exit 2, in every command; nothing is run
and nothing is recorded, not even with --allow-changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import as_env, current_revision, scalar

BROKEN = {
    "syntax-error": ('revision = "002"\ndown_revision = "001\n', "SyntaxError"),
    "missing-import": (
        'import no_such_module\nrevision = "002"\ndown_revision = "001"\n',
        "ModuleNotFoundError: No module named 'no_such_module'",
    ),
    "unknown-parent": (
        'revision = "002"\ndown_revision = "099"\n'
        "def upgrade():\n    pass\ndef downgrade():\n    pass\n",
        "revises '099', which no migration file is",
    ),
}


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize(
    "args",
    [
        ("migrate.up",),
        ("migrate.up", "--allow-changed"),
        ("migrate.status",),
        ("migrate.verify",),
        ("migrate.down",),
    ],
)
def test_a_broken_file_is_named_and_nothing_happens(
    invoke, empty_db: URL, versions_copy: Path, kind: str, args: tuple[str, ...]
) -> None:
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    assert invoke("migrate.up", env=env).returncode == 0
    rows = scalar(empty_db, "SELECT count(*) FROM migrations.history")
    source, words = BROKEN[kind]
    (versions_copy / "002_broken.py").write_text(f'"""broken"""\n{source}')
    result = invoke(*args, env=env)
    assert result.returncode == 2, result.explain()
    assert "002_broken.py" in result.stderr and words in result.stderr, result.explain()
    assert "file deleted" not in result.output and "Traceback" not in result.output
    assert scalar(empty_db, "SELECT count(*) FROM migrations.history") == rows
    assert current_revision(empty_db) == "001"
