"""What each `invoke migrate.*` and `invoke db.*` task does. tasks.py only parses
arguments and turns UserError into a clean exit."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic import command
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import connect, embedded, revisions, runner, settings, urls
from db.errors import ConfigError, Refused, RevisionError, UserError
from db.output import console, say, step_line


@dataclass
class Target:
    settings: settings.Settings
    url: URL
    connection: Connection

    @property
    def label(self) -> str:
        where = "embedded " if self.settings.uses_embedded else ""
        return f"{where}{urls.redact(self.url)}"


@contextmanager
def open_target() -> Iterator[Target]:
    """Connect to the configured database (starting the embedded one if need be)."""
    current = settings.load()
    url = connect.target_url(current)
    with connect.connect(connect.engine_for(url, current)) as connection:
        yield Target(current, url, connection)


def _report(step: runner.Step, seconds: float) -> None:
    step_line("↑" if step.direction == "up" else "↓", step.revision, step.description, seconds)


def _apply(target: Target, plan: list[runner.Step], verb: str) -> None:
    started = time.perf_counter()
    start, end = plan[0].from_revision or "base", plan[-1].to_revision or "base"
    say(f"{verb} {target.label}: {start} → {end}")
    runner.run(target.connection, plan, on_step=_report)
    elapsed = time.perf_counter() - started
    say(
        f"Done: at {plan[-1].to_revision or 'base'} "
        f"({len(plan)} migration{'s' if len(plan) != 1 else ''}, {elapsed:.2f} s)."
    )


def migrate_up(to: str = "head") -> None:
    with open_target() as target:
        current = runner.current_revision(target.connection)
        plan = runner.plan_upgrade(revisions.script_directory(), current, to)
        if not plan:
            say(f"Nothing to apply: {target.label} is at {current or 'base'}.")
            return
        _apply(target, plan, "Upgrading")


def migrate_down(steps: int | None = None, to: str | None = None) -> None:
    if steps is not None and to is not None:
        raise ConfigError("give --steps or --to, not both.")
    with open_target() as target:
        current = runner.current_revision(target.connection)
        if current is None:
            raise RevisionError(
                f"nothing to roll back: {target.label} is at base.",
                "`invoke migrate.status` shows what is applied",
            )
        plan = runner.plan_downgrade(revisions.script_directory(), current, steps=steps, target=to)
        if not plan:
            say(f"Nothing to roll back: {target.label} is already at {current}.")
            return
        _apply(target, plan, "Downgrading")


def migrate_status() -> None:
    with open_target() as target:
        current = runner.current_revision(target.connection)
        scripts = revisions.chain(revisions.script_directory())
        applied = (
            {
                s.revision
                for s in runner.plan_downgrade(
                    revisions.script_directory(), current, steps=None, target=revisions.BASE
                )
            }
            if current
            else set()
        )
    pending = [s for s in scripts if s.revision not in applied]
    say(f"Database: {target.label}")
    say(f"Current:  {current or 'base (nothing applied)'}")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("revision", "state", "description", "file"):
        table.add_column(column)
    for script in scripts:
        state = "applied" if script.revision in applied else "[yellow]pending[/yellow]"
        table.add_row(script.revision, state, script.doc, revisions.path_of(script).name)
    console.print(table)
    say(
        f"{len(applied)} applied, {len(pending)} pending."
        + (" Run `invoke migrate.up` to apply them." if pending else "")
    )


def migrate_new(message: str) -> None:
    message = " ".join(message.split())
    if not revisions.slug_is_usable(message):
        raise ConfigError(
            f"the migration needs a description with letters or digits, not {message!r}.",
            'e.g. invoke migrate.new "add task reminders"',
        )
    config = revisions.alembic_config()
    script_dir = revisions.script_directory(config)
    rev_id = revisions.next_revision_id(script_dir)
    script = command.revision(config, message=message, rev_id=rev_id)
    assert script is not None and not isinstance(script, list)
    path = revisions.path_of(script)
    shown = (
        path.relative_to(settings.PROJECT_ROOT)
        if path.is_relative_to(settings.PROJECT_ROOT)
        else path
    )
    say(f"Created {shown} (revision {rev_id}).")
    say("Write upgrade() and downgrade(), then apply it with `invoke migrate.up`.")


def db_start() -> None:
    current = settings.load()
    if not current.uses_embedded:
        say(
            "DATABASE_URL is set, so every task uses that database; "
            "db.start only manages the embedded one (unset DATABASE_URL to use it)."
        )
        return
    url = embedded.start(current.embedded_pgdata, current.embedded_database)
    say(f"Embedded PostgreSQL is running: {urls.redact(url)}")
    say(f"Data: {current.embedded_pgdata}")


def db_stop() -> None:
    current = settings.load()
    if embedded.stop(current.embedded_pgdata):
        say(f"Stopped the embedded PostgreSQL in {current.embedded_pgdata}.")
    else:
        say(f"The embedded PostgreSQL in {current.embedded_pgdata} was not running.")


def db_url() -> None:
    current = settings.load()
    print(urls.redact(connect.target_url(current)))


def psql_command(url: URL) -> tuple[list[str], dict[str, str]]:
    """psql's argv and environment for `url`; the password travels in PGPASSWORD, never argv."""
    psql = shutil.which("psql") or str(embedded.BIN_DIR / "psql")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conninfo = urls.libpq(url).set(password=None).render_as_string(hide_password=False)
    return [psql, conninfo], env


def db_shell() -> None:
    current = settings.load()
    argv, env = psql_command(connect.target_url(current))
    os.execvpe(argv[0], argv, env)


def _recreate_app_schemas(connection: Connection) -> None:
    for schema in settings.APP_SCHEMAS:
        owner = connection.execute(
            text("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :s"),
            {"s": schema},
        ).scalar()
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(
            text(f'CREATE SCHEMA "{schema}" AUTHORIZATION {owner or "CURRENT_USER"}')
        )
        if schema == "public":
            # PostgreSQL 15+'s defaults for a new cluster's public schema.
            connection.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
            connection.execute(text("COMMENT ON SCHEMA public IS 'standard public schema'"))
    connection.execute(text(f"DROP TABLE IF EXISTS {settings.BOOKKEEPING_SCHEMA}.alembic_version"))


def db_reset(force: bool = False) -> None:
    current = settings.load()
    url = current.database_url
    # Decided before connecting: a typo in a production URL must not get that far.
    if url is not None and not (force or urls.is_local(url)):
        raise Refused(
            f"refusing to reset {urls.redact(url)}: it is not a local database, and a reset "
            "drops every table in it.",
            "pass --force if you really mean to wipe it",
        )
    with open_target() as target:
        say(f"Resetting {target.label}: dropping schemas {', '.join(settings.APP_SCHEMAS)}")
        with target.connection.begin():
            _recreate_app_schemas(target.connection)
        plan = runner.plan_upgrade(revisions.script_directory(), None, "head")
        if plan:
            _apply(target, plan, "Upgrading")


__all__ = [
    "UserError",
    "db_reset",
    "db_shell",
    "db_start",
    "db_stop",
    "db_url",
    "migrate_down",
    "migrate_new",
    "migrate_status",
    "migrate_up",
]
