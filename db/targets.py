"""Named environments, and the databases each one means: what `--env NAME` resolves to.

`[tool.worktracker.environments]` in pyproject.toml maps a name to the *name of an
environment variable* (never a URL or a password in the file); the variable holds one
URL, or several separated by whitespace for a fleet:

    [tool.worktracker.environments]
    staging = "STAGING_DATABASE_URL"
    production = { url = "PRODUCTION_DATABASE_URL", protected = true }

A command receives the Target it runs on as an argument; DEFAULT (no --env) means
DATABASE_URL or the embedded server, as always.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.engine import URL

from db import settings, urls
from db.errors import ConfigError, Refused

ALL = "all"


@dataclass(frozen=True)
class Environment:
    name: str
    variable: str
    protected: bool


@dataclass(frozen=True)
class Target:
    environment: str | None
    """None: DATABASE_URL or the embedded server, as without --env."""
    url: URL | None
    protected: bool = False
    variable: str | None = None
    """The environment variable its URL came from."""
    unset: str | None = None
    """The environment variable that is not set, when resolve() was lenient: a row that
    says so rather than no rows at all (status and drift over --env all)."""

    @property
    def label(self) -> str:
        if self.unset is not None:
            return f"{self.environment}: ({self.unset} is not set)"
        where = urls.redact(self.url) if self.url is not None else "the default database"
        return f"{self.environment}: {where}" if self.environment else where


DEFAULT = Target(None, None)
"""DATABASE_URL, or the embedded server: the target without --env."""


def environments() -> dict[str, Environment]:
    """The environments of pyproject.toml; ConfigError (exit 2) when one is malformed."""
    found = {}
    for name, value in settings.pyproject_section().get("environments", {}).items():
        if isinstance(value, str):
            variable, protected = value, False
        elif isinstance(value, dict) and isinstance(value.get("url"), str):
            variable, protected = value["url"], bool(value.get("protected", False))
        else:
            raise ConfigError(
                f"[tool.worktracker.environments] {name} must name an environment variable, "
                f"not {value!r}.",
                f'e.g. {name} = "{name.upper()}_DATABASE_URL", or '
                f'{name} = {{ url = "{name.upper()}_DATABASE_URL", protected = true }}',
            )
        if "://" in variable:
            raise ConfigError(
                f"[tool.worktracker.environments] {name} holds a URL: it must hold the name "
                "of an environment variable, so that no URL or password is in the file.",
                f"set {name.upper()}_DATABASE_URL in the environment and write "
                f'{name} = "{name.upper()}_DATABASE_URL"',
            )
        found[name] = Environment(name, variable, protected)
    return found


def resolve(
    env: str | None, environ: Mapping[str, str] | None = None, *, lenient: bool = False
) -> list[Target]:
    """The databases `--env` means: one per URL of the environment (every environment's
    for "all"); the default target when env is None. `lenient`: an environment whose
    variable is not set is a Target with `unset` instead of an error (for reports)."""
    if env is None:
        return [Target(None, None)]
    known = environments()
    if env == ALL:
        chosen = list(known.values())
        if not chosen:
            raise ConfigError(
                "--env all: no environments are configured.",
                "add them under [tool.worktracker.environments] in pyproject.toml",
            )
    elif env in known:
        chosen = [known[env]]
    else:
        raise ConfigError(
            f"unknown environment {env!r}.",
            f"known: {', '.join(sorted(known)) or 'none'} (and 'all'); they are configured "
            "under [tool.worktracker.environments] in pyproject.toml",
        )
    values = os.environ if environ is None else environ
    found = []
    for environment in chosen:
        raw = values.get(environment.variable, "").strip()
        if not raw:
            if lenient:
                found.append(
                    Target(
                        environment.name, None, environment.protected, unset=environment.variable
                    )
                )
                continue
            state = "empty" if environment.variable in values else "not set"
            raise ConfigError(
                f"environment {environment.name!r} reads {environment.variable}, which is {state}.",
                f"export {environment.variable}=postgresql://… (several URLs, separated by "
                "spaces, for a fleet)",
            )
        seen: set[str] = set()
        for part in raw.split():
            if part.count("://") > 1:
                raise ConfigError(
                    f"{environment.variable} holds URLs joined without a space: {part[:60]}….",
                    "separate a fleet's URLs with spaces (or newlines), not commas",
                )
            url = urls.parse(part, source=environment.variable)
            key = urls.libpq(url).render_as_string(hide_password=True)
            if key in seen:
                raise ConfigError(
                    f"{environment.variable} lists the same database twice: {urls.redact(url)}.",
                    "list each database once: a fleet run would migrate it twice",
                )
            seen.add(key)
            found.append(
                Target(environment.name, url, environment.protected, variable=environment.variable)
            )
    return found


def confirm(target: Target, action: str, yes: bool) -> None:
    """A protected environment is changed only when the person says so, or with --yes."""
    if not target.protected or yes:
        return
    if not sys.stdin.isatty():
        raise Refused(
            f"{target.environment} is a protected environment, and {action} would change it.",
            "pass --yes to go ahead (in CI), or run it from a terminal to be asked",
        )
    answer = input(f"{action} on protected environment {target.label}? Type its name: ")
    if answer.strip() != target.environment:
        raise Refused(f"{action} on {target.environment} was not confirmed; nothing was done.")
