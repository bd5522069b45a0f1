"""The read-only commands: status, history, verify."""

from __future__ import annotations

import json
from typing import Any

from db import (
    checksums,
    history,
    output,
    revisions,
    runner,
    urls,
)
from db.commands.target import (
    open_target,
)
from db.errors import ChecksumMismatch
from db.output import say


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
