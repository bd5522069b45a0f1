"""Tasks for the work tracker's schema. `invoke --list` shows them; `invoke --help TASK`
explains one. Every task targets DATABASE_URL, or the embedded PostgreSQL when it is unset."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypedDict

from invoke import Collection, Context, Exit, Task, task
from invoke.exceptions import ParseError
from invoke.program import Program

from db import process

process.short_lived()  # before the imports below, which build most of the graph

from db import failures, interrupts, render, settings  # noqa: E402
from db.errors import ConfigError, UserError  # noqa: E402
from db.outcomes import Outcome  # noqa: E402

P = ParamSpec("P")

# Tasks that talk to a database: an interruption says where the database is.
_DATABASE_TASKS = ("migrate_", "db_reset", "db_dump", "db_diagram", "on_environment")


_ASK_SECONDS = 2.0
"""How long an interrupted run asks the database where it is: a link that stalled while
nothing was in flight (a connection being opened) would hold the answer for ever."""


def _revision_now() -> str | None:
    from db.commands.target import revision_now

    answer: list[str] = []
    asking = threading.Thread(target=lambda: answer.append(revision_now()), daemon=True)
    asking.start()
    asking.join(_ASK_SECONDS)
    return answer[0] if answer else None


def _interrupted(action: Callable[..., object], signum: int, interrupt: BaseException) -> Exit:
    # The message is on its way: another Ctrl-C would only turn it into a traceback.
    for ignored in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)
    sys.stdout.flush()
    how, code = f"stopped by {interrupts.NAMES[signal.Signals(signum)]}", 128 + signum
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


def _run(action: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
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


def _on(env: str | None, command: Callable[..., Outcome | None], **kw: Any) -> None:
    """Run `command` on the database --env names (see db/targets.py)."""
    from db.commands.target import on_environment

    _run(on_environment, env, command, **kw)


@dataclass(frozen=True)
class _Option:
    """One option of a task; option(), count() and positional() make them."""

    help: str
    default: object = None
    kind: type | None = None
    """What invoke parses the value to; by default the type of `default` (str if None)."""
    forwarded: bool = True
    """Whether each database's run of a fleet gets it (db/commands/fleet.py): not the
    options that choose the databases or shape the fleet's summary."""
    check: Callable[[str, Any, str], object] | None = None
    """Called with the flag, the value given and the task's name before the task runs;
    raises ConfigError."""


def option(
    help: str,
    default: object = None,
    *,
    forwarded: bool = True,
    check: Callable[[str, Any, str], object] | None = None,
) -> Any:
    """A task's option, declared once as its parameter's default: its help, its default
    (whose type invoke parses to: bool is a flag, None a string), and what _Option says.
    Typed Any, as dataclasses.field() is, so that the parameter keeps its own type."""
    return _Option(help, default, forwarded=forwarded, check=check)


def positional(help: str) -> Any:
    """A value the task takes without a flag (`migrate.new "add reminders"`)."""
    return _Option(help, inspect.Parameter.empty)


def _one_or_more(flag: str, value: int, task_name: str) -> None:
    if value < 1:
        raise ConfigError(
            f"{flag} takes a whole number of 1 or more, not {value}.",
            f"leave {flag} out for its default (`invoke --help {task_name}`)",
        )


def count(help: str, *, forwarded: bool = True) -> Any:
    """A count (--steps, --limit, --parallel): a whole number of 1 or more.

    One that was not given reaches its task as None, not as a default number, so that an
    explicit 0 is refused instead of being taken for the default (`migrate.down --steps 0`
    once rolled back a migration)."""
    return _Option(help, None, kind=int, forwarded=forwarded, check=_one_or_more)


class Fleet(TypedDict):
    """How a command runs when --env names several databases (db/commands/fleet.py)."""

    fleet: tuple[str, dict[str, object]]
    """The task's name and the options each database's run gets."""
    parallel: int
    keep_going: bool
    as_json: bool


class _Task(Task):
    """A task whose options are its parameters' defaults (option(), count()): the help,
    the check of numeric options and a fleet's flags are all read from them.

    A task with a keyword-only parameter `fleet` can run over several databases: it is
    called with a Fleet there, made from its options' values (that parameter is not
    an option)."""

    def __init__(self, body: Callable[..., None], **kw: Any) -> None:
        parameters = inspect.signature(body).parameters.values()
        self.options = {p.name: p.default for p in parameters if isinstance(p.default, _Option)}
        self.fleet = any(p.name == "fleet" and p.kind is p.KEYWORD_ONLY for p in parameters)
        super().__init__(body, help={n: o.help for n, o in self.options.items()}, **kw)
        self.full_name = self.name
        """As the command line spells it (migrate.up): _collection() sets it."""

    def argspec(self, body: Callable[..., None]) -> inspect.Signature:
        signature = super().argspec(body)
        return signature.replace(
            parameters=[
                p.replace(default=self.options[p.name].default) if p.name in self.options else p
                for p in signature.parameters.values()
                if p.kind is not p.KEYWORD_ONLY
            ]
        )

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        if name in self.options and (kind := self.options[name].kind) is not None:
            opts["kind"] = kind
        return opts

    def __call__(self, *args: Any, **values: Any) -> Any:
        _check_numbers(self, values)
        if not self.fleet:
            return super().__call__(*args, **values)
        forwarded = {n: values[n] for n, o in self.options.items() if o.forwarded}
        fleet = Fleet(
            fleet=(self.full_name, forwarded),
            parallel=values["parallel"] or 4,
            keep_going=values["keep_going"],
            as_json=values["json"],
        )
        return super().__call__(*args, **values, fleet=fleet)


def _check_numbers(task: _Task, values: dict[str, Any]) -> None:
    """The options given that have a check (counts, --lock-timeout), before the task
    runs: bad input exits 2 before anything connects."""
    for name, option in task.options.items():
        if option.check is None or values.get(name) is None:
            continue
        flag = "--" + name.strip("_").replace("_", "-")
        try:
            option.check(flag, values[name], task.full_name)
        except ConfigError as error:
            raise Exit(error.render(), error.exit_code) from None


def _collection(name: str, *tasks: _Task) -> Collection:
    """A Collection whose tasks know their full names, which a fleet and hints give."""
    for each in tasks:
        each.full_name = f"{name}.{each.name}"
    return Collection(name, *tasks)


command = functools.partial(task, klass=_Task)
"""@task for the tasks here."""


ENV = option(
    "Run on the database of this environment ([tool.worktracker.environments]); "
    "default: DATABASE_URL, else the embedded server.",
    forwarded=False,
)
YES = option("Change a protected environment without asking (for CI).", False, forwarded=False)
LOCK_TIMEOUT = option(
    "Seconds to wait for another migration run to finish (default 60; "
    "also WORKTRACKER_LOCK_TIMEOUT).",
    check=lambda flag, value, _: settings.seconds(flag, value),
)
ALLOW_CHANGED = option(
    "Go ahead although an applied migration's file changed since it was "
    "applied; the acceptance is recorded in the history.",
    False,
)
DRY_RUN = option(
    "Print the SQL it would run, from the database's current revision; change "
    "nothing, take no lock. A migration that reads the database (op.get_bind()) cannot be "
    "shown: exit 2 (migrate.plan rehearses it).",
    False,
)
FROM = option(
    "With --dry-run: start from this revision instead of asking the database (no database needed)."
)
ALLOW_DATA_LOSS = option("Go ahead although it drops tables or columns that hold rows.", False)
BACKUP = option("First write a pg_dump of the tables it would drop or change to this file.")
PARALLEL = count(
    "With an environment of several databases: how many run at once (default 4).",
    forwarded=False,
)
KEEP_GOING = option(
    "With several databases: run them all even after one failed.", False, forwarded=False
)
SUMMARY_JSON = option("With several databases: print the summary as JSON.", False, forwarded=False)


@command()
def up(
    c: Context,
    to: str = option("Revision to upgrade to (default: head, the newest).", "head"),
    lock_timeout: str | None = LOCK_TIMEOUT,
    allow_changed: bool = ALLOW_CHANGED,
    dry_run: bool = DRY_RUN,
    from_: str | None = FROM,
    env: str | None = ENV,
    yes: bool = YES,
    parallel: int | None = PARALLEL,
    keep_going: bool = KEEP_GOING,
    json: bool = SUMMARY_JSON,
    *,
    fleet: Fleet,
) -> None:
    """Apply pending migrations, oldest first, up to --to (default head)."""
    from db.commands.changes import migrate_up

    migrate = functools.partial(
        migrate_up,
        to=to,
        lock_timeout=lock_timeout,
        allow_changed=allow_changed,
        dry_run=dry_run,
        from_rev=from_,
    )
    changes = None if dry_run else "migrate.up"
    _on(env, migrate, changes=changes, yes=yes, **fleet)


@command()
def down(
    c: Context,
    steps: int | None = count("How many migrations to roll back (default 1)."),
    to: str | None = option("Roll back to this revision instead; 'base' rolls back everything."),
    lock_timeout: str | None = LOCK_TIMEOUT,
    allow_changed: bool = ALLOW_CHANGED,
    dry_run: bool = DRY_RUN,
    from_: str | None = FROM,
    allow_data_loss: bool = ALLOW_DATA_LOSS,
    backup: str | None = BACKUP,
    env: str | None = ENV,
    yes: bool = YES,
    parallel: int | None = PARALLEL,
    keep_going: bool = KEEP_GOING,
    json: bool = SUMMARY_JSON,
    *,
    fleet: Fleet,
) -> None:
    """Roll back the newest migration, or --steps N of them, or down --to REV.

    Rehearses the rollback first, and refuses one that would destroy rows (a dropped table
    or column that holds rows, rows a downgrade rewrites or deletes) unless
    --allow-data-loss (--backup FILE keeps a copy first).
    """
    from db.commands.changes import migrate_down

    migrate = functools.partial(
        migrate_down,
        steps=steps,
        to=to,
        lock_timeout=lock_timeout,
        allow_changed=allow_changed,
        dry_run=dry_run,
        from_rev=from_,
        allow_data_loss=allow_data_loss,
        backup=backup,
    )
    changes = None if dry_run else "migrate.down"
    _on(env, migrate, changes=changes, yes=yes, **fleet)


@command()
def plan(
    c: Context,
    down: bool = option(
        "Rehearse a rollback (one step, or --steps N, or --to REV) instead.", False
    ),
    steps: int | None = count("With --down: how many migrations to roll back (default 1)."),
    to: str | None = option("Revision to go to (default: head, or one step down with --down)."),
    lock_timeout: str | None = LOCK_TIMEOUT,
    json: bool = option(
        "Print JSON for scripts instead of text (with several databases: the summary).",
        False,
        # The fleet's summary option, as on up: a fork's command gets it (as_json), but a
        # `python -m invoke` child (no fork) never did, and prints its plan as text.
        forwarded=False,
    ),
    env: str | None = ENV,
    parallel: int | None = PARALLEL,
    keep_going: bool = KEEP_GOING,
    *,
    fleet: Fleet,
) -> None:
    """Rehearse pending migrations in one transaction on the target: diff, times, ROLLBACK.

    The rehearsal runs the real statements on the target and takes their locks until it
    rolls back; an autocommit_block() runs inside the transaction, without CONCURRENTLY.
    Per statement, it reports the locks measured on existing tables, how long each is
    held, rewrites, scans, rows changed and the SELECT/INSERT/UPDATE/DELETE each blocks.
    Exits 4 when a migration fails in the rehearsal. On an environment of several
    databases, each is rehearsed, --parallel at a time, and the end is one table.
    """
    from db.commands.changes import migrate_plan

    rehearse = functools.partial(
        migrate_plan,
        down=down,
        steps=steps,
        to=to,
        lock_timeout=lock_timeout,
        as_json=json,
    )
    _on(env, rehearse, **fleet)


@command()
def status(
    c: Context,
    json: bool = option("Print JSON for scripts instead of a table.", False),
    env: str | None = option(
        "An environment, or 'all': one row per database (unreachable ones too)."
    ),
    drift: bool = option(
        "Also compare each database with what its migrations make (see "
        "migrate.drift; builds on a throwaway PostgreSQL).",
        False,
    ),
) -> None:
    """Show the current revision, and which migrations are applied or pending."""
    from db.commands.reports import migrate_status

    _run(migrate_status, as_json=json, env=env, check_drift=drift)


@command()
def history(
    c: Context,
    json: bool = option("Print JSON for scripts instead of a table.", False),
    limit: int | None = count("Only the newest N rows (default: all)."),
    env: str | None = ENV,
) -> None:
    """Show every migration step applied or rolled back: when, by whom, how long, result."""
    from db.commands.reports import migrate_history

    _on(env, functools.partial(migrate_history, as_json=json, limit=limit))


@command()
def verify(
    c: Context,
    env: str | None = ENV,
    parallel: int | None = PARALLEL,
    keep_going: bool = KEEP_GOING,
    json: bool = SUMMARY_JSON,
    *,
    fleet: Fleet,
) -> None:
    """Check that applied migrations' files still match their recorded checksums (for CI)."""
    from db.commands.reports import migrate_verify

    _on(env, migrate_verify, **fleet)


@command()
def drift(
    c: Context,
    env: str | None = option(
        "An environment (each of its databases), or 'all'; default: DATABASE_URL, "
        "else the embedded server."
    ),
    parallel: int | None = count("How many databases are read at once (default 4)."),
    json: bool = option("Print one JSON object per database for scripts.", False),
) -> None:
    """Compare each database with what its migrations make at its own revision.

    Builds the expected schema on a throwaway PostgreSQL (one build for every revision
    the databases are at) and lists each difference: an index made by hand, a changed
    type or default, a missing trigger, an extra table. Read-only on the databases: no
    lock, no write; a role that can only read is enough. Exits 8 when one drifted.
    """
    from db.commands.reports import migrate_drift

    _run(migrate_drift, env=env, parallel=parallel or 4, as_json=json)


@command()
def lint(c: Context) -> None:
    """Lint each migration's SQL, upgrade and downgrade, with squawk (rules in .squawk.toml).

    Code that cannot be rendered offline (it reads the database, or is not written yet)
    is a warning naming its line; the SQL before it is still checked."""
    from db.commands.checks import migrate_lint

    _run(migrate_lint)


# -s is --steps elsewhere; --server keeps its long name only.
@command(auto_shortflags=False)
def roundtrip(
    c: Context,
    server: str | None = option(
        "embedded, debian-NN or docker-NN (default: TEST_DATABASE_URL, then Docker, then embedded)."
    ),
    json: bool = option("Print the report as JSON for CI instead of text.", False),
) -> None:
    """Prove every migration reversible on a throwaway PostgreSQL: up, down, up, compared."""
    from db.commands.checks import migrate_roundtrip

    _run(migrate_roundtrip, server_kind=server, as_json=json)


@command()
def new(
    c: Context,
    message: str = positional('What the migration does, e.g. "add task reminders".'),
    autogenerate: bool = option(
        "Fill it with what Alembic's autogenerate finds between the models and "
        "a throwaway database at head (review it!).",
        False,
    ),
) -> None:
    """Create the next numbered migration file (NNN_slug.py) from the template."""
    from db.commands.changes import migrate_new

    _run(migrate_new, message=message, autogenerate=autogenerate)


@command()
def start(c: Context) -> None:
    """Start the embedded PostgreSQL (data in .pgdata/); other tasks start it on demand."""
    from db.commands.database import db_start

    _run(db_start)


@command()
def stop(c: Context) -> None:
    """Stop the embedded PostgreSQL."""
    from db.commands.database import db_stop

    _run(db_stop)


@command()
def url(c: Context, env: str | None = ENV) -> None:
    """Print the target database's URL, with the password hidden."""
    from db.commands.database import db_url

    _on(env, db_url)


@command()
def shell(c: Context, env: str | None = ENV) -> None:
    """Open psql on the target database (the embedded psql if none is on PATH)."""
    from db.commands.database import db_shell

    _on(env, db_shell)


@command()
def dump(c: Context) -> None:
    """Regenerate db/schema.sql, the schema at head, from a throwaway PostgreSQL."""
    from db.commands.database import db_dump

    _run(db_dump)


@command()
def diagram(c: Context) -> None:
    """Regenerate docs/schema.md, the ER diagram of the schema at head."""
    from db.commands.database import db_diagram

    _run(db_diagram)


@command()
def reset(
    c: Context,
    force: bool = option("Also reset a database that is not on this machine.", False),
    lock_timeout: str | None = LOCK_TIMEOUT,
    allow_data_loss: bool = ALLOW_DATA_LOSS,
    backup: str | None = BACKUP,
    env: str | None = ENV,
) -> None:
    """Drop everything in the target's app schema and re-apply every migration.

    Never on a protected environment."""
    from db.commands.database import db_reset

    again = functools.partial(
        db_reset,
        force=force,
        lock_timeout=lock_timeout,
        allow_data_loss=allow_data_loss,
        backup=backup,
    )
    _on(env, again, changes="db.reset", never_protected=True)


def _bad_arguments(error: ParseError | ValueError, task_names: list[str]) -> Exit:
    """What invoke's parser could not read, as one line, a hint and exit 2."""
    if isinstance(error, ValueError):  # an INT option given a word: invoke's int() raised
        return Exit(
            f"error: a number was expected ({error}).\nhint: `invoke --help TASK` lists "
            "a task's options and what they take",
            2,
        )
    text = str(error)
    needed = re.match(r"Flag <Argument: (\w+)", text)
    if needed is not None:
        flag = "--" + needed[1].strip("_").replace("_", "-")
        return Exit(f"error: {flag} needs a value.\nhint: e.g. {flag} 4", 2)
    unknown = re.match(r"No idea what '([^']+)' is!", text)
    if unknown is None:
        return Exit(f"error: {text}\nhint: `invoke --help TASK` lists a task's options", 2)
    if unknown[1].startswith("-"):
        return Exit(
            f"error: unknown option {unknown[1]} for the task before it.\nhint: "
            "`invoke --help TASK` lists a task's options",
            2,
        )
    close = difflib.get_close_matches(unknown[1], task_names, 1)
    hint = f"did you mean {close[0]}?" if close else "`invoke --list` shows them all"
    return Exit(f"error: no task named {unknown[1]!r}.\nhint: {hint}", 2)


def _bad_arguments_exit_2() -> None:
    """The one patch of invoke here: bad arguments (an unknown task or option, a missing
    value, a word for a number) exit 2 with a hint, as the README promises, instead of
    invoke's "No idea what 'x' is!" and exit 1, or a ValueError's traceback.

    invoke offers no supported way for the `invoke` console script: Program.run() catches
    the parser's ParseError itself and exits 1, and lets a ValueError through. Only a
    Program subclass could override parse_tasks(), but the console script runs
    invoke.main's own Program; neither the parser nor its handling of errors can be
    chosen by a collection, and the Executor (a setting) runs after parsing. Program
    imports tasks.py just before it parses the tasks: the moment to wrap parse_tasks()."""
    original = Program.parse_tasks
    if getattr(original, "bad_arguments_exit_2", False):
        return

    @functools.wraps(original)
    def parse_tasks(self: Program) -> None:
        try:
            original(self)
        except (ParseError, ValueError) as error:
            raise _bad_arguments(error, list(self.collection.task_names)) from None

    parse_tasks.bad_arguments_exit_2 = True  # type: ignore[attr-defined]
    Program.parse_tasks = parse_tasks  # type: ignore[method-assign]


def _help_cut_short_is_quiet() -> None:
    """`invoke --help TASK | head` stops quietly with 141, as a task's output does (_run):
    invoke prints help while parsing, before any task runs, so only a wrap of that step
    catches the reader going away (it was a BrokenPipeError traceback)."""
    original = Program.parse_cleanup
    if getattr(original, "quiet_broken_pipe", False):
        return

    @functools.wraps(original)
    def parse_cleanup(self: Program) -> None:
        try:
            original(self)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=141) from None

    parse_cleanup.quiet_broken_pipe = True  # type: ignore[attr-defined]
    Program.parse_cleanup = parse_cleanup  # type: ignore[method-assign]


_bad_arguments_exit_2()
_help_cut_short_is_quiet()

migrate = _collection(
    "migrate", up, down, plan, status, history, verify, drift, lint, roundtrip, new
)
db = _collection("db", start, stop, url, shell, reset, dump, diagram)
ns = Collection(migrate, db)
