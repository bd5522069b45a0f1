"""The one place that decides which database every command talks to, and how.

Precedence: environment variables, then `[tool.worktracker]` in pyproject.toml,
then the defaults below. With no DATABASE_URL, the target is the embedded
PostgreSQL whose data lives in `.pgdata/` at the repository's root.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from db import urls
from db.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
BOOKKEEPING_SCHEMA = "migrations"
"""Where the migration tool keeps its own tables (alembic_version, history)."""
APPLICATION_NAME = "worktracker-migrate"
"""Set on every connection we open, so pg_stat_activity shows who we are."""


@dataclass(frozen=True)
class Settings:
    database_url: URL | None
    """None means: use the embedded server."""
    embedded_pgdata: Path
    embedded_database: str
    connect_timeout: int
    lock_timeout: float
    """Seconds to wait for another migration run to finish."""

    @property
    def uses_embedded(self) -> bool:
        return self.database_url is None


@cache
def pyproject_section() -> Mapping[str, Any]:
    if not PYPROJECT.exists():
        return {}
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f).get("tool", {}).get("worktracker", {})


def in_app_schemas(name: str | None, type_: str, parent_names: object = None) -> bool:
    """Alembic's `include_name` for autogenerate and the models check: models may live in
    any application schema (None: the connection's default one); the bookkeeping schema
    and PostgreSQL's own are never compared."""
    if type_ != "schema" or name is None:
        return True
    listed = app_schemas()
    if listed is not None:
        return name in listed
    return name not in (BOOKKEEPING_SCHEMA, "information_schema") and not name.startswith("pg_")


def app_schemas() -> tuple[str, ...] | None:
    """`[tool.worktracker] app_schemas`: the schemas the application owns, when listed.

    None (the default) means every non-system schema but the bookkeeping one: what
    snapshots, sample rows, the rollback guard, plan and `db.reset` cover.
    """
    listed = pyproject_section().get("app_schemas")
    if listed is None:
        return None
    if not isinstance(listed, list) or not all(isinstance(s, str) and s for s in listed):
        raise ConfigError(
            f"[tool.worktracker] app_schemas must be a list of schema names, not {listed!r}."
        )
    if BOOKKEEPING_SCHEMA in listed:
        raise ConfigError(f"app_schemas must not list {BOOKKEEPING_SCHEMA!r}: it is the tool's.")
    return tuple(listed)


def _positive_int(name: str, raw: object) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name} must be a whole number of seconds above 0, not {raw!r}.")
    return value


def seconds(name: str, raw: object) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a number of seconds, 0 or more, not {raw!r}.")
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
_MAX_MS = 2_147_483_647  # PostgreSQL's timeouts are int milliseconds


def _milliseconds(name: str, raw: object) -> int:
    """'5s', '1500ms', '2min', '1h' or a bare number of milliseconds; '0' turns it off."""
    found = _DURATION.match(str(raw))
    if not found:
        raise ConfigError(
            f"{name} must be a duration such as 5s, 1500ms or 2min, not {raw!r}.",
            "0 turns the timeout off",
        )
    value = int(float(found[1]) * _UNIT_MS[found[2] or "ms"])
    if value > _MAX_MS:
        raise ConfigError(
            f"{name} is {raw!r}, longer than PostgreSQL allows ({_MAX_MS} ms, about 24 days).",
            "0 turns the timeout off",
        )
    return value


@dataclass(frozen=True)
class Timeouts:
    """How long one migration statement may wait for a lock, or run, and the retries."""

    lock_ms: int
    statement_ms: int
    retries: int
    backoff_seconds: float = 1.0

    def session_settings(self) -> dict[str, str]:
        """The session settings every migration connection runs with."""
        return {"lock_timeout": f"{self.lock_ms}ms", "statement_timeout": f"{self.statement_ms}ms"}

    def set_statements(self) -> list[str]:
        """session_settings() as SET statements, as dry runs show them."""
        return [f"SET {name} = '{value}'" for name, value in self.session_settings().items()]


def _picker(environ: Mapping[str, str] | None) -> Callable[[str, object], tuple[str, object]]:
    """name, default → (the environment variable's name, its value): WORKTRACKER_NAME
    wins over [tool.worktracker] name, which wins over the default."""
    env = os.environ if environ is None else environ
    section = pyproject_section()

    def pick(name: str, default: object) -> tuple[str, object]:
        key = f"WORKTRACKER_{name.upper()}"
        return key, env.get(key) or section.get(name, default)

    return pick


def timeouts(environ: Mapping[str, str] | None = None) -> Timeouts:
    """lock_timeout, statement_timeout and retries for migrations ([tool.worktracker])."""
    pick = _picker(environ)
    retries_name, retries = pick("ddl_lock_retries", 5)
    if not str(retries).isdigit():
        raise ConfigError(f"{retries_name} must be a whole number, 0 or more, not {retries!r}.")
    return Timeouts(
        lock_ms=_milliseconds(*pick("ddl_lock_timeout", "5s")),
        statement_ms=_milliseconds(*pick("statement_timeout", "15min")),
        retries=int(str(retries)),
        backoff_seconds=seconds(*pick("ddl_lock_backoff", 1)),
    )


@dataclass(frozen=True)
class Link:
    """How long a migration session may go without hearing from the other end.

    A stalled link (a proxy or NAT that stops forwarding without closing) leaves both
    ends waiting; these bound the wait on both sides, so a step's table locks are not
    held for ever by a client that cannot be reached."""

    idle_in_transaction_ms: int
    """Server side: a migration session idle inside its transaction this long is ended
    (and rolled back). Python runs between a step's statements only briefly."""
    dead_after_seconds: int
    """Both sides: a TCP peer silent this long (keepalives unanswered, data unacknowledged)
    counts as gone."""

    KEEPALIVES_COUNT = 3

    def keepalives(self) -> tuple[int, int, int]:
        """Idle seconds, interval seconds and count of TCP keepalives, adding up to
        dead_after_seconds."""
        interval = max(1, self.dead_after_seconds // (2 * self.KEEPALIVES_COUNT))
        idle = max(1, self.dead_after_seconds - self.KEEPALIVES_COUNT * interval)
        return idle, interval, self.KEEPALIVES_COUNT

    def libpq_parameters(self) -> dict[str, int]:
        """The client's side, as libpq connection parameters (unix sockets ignore them)."""
        idle, interval, count = self.keepalives()
        return {
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": count,
            "tcp_user_timeout": self.dead_after_seconds * 1000,
        }

    def server_settings(self) -> dict[str, str]:
        """The server's side, as session settings (on a unix socket the tcp_* read 0)."""
        idle, interval, count = self.keepalives()
        return {
            "idle_in_transaction_session_timeout": f"{self.idle_in_transaction_ms}ms",
            "tcp_keepalives_idle": f"{idle}s",
            "tcp_keepalives_interval": f"{interval}s",
            "tcp_keepalives_count": str(count),
            "tcp_user_timeout": f"{self.dead_after_seconds * 1000}ms",
        }


def link(environ: Mapping[str, str] | None = None) -> Link:
    """The stalled-link bounds ([tool.worktracker] idle_in_transaction_timeout and
    link_timeout, or WORKTRACKER_IDLE_IN_TRANSACTION_TIMEOUT and WORKTRACKER_LINK_TIMEOUT)."""
    pick = _picker(environ)
    return Link(
        idle_in_transaction_ms=_milliseconds(*pick("idle_in_transaction_timeout", "30s")),
        dead_after_seconds=_positive_int(*pick("link_timeout", 30)),
    )


def versions_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """WORKTRACKER_VERSIONS_DIR: run another chain of migrations (tests use throwaway chains)."""
    raw = (os.environ if environ is None else environ).get("WORKTRACKER_VERSIONS_DIR")
    return Path(raw).resolve() if raw else None


def load(
    environ: Mapping[str, str] | None = None, lock_timeout: str | float | None = None
) -> Settings:
    """Read the settings from the environment and pyproject.toml.

    `lock_timeout` is the command line's --lock-timeout, which beats both.
    """
    env = dict(os.environ if environ is None else environ)
    lock_source = "WORKTRACKER_LOCK_TIMEOUT"
    if lock_timeout is not None:
        env[lock_source], lock_source = str(lock_timeout), "--lock-timeout"
    section = pyproject_section()

    raw_url = env.get("DATABASE_URL")
    database_url = None if raw_url is None else urls.parse(raw_url)

    pgdata = Path(env.get("WORKTRACKER_PGDATA") or section.get("embedded_pgdata", ".pgdata"))
    if not pgdata.is_absolute():
        pgdata = PROJECT_ROOT / pgdata
    return Settings(
        database_url=database_url,
        embedded_pgdata=pgdata,
        embedded_database=env.get("WORKTRACKER_DATABASE")
        or section.get("embedded_database", "worktracker"),
        connect_timeout=_positive_int(
            "WORKTRACKER_CONNECT_TIMEOUT",
            env.get("WORKTRACKER_CONNECT_TIMEOUT") or section.get("connect_timeout", 10),
        ),
        lock_timeout=seconds(
            lock_source,
            env.get("WORKTRACKER_LOCK_TIMEOUT") or section.get("lock_timeout", 60),
        ),
    )


URL_SOURCE = "WORKTRACKER_URL_SOURCE"
"""Set while a command runs on an environment's database: the variable its URL came from."""


def url_source() -> str:
    """The variable to name in an error about the target's URL: DATABASE_URL, or the
    environment's own variable (STAGING_DATABASE_URL) under --env."""
    return os.environ.get(URL_SOURCE) or "DATABASE_URL"
