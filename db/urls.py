"""Parsing, normalising and redacting database URLs.

Users give libpq URLs (`postgresql://`, `postgres://`) or SQLAlchemy's
`postgresql+psycopg://`; everything inside this package uses the latter.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict
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
    authority = text[len(scheme) + 3 :].split("/", 1)[0].split("?", 1)[0]
    if authority.count("@") > 1:
        # SQLAlchemy would take what follows the first @ of the password for the host, and
        # print it and resolve it as one: never echo any of it.
        raise ConfigError(
            f"{source} has more than one @ before the host: the password contains an unescaped @.",
            "percent-encode special characters in the password (@ is %40, / is %2F, : is %3A)",
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


def _service_entries(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The entries of `service` in the connection service file libpq would read."""
    candidates = []
    if environ.get("PGSERVICEFILE"):
        candidates.append(Path(environ["PGSERVICEFILE"]))
    else:
        candidates.append(Path.home() / ".pg_service.conf")
    if environ.get("PGSYSCONFDIR"):
        candidates.append(Path(environ["PGSYSCONFDIR"]) / "pg_service.conf")
    candidates.append(Path("/etc/postgresql-common/pg_service.conf"))
    for path in candidates:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (configparser.Error, OSError):
            continue
        if parser.has_section(service):
            return dict(parser.items(service))
    return {}


def effective_hosts(url: URL, environ: Mapping[str, str] | None = None) -> list[str]:
    """Where libpq will really connect for `url`: the URL's own host and hostaddr, then a
    service file's entries, then PGHOST/PGHOSTADDR/PGSERVICE, as libpq applies them.

    hostaddr, when given, is the address connected to (host then only names it).
    An empty list means libpq's default: the local unix socket.
    """
    env = os.environ if environ is None else environ
    conninfo, _ = libpq_handoff(url)
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v not in (None, "")}
    service = params.get("service") or env.get("PGSERVICE")
    if service:
        for key, value in _service_entries(service, env).items():
            params.setdefault(key, value)
    for key, variable in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR")):
        if key not in params and env.get(variable):
            params[key] = env[variable]
    chosen = params.get("hostaddr") or params.get("host") or ""
    return [h.strip() for h in chosen.split(",") if h.strip()]


def _is_local_host(host: str) -> bool:
    if host.startswith("/") or host.startswith("@") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local(url: URL, environ: Mapping[str, str] | None = None) -> bool:
    """True when every host libpq would use is a unix socket or a loopback address: the
    databases a reset may wipe without --force. Decided before connecting."""
    return all(_is_local_host(host) for host in effective_hosts(url, environ))
