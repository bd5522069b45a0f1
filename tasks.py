"""Tasks for the work tracker's schema. `invoke --list` shows them; `invoke --help TASK`
explains one. Every task targets DATABASE_URL, or the embedded PostgreSQL when it is unset."""

from __future__ import annotations

from collections.abc import Callable

from invoke import Collection, Exit, task

from db import commands
from db.errors import ConfigError, UserError


def _run(action: Callable[..., None], *args: object, **kwargs: object) -> None:
    """Run `action`; a UserError becomes its message, its hint and its exit code."""
    try:
        action(*args, **kwargs)
    except UserError as error:
        raise Exit(error.render(), error.exit_code) from None


def _steps(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise Exit(
            ConfigError(f"--steps takes a whole number of 1 or more, not {raw!r}.").render(), 2
        )
    return int(raw)


@task(help={"to": "Revision to upgrade to (default: head, the newest)."})
def up(c, to="head"):
    """Apply pending migrations, oldest first, up to --to (default head)."""
    _run(commands.migrate_up, to)


@task(
    help={
        "steps": "How many migrations to roll back (default 1).",
        "to": "Roll back to this revision instead; 'base' rolls back everything.",
    }
)
def down(c, steps=None, to=None):
    """Roll back the newest migration, or --steps N of them, or down --to REV."""
    _run(commands.migrate_down, _steps(steps), to)


@task
def status(c):
    """Show the current revision, and which migrations are applied or pending."""
    _run(commands.migrate_status)


@task(help={"message": 'What the migration does, e.g. "add task reminders".'})
def new(c, message):
    """Create the next numbered migration file (NNN_slug.py) from the template."""
    _run(commands.migrate_new, message)


@task
def start(c):
    """Start the embedded PostgreSQL (data in .pgdata/); other tasks start it on demand."""
    _run(commands.db_start)


@task
def stop(c):
    """Stop the embedded PostgreSQL."""
    _run(commands.db_stop)


@task
def url(c):
    """Print the target database's URL, with the password hidden."""
    _run(commands.db_url)


@task
def shell(c):
    """Open psql on the target database (the embedded psql if none is on PATH)."""
    _run(commands.db_shell)


@task(help={"force": "Also reset a database that is not on this machine."})
def reset(c, force=False):
    """Drop everything in the target's app schema and re-apply every migration."""
    _run(commands.db_reset, force)


migrate = Collection("migrate", up, down, status, new)
db = Collection("db", start, stop, url, shell, reset)
ns = Collection(migrate, db)
