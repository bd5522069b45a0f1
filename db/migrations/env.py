"""Alembic environment for the work tracker schema.

Callers (db.runner, the tests) usually hand in an open connection through
`config.attributes["connection"]`, as in Alembic's cookbook ("Sharing a
Connection across one or more programmatic migration commands"). Without one,
the target is resolved by db.settings, exactly as the invoke tasks do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from db import connect, settings
from db.models import metadata

config = context.config
target_metadata = metadata

COMMON_OPTIONS = {
    "target_metadata": target_metadata,
    # One transaction per migration, holding its DDL and its version bump: a failure
    # leaves the database at the previous revision, never between two.
    "transaction_per_migration": True,
    "version_table_schema": settings.BOOKKEEPING_SCHEMA,
    # The bookkeeping schema is the tool's, not the application's.
    "include_schemas": False,
    "compare_type": True,
    "compare_server_default": True,
}


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode: emit the SQL instead of executing it.

    The URL only selects the dialect; nothing connects. The output starts with the
    session settings every real run uses; callers may add bookkeeping statements
    through `config.attributes["offline_preamble"]` and `configure_options`.
    """
    url = config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://"
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **COMMON_OPTIONS,
        **config.attributes.get("configure_options", {}),
    )
    for statement in settings.timeouts().set_statements():
        context.execute(statement)
    context.execute(f"CREATE SCHEMA IF NOT EXISTS {settings.BOOKKEEPING_SCHEMA}")
    for statement in config.attributes.get("offline_preamble", []):
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    """Run the migrations on `connection`.

    A connection already inside a transaction is used as it is: its caller owns that
    transaction, and commits or rolls it back (pytest-alembic does; so do our
    rehearsals). db.runner never hands one in for a real run: there, a transaction left
    open would silently roll every migration back (it checks, not this file).
    """
    owned = not connection.in_transaction()
    # Checked first: a read-only session, or a role without CREATE, may run what needs
    # no change (an upgrade with nothing to do).
    schema = settings.BOOKKEEPING_SCHEMA
    if connection.execute(text("SELECT to_regnamespace(:s)"), {"s": schema}).scalar() is None:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
    if owned:
        connection.commit()
    options = {**COMMON_OPTIONS, **config.attributes.get("configure_options", {})}
    context.configure(connection=connection, **options)
    if (stand_in := config.attributes.get("autocommit_block")) is not None:
        # A rehearsal's: a real autocommit_block() would COMMIT the rehearsal's transaction.
        context.get_context().autocommit_block = stand_in
    with context.begin_transaction():
        context.run_migrations()
    if owned and connection.in_transaction():
        connection.commit()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode on the injected connectable (an Engine or a
    Connection, as in Alembic's cookbook), or on a new connection to the target."""
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        _run_on(connectable)
        return
    if connectable is not None:  # an Engine, or anything with an Engine's connect()
        with connectable.connect() as connection:
            _run_on(connection)
        return
    current = settings.load()
    engine = connect.engine_for(connect.target_url(current), current)
    with connect.connect(engine) as connection:
        _run_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
