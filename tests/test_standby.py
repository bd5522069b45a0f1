"""A hot standby as the target: commands that change the schema refuse it at once, saying
it is a read-only standby (exit 9), and the read-only commands keep working on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import add_migration, as_env, current_revision
from tests.production import Pair, primary_and_standby, standby_binaries

BIN_DIR, WHY_NOT = standby_binaries()
pytestmark = pytest.mark.skipif(BIN_DIR is None, reason=WHY_NOT)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    assert BIN_DIR is not None
    with primary_and_standby(BIN_DIR) as built:
        yield built


@pytest.fixture
def on_standby(invoke, pair: Pair, versions_copy: Path) -> dict[str, str]:
    """The primary at 001 with 002 pending, replayed on the standby; the standby's env."""
    primary = {**as_env(pair.primary), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    if current_revision(pair.primary) is None:
        result = invoke("migrate.up", env=primary)
        assert result.returncode == 0, result.explain()
    add_migration(
        versions_copy,
        "002",
        "001",
        "extra",
        'op.execute("CREATE TABLE extra (id int)")',
        'op.drop_table("extra")',
    )
    pair.wait_replayed()
    return {**as_env(pair.standby), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}


@pytest.mark.parametrize(
    "command", [("migrate.up",), ("migrate.down",), ("migrate.plan",), ("db.reset", "--force")]
)
def test_changing_a_standby_is_refused_as_a_read_only_standby(
    invoke, on_standby: dict[str, str], command: tuple[str, ...]
) -> None:
    result = invoke(*command, env=on_standby)
    assert result.returncode == 9, result.explain()
    assert "read-only standby" in result.stderr, result.explain()
    assert "point DATABASE_URL at the primary" in result.stderr, result.explain()
    assert "fix the migration" not in result.output.lower(), result.explain()
    assert "Traceback" not in result.output, result.explain()


@pytest.mark.parametrize("command", ["migrate.status", "migrate.history", "migrate.verify"])
def test_read_only_commands_work_on_a_standby(
    invoke, on_standby: dict[str, str], command: str
) -> None:
    result = invoke(command, env=on_standby)
    assert result.returncode == 0, result.explain()
