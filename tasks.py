"""Tasks for the work tracker's schema. `invoke --list` shows them; `invoke --help TASK`
explains one. Every task targets DATABASE_URL, or the embedded PostgreSQL when it is unset."""

from __future__ import annotations

import difflib
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable

from invoke import Collection, Exit, task
from invoke.exceptions import ParseError
from invoke.program import Program

from db import process

process.short_lived()  # before the imports below, which build most of the graph

from db import commands, failures, interrupts, render, settings  # noqa: E402
from db.errors import ConfigError, UserError  # noqa: E402

# Tasks that talk to a database: an interruption says where the database is.
_DATABASE_TASKS = ("migrate_", "db_reset", "db_dump", "db_diagram", "on_environment")


_ASK_SECONDS = 2.0
"""How long an interrupted run asks the database where it is: a link that stalled while
nothing was in flight (a connection being opened) would hold the answer for ever."""


def _revision_now() -> str | None:
    answer: list[str] = []
    asking = threading.Thread(target=lambda: answer.append(commands.revision_now()), daemon=True)
    asking.start()
    asking.join(_ASK_SECONDS)
    return answer[0] if answer else None


def _interrupted(action: Callable[..., object], signum: int, interrupt: BaseException) -> Exit:
    # The message is on its way: another Ctrl-C would only turn it into a traceback.
    for ignored in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)
    sys.stdout.flush()
    how, code = f"stopped by {interrupts.NAMES[signum]}", 128 + signum
    where, hint = "", "a step in progress was rolled back by the server; run the command again"
    if action.__name__.startswith(_DATABASE_TASKS) and action.__name__ != "migrate_new":
        revision = None if interrupts.link_cut() else _revision_now()
        if revision is None:
            link = settings.link()
            where = "; the link to the database stalled, so where it is could not be asked"
            hint = (
                "the server rolls back a step in progress once its statement ends and "
                f"{link.idle_in_transaction_ms / 1000:g} s pass without word from this run, "
                f"or {link.dead_after_seconds} s after the link went down; run "
                "`invoke migrate.status` once the link is back, then the command again"
            )
        else:
            where = f"; the database is at {revision}"
    # An online step (autocommit_block()) keeps what it committed: db/runner.py says what.
    hint = getattr(interrupt, "left_behind", None) or hint
    return Exit(f"interrupted: {how}{where}.\nhint: {hint}", code)


def _run(action: Callable[..., object], *args: object, **kwargs: object) -> None:
    """Run `action`; a UserError becomes its message, its hint and its exit code."""
    interrupts.install()
    try:
        try:
            render.deliver(action(*args, **kwargs))
        except BaseException as error:
            # A signal wins over whatever the unwinding raised on the way (a connection
            # the interrupt shut down reports itself lost).
            if (signum := interrupts.signal_of(error)) is not None:
                raise _interrupted(action, signum, error) from None
            raise
    except (UserError, *failures.DRIVER_ERRORS) as error:
        described = failures.user_error(error)
        sys.stdout.flush()  # what was said so far comes before the error
        raise Exit(described.render(), described.exit_code) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise Exit(code=141) from None


def _on(env: str | None, action: str, *args: object, changes: str | None = None, **kw) -> None:
    """Run the command `action` on the database --env names (see db/targets.py)."""
    _run(
        commands.on_environment,
        env,
        functools.partial(getattr(commands, action), *args),
        changes=changes,
        **kw,
    )


FLEET = {
    "parallel": "With an environment of several databases: how many run at once (default 4).",
    "keep-going": "With several databases: run them all even after one failed.",
    "json": "With several databases: print the summary as JSON.",
}


def _fleet(task: str, parallel: int, keep_going: bool, json: bool, **options) -> dict:
    """How the command runs when --env names several databases (db/commands/fleet.py)."""
    return {
        "fleet": (task, options),
        "parallel": parallel or 4,
        "keep_going": keep_going,
        "as_json": json,
    }


HELP = {
    "env": "Run on the database of this environment ([tool.worktracker.environments]); "
    "default: DATABASE_URL, else the embedded server.",
    "yes": "Change a protected environment without asking (for CI).",
    "lock-timeout": "Seconds to wait for another migration run to finish (default 60; "
    "also WORKTRACKER_LOCK_TIMEOUT).",
    "allow-changed": "Go ahead although an applied migration's file changed since it was "
    "applied; the acceptance is recorded in the history.",
    "dry-run": "Print the SQL it would run, from the database's current revision; change "
    "nothing, take no lock. A migration that reads the database (op.get_bind()) cannot be "
    "shown: exit 2 (migrate.plan rehearses it).",
    "from": "With --dry-run: start from this revision instead of asking the database "
    "(no database needed).",
    "allow-data-loss": "Go ahead although it drops tables or columns that hold rows.",
    "backup": "First write a pg_dump of the tables it would drop or change to this file.",
}


@task(
    help={
        "to": "Revision to upgrade to (default: head, the newest).",
        **{k: HELP[k] for k in ("lock-timeout", "allow-changed", "dry-run", "from", "env", "yes")},
        **FLEET,
    }
)
def up(
    c,
    to="head",
    lock_timeout=None,
    allow_changed=False,
    dry_run=False,
    from_=None,
    env=None,
    yes=False,
    parallel=0,
    keep_going=False,
    json=False,
):
    """Apply pending migrations, oldest first, up to --to (default head)."""
    changes = None if dry_run else "migrate.up"
    args = (to, lock_timeout, allow_changed, dry_run, from_)
    fleet = _fleet(
        "migrate.up",
        parallel,
        keep_going,
        json,
        to=to,
        lock_timeout=lock_timeout,
        allow_changed=allow_changed,
        dry_run=dry_run,
        from_=from_,
    )
    _on(env, "migrate_up", *args, changes=changes, yes=yes, **fleet)


@task(
    help={
        "steps": "How many migrations to roll back (default 1).",
        "to": "Roll back to this revision instead; 'base' rolls back everything.",
        **HELP,
        **FLEET,
    }
)
def down(
    c,
    steps=0,
    to=None,
    lock_timeout=None,
    allow_changed=False,
    dry_run=False,
    from_=None,
    allow_data_loss=False,
    backup=None,
    env=None,
    yes=False,
    parallel=0,
    keep_going=False,
    json=False,
):
    """Roll back the newest migration, or --steps N of them, or down --to REV.

    Rehearses the rollback first, and refuses one that would destroy rows (a dropped table
    or column that holds rows, rows a downgrade rewrites or deletes) unless
    --allow-data-loss (--backup FILE keeps a copy first).
    """
    args = (steps, to, lock_timeout, allow_changed, dry_run, from_, allow_data_loss)
    changes = None if dry_run else "migrate.down"
    fleet = _fleet(
        "migrate.down",
        parallel,
        keep_going,
        json,
        steps=steps,
        to=to,
        lock_timeout=lock_timeout,
        allow_changed=allow_changed,
        dry_run=dry_run,
        from_=from_,
        allow_data_loss=allow_data_loss,
        backup=backup,
    )
    _on(env, "migrate_down", *args, backup, changes=changes, yes=yes, **fleet)


@task(
    help={
        "down": "Rehearse a rollback (one step, or --steps N, or --to REV) instead.",
        "steps": "With --down: how many migrations to roll back (default 1).",
        "to": "Revision to go to (default: head, or one step down with --down).",
        "lock-timeout": HELP["lock-timeout"],
        "json": "Print JSON for scripts instead of text (with several databases: the summary).",
        "env": HELP["env"],
        "parallel": FLEET["parallel"],
        "keep-going": FLEET["keep-going"],
    }
)
def plan(
    c,
    down=False,
    steps=0,
    to=None,
    lock_timeout=None,
    json=False,
    env=None,
    parallel=0,
    keep_going=False,
):
    """Rehearse pending migrations in one transaction on the target: diff, times, ROLLBACK.

    The rehearsal runs the real statements on the target and takes their locks until it
    rolls back; an autocommit_block() runs inside the transaction, without CONCURRENTLY.
    Per statement, it reports the locks measured on existing tables, how long each is
    held, rewrites, scans, rows changed and the SELECT/INSERT/UPDATE/DELETE each blocks.
    Exits 4 when a migration fails in the rehearsal. On an environment of several
    databases, each is rehearsed, --parallel at a time, and the end is one table.
    """
    fleet = _fleet(
        "migrate.plan",
        parallel,
        keep_going,
        json,
        down=down,
        steps=steps,
        to=to,
        lock_timeout=lock_timeout,
    )
    _on(env, "migrate_plan", down, steps, to, lock_timeout, json, **fleet)


@task(
    help={
        "json": "Print JSON for scripts instead of a table.",
        "env": "An environment, or 'all': one row per database (unreachable ones too).",
        "drift": "Also compare each database with what its migrations make (see "
        "migrate.drift; builds on a throwaway PostgreSQL).",
    }
)
def status(c, json=False, env=None, drift=False):
    """Show the current revision, and which migrations are applied or pending."""
    _run(commands.migrate_status, json, env, drift)


@task(
    help={
        "json": "Print JSON for scripts instead of a table.",
        "limit": "Only the newest N rows (default: all).",
        "env": HELP["env"],
    }
)
def history(c, json=False, limit=0, env=None):
    """Show every migration step applied or rolled back: when, by whom, how long, result."""
    _on(env, "migrate_history", json, limit)


@task(help={"env": HELP["env"], **FLEET})
def verify(c, env=None, parallel=0, keep_going=False, json=False):
    """Check that applied migrations' files still match their recorded checksums (for CI)."""
    _on(env, "migrate_verify", **_fleet("migrate.verify", parallel, keep_going, json))


@task(
    help={
        "env": "An environment (each of its databases), or 'all'; default: DATABASE_URL, "
        "else the embedded server.",
        "parallel": "How many databases are read at once (default 4).",
        "json": "Print one JSON object per database for scripts.",
    }
)
def drift(c, env=None, parallel=0, json=False):
    """Compare each database with what its migrations make at its own revision.

    Builds the expected schema on a throwaway PostgreSQL (one build for every revision
    the databases are at) and lists each difference: an index made by hand, a changed
    type or default, a missing trigger, an extra table. Read-only on the databases: no
    lock, no write; a role that can only read is enough. Exits 8 when one drifted.
    """
    _run(commands.migrate_drift, env, parallel or 4, json)


@task
def lint(c):
    """Lint each migration's SQL, upgrade and downgrade, with squawk (rules in .squawk.toml).

    Code that cannot be rendered offline (it reads the database, or is not written yet)
    is a warning naming its line; the SQL before it is still checked."""
    _run(commands.migrate_lint)


@task(
    help={
        "server": "embedded, debian-NN or docker-NN (default: TEST_DATABASE_URL, then Docker, "
        "then embedded).",
        "json": "Print the report as JSON for CI instead of text.",
    },
    # -s is --steps elsewhere; --server keeps its long name only.
    auto_shortflags=False,
)
def roundtrip(c, server=None, json=False):
    """Prove every migration reversible on a throwaway PostgreSQL: up, down, up, compared."""
    _run(commands.migrate_roundtrip, server, json)


@task(
    help={
        "message": 'What the migration does, e.g. "add task reminders".',
        "autogenerate": "Fill it with what Alembic's autogenerate finds between the models and "
        "a throwaway database at head (review it!).",
    }
)
def new(c, message, autogenerate=False):
    """Create the next numbered migration file (NNN_slug.py) from the template."""
    _run(commands.migrate_new, message, autogenerate)


@task
def start(c):
    """Start the embedded PostgreSQL (data in .pgdata/); other tasks start it on demand."""
    _run(commands.db_start)


@task
def stop(c):
    """Stop the embedded PostgreSQL."""
    _run(commands.db_stop)


@task(help={"env": HELP["env"]})
def url(c, env=None):
    """Print the target database's URL, with the password hidden."""
    _on(env, "db_url")


@task(help={"env": HELP["env"]})
def shell(c, env=None):
    """Open psql on the target database (the embedded psql if none is on PATH)."""
    _on(env, "db_shell")


@task
def dump(c):
    """Regenerate db/schema.sql, the schema at head, from a throwaway PostgreSQL."""
    _run(commands.db_dump)


@task
def diagram(c):
    """Regenerate docs/schema.md, the ER diagram of the schema at head."""
    _run(commands.db_diagram)


@task(
    help={
        "force": "Also reset a database that is not on this machine.",
        **{k: HELP[k] for k in ("lock-timeout", "allow-data-loss", "backup", "env")},
    }
)
def reset(c, force=False, lock_timeout=None, allow_data_loss=False, backup=None, env=None):
    """Drop everything in the target's app schema and re-apply every migration.

    Never on a protected environment."""
    args = (force, lock_timeout, allow_data_loss, backup)
    _on(env, "db_reset", *args, changes="db.reset", never_protected=True)


_SECONDS_OPTIONS = ("lock_timeout",)


def _check_numbers(contexts: list) -> None:
    """Every numeric option, checked here before any task runs: a count (--steps, --limit,
    --parallel) is 1 or more, and --lock-timeout a number of seconds, 0 or more.

    Counts are declared `=0` only so that invoke parses them as numbers; one that was not
    given reaches its task as None, so that an explicit 0 is refused instead of being
    taken for the default (`migrate.down --steps 0` once rolled back a migration)."""
    for context in contexts:
        for argument in context.args.values():
            flag = "--" + argument.name.strip("_").replace("_", "-")
            if argument.name in _SECONDS_OPTIONS and argument.got_value:
                try:
                    settings.seconds(flag, argument.value)
                except ConfigError as error:
                    raise Exit(error.render(), error.exit_code) from None
            if argument.kind is not int:
                continue
            if not argument.got_value:
                argument.default = None
            elif argument.value < 1:
                error = ConfigError(
                    f"{flag} takes a whole number of 1 or more, not {argument.value}.",
                    f"leave {flag} out for its default (`invoke --help {context.name}`)",
                )
                raise Exit(error.render(), error.exit_code)


def _unknown_tasks_are_bad_arguments() -> None:
    """invoke exits 1 on a task name it does not know; the README promises 2 for bad
    arguments, and a suggestion is kinder. Numeric options are checked too. Parsing
    happens after tasks.py is loaded."""
    original = Program.parse_tasks

    def parse_tasks(self: Program) -> None:
        try:
            original(self)
        except ValueError as error:  # an INT option given a word: invoke's int() raised
            raise Exit(
                f"error: a number was expected ({error}).\nhint: `invoke --help TASK` lists "
                "a task's options and what they take",
                2,
            ) from None
        except ParseError as error:
            text = str(error)
            needed = re.match(r"Flag <Argument: (\w+)", text)
            if needed is not None:
                flag = "--" + needed[1].strip("_").replace("_", "-")
                raise Exit(f"error: {flag} needs a value.\nhint: e.g. {flag} 4", 2) from None
            unknown = re.match(r"No idea what '([^']+)' is!", text)
            if unknown is not None and unknown[1].startswith("-"):
                raise Exit(
                    f"error: unknown option {unknown[1]} for the task before it.\nhint: "
                    "`invoke --help TASK` lists a task's options",
                    2,
                ) from None
            if unknown is None:
                raise Exit(
                    f"error: {text}\nhint: `invoke --help TASK` lists a task's options", 2
                ) from None
            close = difflib.get_close_matches(unknown[1], list(self.collection.task_names), 1)
            hint = f"did you mean {close[0]}?" if close else "`invoke --list` shows them all"
            raise Exit(f"error: no task named {unknown[1]!r}.\nhint: {hint}", 2) from None
        _check_numbers(self.tasks)

    Program.parse_tasks = parse_tasks  # type: ignore[method-assign]


_unknown_tasks_are_bad_arguments()

migrate = Collection(
    "migrate", up, down, plan, status, history, verify, drift, lint, roundtrip, new
)
db = Collection("db", start, stop, url, shell, reset, dump, diagram)
ns = Collection(migrate, db)
