"""A link that stalls (a proxy that stops forwarding without closing): the client's TCP
sockets carry keepalives and tcp_user_timeout, from settings. Connections go through a
real TCP proxy (tests/stall_proxy.py) to the test server."""

from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy.engine import URL

from db import connect, settings
from db.throwaway import Server
from tests.helpers import as_env
from tests.stall_proxy import stalling_proxy, through


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
