"""A server that refuses the connection for SSL or pg_hba.conf reasons gets a hint that
names the fix (sslmode=require, or the DBA's pg_hba.conf), not "is the server running?"."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from tests.helpers import as_env
from tests.production import ssl_binaries, tcp_server

BIN_DIR, WHY_NOT = ssl_binaries()
pytestmark = pytest.mark.skipif(
    BIN_DIR is None or shutil.which("openssl") is None,
    reason=WHY_NOT or "openssl is not installed (the test makes a certificate with it)",
)


@pytest.fixture(scope="module")
def ssl_only() -> Iterator[URL]:
    """SSL on; only SSL connections to the database postgres are let in."""
    assert BIN_DIR is not None
    with tcp_server(BIN_DIR, "hostssl postgres all 127.0.0.1/32 trust", ssl=True) as url:
        yield url


def _refused(invoke, url: URL, *query: str) -> str:
    env = as_env(url)
    env["DATABASE_URL"] += "?" + "&".join(query) if query else ""
    result = invoke("migrate.status", env=env)
    assert result.returncode == 3, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert "is the server running" not in result.stderr, result.explain()
    return result.stderr


def test_a_server_that_admits_this_host_only_over_ssl_hints_sslmode_require(
    invoke, ssl_only: URL
) -> None:
    stderr = _refused(invoke, ssl_only, "sslmode=disable")
    assert "no pg_hba.conf entry" in stderr
    assert "add ?sslmode=require" in stderr, stderr


def test_no_pg_hba_entry_for_this_database_asks_the_dba(invoke, ssl_only: URL) -> None:
    stderr = _refused(invoke, ssl_only.set(database="elsewhere"))
    assert "no pg_hba.conf entry" in stderr
    assert "ask the DBA to allow this host/user/database" in stderr, stderr
    assert "sslmode=require" not in stderr.partition("hint:")[2], "SSL was tried and did not help"


def test_sslmode_require_against_a_server_without_ssl_says_the_server_has_none(invoke) -> None:
    assert BIN_DIR is not None
    with tcp_server(BIN_DIR, "host all all 127.0.0.1/32 trust", ssl=False) as url:
        stderr = _refused(invoke, url, "sslmode=require")
    assert "does not support SSL" in stderr
    assert "does not offer SSL" in stderr, stderr
