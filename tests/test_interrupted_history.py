"""A step stopped by Ctrl-C or SIGTERM leaves a history row saying so (the server rolls
the step back; the history still shows the run was there and how it ended)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import add_migration, as_env, current_revision, running, scalar, wait_until


@pytest.mark.parametrize(
    ("sig", "how"), [(signal.SIGINT, "Ctrl-C (SIGINT)"), (signal.SIGTERM, "SIGTERM")]
)
def test_an_interrupted_step_is_recorded_in_the_history(
    spawn, initial_db: URL, versions_copy: Path, sig: int, how: str
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "slow",
        'op.execute("SELECT pg_sleep(30)")',
        'op.execute("SELECT 1")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    process = spawn("migrate.up", env=env)
    wait_until(lambda: running(initial_db, "SELECT pg_sleep(30)") == 1, "002 to reach its sleep")
    process.send_signal(sig)
    result = finish(process, timeout=30)
    assert result.returncode in (130, 143), result.explain()
    assert current_revision(initial_db) == "001"
    row = scalar(
        initial_db,
        "SELECT row(direction, success, error)::text FROM migrations.history "
        "WHERE revision = '002'",
    )
    assert row == f'(up,f,"interrupted by {how}; rolled back")', result.explain()
