"""The db.* commands: the embedded server, the URL, psql, reset, and the generated
schema files."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import (
    catalog,
    connect,
    embedded,
    history,
    loss,
    outcomes,
    planning,
    render,
    revisions,
    settings,
    targets,
    urls,
)
from db.commands.target import (
    apply_plan,
    changing_target,
    guard_data,
    target_settings,
)
from db.errors import Refused


def _write_generated(path: Path, content: str, task: str) -> outcomes.Generated:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else None
    path.write_text(content)
    return outcomes.Generated(str(path.relative_to(settings.PROJECT_ROOT)), old != content, task)


def db_dump() -> outcomes.Generated:
    """Regenerate db/schema.sql from a throwaway database at head."""
    from db import schema_docs

    with schema_docs.database_at_head() as (server, database, _connection):
        content = schema_docs.schema_sql(server, database)
    return _write_generated(schema_docs.SCHEMA_SQL, content, "db.dump")


def db_diagram() -> outcomes.Generated:
    """Regenerate docs/schema.md (the Mermaid ER diagram) from a throwaway database at head."""
    from db import schema_docs

    with schema_docs.database_at_head() as (_server, _database, connection):
        content = schema_docs.schema_markdown(connection)
    return _write_generated(schema_docs.SCHEMA_DOC, content, "db.diagram")


def db_start() -> outcomes.Message:
    current = settings.load()
    if not current.uses_embedded:
        return outcomes.Message(
            [
                "DATABASE_URL is set, so every task uses that database; "
                "db.start only manages the embedded one (unset DATABASE_URL to use it)."
            ]
        )
    url = embedded.start(current.embedded_pgdata, current.embedded_database)
    return outcomes.Message(
        [f"Embedded PostgreSQL is running: {urls.redact(url)}", f"Data: {current.embedded_pgdata}"]
    )


def db_stop() -> outcomes.Message:
    current = settings.load()
    if embedded.stop(current.embedded_pgdata):
        return outcomes.Message([f"Stopped the embedded PostgreSQL in {current.embedded_pgdata}."])
    return outcomes.Message(
        [f"The embedded PostgreSQL in {current.embedded_pgdata} was not running."]
    )


def db_url(*, target: targets.Target = targets.DEFAULT) -> outcomes.Message:
    current = target_settings(target=target)
    return outcomes.Message([urls.redact(connect.target_url(current))], exact=True)


def psql_command(url: URL) -> tuple[list[str], dict[str, str]]:
    """psql's argv and environment for `url`; the password travels in PGPASSWORD, never argv."""
    psql = shutil.which("psql") or str(embedded.BIN_DIR / "psql")
    conninfo, env = urls.libpq_handoff(url)
    return [psql, conninfo], env


def db_shell(*, target: targets.Target = targets.DEFAULT) -> None:
    argv, env = psql_command(connect.target_url(target_settings(target=target)))
    os.execvpe(argv[0], argv, env)


def _recreate_app_schemas(connection: Connection, schemas: list[str]) -> None:
    """Drop every app schema; recreate `public` (and the listed ones), which the
    migrations expect to exist. Schemas the migrations create, they create again."""
    listed = settings.app_schemas()
    keep = set(listed) if listed is not None else {"public"}
    for schema in sorted(set(schemas) | keep):
        owner = connection.execute(
            text("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :s"),
            {"s": schema},
        ).scalar()
        connection.execute(text(f"DROP SCHEMA IF EXISTS {catalog.ident(schema)} CASCADE"))
        if schema not in keep:
            continue
        connection.execute(
            text(f"CREATE SCHEMA {catalog.ident(schema)} AUTHORIZATION {owner or 'CURRENT_USER'}")
        )
        if schema == "public":
            # PostgreSQL 15+'s defaults for a new cluster's public schema.
            connection.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
            connection.execute(text("COMMENT ON SCHEMA public IS 'standard public schema'"))
    connection.execute(text(f"DROP TABLE IF EXISTS {settings.BOOKKEEPING_SCHEMA}.alembic_version"))


def db_reset(
    force: bool = False,
    lock_timeout: str | None = None,
    allow_data_loss: bool = False,
    backup: str | None = None,
    *,
    target: targets.Target = targets.DEFAULT,
) -> outcomes.Applied | None:
    current = target_settings(lock_timeout, target=target)
    url = current.database_url
    # Decided before connecting: a typo in a production URL must not get that far.
    if url is not None and not (force or urls.is_local(url)):
        raise Refused(
            f"refusing to reset {urls.redact(url)}: it is not a local database, and a reset "
            "drops every table in it.",
            "pass --force if you really mean to wipe it",
        )
    # No checksum check: everything is dropped and re-applied from today's files.
    with changing_target(lock_timeout, verify=False, target=target) as session:
        before = catalog.read(session.connection)
        at_risk = loss.dropped(session.connection, before, catalog.Catalog())
        session.connection.rollback()
        guard_data(session, at_risk, unknown="", allow_data_loss=allow_data_loss, backup=backup)
        schemas = list(before.schemas)
        was_at = planning.current_revision(session.connection)
        render.note(f"Resetting {session.label}: dropping schemas {', '.join(schemas)}")
        started = datetime.now(UTC)
        with session.connection.begin():
            _recreate_app_schemas(session.connection, schemas)
            # A row of its own, so that the history still replays to the revision.
            history.record(
                session.connection,
                revision=was_at or "base",
                from_revision=was_at,
                to_revision=None,
                direction="reset",
                description="db.reset: every application schema dropped",
                checksum=None,
                started_at=started,
                duration_ms=(datetime.now(UTC) - started).total_seconds() * 1000,
                success=True,
                who=session.who or history.Who.here(),
                note=f"dropped schemas {', '.join(schemas)}"
                + (f"; destroyed {'; '.join(at_risk.lines)}" if at_risk else ""),
            )
        plan = planning.plan_upgrade(revisions.script_directory(), None, "head")
        if plan:
            return apply_plan(session, plan)
    return None
