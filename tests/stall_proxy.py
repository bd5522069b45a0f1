"""A TCP proxy on 127.0.0.1 in front of a test server that can be told to stall: stop
forwarding in both directions without closing anything, as a middlebox (a NAT, a load
balancer, a VPN) that loses its state does. The kernel still acknowledges what reaches
the proxy, so neither end sees an error: only timeouts can tell."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import URL

from db.throwaway import Server


class StallingProxy:
    def __init__(self, upstream: tuple[int, object]) -> None:
        self._upstream = upstream  # (address family, address)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        """Stop forwarding, on every connection, old and new; close nothing."""
        self._flowing.clear()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            # shutdown() first: close() alone leaves a connection open while a thread is
            # blocked reading it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                # Held here while stalled: nothing is read further, nothing is forwarded,
                # not even the end of the stream.
                while not self._flowing.wait(0.1):
                    pass
                if self._closed:
                    return
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
        except OSError:
            return


def upstream_of(server: Server) -> tuple[int, object]:
    """Where the test server listens: its unix socket, or its TCP address."""
    url = server.admin_url
    host = url.query.get("host") or url.host or "localhost"
    host = host[0] if isinstance(host, tuple) else host
    with server.admin() as conn:
        port = int(conn.execute("SHOW port").fetchone()[0])
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, url.port or port)


@contextmanager
def stalling_proxy(server: Server) -> Iterator[StallingProxy]:
    proxy = StallingProxy(upstream_of(server))
    try:
        yield proxy
    finally:
        proxy.close()


def through(proxy: StallingProxy, url: URL) -> URL:
    """`url`, reached over TCP through the proxy."""
    return url.difference_update_query(["host", "port"]).set(host="127.0.0.1", port=proxy.port)
