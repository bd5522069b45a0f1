"""Sessions: plain `nox` runs lint and tests; `nox -s NAME` runs one; `nox -l` lists them."""

from __future__ import annotations

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str, project: bool = True) -> None:
    """Install the dependency groups of pyproject.toml, and the project itself."""
    if project:
        session.install("-e", ".")
    session.install(*nox.project.dependency_groups(PYPROJECT, *groups))


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    _install(session, "lint", project=False)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a throwaway PostgreSQL (see db/throwaway.py)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)
