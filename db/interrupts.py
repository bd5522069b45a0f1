"""Ctrl-C and SIGTERM, also for a run blocked in a read on a link that stalled.

psycopg waits for the server in slices of a tenth of a second, so a signal handler runs
at once and raises where the run is. Unwinding then talks to the server again (a
ROLLBACK, the lock's unlock), and on a stalled link each such call would wait for ever:
no error comes from a proxy that stops forwarding without closing. So the first signal
also starts a watchdog. It sends a cancel request for each command in flight (on a live
link the server stops it at once); when one is not taken within GRACE_SECONDS, or when
one of our connections is busy with a single command for that long later on, the link
counts as dead and every connection opened before the signal has its socket shut down,
so that every read on them returns at once. The server rolls back what they had open,
as for any client that went away (README, Safety).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
import weakref
from typing import Any

from psycopg import pq

GRACE_SECONDS = 0.5
"""How long a command may still take after an interrupt before its link counts as dead."""
_POLL_SECONDS = 0.05

_connections: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""Every connection the tool opened, with the process that opened it."""
_received: int | None = None
_cut = threading.Event()
_probed = threading.Event()


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised where the run is so that it unwinds. Not an Exception, so
    nothing on the way takes it for a failure; not a KeyboardInterrupt while a command is
    in flight, which psycopg answers by cancelling it and waiting for the server again
    (ten seconds on a dead link)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def on_connect(dbapi_connection: Any, _record: object = None) -> None:
    """SQLAlchemy's `connect` event: follow every connection the tool opens."""
    _connections[dbapi_connection] = os.getpid()


def install() -> None:
    """Handle Ctrl-C and SIGTERM for the rest of the process."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


def received() -> int | None:
    """The first signal that interrupted the run, if any."""
    return _received


NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


def signal_of(error: BaseException) -> int | None:
    """The signal behind `error`: the first one this process received, else the one an
    Interrupted carries; Ctrl-C outside a statement is Python's own KeyboardInterrupt."""
    if _received is not None:
        return _received
    if isinstance(error, Interrupted):
        return error.signum
    return signal.SIGINT if isinstance(error, KeyboardInterrupt) else None


def link_cut() -> bool:
    """True when the interrupt found the link dead and shut our connections down: asking
    the server anything more over that path would only wait again. Waits for the verdict
    on the commands in flight at the signal (GRACE_SECONDS at most)."""
    if _received is not None:
        _probed.wait(GRACE_SECONDS + 1)
    return _cut.is_set()


def _busy(connection: Any) -> bool:
    active = pq.TransactionStatus.ACTIVE
    return not connection.closed and connection.pgconn.transaction_status == active


def _handler(signum: int, _frame: object) -> None:
    global _received
    # A fork (a fleet's database, a test's `invoke`) must never shut down its parent's.
    connections = [c for c, pid in list(_connections.items()) if pid == os.getpid()]
    busy = [c for c in connections if _busy(c)]
    if _received is None:
        _received = signum
        # Started here, before the run unwinds and closes the connections.
        cancels = [cancel for c in busy if (cancel := _start_cancel(c)) is not None]
        threading.Thread(target=_watch, args=(connections, cancels), daemon=True).start()
    if signum == signal.SIGINT and not busy:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _start_cancel(connection: Any) -> Any:
    """A cancel request for what `connection` runs, on a connection of its own, under way."""
    try:
        cancel = connection.pgconn.cancel_conn()
        cancel.start()
        return cancel
    except Exception:  # an older libpq, a connection closed meanwhile: no verdict
        return None


def _delivered(cancel: Any, deadline: float) -> bool:
    """Drive a cancel request until `deadline`: True when the server took it."""
    try:
        while (left := deadline - time.monotonic()) > 0:
            status = cancel.poll()
            if status == pq.PollingStatus.OK:
                return True
            if status == pq.PollingStatus.FAILED:
                return False
            reading = status == pq.PollingStatus.READING
            fd = [cancel.socket]
            select.select(fd if reading else [], [] if reading else fd, [], left)
        return False
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            cancel.finish()


def _watch(connections: list[Any], cancels: list[Any]) -> None:
    deadline = time.monotonic() + GRACE_SECONDS
    dead = not all([_delivered(cancel, deadline) for cancel in cancels])
    if dead:
        _cut_off(connections)
    _probed.set()
    busy_since: dict[int, float] = {}
    while connections and not dead:
        time.sleep(_POLL_SECONDS)
        now = time.monotonic()
        for connection in connections:
            if not _busy(connection):
                busy_since.pop(id(connection), None)
            elif now - busy_since.setdefault(id(connection), now) >= GRACE_SECONDS:
                _cut_off(connections)
                return


def _cut_off(connections: list[Any]) -> None:
    _cut.set()
    for connection in connections:
        with contextlib.suppress(Exception):
            if connection.closed:
                continue
            # shutdown() acts on the socket itself, not on our duplicate of its descriptor:
            # a read blocked on it in the main thread returns at once.
            with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
