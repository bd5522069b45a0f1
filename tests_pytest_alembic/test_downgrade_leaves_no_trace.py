"""pytest-alembic's downgrade_leaves_no_trace, with every migration committed.

The plugin's experimental version runs the whole chain inside one transaction and rolls
back to savepoints. Migrations that PostgreSQL runs only outside a transaction cannot
pass it, however right they are: a CREATE INDEX CONCURRENTLY in an autocommit_block()
(Alembic asserts), an ALTER TYPE … ADD VALUE whose downgrade reads the new label ("unsafe
use of new value"). Here each step commits, as in production, and the state before a
revision is rebuilt on a second database instead of rolled back to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.migration import MigrationContext
from pytest_alembic import MigrationContext as Runner
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from db import revisions as revisions_on_disk
from db.throwaway import Server


@pytest.fixture
def second_engine(_server: Server) -> Iterator[Engine]:
    url = _server.create_database()
    engine = create_engine(url, poolclass=NullPool)
    yield engine
    engine.dispose()
    _server.drop_database(url.database)


def _reflected(engine: Engine) -> MetaData:
    metadata = MetaData()
    metadata.reflect(engine)
    return metadata


def _what_autogenerate_would_write(engine: Engine, target: MetaData) -> str:
    """The migration autogenerate would write from the database to `target`, as the
    plugin's version compares them (two diffs against one target, not two reflections)."""
    with engine.connect() as connection:
        ops = produce_migrations(MigrationContext.configure(connection), target).upgrade_ops
        assert ops is not None
        return render_python_code(ops)


def test_downgrade_leaves_no_trace(
    alembic_runner: Runner, alembic_engine: Engine, second_engine: Engine
) -> None:
    revisions = alembic_runner.history.revisions[1:-1]  # without "base" and "heads"
    # Each revision's schema, reached by upgrades alone on a database of its own.
    at: dict[str, MetaData] = {}
    config = revisions_on_disk.alembic_config()  # not the runner's: that one holds its engine
    config.attributes["connection"] = second_engine
    for revision in revisions:
        command.upgrade(config, revision)
        at[revision] = _reflected(second_engine)

    differences = []
    for before, revision in zip(["base", *revisions], revisions, strict=False):
        expected = _what_autogenerate_would_write(alembic_engine, at[revision])
        alembic_runner.migrate_up_to(revision)
        try:
            alembic_runner.migrate_down_to(before)
        except NotImplementedError:  # declared irreversible: the plugin's floor too
            alembic_runner.migrate_up_to(revision)
            continue
        found = _what_autogenerate_would_write(alembic_engine, at[revision])
        if found != expected:
            differences.append(
                f"{revision}: before the upgrade, autogenerate would write\n{expected}\n"
                f"after upgrade and downgrade, it would write\n{found}"
            )
        alembic_runner.migrate_up_to(revision)
    assert not differences, "a downgrade does not undo its upgrade:\n" + "\n".join(differences)
