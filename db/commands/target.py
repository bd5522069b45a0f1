"""Opening the target database, holding the migration lock, applying a plan, and
refusing to destroy data: what the commands that change the schema share."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import (
    blocking,
    checksums,
    connect,
    failures,
    fanout,
    history,
    lock,
    outcomes,
    planning,
    pooler,
    render,
    revisions,
    runner,
    settings,
    targets,
    urls,
)
from db.errors import ConfigError, DatabaseRefused, Refused, UserError

if TYPE_CHECKING:
    from db import loss


@dataclass
class Session:
    """An open connection to a target database, and, while changing it, the migration
    lock and who is making the change."""

    settings: settings.Settings
    url: URL
    connection: Connection
    who: history.Who | None = None
    lock: lock.Held | None = None

    @property
    def label(self) -> str:
        where = "embedded " if self.settings.uses_embedded else ""
        return f"{where}{urls.redact(self.url)}"


def target_settings(
    lock_timeout: str | float | None = None, *, target: targets.Target = targets.DEFAULT
) -> settings.Settings:
    """The settings, with `target`'s database (the default target's: DATABASE_URL, else
    the embedded server)."""
    current = settings.load(lock_timeout=lock_timeout)
    if target.url is not None:
        current = dataclasses.replace(current, database_url=target.url)
    return current


_working_on = targets.DEFAULT
"""The database this process's command works on, for revision_now(): after an interrupt,
tasks.py asks where the database is with no command at hand."""


def on_environment(
    env: str | None,
    run: Callable[..., outcomes.Outcome | None],
    *,
    changes: str | None = None,
    yes: bool = False,
    never_protected: bool = False,
    fleet: tuple[str, dict[str, object]] | None = None,
    parallel: int = 4,
    keep_going: bool = False,
    as_json: bool = False,
) -> outcomes.Outcome | None:
    """Run a command on the database `--env` names (the default one without it); a
    protected environment is confirmed first when the command changes it. A command
    that can (`fleet`: its task name and options) runs over every database of the
    environment, `parallel` at a time."""
    chosen = targets.resolve(env)
    if len(chosen) > 1 and fleet is not None:
        from db.commands import fleet as fleets

        if changes is not None:
            for target in {t.environment: t for t in chosen}.values():
                targets.confirm(target, changes, yes)
        task, options = fleet
        return fleets.run(
            chosen,
            task,
            options,
            run,
            parallel=parallel,
            keep_going=keep_going,
            as_json=as_json,
        )
    if len(chosen) > 1:
        raise ConfigError(
            f"--env {env} means {len(chosen)} databases; this command runs on one database "
            "at a time (over a fleet: migrate.up, down, plan, verify, drift and status).",
            f"`invoke migrate.status --env {env}` shows them all; for one of them, set "
            "DATABASE_URL to its URL",
        )
    if never_protected and chosen[0].protected:
        raise Refused(
            f"{changes} is never run on a protected environment ({chosen[0].environment}).",
            "a reset drops every table; do it by hand if you really must",
        )
    if changes is not None:
        targets.confirm(chosen[0], changes, yes)
    global _working_on
    target = _working_on = chosen[0]
    if fanout.reporting():  # one database of a fleet, in an interpreter of its own
        from db.commands import fleet as fleets

        fleets.report_from_here(lambda: run(target=target))
        return None
    try:
        return run(target=target)
    except (UserError, *failures.DRIVER_ERRORS) as error:
        if target.variable is None:
            raise
        # Errors about the URL name the variable it came from (STAGING_DATABASE_URL).
        raise failures.naming(failures.user_error(error), target.variable) from None


@contextmanager
def open_target(
    lock_timeout: str | float | None = None, *, target: targets.Target = targets.DEFAULT
) -> Iterator[Session]:
    """Connect to `target` (starting the embedded server if need be)."""
    current = target_settings(lock_timeout, target=target)
    url = connect.target_url(current)
    with connect.connect(connect.engine_for(url, current)) as connection:
        yield Session(current, url, connection)


@contextmanager
def changing_target(
    lock_timeout: str | float | None = None,
    *,
    allow_changed: bool = False,
    verify: bool = True,
    bookkeeping: bool = True,
    target: targets.Target = targets.DEFAULT,
) -> Iterator[Session]:
    """open_target(), holding the migration lock, with history ready and checksums checked.

    Everything that reads the current revision must happen inside: another run may
    have moved it while we waited.
    """
    with open_target(lock_timeout, target=target) as session:
        refuse_standby(session)
        pooler.refuse_per_transaction(session.connection, session.label)
        # The session's engine, whose dialect is set up already; the lock's session names
        # itself (lock.LOCK_SESSION_NAME).
        engine = session.connection.engine
        with lock.migration_lock(engine, session.settings.lock_timeout, render.note) as held:
            session.lock = held
            if bookkeeping:
                history.ensure_table(session.connection)
                session.who = history.Who.here()
            if verify:
                for drift in checksums.verify(
                    session.connection,
                    revisions.script_directory(),
                    allow_changed=allow_changed,
                    who=session.who,
                ):
                    render.note(f"[yellow]Accepted a changed migration:[/yellow] {drift.what}")
            yield session


def refuse_standby(session: Session) -> None:
    """A hot standby takes the lock and reads like the primary; only the first write
    fails, inside a migration, where it looks like the migration's fault."""
    in_recovery = session.connection.execute(text("SELECT pg_is_in_recovery()")).scalar()
    session.connection.rollback()
    if in_recovery:
        raise failures.naming(
            DatabaseRefused(
                f"{session.label} is a read-only standby (pg_is_in_recovery() is true): "
                "migrations, plans and resets must run on the primary. Nothing was changed.",
                "point DATABASE_URL at the primary; read-only commands (status, history, "
                "verify, drift) work on a standby",
            ),
            settings.url_source(),
        )


def report_step(step: planning.Step, seconds: float) -> None:
    render.emit(
        render.StepDone(
            step.direction, step.revision, step.description, step.to_revision or "base", seconds
        )
    )


def apply_plan(session: Session, plan: list[planning.Step]) -> outcomes.Applied:
    started = time.perf_counter()
    start, end = plan[0].from_revision or "base", plan[-1].to_revision or "base"
    direction = plan[0].direction
    render.emit(render.Moving(direction, session.label, start, end))
    runner.run(
        session.connection,
        plan,
        on_step=report_step,
        who=session.who,
        timeouts=settings.timeouts(),
        say=render.note,
        lock=session.lock,
        budget=blocking.budget(),
    )
    elapsed = time.perf_counter() - started
    return outcomes.Applied(direction, session.label, start, end, len(plan), elapsed)


def guard_data(
    session: Session,
    at_risk: loss.Loss,
    *,
    unknown: str,
    allow_data_loss: bool,
    backup: str | None,
) -> None:
    """Refuse to destroy rows unless --allow-data-loss; with --backup, dump them first."""
    if unknown and not allow_data_loss:
        raise Refused(
            f"cannot tell what this would destroy: {unknown}.",
            "fix the migration; if it only fails inside a rehearsal's single transaction, "
            "check by hand, then pass --allow-data-loss (and --backup FILE to keep a copy)",
        )
    if not at_risk:
        return
    if backup is not None:
        from db import catalog, preview

        version = session.connection.dialect.server_version_info
        assert version is not None  # set by the dialect once connected
        preview.backup(session.url, int(version[0]), at_risk.tables, Path(backup))
        render.note(f"Backed up {', '.join(catalog.shown(t) for t in at_risk.tables)} to {backup}.")
    if not allow_data_loss:
        raise Refused(
            "this would destroy data: " + "; ".join(at_risk.lines) + ".",
            "pass --allow-data-loss to go ahead"
            + ("" if backup else ", and --backup FILE to keep a copy first"),
        )
    render.note("[yellow]Going ahead although it destroys:[/yellow] " + "; ".join(at_risk.lines))


def revision_now() -> str:
    """The target's revision, read on a fresh connection, for a run that was interrupted:
    what the server rolled back is already gone. Never starts the embedded server."""
    try:
        from db import embedded

        current = target_settings(target=_working_on)
        if current.uses_embedded and embedded.running(current.embedded_pgdata) is None:
            return "unknown (the embedded server is not running)"
        url = connect.target_url(current)
        engine = connect.engine_for(url, current, f"{settings.APPLICATION_NAME} (status)")
        with connect.connect(engine) as connection:
            return planning.current_revision(connection) or "base"
    except Exception as exc:  # the database may be what went away
        return f"unknown ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
