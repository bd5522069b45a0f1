"""The throwaway servers the tests, the roundtrip and the benchmarks run on."""

from __future__ import annotations

import pytest

from db.throwaway import NOT_DURABLE, Server


def test_a_server_we_start_never_waits_for_the_disk(pg_server: Server) -> None:
    if pg_server.kind not in ("embedded",) and not pg_server.kind.startswith("debian"):
        pytest.skip(f"the tests run on a {pg_server.kind} server, which we do not configure")
    with pg_server.admin() as conn:
        found = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in NOT_DURABLE}
    assert found == NOT_DURABLE, (
        "a throwaway server's data dies with it; fsync and synchronous commits only make "
        f"every COMMIT wait for the disk. Settings found: {found}"
    )
