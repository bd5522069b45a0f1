"""Soak (not in the default run: `nox -s soak`): 32 concurrent `migrate.up` on an empty
database, then rounds of `migrate.up`, `migrate.down`, `migrate.plan` and `db.reset`
killed with SIGKILL at random moments. After every round: the revision matches the
schema, the history replays to the revision, and no lock or backend of ours is left.
Then rounds on a stalled network: `migrate.up`, `migrate.down` and `migrate.plan` through
a TCP proxy that stops forwarding at a random moment, then SIGTERM.

SOAK_ROUNDS (default 50), SOAK_STALL_ROUNDS (default 20) and SOAK_SEED (default 1) set
the rounds and the randomness.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db import catalog, lock, planning, revisions, runner
from db.throwaway import Server
from tests.conftest import finish, make_engine
from tests.helpers import add_migration, as_env, connect, current_revision, scalar, wait_until
from tests.stall_proxy import stalling_proxy, through

pytestmark = pytest.mark.soak

SLOW_002 = """
op.execute("CREATE TABLE soak_a (id int PRIMARY KEY, note text)")
op.execute("SELECT pg_sleep(0.4)")
op.execute("CREATE INDEX ix_soak_a_note ON soak_a (note)")
"""
SLOW_003 = """
op.execute("ALTER TABLE soak_a ADD COLUMN extra int")
op.execute("SELECT pg_sleep(0.4)")
"""
OURS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'worktracker-migrate%%' "
    "AND datname = current_database()"
)


def _chain(versions: Path) -> None:
    add_migration(versions, "002", "001", "soak_a", SLOW_002, 'op.execute("DROP TABLE soak_a")')
    add_migration(
        versions,
        "003",
        "002",
        "soak_extra",
        SLOW_003,
        'op.execute("ALTER TABLE soak_a DROP COLUMN extra")',
    )


def _lines(url: URL) -> list[str]:
    engine = make_engine(url)
    with engine.connect() as connection:
        lines = catalog.read(connection).lines()
    engine.dispose()
    return lines


def _references(server: Server) -> dict[str | None, list[str]]:
    """The catalog at each revision, built step by step on a database of its own."""
    url = server.create_database()
    found = {None: _lines(url)}
    engine = make_engine(url)
    with engine.connect() as connection:
        for script in revisions.chain(revisions.script_directory()):
            runner.run(connection, [planning.Step(script, "up")])
            found[script.revision] = _lines(url)
    engine.dispose()
    server.drop_database(url.database)
    return found


def _replayed(url: URL) -> str | None:
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass('migrations.history')").fetchone()[0] is None:
            return None
        rows = conn.execute(
            "SELECT direction, to_revision FROM migrations.history WHERE success ORDER BY id"
        ).fetchall()
    state = None
    for direction, to_revision in rows:
        if direction in ("up", "down"):
            state = to_revision
        elif direction == "reset":
            state = None
    return state


def _settled(url: URL) -> None:
    deadline = time.monotonic() + 10
    while True:
        with connect(url, autocommit=True) as conn:
            backends = conn.execute(OURS).fetchone()[0]
            free = conn.execute("SELECT pg_try_advisory_lock(%s)", [lock.LOCK_KEY]).fetchone()[0]
            if free:
                conn.execute("SELECT pg_advisory_unlock(%s)", [lock.LOCK_KEY])
        if backends == 0 and free:
            return
        assert time.monotonic() < deadline, f"left behind: {backends} backend(s), lock free={free}"
        time.sleep(0.1)


def _check(url: URL, references: dict, round_: int, what: str) -> None:
    _settled(url)
    revision = current_revision(url)
    assert _lines(url) == references[revision], f"round {round_} ({what}): schema is not {revision}"
    assert _replayed(url) == revision, f"round {round_} ({what}): history does not replay"


def test_soak(spawn, invoke, pg_server: Server, versions_copy: Path, monkeypatch) -> None:
    rounds = int(os.environ.get("SOAK_ROUNDS", "50"))
    chance = random.Random(int(os.environ.get("SOAK_SEED", "1")))
    _chain(versions_copy)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    references = _references(pg_server)
    url = pg_server.create_database()
    env = {**as_env(url), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}

    started = time.monotonic()
    crowd = [spawn("migrate.up", env=env) for _ in range(32)]
    results = [finish(p, timeout=600) for p in crowd]
    assert [r.returncode for r in results] == [0] * 32, [
        r.explain() for r in results if r.returncode
    ]
    _check(url, references, 0, "32 concurrent migrate.up")
    print(f"\n32 concurrent migrate.up: {time.monotonic() - started:.1f} s")

    killed = {"migrate.up": 0, "migrate.down": 0, "migrate.plan": 0, "db.reset": 0}
    started = time.monotonic()
    for round_ in range(1, rounds + 1):
        command = chance.choice(list(killed))
        args = [command] + (["--to", "base"] if command == "migrate.down" else [])
        if command == "migrate.up" and current_revision(url) == "003":
            invoke("migrate.down", "--to", "001", env=env)
        process = spawn(*args, env=env)
        time.sleep(chance.uniform(0.0, 2.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed[command] += 1
        process.wait(timeout=60)
        _check(url, references, round_, f"{command} killed")
        restore = invoke("migrate.up", env=env)
        assert restore.returncode == 0, f"round {round_}: {restore.explain()}"
        _check(url, references, round_, "migrate.up after the kill")
    print(f"{rounds} rounds in {time.monotonic() - started:.1f} s; killed while running: {killed}")
    pg_server.drop_database(url.database)


OUR_TABLE_LOCKS = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
    "WHERE a.application_name LIKE 'worktracker-migrate%%' AND a.datname = current_database() "
    "AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.granted"
)
IDLE_IN_TRANSACTION = 2
"""Seconds; the statements of the soak chain last 0.4 s at most."""


def test_soak_stalled_network(
    spawn, invoke, pg_server: Server, versions_copy: Path, monkeypatch
) -> None:
    rounds = int(os.environ.get("SOAK_STALL_ROUNDS", "20"))
    chance = random.Random(int(os.environ.get("SOAK_SEED", "1")))
    _chain(versions_copy)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    references = _references(pg_server)
    url = pg_server.create_database()
    direct = {**as_env(url), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    held, stopped, codes = [], [], {}
    for round_ in range(1, rounds + 1):
        command = chance.choice(["migrate.up", "migrate.down", "migrate.plan"])
        args = [command] + (["--to", "base"] if command == "migrate.down" else [])
        if command != "migrate.down" and current_revision(url) == "003":
            invoke("migrate.down", "--to", "001", env=direct)
        with stalling_proxy(pg_server) as proxy:
            env = {
                **direct,
                **as_env(through(proxy, url)),
                "WORKTRACKER_IDLE_IN_TRANSACTION_TIMEOUT": f"{IDLE_IN_TRANSACTION}s",
            }
            process = spawn(*args, env=env)
            # Stall at a random moment of the run itself, not of the interpreter's start.
            wait_until(lambda p=process: p.poll() is not None or scalar(url, OURS), "a session", 60)
            time.sleep(chance.uniform(0.0, 1.5))
            proxy.stall()
            stalled = time.monotonic()
            wait_until(
                lambda: scalar(url, OUR_TABLE_LOCKS) == 0,
                f"round {round_}: the server to free the tables of a stalled {command}",
                0.4 + IDLE_IN_TRANSACTION + 20,
            )
            held.append(time.monotonic() - stalled)
            time.sleep(chance.uniform(0.0, 1.0))
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            result = finish(process, timeout=30)
            stopped.append(time.monotonic() - signalled)
            codes[result.returncode] = codes.get(result.returncode, 0) + 1
            # -15: still starting up, before any handler (and any connection) existed.
            assert result.returncode in (0, 143, -signal.SIGTERM), (
                f"round {round_}: {result.explain()}"
            )
            assert "Traceback" not in result.output, f"round {round_}: {result.explain()}"
            assert stopped[-1] < 5, f"round {round_}: SIGTERM took {stopped[-1]:.1f} s"
        # The proxy gave up and closed both ends: nothing of the run may be left.
        _check(url, references, round_, f"{command} stalled")
        restore = invoke("migrate.up", env=direct)
        assert restore.returncode == 0, f"round {round_}: {restore.explain()}"
        _check(url, references, round_, "migrate.up after the stall")
    print(
        f"\n{rounds} stalled rounds: tables locked at most {max(held):.1f} s after the stall "
        f"(idle_in_transaction_session_timeout {IDLE_IN_TRANSACTION} s), SIGTERM took at "
        f"most {max(stopped):.1f} s; exit codes {codes}"
    )
    pg_server.drop_database(url.database)
