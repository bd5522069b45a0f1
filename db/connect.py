"""Opening connections to the target database, with errors a person can act on."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from db import failures, interrupts, settings, urls
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
    (
        "SSL connection is required|SSL required|requires SSL",
        "the server requires SSL: add ?sslmode=require to DATABASE_URL",
    ),
    (
        "server does not support SSL, but SSL was required",
        "the server does not offer SSL, and DATABASE_URL's sslmode requires it: ask the DBA "
        "to turn SSL on (only on a network you trust: sslmode=prefer)",
    ),
    # libpq's sslmode=prefer tries SSL, then without: an entry missing for both is not SSL.
    (
        r"no pg_hba\.conf entry for host .*(SSL encryption|SSL on)|pg_hba\.conf rejects",
        "the server's pg_hba.conf admits no such connection: ask the DBA to allow this "
        "host/user/database (the message names all three)",
    ),
    (
        r"no pg_hba\.conf entry for host .*(no encryption|SSL off)",
        "the server's pg_hba.conf admits no such connection without SSL: if the server "
        "requires SSL, add ?sslmode=require to DATABASE_URL; if not, ask the DBA to allow "
        "this host/user/database",
    ),
    (
        _OPTIONS_REFUSED := "unsupported startup parameter: options",
        "a pooler (PgBouncer) refuses libpq's options, and these are not all -c name=value "
        "settings the tool could SET instead: keep only those in PGOPTIONS and ?options=",
    ),
    (
        "not allowed in statement pooling mode",
        "a pooler in pool_mode = statement cannot carry a migration's transactions: point "
        "DATABASE_URL at PostgreSQL itself, or at a pooler port in pool_mode = session",
    ),
)
_DEFAULT_HINT = "is the server running and reachable at that address? Check DATABASE_URL"


def target_url(config: Settings) -> URL:
    """The database every command works on: DATABASE_URL, or the embedded server."""
    if config.database_url is not None:
        return config.database_url
    from db import embedded  # the wheel and psutil: only when the embedded server is used

    return embedded.start(config.embedded_pgdata, config.embedded_database)


def _session_options(url: URL) -> str:
    """Our timeouts as libpq `options`, so they hold from the first statement of every
    session: a role or database with statement_timeout = 1ms must not break bookkeeping."""
    timeouts = settings.timeouts()
    ours = f"-c lock_timeout={timeouts.lock_ms} -c statement_timeout={timeouts.statement_ms}"
    given = url.query.get("options")
    given = given[0] if isinstance(given, tuple) else given
    # Passing options replaces PGOPTIONS for libpq: keep what the user set there.
    given = given or os.environ.get("PGOPTIONS")
    return f"{given} {ours}" if given else ours


def engine_for(url: URL, config: Settings, application_name: str = APPLICATION_NAME) -> Engine:
    # NullPool: a command opens a few connections and exits; pooling only hides leaks.
    engine = create_engine(
        url.difference_update_query(["options"]),
        poolclass=NullPool,
        connect_args={
            "options": _session_options(url),
            "connect_timeout": config.connect_timeout,
            "application_name": application_name,
            # A peer that vanished or a link that stalled (network, failover, a proxy) is
            # noticed within link_timeout rather than the kernel's two hours (keepalives)
            # or its fifteen minutes of retransmissions (tcp_user_timeout); unix sockets
            # ignore these.
            **settings.link().libpq_parameters(),
        },
    )
    event.listen(engine, "do_connect", _options_or_set())
    # A run blocked in a read on a dead link must still stop on Ctrl-C or SIGTERM.
    event.listen(engine, "connect", interrupts.on_connect)
    return engine


def _options_or_set():
    """A do_connect hook: connect with `options`; where a pooler refuses that startup
    parameter (PgBouncer's default), connect without it and SET the same settings as the
    session's first statement. Once refused, later connections go straight to SET."""
    refused = False

    def do_connect(dialect, connection_record, cargs, cparams):
        nonlocal refused
        if not refused:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if _OPTIONS_REFUSED not in str(exc):
                    raise
                if (values := option_settings(cparams.get("options", ""))) is None:
                    raise
                refused = True
        values = option_settings(cparams.get("options", "")) or {}
        raw = dialect.loaded_dbapi.connect(
            *cargs, **{k: v for k, v in cparams.items() if k != "options"}
        )
        if values:
            calls = ", ".join("set_config(%s, %s, false)" for _ in values)
            raw.execute(f"SELECT {calls}", [x for item in values.items() for x in item])
            raw.commit()
        return raw

    return do_connect


def option_settings(options: str) -> dict[str, str] | None:
    """libpq `options` (`-c name=value`, `--name=value`, backslash-escaped spaces) as
    settings; None when they hold anything else, which SET cannot stand in for."""
    tokens = [
        re.sub(r"\\(.)", r"\1", token)
        for token in re.split(r"(?<!\\)\s+", options.strip())
        if token
    ]
    values: dict[str, str] = {}
    pending = False
    for token in tokens:
        if pending:
            setting, pending = token, False
        elif token == "-c":
            pending = True
            continue
        elif token.startswith(("-c", "--")):
            setting = token[2:]
        else:
            return None
        name, equals, value = setting.partition("=")
        if not equals or not name:
            return None
        values[name.replace("-", "_")] = value
    return None if pending else values


def describe_failure(url: URL, error: BaseException) -> ConnectionFailed:
    """Turn a driver's connection error into one line and a hint, without the password."""
    detail = str(getattr(error, "orig", None) or error)
    # psycopg's "connection is bad: " says nothing the rest of the line does not.
    detail = " ".join(urls.redact_text(detail, url).split()).removeprefix("connection is bad: ")
    hint = next((h for pattern, h in _HINTS if re.search(pattern, detail)), _DEFAULT_HINT)
    hint = hint.replace("DATABASE_URL", settings.url_source())
    return ConnectionFailed(f"could not connect to {urls.redact(url)}: {detail}", hint)


@contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """A connection from `engine`; a failure to connect becomes ConnectionFailed."""
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        if "invalid connection option" in str(exc.orig):
            raise failures.describe(exc) from None
        raise describe_failure(engine.url, exc) from None
    with connection:
        yield connection


def server_major(connection: Connection) -> int:
    """The server's major version (14 for 14.x), which the dialect read on connecting."""
    version = connection.dialect.server_version_info
    if not version:  # only an engine that never connected lacks it
        raise RuntimeError("the server's version is read on connecting; connect first")
    return int(version[0])
