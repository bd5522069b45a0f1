"""Database errors raised outside a migration step (bookkeeping, the lock, reading the
catalog, a reset), turned into one line and a hint with a documented exit code.

A failing migration step has its own report (db/step_failures.py); everything else the
database refuses ends up here rather than in a traceback.
"""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError

from db import settings
from db.errors import ConfigError, ConnectionFailed, DatabaseRefused, UserError

DRIVER_ERRORS = (DBAPIError, psycopg.Error)
"""What the database driver raises, through SQLAlchemy or directly."""


def user_error(error: UserError | DBAPIError | psycopg.Error) -> UserError:
    """What a command line says for an error: a UserError as it is, a driver's described."""
    return error if isinstance(error, UserError) else describe(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return " ".join(text[0].split()) if text else type(error).__name__


def naming(error: UserError, source: str) -> UserError:
    """`error` naming `source` (STAGING_DATABASE_URL under --env) where it says
    DATABASE_URL: the variable the URL really came from."""
    if source != "DATABASE_URL":
        error.message = error.message.replace("DATABASE_URL", source)
        if error.hint:
            error.hint = error.hint.replace("DATABASE_URL", source)
    return error


def describe(error: BaseException) -> UserError:
    """The UserError for a driver error (SQLAlchemy's DBAPIError or psycopg's own)."""
    return naming(_describe(error), settings.url_source())


def _describe(error: BaseException) -> UserError:
    orig = getattr(error, "orig", None) or error
    state = getattr(orig, "sqlstate", None) or ""
    text = _first_line(orig)
    if "invalid connection option" in text:
        return ConfigError(
            f"DATABASE_URL has an option libpq does not know: {text}.",
            "remove it from the URL's ?query (options libpq knows: host, port, sslmode, "
            "application_name, options, connect_timeout, …)",
        )
    if state.startswith("08") or state in ("57P01", "57P02", "57P03") or not state:
        return ConnectionFailed(
            f"the connection to the database was lost or refused: {text}.",
            "is the server up (a restart ends every session)? Run the command again; "
            "whatever was in progress was rolled back by the server",
        )
    if state == "42501":
        return DatabaseRefused(
            f"the database refused a privilege this command needs: {text}.",
            "the role needs CONNECT, CREATE on the database (once, to create the "
            "`migrations` schema), and ownership of the application schemas for migrations "
            "and db.reset; ask the database's owner",
        )
    if state == "25006":
        return DatabaseRefused(
            f"the session is read-only: {text}.",
            "point DATABASE_URL at the primary, or turn off default_transaction_read_only "
            "for this role; read-only commands (status, history, verify, drift) still work",
        )
    if state == "57014":
        return DatabaseRefused(
            f"a statement was cancelled by a timeout: {text}.",
            "check statement_timeout set on the role or database (ALTER ROLE … SET), and "
            "WORKTRACKER_STATEMENT_TIMEOUT",
        )
    if state.startswith("22") or state.startswith("42"):
        return DatabaseRefused(
            f"the database refused a statement of this tool: {text} (SQLSTATE {state}).",
            "check the role's and the database's settings; if the error persists, report it",
        )
    return DatabaseRefused(
        f"the database refused: {text} (SQLSTATE {state}).",
        "nothing was left half done: a failed statement rolls back its transaction",
    )
