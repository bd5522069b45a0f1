"""Tasks for the work tracker's schema. `invoke --list` shows them; `invoke --help TASK`
explains one. Every task targets DATABASE_URL, or the embedded PostgreSQL when it is unset."""

from __future__ import annotations

import sys
from collections.abc import Callable

from invoke import Collection, Exit, task

from db import commands
from db.errors import ConfigError, UserError


def _run(action: Callable[..., None], *args: object, **kwargs: object) -> None:
    """Run `action`; a UserError becomes its message, its hint and its exit code."""
    try:
        action(*args, **kwargs)
    except UserError as error:
        sys.stdout.flush()  # what was said so far comes before the error
        raise Exit(error.render(), error.exit_code) from None


def _steps(raw: str | None, flag: str = "--steps") -> int | None:
    """A positive whole number from the command line, or None when the flag was not given."""
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < 1:
        error = ConfigError(f"{flag} takes a whole number of 1 or more, not {raw!r}.")
        raise Exit(error.render(), error.exit_code)
    return int(raw)


LOCK_HELP = (
    "Seconds to wait for another migration run to finish (default 60; "
    "also WORKTRACKER_LOCK_TIMEOUT)."
)
ALLOW_CHANGED_HELP = (
    "Go ahead although an applied migration's file changed since it was applied; "
    "the acceptance is recorded in the history."
)


@task(
    help={
        "to": "Revision to upgrade to (default: head, the newest).",
        "lock-timeout": LOCK_HELP,
        "allow-changed": ALLOW_CHANGED_HELP,
    }
)
def up(c, to="head", lock_timeout=None, allow_changed=False):
    """Apply pending migrations, oldest first, up to --to (default head)."""
    _run(commands.migrate_up, to, lock_timeout, allow_changed)


@task(
    help={
        "steps": "How many migrations to roll back (default 1).",
        "to": "Roll back to this revision instead; 'base' rolls back everything.",
        "lock-timeout": LOCK_HELP,
        "allow-changed": ALLOW_CHANGED_HELP,
    }
)
def down(c, steps=None, to=None, lock_timeout=None, allow_changed=False):
    """Roll back the newest migration, or --steps N of them, or down --to REV."""
    _run(commands.migrate_down, _steps(steps), to, lock_timeout, allow_changed)


@task
def status(c):
    """Show the current revision, and which migrations are applied or pending."""
    _run(commands.migrate_status)


@task(
    help={
        "json": "Print JSON for scripts instead of a table.",
        "limit": "Only the newest N rows.",
    }
)
def history(c, json=False, limit=None):
    """Show every migration step applied or rolled back: when, by whom, how long, result."""
    _run(commands.migrate_history, json, _steps(limit, "--limit"))


@task
def verify(c):
    """Check that applied migrations' files still match their recorded checksums (for CI)."""
    _run(commands.migrate_verify)


@task(
    help={
        "server": "embedded, debian-NN or docker-NN (default: TEST_DATABASE_URL, then Docker, "
        "then embedded)."
    }
)
def roundtrip(c, server=None):
    """Prove every migration reversible on a throwaway PostgreSQL: up, down, up, compared."""
    _run(commands.migrate_roundtrip, server)


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


@task(
    help={"force": "Also reset a database that is not on this machine.", "lock-timeout": LOCK_HELP}
)
def reset(c, force=False, lock_timeout=None):
    """Drop everything in the target's app schema and re-apply every migration."""
    _run(commands.db_reset, force, lock_timeout)


migrate = Collection("migrate", up, down, status, history, verify, roundtrip, new)
db = Collection("db", start, stop, url, shell, reset)
ns = Collection(migrate, db)
