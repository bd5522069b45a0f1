"""The read-only commands: status, history, verify, drift."""

from __future__ import annotations

from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError

from db import (
    checksums,
    drift,
    fanout,
    history,
    outcomes,
    planning,
    render,
    revisions,
    targets,
    urls,
)
from db.commands.target import (
    open_target,
)
from db.errors import ChecksumMismatch, RevisionError, UserError


def _last_applied(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["success"] and row["direction"] == "up":
            latest[row["revision"]] = row
    return latest


def _environment_row(target: targets.Target, script: ScriptDirectory | UserError) -> dict[str, Any]:
    """One database of an environment, as `status --env` shows it; never raises for a
    database that cannot be reached or read: that is the row's result. `script`: the
    chain, or why it does not load."""
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
        with open_target(target=target) as opened:
            current = planning.current_revision(opened.connection)
            if isinstance(script, UserError):
                raise script
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
            drift = checksums.changed_files(opened.connection, script)
    except (UserError, DBAPIError) as error:
        message = error.message if isinstance(error, UserError) else str(error.orig)
        row["error"] = " ".join(message.split())
        return row
    row.update(
        revision=current or "base",
        pending=len(chain) - applied,
        last_applied=steps[-1]["started_at"] if steps else None,
        applied_by=render.who(steps[-1]) if steps else None,
        edited_files=[d.what for d in drift],
    )
    return row


def _drift_word(finding: drift.Finding) -> str:
    if finding.error is not None:
        return "not checked"
    return f"yes ({len(finding.differences or [])})" if finding.drifted else "no"


def _status_of_environments(
    env: str, as_json: bool, check_drift: bool
) -> outcomes.EnvironmentsStatus:
    # --env all on a laptop: an environment whose variable is not set is a row, so the
    # others still show.
    chosen = targets.resolve(env, lenient=env == targets.ALL)
    # Loaded here, once: the rows are read in threads, and loading imports every file.
    script: ScriptDirectory | UserError
    try:
        script = revisions.script_directory()
    except UserError as error:
        script = error
    rows = [
        done.value or {}
        for done in fanout.over_databases(chosen, lambda t: _environment_row(t, script))
    ]
    if check_drift:
        for row, finding in zip(rows, drift.check(chosen), strict=True):
            row["drift"] = _drift_word(finding)
    return outcomes.EnvironmentsStatus(rows, check_drift, as_json=as_json)


def migrate_status(
    as_json: bool = False, env: str | None = None, check_drift: bool = False
) -> outcomes.Status | outcomes.EnvironmentsStatus:
    if env is not None:
        return _status_of_environments(env, as_json, check_drift)
    with open_target() as session:
        current = planning.current_revision(session.connection)
        script = revisions.script_directory()
        applied_steps = (
            planning.plan_downgrade(script, current, steps=None, target=revisions.BASE)
            if current
            else []
        )
        applied_by = _last_applied(history.rows(session.connection))
        # As verify sees them; status only shows them (verify is the check that fails).
        changed = checksums.changed_files(session.connection, script)
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
                "applied_by": render.who(row) if row else None,
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
    return outcomes.Status(
        urls.redact(session.url),
        session.label,
        current,
        rows,
        [d.what for d in changed],
        drifted,
        as_json=as_json,
    )


def migrate_history(
    as_json: bool = False, limit: int | None = None, *, target: targets.Target = targets.DEFAULT
) -> outcomes.History:
    with open_target(target=target) as session:
        rows = history.rows(session.connection, limit=limit)
    return outcomes.History(session.label, rows, as_json=as_json)


def migrate_verify(*, target: targets.Target = targets.DEFAULT) -> outcomes.Verified:
    with open_target(target=target) as session:
        script = revisions.script_directory()
        recorded = history.applied_checksums(session.connection)
        drift = checksums.changed_files(session.connection, script, recorded)
    checksums.refuse_if_ahead(drift)
    if drift:
        raise ChecksumMismatch(
            f"{len(drift)} applied migration(s) changed since they were applied: "
            + "; ".join(d.what for d in drift)
            + ".",
            "restore them as they were applied (git checkout -- FILE, once committed) and "
            "put changes in a new migration; `invoke migrate.up --allow-changed` accepts a "
            "harmless edit (a reformat, a comment) and records it",
        )
    return outcomes.Verified(len(recorded))


def migrate_drift(
    env: str | None = None, parallel: int = 4, as_json: bool = False
) -> outcomes.DriftReport:
    chosen = targets.resolve(env, lenient=env == targets.ALL)
    several = len(chosen) > 1

    def on_read(finding: drift.Finding) -> None:
        if several and not as_json:
            what = finding.result if finding.error else f"at {finding.revision or 'base'}"
            where = finding.database or finding.target.label
            render.note(f"  read {where}: {what} ({finding.seconds:.1f} s)")

    if several and not as_json:
        render.note(f"migrate.drift on {len(chosen)} databases, {parallel} at a time:")
    findings = drift.check(chosen, parallel=parallel, on_read=on_read)
    return outcomes.DriftReport(findings, several, as_json=as_json)
