"""Opening connections to the target database, with errors a person can act on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from db import embedded, urls
from db.errors import ConnectionFailed
from db.settings import APPLICATION_NAME, Settings

_HINTS = (
    ("password authentication failed", "check the user name and password in DATABASE_URL"),
    ("no password supplied", "the server wants a password: add it to DATABASE_URL"),
    (r"role \"[^\"]*\" does not exist", "check the user name in DATABASE_URL"),
    (
        r"database \"[^\"]*\" does not exist",
        "create the database first (createdb, or CREATE DATABASE), or fix its name in DATABASE_URL",
    ),
    (
        "could not translate host name",
        "check the host name in DATABASE_URL",
    ),
)
_DEFAULT_HINT = "is the server running and reachable at that address? Check DATABASE_URL"


def target_url(settings: Settings) -> URL:
    """The database every command works on: DATABASE_URL, or the embedded server."""
    if settings.database_url is not None:
        return settings.database_url
    return embedded.start(settings.embedded_pgdata, settings.embedded_database)


def engine_for(url: URL, settings: Settings, application_name: str = APPLICATION_NAME) -> Engine:
    # NullPool: a command opens a few connections and exits; pooling only hides leaks.
    return create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "connect_timeout": settings.connect_timeout,
            "application_name": application_name,
            # A peer that vanished (network, failover) is noticed within about a minute
            # rather than the kernel's two hours; unix sockets ignore these.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


def describe_failure(url: URL, error: BaseException) -> ConnectionFailed:
    """Turn a driver's connection error into one line and a hint, without the password."""
    detail = str(getattr(error, "orig", None) or error)
    detail = " ".join(urls.redact_text(detail, url).split())
    hint = next((h for pattern, h in _HINTS if re.search(pattern, detail)), _DEFAULT_HINT)
    return ConnectionFailed(f"could not connect to {urls.redact(url)}: {detail}", hint)


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection from `engine`; a failure to connect becomes ConnectionFailed."""
    try:
        connection = engine.connect()
    except OperationalError as exc:
        raise describe_failure(engine.url, exc) from None
    with connection:
        yield connection
