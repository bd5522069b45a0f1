"""A failing migration's message names it even without a docstring, and says what the
error was without repeating itself."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from tests.helpers import as_env, current_revision


def test_a_bare_failure_in_a_migration_without_a_docstring_reads_well(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    (versions_copy / "002_check_the_world.py").write_text(
        'from alembic import op\n\nrevision = "002"\ndown_revision = "001"\n\n\n'
        "def upgrade():\n    assert False\n\n\ndef downgrade():\n    pass\n"
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 4, result.explain()
    assert "migration 002 (check the world) failed" in result.stderr, result.explain()
    assert "AssertionError: AssertionError" not in result.stderr
    assert "at 002_check_the_world.py:8: AssertionError" in result.stderr, result.explain()
    assert "()" not in result.stderr.splitlines()[0]
    assert current_revision(initial_db) == "001"


def test_an_unwritten_downgrade_hints_at_irreversible(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    (versions_copy / "002_one_way.py").write_text(
        '"""one way"""\nfrom alembic import op\n\nrevision = "002"\ndown_revision = "001"\n\n\n'
        'def upgrade():\n    op.execute("SELECT 1")\n\n\n'
        "def downgrade():\n    raise NotImplementedError\n"
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    assert invoke("migrate.up", env=env).returncode == 0
    result = invoke("migrate.down", env=env)
    assert result.returncode == 4, result.explain()
    assert 'irreversible = "why"' in result.stderr, result.explain()
    assert "Nothing was changed" in result.stderr
    assert current_revision(initial_db) == "002"
