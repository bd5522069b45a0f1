"""A server crash under a migration step (its backend killed with SIGKILL: the postmaster
restarts every session) is a connection failure (exit 3) that says where the database
is, never "fix the migration"."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import scalar, start_slow_up, wait_until
from tests.production import standby_binaries, tcp_server

BIN_DIR, WHY_NOT = standby_binaries()
pytestmark = pytest.mark.skipif(BIN_DIR is None, reason=WHY_NOT)


@pytest.fixture
def own_server() -> Iterator[URL]:
    """A server of the test's own: a crash restarts all of it."""
    assert BIN_DIR is not None
    with tcp_server(BIN_DIR, "host all all 127.0.0.1/32 trust", ssl=False) as url:
        yield url


def test_a_crash_mid_step_is_a_connection_failure_not_the_migrations(
    spawn, own_server: URL, versions_copy: Path
) -> None:
    process = start_slow_up(spawn, own_server, versions_copy)
    pid = scalar(
        own_server,
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%%'",
    )
    os.kill(int(pid), signal.SIGKILL)
    result = finish(process, timeout=60)
    assert result.returncode == 3, result.explain()
    assert "connection to the server failed during migration 002 (slow)" in result.stderr
    # Crash recovery usually ends within the seconds the run waits for it; on a loaded
    # machine it may not, and then the run must say it cannot tell.
    said = "the database is at 001" in result.stderr or "is unknown" in result.stderr
    assert said, result.explain()
    assert "fix the migration" not in result.stderr.lower(), result.explain()
    assert "Traceback" not in result.output, result.explain()
    wait_until(lambda: _revision(own_server) == "001", "the server to recover at 001")


def _revision(url: URL) -> str | None:
    try:
        return str(scalar(url, "SELECT version_num FROM migrations.alembic_version"))
    except Exception:  # still recovering from the crash
        return None
