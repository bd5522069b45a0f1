"""Parsing, normalising and redacting database URLs.

Users give libpq URLs (`postgresql://`, `postgres://`) or SQLAlchemy's
`postgresql+psycopg://`; everything inside this package uses the latter.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from db.errors import ConfigError

DRIVER = "postgresql+psycopg"
ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
EXAMPLE = "postgresql://user:password@localhost:5432/worktracker"

# user:password@ inside anything that looks like a URL, for text we cannot parse.
_CREDENTIALS = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*):(?P<secret>[^@\s]*)@", re.I)


def parse(raw: str, source: str = "DATABASE_URL") -> URL:
    """Turn a user's URL into a SQLAlchemy URL for psycopg 3, or raise ConfigError."""
    text = raw.strip()
    if not text:
        raise ConfigError(
            f"{source} is set but empty.",
            f"unset it to use the embedded database, or set it to a URL like {EXAMPLE}",
        )
    scheme, sep, _ = text.partition("://")
    if not sep:
        raise ConfigError(
            f"{source} is not a URL: {redact_text(text)!r}.",
            f"expected a PostgreSQL URL like {EXAMPLE}",
        )
    if scheme.lower() not in ACCEPTED_SCHEMES:
        raise ConfigError(
            f"{source} has the scheme {scheme!r}, which is not PostgreSQL through psycopg 3.",
            f"use postgresql://, postgres:// or postgresql+psycopg://, e.g. {EXAMPLE}",
        )
    try:
        url = make_url(DRIVER + text[len(scheme) :])
        url.port  # noqa: B018 - make_url defers parsing the port; force it here
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"{source} could not be parsed: {redact_text(text)!r} ({exc}).",
            f"expected a PostgreSQL URL like {EXAMPLE}; percent-encode special characters "
            "in the password (@ is %40, / is %2F)",
        ) from None
    # An empty password (postgresql://user:@host) is no password; URL.set(None) keeps it.
    return url._replace(password=None) if url.password == "" else url


def redact(url: URL) -> str:
    """The URL as libpq would take it, with the password replaced by ***.

    The query (e.g. ?host=/path/to/socket) is shown unquoted, as people write it.
    """
    rendered = libpq(url).render_as_string(hide_password=True)
    base, sep, query = rendered.partition("?")
    return base + sep + unquote(query)


def libpq_handoff(url: URL) -> tuple[str, dict[str, str]]:
    """For handing `url` to psql or pg_dump: a libpq URL without the password, and this
    process's environment with the password in PGPASSWORD.

    Keeps passwords off command lines, where `ps` shows them to everyone on the host.
    (URL.set(password=None) would keep the password: None means "unchanged" there.)
    """
    bare = URL.create(
        "postgresql",
        username=url.username,
        password=None,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return bare.render_as_string(hide_password=False), env


def libpq(url: URL) -> URL:
    """The same URL with the plain `postgresql` scheme, for psql and pg_dump."""
    return url.set(drivername="postgresql")


def redact_text(text: str, url: URL | None = None) -> str:
    """Remove credentials from free text, such as a driver's error message."""
    text = _CREDENTIALS.sub(r"\g<head>:***@", text)
    if url is not None and url.password:
        text = text.replace(str(url.password), "***")
    return text


def host_of(url: URL) -> str | None:
    """The host the URL connects to: its host, a `?host=` socket directory, or None."""
    host = url.host or url.query.get("host")
    if isinstance(host, tuple):
        host = host[0]
    return host or None


def is_local(url: URL) -> bool:
    """True for unix sockets and loopback addresses: the databases a reset may wipe."""
    host = host_of(url)
    if host is None or host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
