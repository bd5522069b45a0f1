"""Applied migrations are immutable: an edited file stops up, down and verify; a database
ahead of the checkout (revisions it lacks) stops them too, and is never accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.helpers import add_migration, as_env, current_revision, scalar


@pytest.fixture
def applied_copy(invoke, empty_db: URL, versions_copy: Path) -> dict[str, str]:
    """A copy of the chain, applied to a fresh database; the environment that targets both."""
    env = {**as_env(empty_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 0, result.explain()
    return env


@pytest.mark.parametrize("command", ["migrate.up", "migrate.down", "migrate.verify"])
def test_edited_applied_migration_is_refused(
    invoke, applied_copy: dict[str, str], versions_copy: Path, empty_db: URL, command: str
) -> None:
    with (versions_copy / "001_initial_schema.py").open("a") as f:
        f.write("# an innocent-looking edit\n")
    result = invoke(command, env=applied_copy)
    assert result.returncode == 7, result.explain()
    assert "001_initial_schema.py: edited" in result.stderr, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert current_revision(empty_db) == "001", "a refused run must change nothing"


def test_allow_changed_goes_ahead_and_records_a_note(
    invoke, applied_copy: dict[str, str], versions_copy: Path
) -> None:
    with (versions_copy / "001_initial_schema.py").open("a") as f:
        f.write("# a comment, accepted on purpose\n")
    result = invoke("migrate.up", "--allow-changed", env=applied_copy)
    assert result.returncode == 0, result.explain()
    assert "Accepted a changed migration" in result.stdout, result.explain()

    rows = json.loads(invoke("migrate.history", "--json", env=applied_copy).stdout)
    accepted = [r for r in rows if r["direction"] == "accept-changed"]
    assert len(accepted) == 1 and "--allow-changed" in accepted[0]["note"], rows
    verify = invoke("migrate.verify", env=applied_copy)
    assert verify.returncode == 0, "once accepted, the new checksum is the reference"


@pytest.fixture
def database_ahead(invoke, applied_copy: dict[str, str], versions_copy: Path) -> dict[str, str]:
    """A database at 002, and a checkout that stops at 001 (an older one, not yet pulled)."""
    extra = add_migration(
        versions_copy,
        "002",
        "001",
        "extra",
        'op.execute("CREATE TABLE extra (id int)")',
        'op.drop_table("extra")',
    )
    assert invoke("migrate.up", env=applied_copy).returncode == 0
    extra.unlink()
    return applied_copy


@pytest.mark.parametrize(
    "command",
    [
        ("migrate.verify",),
        ("migrate.up",),
        ("migrate.down",),
        ("migrate.plan",),
        ("migrate.up", "--allow-changed"),
        ("migrate.down", "--allow-changed"),
    ],
    ids=" ".join,
)
def test_database_ahead_of_the_checkout_is_named_and_never_accepted(
    invoke, database_ahead: dict[str, str], empty_db: URL, command: tuple[str, ...]
) -> None:
    rows_before = scalar(empty_db, "SELECT count(*) FROM migrations.history")
    result = invoke(*command, env=database_ahead)
    assert result.returncode == 2, result.explain()
    assert "the database is ahead of this checkout" in result.stderr, result.explain()
    assert "002 (extra)" in result.stderr, result.explain()
    assert "git pull" in result.stderr, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert current_revision(empty_db) == "002"
    # --allow-changed must not record an accept-changed row the newer checkout would trip on.
    assert scalar(empty_db, "SELECT count(*) FROM migrations.history") == rows_before


def test_untouched_chain_verifies(invoke, applied_copy: dict[str, str]) -> None:
    result = invoke("migrate.verify", env=applied_copy)
    assert result.returncode == 0, result.explain()
    assert "OK: the 1 applied migration(s) match" in result.stdout, result.explain()


def test_status_marks_an_edited_applied_migration_and_still_exits_0(
    invoke, applied_copy: dict[str, str], versions_copy: Path
) -> None:
    with (versions_copy / "001_initial_schema.py").open("a") as f:
        f.write("# an innocent-looking edit\n")
    shown = invoke("migrate.status", env=applied_copy)
    assert shown.returncode == 0, shown.explain()
    row = next(line for line in shown.stdout.splitlines() if "001_initial_schema.py" in line)
    assert "applied, edited" in row, shown.stdout
    assert "Changed since applied: 001_initial_schema.py: edited" in shown.stdout, shown.stdout
    assert "migrate.verify" in shown.stdout, shown.stdout

    as_json = json.loads(invoke("migrate.status", "--json", env=applied_copy).stdout)
    assert [m["changed"] for m in as_json["migrations"]] == [True], as_json
    assert as_json["changed_since_applied"] == ["001_initial_schema.py: edited"], as_json


def test_status_of_an_untouched_chain_marks_nothing(invoke, applied_copy: dict[str, str]) -> None:
    shown = invoke("migrate.status", env=applied_copy)
    assert shown.returncode == 0, shown.explain()
    assert "edited" not in shown.stdout and "Changed since applied" not in shown.stdout
