"""Connection poolers in front of the target: a pooler that hands a client a different
server connection per transaction (PgBouncer's pool_mode = transaction or statement)
cannot carry a run. The migration lock is session-level and would stay behind on a
server connection the pooler gives to others; session settings and psycopg's prepared
statements vanish between transactions. Such a target is refused before the lock is
taken; session pooling is a session like any other."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from db import connect, failures, settings
from db.errors import DatabaseRefused

_PID = text("SELECT pg_backend_pid()")


def _pid(connection: Connection) -> int:
    pid = connection.execute(_PID).scalar_one()
    connection.commit()  # ends the transaction: a transaction pooler may now reassign us
    return int(pid)


def per_transaction(connection: Connection) -> bool:
    """Whether `connection` reaches the server through a pooler that reassigns server
    connections between transactions.

    Directly or through session pooling, a client keeps one backend and two clients never
    share one. Per transaction, a second client's statement lands on the backend the
    first just released (PgBouncer reuses the most recent one) or, with
    server_round_robin, the first client's later transactions move between backends."""
    first = _pid(connection)
    with connect.connect(connection.engine) as other:
        if _pid(other) == first:
            return True
    return any(_pid(connection) != first for _ in range(2))


def refuse_per_transaction(connection: Connection, label: str) -> None:
    if per_transaction(connection):
        raise failures.naming(
            DatabaseRefused(
                f"{label} hands out a different server connection per transaction (a pooler "
                "such as PgBouncer in pool_mode = transaction or statement): the migration "
                "lock and session settings would not stay with this run. Nothing was changed.",
                "point DATABASE_URL at PostgreSQL itself, or at a pooler port in pool_mode = "
                "session",
            ),
            settings.url_source(),
        )
