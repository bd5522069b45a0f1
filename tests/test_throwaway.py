"""The throwaway servers the tests, the roundtrip and the benchmarks run on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from db import throwaway
from db.throwaway import INITDB_CACHE, INITDB_OPTIONS, NOT_DURABLE, Server, server_of_kind


def test_a_server_we_start_never_waits_for_the_disk(pg_server: Server) -> None:
    if pg_server.kind not in ("embedded",) and not pg_server.kind.startswith("debian"):
        pytest.skip(f"the tests run on a {pg_server.kind} server, which we do not configure")
    with pg_server.admin() as conn:
        found = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in NOT_DURABLE}
    assert found == NOT_DURABLE, (
        "a throwaway server's data dies with it; fsync and synchronous commits only make "
        f"every COMMIT wait for the disk. Settings found: {found}"
    )


def _maintenance_sessions(server: Server) -> set[int]:
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ~ '^(CREATE|DROP) DATABASE'"
        ).fetchall()
    return {pid for (pid,) in rows}


def test_databases_come_and_go_through_one_session(pg_server: Server) -> None:
    """A connection for each CREATE and DROP DATABASE was a backend started and ended for
    each (a thousand per test run)."""
    seen: set[int] = set()
    for _ in range(3):
        url = pg_server.create_database()
        seen |= _maintenance_sessions(pg_server)
        pg_server.drop_database(str(url.database))
        seen |= _maintenance_sessions(pg_server)
    assert len(seen) == 1, f"CREATE and DROP DATABASE ran on {len(seen)} sessions: {seen}"


def test_a_lost_maintenance_session_is_replaced(pg_server: Server) -> None:
    pg_server.drop_database(str(pg_server.create_database().database))
    (pid,) = _maintenance_sessions(pg_server)
    with pg_server.admin() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    url = pg_server.create_database()
    pg_server.drop_database(str(url.database))
    assert _maintenance_sessions(pg_server) - {pid}, "no new session after the old one ended"


def _cluster(server: Server) -> dict[str, list]:
    """What initdb decides, as a server we started shows it."""
    queries = {
        "settings": "SELECT name, setting FROM pg_settings WHERE source = 'configuration file' "
        "AND name NOT IN ('port', 'unix_socket_directories', 'listen_addresses') ORDER BY 1",
        "auth": "SELECT type, database, user_name, auth_method FROM pg_hba_file_rules "
        "ORDER BY line_number",
        "databases": "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, "
        "datlocprovider FROM pg_database ORDER BY 1",
        "roles": "SELECT rolname, rolsuper FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1",
    }
    with server.admin() as conn:
        return {name: conn.execute(query).fetchall() for name, query in queries.items()}


def test_a_server_from_the_initdb_cache_is_the_cluster_initdb_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(INITDB_CACHE, raising=False)
    with server_of_kind("embedded") as server:
        made = _cluster(server)
    # Not in tmp_path: pytest's are closed to the user servers run as, when we are root.
    cache = Path(tempfile.mkdtemp(prefix="worktracker-initdb-"))
    cache.chmod(0o711)  # servers may run as another user: through, not more
    try:
        monkeypatch.setenv(INITDB_CACHE, str(cache))
        with server_of_kind("embedded") as server:
            copied = _cluster(server)
        kept = [p for p in (cache / "initdb").iterdir() if p.is_dir()]
        assert len(kept) == 1, "initdb's output not kept"
        assert cache.stat().st_mode & 0o777 == 0o711, "the mode of the folder given was changed"
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert copied == made


def test_the_initdb_cache_knows_postgresql_by_its_binaries_not_their_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each nox session installs the same wheel in a virtualenv of its own: one initdb
    for them all. Other binaries get a cluster of their own."""
    ran: list[str] = []

    def fake_initdb(user: str | None, argv: list[str]) -> None:  # what initdb leaves
        ran.append(argv[0])
        (Path(argv[2]) / "PG_VERSION").write_text("18\n")

    monkeypatch.setattr(throwaway, "_run_as", fake_initdb)
    monkeypatch.setenv(INITDB_CACHE, str(tmp_path / "cache"))
    builds = {}
    for name, postgres in (("one", b"build 1"), ("same", b"build 1"), ("other", b"build 2")):
        builds[name] = tmp_path / name / "bin"
        builds[name].mkdir(parents=True)
        (builds[name] / "initdb").write_bytes(b"initdb")
        (builds[name] / "postgres").write_bytes(postgres)
    for number, name in enumerate(("one", "same", "other", "other")):
        throwaway.initdb(builds[name], tmp_path / f"data{number}", INITDB_OPTIONS, None)
        assert (tmp_path / f"data{number}" / "PG_VERSION").exists()
    assert ran == [str(builds["one"] / "initdb"), str(builds["other"] / "initdb")]


def test_servers_given_the_default_template_keep_no_session_on_it(pg_server: Server) -> None:
    """TEST_DATABASE_URL may name template1: a session kept there by one process would
    stop every other process's CREATE DATABASE, which copies template1."""
    on_template = pg_server.admin_url.set(database="template1")
    one, other = (Server("TEST_DATABASE_URL", on_template, "test") for _ in range(2))
    try:
        one.create_database()
        other.create_database()  # "source database is being accessed by other users"
    finally:
        for server in (one, other):
            server.drop_created()
            server.close()
