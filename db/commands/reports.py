"""The read-only commands: status, history, verify."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import DBAPIError

from db import (
    checksums,
    drift,
    fanout,
    history,
    outcomes,
    output,
    revisions,
    runner,
    targets,
    urls,
)
from db.commands.target import (
    open_target,
)
from db.errors import CheckFailed, ChecksumMismatch, RevisionError, UserError
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
    if target.unset is not None:
        row["database"] = None
        row["error"] = f"{target.unset} is not set"
        return row
    try:
        with targets.use(target), open_target() as opened:
            current = runner.current_revision(opened.connection)
            script = revisions.script_directory()
            chain = [s.revision for s in revisions.chain(script)]
            if current is not None and current not in chain:
                raise RevisionError(
                    f"at revision {current!r}, which this checkout does not have",
                    "pull the latest main",
                )
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


def _drift_word(finding: drift.Finding) -> str:
    if finding.error is not None:
        return "not checked"
    return f"yes ({len(finding.differences or [])})" if finding.drifted else "no"


def _status_of_environments(env: str, as_json: bool, check_drift: bool) -> None:
    # --env all on a laptop: an environment whose variable is not set is a row, so the
    # others still show.
    chosen = targets.resolve(env, lenient=env == targets.ALL)
    # One at a time: targets.use() names the URL's variable through the process's
    # environment, which threads would share.
    rows = [
        done.value or {} for done in fanout.over_databases(chosen, _environment_row, parallel=1)
    ]
    if check_drift:
        for row, finding in zip(rows, drift.check(chosen), strict=True):
            row["drift"] = _drift_word(finding)
    if as_json:
        print(json.dumps(rows, indent=2, default=lambda value: value.isoformat()))
        return
    output.table(
        ["environment", "database", "revision", "pending", "last applied", "by", "edited", "drift"],
        [
            [
                row["environment"],
                row["database"] or "",
                row["revision"]
                or f"[red]{output.brief(row['error'], row['database'] or '')}[/red]",
                "" if row["pending"] is None else str(row["pending"]),
                f"{row['last_applied']:%Y-%m-%d %H:%M}" if row["last_applied"] else "",
                row["applied_by"] or "",
                "" if row["edited_files"] is None else str(len(row["edited_files"])),
                row["drift"],
            ]
            for row in rows
        ],
    )
    unread = sum(row["error"] is not None for row in rows)
    say(
        f"{len(rows)} database(s), {unread} could not be read."
        + ("" if check_drift else " Drift not checked: add --drift (or run migrate.drift).")
    )


def migrate_status(
    as_json: bool = False, env: str | None = None, check_drift: bool = False
) -> None:
    if env is not None:
        _status_of_environments(env, as_json, check_drift)
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
        # As verify sees them; status only shows them (verify is the check that fails).
        changed = checksums.find_drift(target.connection, script)
    applied = {s.revision for s in applied_steps}
    edited = {d.revision for d in changed if d.actual is not None}
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
                "changed": migration.revision in edited,
            }
        )
    drifted = None
    if check_drift:
        [finding] = drift.check(targets.resolve(None))
        if finding.error is not None:
            raise finding.error
        drifted = finding.differences
    if as_json:
        status = {
            "database": urls.redact(target.url),
            "current": current,
            "migrations": rows,
            "changed_since_applied": [d.what for d in changed],
        }
        if drifted is not None:
            status["drift"] = drifted
        print(json.dumps(status, indent=2, default=lambda value: value.isoformat()))
        return
    say(f"Database: {target.label}")
    say(f"Current:  {current or 'base (nothing applied)'}")
    output.table(
        ["revision", "state", "description", "applied at", "applied by", "file"],
        [
            [
                row["revision"],
                "[red]applied, edited[/red]"
                if row["changed"]
                else "applied"
                if row["state"] == "applied"
                else "[yellow]pending[/yellow]",
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
    if changed:
        say(
            f"Changed since applied: {'; '.join(d.what for d in changed)}. `invoke "
            "migrate.verify` fails on this (exit 7): restore the file and put the change in "
            "a new migration (README, Troubleshooting)."
        )
    if drifted is not None:
        say(
            f"Drift: {len(drifted)} difference(s) from what the migrations make; "
            "`invoke migrate.drift` lists them."
            if drifted
            else "Drift: none; the database holds what the migrations make."
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


def migrate_verify() -> outcomes.Verified:
    with open_target() as target:
        script = revisions.script_directory()
        recorded = history.applied_checksums(target.connection)
        drift = checksums.find_drift(target.connection, script, recorded)
    checksums.refuse_if_ahead(drift)
    if drift:
        raise ChecksumMismatch(
            f"{len(drift)} applied migration(s) changed since they were applied: "
            + "; ".join(d.what for d in drift)
            + ".",
            "restore them (git checkout -- FILE) and put changes in a new migration; "
            "`invoke migrate.up --allow-changed` accepts a harmless edit and records it",
        )
    return outcomes.Verified(len(recorded))


def _drift_summary(findings: list[drift.Finding]) -> None:
    """Raise what the findings say: exit 8 when a database drifted, else the first error's
    code when one could not be checked."""
    drifted = [f for f in findings if f.drifted]
    broken = [f for f in findings if f.error is not None]
    if drifted:
        names = ", ".join(f.database for f in drifted[:3]) + (", …" if len(drifted) > 3 else "")
        raise CheckFailed(
            f"{len(drifted)} of {len(findings)} database(s) drifted from what their "
            f"migrations make: {names}"
            + (f"; {len(broken)} could not be checked" if broken else "")
            + ".",
            "put an intended change in a migration (`invoke migrate.new`); undo the others "
            "by hand; each difference is listed above (+ only in the database, - missing "
            "from it, ~ different)",
        )
    if broken:
        first = broken[0]
        assert first.error is not None
        if len(findings) == 1:
            raise first.error
        error = UserError(
            f"{len(broken)} of {len(findings)} database(s) could not be checked "
            f"(first: {first.database or first.target.label}: {first.result}).",
            first.error.hint,
        )
        error.exit_code = first.error.exit_code
        raise error


def migrate_drift(env: str | None = None, parallel: int = 4, as_json: bool = False) -> None:
    chosen = targets.resolve(env, lenient=env == targets.ALL)
    several = len(chosen) > 1

    def on_read(finding: drift.Finding) -> None:
        if several and not as_json:
            what = finding.result if finding.error else f"at {finding.revision or 'base'}"
            where = finding.database or finding.target.label
            say(f"  read {where}: {what} ({finding.seconds:.1f} s)")

    if several and not as_json:
        say(f"migrate.drift on {len(chosen)} databases, {parallel} at a time:")
    findings = drift.check(chosen, parallel=parallel, on_read=on_read)
    if as_json:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            where = f"{finding.database} at {finding.revision or 'base'}"
            if finding.note:
                say(f"[yellow]Note[/yellow] for {finding.database}: {finding.note}.")
            if finding.drifted:
                assert finding.differences is not None
                say(
                    f"[red]Drift[/red] on {where}: {len(finding.differences)} difference(s) "
                    "from what the migrations make there:"
                )
                for line in finding.differences:
                    say(f"  {line}", markup=False)
            elif finding.differences is not None and not several:
                say(f"No drift: {where} holds what the migrations make there.")
        if several:
            output.table(
                ["database", "revision", "result", "seconds"],
                [
                    [
                        f.database or f.target.label,
                        f.revision or ("base" if f.error is None else ""),
                        f.result,
                        f"{f.seconds:.1f}",
                    ]
                    for f in findings
                ],
            )
    _drift_summary(findings)
