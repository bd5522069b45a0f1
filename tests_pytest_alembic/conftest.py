"""pytest-alembic's built-in tests, and its experimental downgrade_leaves_no_trace, on our
chain: the documented setup (alembic_config from pyproject.toml, alembic_engine on a
throwaway database), as an Alembic user would wire it.

Runs in its own nox session (`nox -s alembic_plugin`): pytest-alembic 0.13 cannot
collect under pytest 9, so that session pins pytest below 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from db import revisions
from db.throwaway import Server, throwaway_server


@pytest.fixture(scope="session")
def _server() -> Iterator[Server]:
    with throwaway_server() as server:
        yield server


@pytest.fixture
def alembic_config() -> Config:
    return revisions.alembic_config()


@pytest.fixture
def alembic_engine(_server: Server) -> Iterator[Engine]:
    url = _server.create_database()
    engine = create_engine(url, poolclass=NullPool)
    yield engine
    engine.dispose()
    _server.drop_database(url.database)
