"""What each `invoke migrate.*` and `invoke db.*` task does. tasks.py only parses
arguments and turns UserError into a clean exit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from db import (
    catalog,
    checksums,
    connect,
    embedded,
    history,
    lock,
    preview,
    revisions,
    runner,
    settings,
    urls,
)
from db.errors import CheckFailed, ChecksumMismatch, ConfigError, Refused, RevisionError
from db.output import console, say, step_line


@dataclass
class Target:
    settings: settings.Settings
    url: URL
    connection: Connection
    who: history.Who | None = None

    @property
    def label(self) -> str:
        where = "embedded " if self.settings.uses_embedded else ""
        return f"{where}{urls.redact(self.url)}"


@contextmanager
def open_target(lock_timeout: str | float | None = None) -> Iterator[Target]:
    """Connect to the configured database (starting the embedded one if need be)."""
    current = settings.load(lock_timeout=lock_timeout)
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
        lock_engine = connect.engine_for(
            target.url, target.settings, f"{settings.APPLICATION_NAME} (lock)"
        )
        with lock.migration_lock(lock_engine, target.settings.lock_timeout, say):
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


def _report(step: runner.Step, seconds: float) -> None:
    step_line("↑" if step.direction == "up" else "↓", step.revision, step.description, seconds)


def _apply(target: Target, plan: list[runner.Step], verb: str) -> None:
    started = time.perf_counter()
    start, end = plan[0].from_revision or "base", plan[-1].to_revision or "base"
    say(f"{verb} {target.label}: {start} → {end}")
    runner.run(
        target.connection,
        plan,
        on_step=_report,
        who=target.who,
        timeouts=settings.timeouts(),
        say=say,
    )
    elapsed = time.perf_counter() - started
    say(f"Done: at {end} ({len(plan)} migration{'s' if len(plan) != 1 else ''}, {elapsed:.2f} s).")


def _plan(
    current: str | None,
    direction: str,
    label: str,
    *,
    to: str | None = None,
    steps: int | None = None,
) -> list[runner.Step]:
    """The steps of an up or down from `current`, refused early when they make no sense."""
    script = revisions.script_directory()
    if direction == "up":
        return runner.plan_upgrade(script, current, to or "head")
    if steps is not None and to is not None:
        raise ConfigError("give --steps or --to, not both.")
    if current is None:
        raise RevisionError(
            f"nothing to roll back: {label} is at base.",
            "`invoke migrate.status` shows what is applied",
        )
    return runner.plan_downgrade(script, current, steps=steps, target=to)


def _dry_run(
    direction: str, *, to: str | None, steps: int | None = None, from_rev: str | None
) -> None:
    """Print the SQL the command would run; connect only to read the current revision."""
    if from_rev is not None:
        current = revisions.resolve(revisions.script_directory(), from_rev)
        where = f"a database at {from_rev} (--from)"
    else:
        with open_target() as target:
            current = runner.current_revision(target.connection)
            where = target.label
    plan = _plan(current, direction, where, to=to, steps=steps)
    end = plan[-1].to_revision or "base" if plan else current or "base"
    # Plain print: SQL must reach stdout exactly, never through Rich's markup.
    print(f"-- Dry run of migrate.{direction} on {where}: {current or 'base'} -> {end}.")
    print("-- Nothing below was executed, and no lock was taken.")
    if not plan:
        print("-- Nothing to do.")
        return
    print(preview.offline_sql(current, plan), end="")


def _dry_run_asked(dry_run: bool, from_rev: str | None) -> bool:
    if from_rev is not None and not dry_run:
        raise ConfigError("--from only goes with --dry-run.")
    return dry_run


def migrate_up(
    to: str = "head",
    lock_timeout: str | None = None,
    allow_changed: bool = False,
    dry_run: bool = False,
    from_rev: str | None = None,
) -> None:
    if _dry_run_asked(dry_run, from_rev):
        _dry_run("up", to=to, from_rev=from_rev)
        return
    with changing_target(lock_timeout, allow_changed=allow_changed) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, "up", target.label, to=to)
        if not plan:
            say(f"Nothing to apply: {target.label} is at {current or 'base'}.")
            return
        _apply(target, plan, "Upgrading")


def _guard(
    target: Target,
    *,
    at_risk: list[str],
    tables: list[str],
    unknown: str,
    allow_data_loss: bool,
    backup: str | None,
) -> None:
    """Refuse to destroy rows unless --allow-data-loss; with --backup, dump them first."""
    if unknown and not allow_data_loss:
        raise Refused(
            f"cannot tell what this would drop: {unknown}.",
            "check by hand, then pass --allow-data-loss (and --backup FILE to keep a copy)",
        )
    if not at_risk:
        return
    if backup is not None:
        server_major = target.connection.dialect.server_version_info[0]
        preview.backup(target.url, server_major, tables, Path(backup))
        say(f"Backed up {', '.join(catalog.shown(t) for t in tables)} to {backup}.")
    if not allow_data_loss:
        raise Refused(
            "this would destroy data: " + "; ".join(at_risk) + ".",
            "pass --allow-data-loss to go ahead"
            + ("" if backup else ", and --backup FILE to keep a copy first"),
        )
    say("[yellow]Going ahead although it destroys:[/yellow] " + "; ".join(at_risk))


def migrate_down(
    steps: int | None = None,
    to: str | None = None,
    lock_timeout: str | None = None,
    allow_changed: bool = False,
    dry_run: bool = False,
    from_rev: str | None = None,
    allow_data_loss: bool = False,
    backup: str | None = None,
) -> None:
    if _dry_run_asked(dry_run, from_rev):
        _dry_run("down", to=to, steps=steps, from_rev=from_rev)
        return
    with changing_target(lock_timeout, allow_changed=allow_changed) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, "down", target.label, to=to, steps=steps)
        if not plan:
            say(f"Nothing to roll back: {target.label} is already at {current}.")
            return
        rehearsed = preview.rehearse(target.connection, plan)
        stopped = rehearsed.rehearsal.stopped_before
        _guard(
            target,
            at_risk=preview.data_at_risk(target.connection, rehearsed),
            tables=preview.affected_tables(rehearsed),
            unknown=f"the rehearsal stopped before {stopped.revision}: {rehearsed.rehearsal.reason}"
            if stopped
            else "",
            allow_data_loss=allow_data_loss,
            backup=backup,
        )
        _apply(target, plan, "Downgrading")


def migrate_plan(
    down: bool = False,
    steps: int | None = None,
    to: str | None = None,
    lock_timeout: str | None = None,
) -> None:
    """Rehearse the pending migrations (or a rollback) in one transaction, then roll back."""
    if not down and steps is not None:
        raise ConfigError("--steps goes with --down.")
    direction = "down" if down else "up"
    with changing_target(lock_timeout, bookkeeping=False) as target:
        current = runner.current_revision(target.connection)
        plan = _plan(current, direction, target.label, to=to, steps=steps)
        if not plan:
            say(f"Nothing to plan: {target.label} is at {current or 'base'}.")
            return
        start, end = plan[0].from_revision or "base", plan[-1].to_revision or "base"
        say(
            f"Plan for {target.label}: {start} → {end}, rehearsed in one transaction that is "
            "rolled back."
        )
        started = time.perf_counter()
        rehearsed = preview.rehearse(target.connection, plan)
        at_risk = preview.data_at_risk(target.connection, rehearsed) if down else []
    for step, seconds in rehearsed.rehearsal.steps:
        _report(step, seconds)
    if rehearsed.rehearsal.stopped_before is not None:
        say(
            f"[yellow]Stopped before {rehearsed.rehearsal.stopped_before.revision}:[/yellow] "
            f"{rehearsed.rehearsal.reason}. The plan covers only the steps above."
        )
    diff = rehearsed.schema_diff()
    say(f"Schema changes ({len(diff)}):" if diff else "Schema changes: none.")
    for line in diff:
        console.print(f"  {line}", markup=False, highlight=False)
    if at_risk:
        say("[yellow]Data this rollback would destroy:[/yellow] " + "; ".join(at_risk))
    say(f"Rolled back after {time.perf_counter() - started:.2f} s: nothing was changed.")


_VERSION_TABLE_DDL = re.compile(
    rf"CREATE TABLE {settings.BOOKKEEPING_SCHEMA}\.alembic_version \(.*?\);\n", re.S
)


def migrate_lint() -> None:
    """squawk on each migration's offline SQL, revision by revision."""
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(squawk).exists() and shutil.which("squawk") is None:
        raise ConfigError("squawk is not installed.", "pip install squawk-cli (or: nox -s lint)")
    config = settings.PROJECT_ROOT / ".squawk.toml"
    failed = []
    with tempfile.TemporaryDirectory(prefix="squawk-") as folder:
        for script in revisions.chain(revisions.script_directory()):
            step = runner.Step(script, "up")
            sql = preview.offline_sql(script.down_revision, [step], bookkeeping=False)
            # Alembic's own version table is not ours to lint (its varchar(32) is by design).
            sql = _VERSION_TABLE_DDL.sub("", sql)
            path = Path(folder) / f"{step.path.stem}.sql"
            path.write_text(sql)
            done = subprocess.run(
                [squawk, "--config", str(config), "--reporter", "gcc", str(path)],
                capture_output=True,
                text=True,
                env={**os.environ, "NO_COLOR": "1"},
            )
            if done.returncode == 0:
                say(f"  {script.revision}  {step.path.name}: [green]ok[/green]")
                continue
            failed.append(script.revision)
            say(f"  {script.revision}  {step.path.name}: [red]squawk found problems[/red]")
            console.print(
                (done.stdout + done.stderr).replace(f"{folder}/", ""), markup=False, highlight=False
            )
    if failed:
        raise CheckFailed(
            f"squawk found problems in {', '.join(failed)}.",
            "fix the migration (e.g. CREATE INDEX CONCURRENTLY inside "
            "op.get_context().autocommit_block()), or explain an exception in .squawk.toml",
        )
    say("All migrations pass squawk.")


def _last_applied(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["success"] and row["direction"] == "up":
            latest[row["revision"]] = row
    return latest


def _who(row: dict[str, Any]) -> str:
    return f"{row['os_user']}@{row['host']} as {row['db_user']}"


def migrate_status(as_json: bool = False) -> None:
    with open_target() as target:
        current = runner.current_revision(target.connection)
        script = revisions.script_directory()
        applied_steps = (
            runner.plan_downgrade(script, current, steps=None, target=revisions.BASE)
            if current
            else []
        )
        applied_by = _last_applied(history.rows(target.connection))
    applied = {s.revision for s in applied_steps}
    rows = []
    for migration in revisions.chain(script):
        row = applied_by.get(migration.revision) if migration.revision in applied else None
        rows.append(
            {
                "revision": migration.revision,
                "description": migration.doc,
                "state": "applied" if migration.revision in applied else "pending",
                "applied_at": row["started_at"] if row else None,
                "applied_by": _who(row) if row else None,
                "file": revisions.path_of(migration).name,
            }
        )
    if as_json:
        status = {"database": urls.redact(target.url), "current": current, "migrations": rows}
        print(json.dumps(status, indent=2, default=lambda value: value.isoformat()))
        return
    say(f"Database: {target.label}")
    say(f"Current:  {current or 'base (nothing applied)'}")
    table = Table(show_edge=False, pad_edge=False)
    for column in ("revision", "state", "description", "applied at", "applied by", "file"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["revision"],
            "applied" if row["state"] == "applied" else "[yellow]pending[/yellow]",
            row["description"],
            f"{row['applied_at']:%Y-%m-%d %H:%M:%S %Z}" if row["applied_at"] else "",
            row["applied_by"] or "",
            row["file"],
        )
    console.print(table)
    pending = sum(row["state"] == "pending" for row in rows)
    say(
        f"{len(rows) - pending} applied, {pending} pending."
        + (" Run `invoke migrate.up` to apply them." if pending else "")
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def migrate_history(as_json: bool = False, limit: int | None = None) -> None:
    with open_target() as target:
        rows = history.rows(target.connection, limit=limit)
    if as_json:
        print(json.dumps([_jsonable(r) for r in rows], indent=2))
        return
    if not rows:
        say(f"No history yet on {target.label}: nothing has been applied by this tool.")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("id", "started at", "step", "revision", "description", "took", "result", "by"):
        table.add_column(column)
    for row in rows:
        step = f"{row['from_revision'] or 'base'} → {row['to_revision'] or 'base'}"
        if row["direction"] == "accept-changed":
            step = "accept changed file"
        result = "ok" if row["success"] else f"[red]FAILED[/red] {row['error']}"
        if row["note"]:
            result += f" ({row['note']})"
        table.add_row(
            str(row["id"]),
            f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
            f"{row['direction']:<4} {step}",
            row["revision"],
            row["description"],
            f"{row['duration_ms']:.0f} ms",
            result,
            _who(row),
        )
    console.print(table)


def migrate_verify() -> None:
    with open_target() as target:
        script = revisions.script_directory()
        drift = checksums.find_drift(target.connection, script)
        recorded = history.applied_checksums(target.connection)
    if drift:
        raise ChecksumMismatch(
            f"{len(drift)} applied migration(s) changed since they were applied: "
            + "; ".join(d.what for d in drift)
            + ".",
            "restore them (git checkout -- FILE) and put changes in a new migration; "
            "`invoke migrate.up --allow-changed` accepts a harmless edit and records it",
        )
    say(f"OK: the {len(recorded)} applied migration(s) match their recorded checksums.")


def migrate_roundtrip(server_kind: str | None = None) -> None:
    from db import throwaway
    from db.roundtrip import cycle, report

    if server_kind is not None and (reason := throwaway.why_not(server_kind)) is not None:
        raise ConfigError(f"cannot start a {server_kind} server here: {reason}.")
    with throwaway.throwaway_server(kind=server_kind) as server:
        say(f"Roundtrip on a throwaway {server.kind} server (PostgreSQL {server.version}).")
        result = cycle.run(server, on_result=report.live)
    report.summary(result)
    if not result.ok:
        raise CheckFailed(
            f"the roundtrip found {len(result.failures)} problem(s); see the report above.",
            "fix the migration it names, then run `invoke migrate.roundtrip` again",
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
    root = settings.PROJECT_ROOT
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    say(f"Created {shown} (revision {rev_id}).")
    say("Write upgrade() and downgrade(), then apply it with `invoke migrate.up`.")


def _write_generated(path: Path, content: str, task: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else None
    path.write_text(content)
    shown = path.relative_to(settings.PROJECT_ROOT)
    if old == content:
        say(f"{shown} is up to date.")
    else:
        say(f"Wrote {shown}; commit it with the migration (`invoke {task}` regenerates it).")


def db_dump() -> None:
    """Regenerate db/schema.sql from a throwaway database at head."""
    from db import schema_docs

    with schema_docs.database_at_head() as (server, database, _connection):
        content = schema_docs.schema_sql(server, database)
    _write_generated(schema_docs.SCHEMA_SQL, content, "db.dump")


def db_diagram() -> None:
    """Regenerate docs/schema.md (the Mermaid ER diagram) from a throwaway database at head."""
    from db import schema_docs

    with schema_docs.database_at_head() as (_server, _database, connection):
        content = schema_docs.schema_markdown(connection)
    _write_generated(schema_docs.SCHEMA_DOC, content, "db.diagram")


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
    conninfo, password = urls.conninfo_and_password(url)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
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


def db_reset(
    force: bool = False,
    lock_timeout: str | None = None,
    allow_data_loss: bool = False,
    backup: str | None = None,
) -> None:
    current = settings.load(lock_timeout=lock_timeout)
    url = current.database_url
    # Decided before connecting: a typo in a production URL must not get that far.
    if url is not None and not (force or urls.is_local(url)):
        raise Refused(
            f"refusing to reset {urls.redact(url)}: it is not a local database, and a reset "
            "drops every table in it.",
            "pass --force if you really mean to wipe it",
        )
    # No checksum check: everything is dropped and re-applied from today's files.
    with changing_target(lock_timeout, verify=False) as target:
        tables = catalog.table_columns(target.connection)
        at_risk = catalog.holdings(target.connection, tables, {})
        target.connection.rollback()
        _guard(
            target,
            at_risk=at_risk,
            tables=sorted(tables),
            unknown="",
            allow_data_loss=allow_data_loss,
            backup=backup,
        )
        say(f"Resetting {target.label}: dropping schemas {', '.join(settings.APP_SCHEMAS)}")
        with target.connection.begin():
            _recreate_app_schemas(target.connection)
        plan = runner.plan_upgrade(revisions.script_directory(), None, "head")
        if plan:
            _apply(target, plan, "Upgrading")
