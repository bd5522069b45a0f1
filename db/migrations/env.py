"""Alembic environment for the work tracker schema.

Callers (db.runner, the tests) usually hand in an open connection through
`config.attributes["connection"]`, as in Alembic's cookbook ("Sharing a
Connection across one or more programmatic migration commands"). Without one,
the target is resolved by db.settings, exactly as the invoke tasks do.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from db import connect, revisions, settings
from db.naming import NAMING_CONVENTION

config = context.config


def _target_metadata() -> MetaData:
    """The models, for autogenerate and comparisons. Applying migrations never needs
    them: db.runner says so (attribute "models": False), which saves importing them; it
    still needs their naming convention, which shapes the names migrations give to
    op.create_* (db/naming.py)."""
    if config.attributes.get("models", True) is False:
        return MetaData(naming_convention=NAMING_CONVENTION)
    import alembic_postgresql_enum  # noqa: F401 - enum labels in autogenerate

    from db.models import metadata

    return metadata


target_metadata = _target_metadata()

COMMON_OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    # One transaction per migration, holding its DDL and its version bump: a failure
    # leaves the database at the previous revision, never between two.
    "transaction_per_migration": True,
    "version_table_schema": settings.BOOKKEEPING_SCHEMA,
    # Models may live in any application schema; the bookkeeping one is the tool's.
    "include_schemas": True,
    "include_name": settings.in_app_schemas,
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
    # `alembic revision --autogenerate`: named as migrate.new names files.
    options.setdefault("process_revision_directives", _numbered)
    if message := getattr(config.cmd_opts, "message", None):
        options.setdefault("template_args", {"description": revisions.docstring(message)})
    context.configure(connection=connection, **options)
    if (stand_in := config.attributes.get("autocommit_block")) is not None:
        # A rehearsal's: a real autocommit_block() would COMMIT the rehearsal's transaction.
        # An instance attribute shadows the method, on this run's context alone.
        context.get_context().autocommit_block = stand_in  # type: ignore[method-assign]
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


def _numbered(migration_context, revision, directives) -> None:
    """process_revision_directives: the next NNN id and an ASCII slug, as `invoke
    migrate.new` gives them; the docstring keeps the message as written."""
    script = directives[0]
    if script.rev_id is None or not revisions.FILENAME.match(f"{script.rev_id}_x.py"):
        script.rev_id = revisions.next_revision_id(migration_context.script)
    slug = revisions.slug_words(script.message or "")
    if not slug:
        raise CommandError(
            f"the message {script.message!r} has no letters or digits that can go in a file "
            'name; e.g. alembic revision -m "add task reminders"'
        )
    script.message = slug
    for upgrade_ops in script.upgrade_ops_list:
        upgrade_ops.ops = [new for op in upgrade_ops.ops for new in _labels_in_place(op)]
    if _uses_enum_plugin(script.upgrade_ops_list + script.downgrade_ops_list):
        # op.add_enum_value() and friends exist once the plugin is imported; applying a
        # migration never imports the models (nor, through them, the plugin).
        script.imports.add("import alembic_postgresql_enum  # noqa: F401 - registers its op.*")


def _labels_in_place(op) -> list:
    """alembic-postgresql-enum's add_enum_value(before_value=X) runs ADD VALUE … AFTER X
    (1.11.0): a label autogenerate places between two others lands one place too far, and
    the models check then finds the order wrong. Such labels are written as the SQL that
    puts them where the models have them; labels added at the end keep the plugin's op."""
    if type(op).__name__ != "AddEnumValuesOp":
        return [op]
    old, new = list(op.old_values), list(op.new_values)
    added = [value for value in new if value not in old]
    following = {
        value: next((later for later in new[new.index(value) :] if later in old), None)
        for value in added
    }
    if all(before is None for before in following.values()):
        return [op]
    from alembic.operations import ops

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def ident(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return [
        ops.ExecuteSQLOp(
            f"ALTER TYPE {ident(op.schema)}.{ident(op.name)} ADD VALUE {literal(value)}"
            + (f" BEFORE {literal(before)}" if before is not None else "")
        )
        for value, before in following.items()
    ]


def _uses_enum_plugin(ops) -> bool:
    """Whether any of `ops` (nested ones included) comes from alembic-postgresql-enum."""
    for op in ops:
        if type(op).__module__.startswith("alembic_postgresql_enum"):
            return True
        if _uses_enum_plugin(getattr(op, "ops", [])):
            return True
    return False


def _new_revision_without_database() -> bool:
    """`alembic revision` (without --autogenerate): nothing needs the database."""
    options = config.cmd_opts
    return (
        options is not None
        and getattr(options, "cmd", None) is not None
        and options.cmd[0].__name__ == "revision"
        and not getattr(options, "autogenerate", False)
    )


def run_new_revision() -> None:
    message = getattr(config.cmd_opts, "message", None) or ""
    context.configure(
        url="postgresql+psycopg://",
        as_sql=True,
        process_revision_directives=_numbered,
        template_args={"description": revisions.docstring(message)},
        **COMMON_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


if _new_revision_without_database():
    run_new_revision()
elif context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
