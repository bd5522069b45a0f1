"""The read-only commands: status, history, verify."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import DBAPIError

from db import (
    checksums,
    history,
    output,
    revisions,
    runner,
    targets,
    urls,
)
from db.commands.target import (
    open_target,
)
from db.errors import ChecksumMismatch, UserError
from db.output import say


def _last_applied(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["success"] and row["direction"] == "up":
            latest[row["revision"]] = row
    return latest


def _who(row: dict[str, Any]) -> str:
    return f"{row['os_user']}@{row['host']} as {row['db_user']}"


def _environment_row(target: targets.Target) -> dict[str, Any]:
    """One database of an environment, as `status --env` shows it; never raises for a
    database that cannot be reached or read: that is the row's result."""
    row: dict[str, Any] = {
        "environment": target.environment,
        "database": urls.redact(target.url) if target.url is not None else "default",
        "revision": None,
        "pending": None,
        "last_applied": None,
        "applied_by": None,
        "edited_files": None,
        "drift": "not checked",
        "error": None,
    }
    try:
        with targets.use(target), open_target() as opened:
            current = runner.current_revision(opened.connection)
            script = revisions.script_directory()
            chain = [s.revision for s in revisions.chain(script)]
            applied = chain.index(current) + 1 if current in chain else 0
            steps = [
                r
                for r in history.rows(opened.connection)
                if r["success"] and r["direction"] == "up"
            ]
            drift = checksums.find_drift(opened.connection, script)
    except (UserError, DBAPIError) as error:
        message = error.message if isinstance(error, UserError) else str(error.orig)
        row["error"] = " ".join(message.split())
        return row
    row.update(
        revision=current or "base",
        pending=len(chain) - applied,
        last_applied=steps[-1]["started_at"] if steps else None,
        applied_by=_who(steps[-1]) if steps else None,
        edited_files=[d.what for d in drift],
    )
    return row


def _status_of_environments(env: str, as_json: bool) -> None:
    rows = [_environment_row(target) for target in targets.resolve(env)]
    if as_json:
        print(json.dumps(rows, indent=2, default=lambda value: value.isoformat()))
        return
    output.table(
        ["environment", "database", "revision", "pending", "last applied", "by", "edited", "drift"],
        [
            [
                row["environment"],
                row["database"],
                row["revision"] or f"[red]unreachable[/red]: {row['error']}",
                "" if row["pending"] is None else str(row["pending"]),
                f"{row['last_applied']:%Y-%m-%d %H:%M}" if row["last_applied"] else "",
                row["applied_by"] or "",
                "" if row["edited_files"] is None else str(len(row["edited_files"])),
                row["drift"],
            ]
            for row in rows
        ],
    )
    unreachable = sum(row["error"] is not None for row in rows)
    say(
        f"{len(rows)} database(s), {unreachable} unreachable."
        + (" Drift is not checked yet (issue: migrate.drift)." if rows else "")
    )


def migrate_status(as_json: bool = False, env: str | None = None) -> None:
    if env is not None:
        _status_of_environments(env, as_json)
        return
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
    output.table(
        ["revision", "state", "description", "applied at", "applied by", "file"],
        [
            [
                row["revision"],
                "applied" if row["state"] == "applied" else "[yellow]pending[/yellow]",
                row["description"],
                f"{row['applied_at']:%Y-%m-%d %H:%M:%S %Z}" if row["applied_at"] else "",
                row["applied_by"] or "",
                row["file"],
            ]
            for row in rows
        ],
    )
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
    lines = []
    for row in rows:
        step = f"{row['from_revision'] or 'base'} → {row['to_revision'] or 'base'}"
        if row["direction"] == "accept-changed":
            step = "accept changed file"
        elif row["direction"] == "reset":
            step = f"{row['from_revision'] or 'base'} → (reset)"
        result = "ok" if row["success"] else f"[red]FAILED[/red] {row['error']}"
        if row["note"]:
            result += f" ({row['note']})"
        lines.append(
            [
                str(row["id"]),
                f"{row['started_at']:%Y-%m-%d %H:%M:%S}",
                f"{row['direction']:<4} {step}",
                row["revision"],
                row["description"],
                f"{row['duration_ms']:.0f} ms",
                result,
                _who(row),
            ]
        )
    output.table(
        ["id", "started at", "step", "revision", "description", "took", "result", "by"], lines
    )


def migrate_verify() -> None:
    with open_target() as target:
        script = revisions.script_directory()
        recorded = history.applied_checksums(target.connection)
        drift = checksums.find_drift(target.connection, script, recorded)
    if drift:
        raise ChecksumMismatch(
            f"{len(drift)} applied migration(s) changed since they were applied: "
            + "; ".join(d.what for d in drift)
            + ".",
            "restore them (git checkout -- FILE) and put changes in a new migration; "
            "`invoke migrate.up --allow-changed` accepts a harmless edit and records it",
        )
    say(f"OK: the {len(recorded)} applied migration(s) match their recorded checksums.")
