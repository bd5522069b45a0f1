"""A link that stalls mid-step (a proxy that stops forwarding without closing): the
server frees the step's table within a bound, the client's sockets carry keepalives and
tcp_user_timeout, and Ctrl-C or SIGTERM ends the blocked run at once. Each run goes
through a real TCP proxy (tests/stall_proxy.py) to the test server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from psycopg import pq
from sqlalchemy import event, text
from sqlalchemy.engine import URL

from db import connect, lock, settings
from db.throwaway import Server
from tests.conftest import finish
from tests.helpers import add_migration, as_env, current_revision, running, scalar, wait_until
from tests.stall_proxy import stalling_proxy, through

IDLE_IN_TRANSACTION = 2
"""Seconds, for the tests: the default (30 s) would only make them slow."""
MARGIN = 20
"""Seconds on top of a bound, for a loaded machine: the figure itself is in the README."""

TABLE_LOCKED = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND granted "
    "AND mode = 'AccessExclusiveLock' AND relation = to_regclass('organizations') "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND pid <> pg_backend_pid()"
)


def add_stalling_step(versions: Path, sleep: float) -> None:
    """002 locks a table, then works for `sleep` seconds: a link that stalls meanwhile
    leaves the server holding the lock for a client it cannot reach."""
    add_migration(
        versions,
        "002",
        "001",
        "stalls",
        'op.execute("ALTER TABLE organizations ADD COLUMN stall_probe int")\n'
        f'op.execute("SELECT pg_sleep({sleep})")\n'
        'op.execute("SELECT 1")',
        'op.execute("ALTER TABLE organizations DROP COLUMN stall_probe")',
    )


def _environment(url: URL, versions: Path) -> dict[str, str]:
    return {
        **as_env(url),
        "WORKTRACKER_VERSIONS_DIR": str(versions),
        "WORKTRACKER_IDLE_IN_TRANSACTION_TIMEOUT": f"{IDLE_IN_TRANSACTION}s",
    }


def stalled_run(spawn, server: Server, proxy, url: URL, versions: Path, sleep: float):
    """`migrate.up` through the proxy, stalled while 002 holds its table; the process."""
    add_stalling_step(versions, sleep)
    process = spawn("migrate.up", env=_environment(through(proxy, url), versions))
    wait_until(lambda: running(url, "SELECT pg_sleep") == 1, "002 to reach its sleep", 60)
    assert scalar(url, TABLE_LOCKED) == 1
    proxy.stall()
    return process


@pytest.mark.waits
def test_a_stalled_link_frees_the_table_within_the_bound(
    spawn, pg_server: Server, initial_db: URL, versions_copy: Path
) -> None:
    sleep = 2
    with stalling_proxy(pg_server) as proxy:
        stalled_run(spawn, pg_server, proxy, initial_db, versions_copy, sleep)
        stalled_at = time.monotonic()
        # The bound: what is left of the statement in progress, then the idle timeout.
        wait_until(
            lambda: scalar(initial_db, TABLE_LOCKED) == 0,
            "the server to free the table of the stalled run",
            sleep + IDLE_IN_TRANSACTION + MARGIN,
        )
        print(f"table locked for {time.monotonic() - stalled_at:.1f} s after the stall")
        assert current_revision(initial_db) == "001"
        assert not scalar(
            initial_db,
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'stall_probe'",
        ), "the step must be rolled back"


@pytest.mark.parametrize(
    ("sig", "code", "how"),
    [(signal.SIGTERM, 143, "stopped by SIGTERM"), (signal.SIGINT, 130, "stopped by Ctrl-C")],
)
@pytest.mark.waits
def test_a_signal_ends_a_run_blocked_on_a_stalled_link(
    spawn, pg_server: Server, initial_db: URL, versions_copy: Path, sig: int, code: int, how: str
) -> None:
    with stalling_proxy(pg_server) as proxy:
        process = stalled_run(spawn, pg_server, proxy, initial_db, versions_copy, 30)
        time.sleep(0.5)  # the client is blocked in its read of pg_sleep's result
        signalled = time.monotonic()
        process.send_signal(sig)
        try:
            result = finish(process, timeout=MARGIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run ignored {sig!r} for {MARGIN} s on a stalled link")
        took = time.monotonic() - signalled
        print(f"{how}: stopped {took:.1f} s after the signal")
        assert result.returncode == code, result.explain()
        assert f"interrupted: {how}" in result.stderr, result.explain()
        assert "the link to the database stalled" in result.stderr, result.explain()
        assert "Traceback" not in result.output, result.explain()
        # "Within a second" plus a loaded machine's start-up of the handler's unwinding.
        assert took < 5, f"took {took:.1f} s to stop\n{result.explain()}"


def test_tcp_connections_carry_keepalives_and_a_user_timeout(
    pg_server: Server, initial_db: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKTRACKER_LINK_TIMEOUT", "12")
    with stalling_proxy(pg_server) as proxy:
        url = through(proxy, initial_db)
        engine = connect.engine_for(url, settings.load({"DATABASE_URL": str(url)}))
        with connect.connect(engine) as connection:
            fd = connection.connection.dbapi_connection.pgconn.socket
            with socket.socket(fileno=os.dup(fd)) as sock:
                options = {
                    name: sock.getsockopt(level, option)
                    for name, level, option in [
                        ("keepalive", socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        ("idle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        ("interval", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        ("count", socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                        ("user_timeout_ms", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                    ]
                }
        engine.dispose()
    # 12 s in all: 6 s idle, then 3 probes 2 s apart; unacknowledged data, 12 s.
    assert options == {
        "keepalive": 1,
        "idle": 6,
        "interval": 2,
        "count": 3,
        "user_timeout_ms": 12_000,
    }


SERVER_SIDE = (
    "SELECT name, setting, source FROM pg_settings WHERE name IN "
    "('idle_in_transaction_session_timeout', 'tcp_keepalives_idle', "
    "'tcp_keepalives_interval', 'tcp_keepalives_count', 'tcp_user_timeout')"
)


def test_the_migration_session_bounds_an_idle_transaction_and_a_dead_link(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    add_migration(
        versions_copy,
        "002",
        "001",
        "records_its_settings",
        f'op.execute("CREATE TABLE seen AS {SERVER_SIDE}")',
        'op.execute("DROP TABLE seen")',
    )
    env = {**_environment(initial_db, versions_copy), "WORKTRACKER_LINK_TIMEOUT": "12"}
    result = invoke("migrate.up", env=env)
    assert result.returncode == 0, result.explain()
    with connect.connect(connect.engine_for(initial_db, settings.load({}))) as connection:
        seen = {r.name: (r.setting, r.source) for r in connection.execute(text("TABLE seen"))}
    assert seen["idle_in_transaction_session_timeout"] == ("2000", "session"), seen
    # On the test server's unix socket the tcp_* read 0; that they were set is what counts.
    assert {name: source for name, (_, source) in seen.items()} == dict.fromkeys(seen, "session")


def test_the_lock_session_is_never_idle_in_a_transaction_and_bounds_one(
    initial_db: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its advisory lock is session-level and it commits at once, so the timeout never
    ends it between steps; it only bounds a stall inside its own few statements."""
    monkeypatch.setenv("WORKTRACKER_IDLE_IN_TRANSACTION_TIMEOUT", "3s")
    engine = connect.engine_for(initial_db, settings.load({}))
    opened = []
    event.listen(engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    with lock.migration_lock(engine, 1, say=lambda _: None):
        (session,) = opened
        status = session.pgconn.transaction_status
        timeout = session.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0]
        session.rollback()
    engine.dispose()
    assert status == pq.TransactionStatus.IDLE
    assert timeout == "3s"


@pytest.mark.parametrize(
    ("name", "value"),
    [("WORKTRACKER_LINK_TIMEOUT", "0"), ("WORKTRACKER_IDLE_IN_TRANSACTION_TIMEOUT", "soon")],
)
def test_a_bad_stalled_link_bound_is_bad_input(
    invoke, initial_db: URL, name: str, value: str
) -> None:
    result = invoke("migrate.status", env={**as_env(initial_db), name: value})
    assert result.returncode == 2, result.explain()
    assert name in result.stderr, result.explain()
    assert "Traceback" not in result.output
