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
    history,
    lock,
    pooler,
    revisions,
    runner,
    settings,
    targets,
    urls,
)
from db.errors import ConfigError, DatabaseRefused, Refused
from db.output import say, step_line

if TYPE_CHECKING:
    from db import loss


@dataclass
class Target:
    settings: settings.Settings
    url: URL
    connection: Connection
    who: history.Who | None = None
    lock: lock.Held | None = None

    @property
    def label(self) -> str:
        where = "embedded " if self.settings.uses_embedded else ""
        return f"{where}{urls.redact(self.url)}"


def target_settings(lock_timeout: str | float | None = None) -> settings.Settings:
    """The settings, with the database of the target `--env` selected, if any."""
    current = settings.load(lock_timeout=lock_timeout)
    if (chosen := targets.selected_url()) is not None:
        current = dataclasses.replace(current, database_url=chosen)
    return current


def on_environment(
    env: str | None,
    run: Callable[[], None],
    *,
    changes: str | None = None,
    yes: bool = False,
    never_protected: bool = False,
    fleet: tuple[str, dict[str, object]] | None = None,
    parallel: int = 4,
    keep_going: bool = False,
    as_json: bool = False,
) -> None:
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
        fleets.run(
            chosen,
            task,
            options,
            run,
            parallel=parallel,
            keep_going=keep_going,
            as_json=as_json,
        )
        return
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
    with targets.use(chosen[0]):
        run()


@contextmanager
def open_target(lock_timeout: str | float | None = None) -> Iterator[Target]:
    """Connect to the configured database (starting the embedded one if need be)."""
    current = target_settings(lock_timeout)
    url = connect.target_url(current)
    with connect.connect(connect.engine_for(url, current)) as connection:
        yield Target(current, url, connection)


@contextmanager
def changing_target(
    lock_timeout: str | float | None = None,
    *,
    allow_changed: bool = False,
    verify: bool = True,
    bookkeeping: bool = True,
) -> Iterator[Target]:
    """open_target(), holding the migration lock, with history ready and checksums checked.

    Everything that reads the current revision must happen inside: another run may
    have moved it while we waited.
    """
    with open_target(lock_timeout) as target:
        refuse_standby(target)
        pooler.refuse_per_transaction(target.connection, target.label)
        # The target's engine, whose dialect is set up already; the lock's session names
        # itself (lock.LOCK_SESSION_NAME).
        engine = target.connection.engine
        with lock.migration_lock(engine, target.settings.lock_timeout, say) as held:
            target.lock = held
            if bookkeeping:
                history.ensure_table(target.connection)
                target.who = history.Who.here()
            if verify:
                for drift in checksums.verify(
                    target.connection,
                    revisions.script_directory(),
                    allow_changed=allow_changed,
                    who=target.who,
                ):
                    say(f"[yellow]Accepted a changed migration:[/yellow] {drift.what}")
            yield target


def refuse_standby(target: Target) -> None:
    """A hot standby takes the lock and reads like the primary; only the first write
    fails, inside a migration, where it looks like the migration's fault."""
    in_recovery = target.connection.execute(text("SELECT pg_is_in_recovery()")).scalar()
    target.connection.rollback()
    if in_recovery:
        raise failures.naming(
            DatabaseRefused(
                f"{target.label} is a read-only standby (pg_is_in_recovery() is true): "
                "migrations, plans and resets must run on the primary. Nothing was changed.",
                "point DATABASE_URL at the primary; read-only commands (status, history, "
                "verify, drift) work on a standby",
            ),
            settings.url_source(),
        )


def report_step(step: runner.Step, seconds: float) -> None:
    step_line("↑" if step.direction == "up" else "↓", step.revision, step.description, seconds)


def apply_plan(target: Target, plan: list[runner.Step], verb: str) -> None:
    started = time.perf_counter()
    start, end = plan[0].from_revision or "base", plan[-1].to_revision or "base"
    say(f"{verb} {target.label}: {start} → {end}")
    runner.run(
        target.connection,
        plan,
        on_step=report_step,
        who=target.who,
        timeouts=settings.timeouts(),
        say=say,
        lock=target.lock,
        budget=blocking.budget(),
    )
    elapsed = time.perf_counter() - started
    say(f"Done: at {end} ({len(plan)} migration{'s' if len(plan) != 1 else ''}, {elapsed:.2f} s).")


def guard_data(
    target: Target,
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

        server_major = target.connection.dialect.server_version_info[0]
        preview.backup(target.url, server_major, at_risk.tables, Path(backup))
        say(f"Backed up {', '.join(catalog.shown(t) for t in at_risk.tables)} to {backup}.")
    if not allow_data_loss:
        raise Refused(
            "this would destroy data: " + "; ".join(at_risk.lines) + ".",
            "pass --allow-data-loss to go ahead"
            + ("" if backup else ", and --backup FILE to keep a copy first"),
        )
    say("[yellow]Going ahead although it destroys:[/yellow] " + "; ".join(at_risk.lines))


def revision_now() -> str:
    """The target's revision, read on a fresh connection, for a run that was interrupted:
    what the server rolled back is already gone. Never starts the embedded server."""
    try:
        from db import embedded

        current = target_settings()
        if current.uses_embedded and embedded.running(current.embedded_pgdata) is None:
            return "unknown (the embedded server is not running)"
        url = connect.target_url(current)
        engine = connect.engine_for(url, current, f"{settings.APPLICATION_NAME} (status)")
        with connect.connect(engine) as connection:
            return runner.current_revision(connection) or "base"
    except Exception as exc:  # the database may be what went away
        return f"unknown ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
