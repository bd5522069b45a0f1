"""The one place where commands meet the reader: `show()` renders a command's outcome
(db/outcomes.py) as text or JSON, and `emit()` is the sink for what must appear while a
command runs (a step done, a wait for the lock). Whoever else wants to know (a fleet's
child reporting where its database ended) listens to the same sink."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from db import outcomes, output
from db.output import say


@dataclass(frozen=True)
class Note:
    """A line of progress."""

    text: str
    markup: bool = True


@dataclass(frozen=True)
class Moving:
    """An up or down starts: `start` → `end` on `database`."""

    direction: str
    database: str
    start: str
    end: str


@dataclass(frozen=True)
class StepDone:
    """One migration applied or rolled back (or rehearsed); `to_revision` is where it left
    the database."""

    direction: str
    revision: str
    description: str
    to_revision: str
    seconds: float


Event = Note | Moving | StepDone

_listeners: list[Callable[[Event], None]] = []

VERBS = {"up": "Upgrading", "down": "Downgrading"}


def emit(event: Event) -> None:
    for listener in _listeners:
        listener(event)
    if isinstance(event, Note):
        say(event.text, markup=event.markup)
    elif isinstance(event, Moving):
        say(f"{VERBS[event.direction]} {event.database}: {event.start} → {event.end}")
    else:
        output.step_line(
            "↑" if event.direction == "up" else "↓",
            event.revision,
            event.description,
            event.seconds,
        )


def note(text: str) -> None:
    """A line of progress (the shape runner's and lock's `say` callbacks take)."""
    emit(Note(text))


@contextmanager
def listening(listener: Callable[[Event], None]) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=lambda value: value.isoformat()))


def deliver(outcome: object) -> None:
    """Show what a command returned (an Outcome; commands with nothing to show return
    None), then raise the error it ends with, if any."""
    if not isinstance(outcome, outcomes.Outcome):
        return
    show(outcome)
    if (problem := outcome.problem()) is not None:
        raise problem


def show(outcome: outcomes.Outcome) -> None:
    shown = _SHOWN[type(outcome)]
    if outcome.as_json and shown[1] is not None:
        _print_json(shown[1](outcome))
    else:
        shown[0](outcome)


def _applied(outcome: outcomes.Applied) -> None:
    if not outcome.steps:
        if outcome.direction == "up":
            say(f"Nothing to apply: {outcome.database} is at {outcome.start}.")
        else:
            say(f"Nothing to roll back: {outcome.database} is already at {outcome.start}.")
        return
    count = f"{outcome.steps} migration{'s' if outcome.steps != 1 else ''}"
    say(f"Done: at {outcome.end} ({count}, {outcome.seconds:.2f} s).")


def plan_document(planned: outcomes.Planned) -> dict[str, Any]:
    rehearsed = planned.rehearsed
    rehearsal = rehearsed.rehearsal if rehearsed is not None else None
    stopped = rehearsal.stopped_before if rehearsal is not None else None
    return {
        "database": planned.database,
        "direction": planned.direction,
        "from": planned.start,
        "to": planned.end,
        "steps": [
            {"revision": s.revision, "description": s.description, "seconds": round(t, 4)}
            for s, t in (rehearsal.steps if rehearsal is not None else [])
        ],
        "failed_at": stopped.revision if stopped is not None else None,
        "error": rehearsal.reason if rehearsal is not None and stopped is not None else None,
        "schema_changes": rehearsed.schema_diff() if rehearsed is not None else [],
        "data_loss": rehearsed.loss.lines if rehearsed is not None else [],
        "impact": [s.as_dict() for s in rehearsed.impact] if rehearsed is not None else [],
        "ok": stopped is None,
    }


def _planned(planned: outcomes.Planned) -> None:
    rehearsed = planned.rehearsed
    if rehearsed is None:
        say(f"Nothing to plan: {planned.database} is at {planned.start}.")
        return
    for step, seconds in rehearsed.rehearsal.steps:
        output.step_line(
            "↑" if step.direction == "up" else "↓", step.revision, step.description, seconds
        )
    if rehearsed.rehearsal.stopped_before is not None:
        say(
            f"[yellow]Stopped at {rehearsed.rehearsal.stopped_before.revision}:[/yellow] "
            f"{rehearsed.rehearsal.reason}. The changes below are those of the steps above."
        )
    diff = rehearsed.schema_diff()
    say(f"Schema changes ({len(diff)}):" if diff else "Schema changes: none.")
    for line in diff:
        say(f"  {line}", markup=False)
    if rehearsed.loss:
        verb = "rollback" if planned.direction == "down" else "change"
        say(f"[yellow]Data this {verb} would destroy:[/yellow] " + "; ".join(rehearsed.loss.lines))
    _impact(planned)
    say(f"Rolled back after {planned.seconds:.2f} s: nothing was changed.")


def _impact(planned: outcomes.Planned) -> None:
    """Per migration, what each statement locks and for how long (db/impact.py)."""
    from db import impact, settings

    assert planned.rehearsed is not None
    steps = planned.rehearsed.impact
    if not any(step.statements for step in steps):
        say("Locks on existing tables: none.")
        return
    say("Locks on existing tables, measured in the rehearsal:")
    for number, step in enumerate(steps):
        if not step.statements:
            earlier = " beyond those the migrations before it hold" if number else ""
            say(f"{step.revision} {output.escaped(step.description)}: no new lock{earlier}.")
            continue
        output.table(
            impact.COLUMNS,
            [[output.escaped(cell) for cell in row] for row in impact.rows(step)],
            title=f"{step.revision} {output.escaped(step.description)} ({step.seconds:.2f} s)",
        )
    for line in impact.notes(settings.timeouts().lock_ms, planned.rehearsed.impact):
        # Wrapped here: CI's summary shows it in a code block, which does not wrap.
        say(textwrap.fill(line, 88, initial_indent="  ", subsequent_indent="  "), markup=False)


def _verified(outcome: outcomes.Verified) -> None:
    say(f"OK: the {outcome.applied} applied migration(s) match their recorded checksums.")


def _dry_run(dry: outcomes.DryRun) -> None:
    # Plain print: SQL must reach stdout exactly, never through Rich's markup.
    print(f"-- Dry run of migrate.{dry.direction} on {dry.database}: {dry.start} -> {dry.end}.")
    print("-- Nothing below was executed, and no lock was taken.")
    if not dry.sql:
        print("-- Nothing to do.")
        return
    print(dry.sql, end="")


def status_document(status: outcomes.Status) -> dict[str, Any]:
    document: dict[str, Any] = {
        "database": status.database,
        "current": status.current,
        "migrations": status.migrations,
        "changed_since_applied": status.changed,
    }
    if status.drift is not None:
        document["drift"] = status.drift
    return document


def _status(status: outcomes.Status) -> None:
    say(f"Database: {status.label}")
    say(f"Current:  {status.current or 'base (nothing applied)'}")
    rows = status.migrations
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
    if status.changed:
        say(
            f"Changed since applied: {'; '.join(status.changed)}. `invoke "
            "migrate.verify` fails on this (exit 7): restore the file and put the change in "
            "a new migration (README, Troubleshooting)."
        )
    if status.drift is not None:
        say(
            f"Drift: {len(status.drift)} difference(s) from what the migrations make; "
            "`invoke migrate.drift` lists them."
            if status.drift
            else "Drift: none; the database holds what the migrations make."
        )


def _environments(status: outcomes.EnvironmentsStatus) -> None:
    rows = status.rows
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
        + (
            ""
            if status.drift_checked
            else " Drift not checked: add --drift (or run migrate.drift)."
        )
    )


def who(row: dict[str, Any]) -> str:
    return f"{row['os_user']}@{row['host']} as {row['db_user']}"


def _history(history: outcomes.History) -> None:
    if not history.rows:
        say(f"No history yet on {history.database}: nothing has been applied by this tool.")
        return
    lines = []
    for row in history.rows:
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
                who(row),
            ]
        )
    output.table(
        ["id", "started at", "step", "revision", "description", "took", "result", "by"], lines
    )


def _drift(report: outcomes.DriftReport) -> None:
    for finding in report.findings:
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
        elif finding.differences is not None and not report.several:
            say(f"No drift: {where} holds what the migrations make there.")
    if report.several:
        output.table(
            ["database", "revision", "result", "seconds"],
            [
                [
                    f.database or f.target.label,
                    f.revision or ("base" if f.error is None else ""),
                    f.result,
                    f"{f.seconds:.1f}",
                ]
                for f in report.findings
            ],
        )


def _roundtrip(outcome: outcomes.RoundtripReport) -> None:
    from db.roundtrip import report

    report.summary(outcome.report)


def _lint(outcome: outcomes.LintReport) -> None:
    from db import lint

    reports = outcome.reports
    for report in reports:
        state = "[red]squawk found problems[/red]" if report.findings else "[green]ok[/green]"
        if report.unchecked and not report.findings:
            state = "[yellow]ok, partly not checked[/yellow]"
        say(f"  {report.revision}  {report.name}: {state}")
        for rule, why in report.ignored.items():
            say(f"      ignores {rule}: {why}")
        for unchecked in report.unchecked:
            say(f"      warning: {unchecked}", markup=False)
        for finding in report.findings:
            say(
                f"    {finding.where}: {finding.rule} (in {finding.function}): {finding.message}\n"
                f"      SQL: {finding.statement}\n"
                f"      hint: {lint.HINTS.get(finding.rule, 'see the rule in squawk docs')}",
                markup=False,
            )
    if outcome.problem() is not None:
        return
    if partly := [r for r in reports if r.unchecked]:
        reads = any("op.get_bind()" in u for r in partly for u in r.unchecked)
        say(
            "The SQL that could be rendered passes squawk; not checked: part of "
            f"{', '.join(r.revision for r in partly)} (see the warnings above)."
            + (
                "\nhint: keep a step that reads the database (op.get_bind()) in a migration "
                "of its own, so that lint sees all the DDL; `invoke migrate.plan` rehearses "
                "it on the database"
                if reads
                else ""
            ),
            markup=False,
        )
        return
    say("All migrations pass squawk.")


def _created(created: outcomes.Created) -> None:
    say(f"Created {created.path} (revision {created.revision}).")
    if created.autogenerated:
        say(
            "Review it before anything else: autogenerate misses renames (it drops and adds), "
            "data moves, CHECK constraints, triggers and functions. Then `invoke "
            "migrate.roundtrip`."
        )
    else:
        say("Write upgrade() and downgrade(), then apply it with `invoke migrate.up`.")


def _generated(generated: outcomes.Generated) -> None:
    if generated.changed:
        say(
            f"Wrote {generated.path}; commit it with the migration (`invoke {generated.task}` "
            "regenerates it)."
        )
    else:
        say(f"{generated.path} is up to date.")


def _message(message: outcomes.Message) -> None:
    for line in message.lines:
        if message.exact:
            print(line)
        else:
            say(line)


def fleet_document(report: outcomes.FleetReport) -> list[dict[str, Any]]:
    return [
        {
            "environment": o.target.environment,
            "database": o.target.label.partition(": ")[2] or o.target.label,
            "from": o.start or None,
            "to": o.end or None,
            "result": o.result,
            "exit_code": o.code,
            "seconds": round(o.seconds, 3),
            **({"detail": o.detail} if o.detail is not None else {}),
        }
        for o in report.rows
    ]


def fleet_row(row: outcomes.FleetRow) -> str:
    """A database's line as the fleet finishes it."""
    return (
        f"  {row.target.label}: {row.start or '?'} → {row.end or '?'} "
        f"{row.result} ({row.seconds:.1f} s)"
    )


def _fleet(report: outcomes.FleetReport) -> None:
    output.table(
        ["database", "from → to", "result", "seconds"],
        [
            [
                o.target.label,
                f"{o.start} → {o.end}" if o.start or o.end else "",
                o.result,
                f"{o.seconds:.1f}" if o.code is not None else "",
            ]
            for o in report.rows
        ],
    )
    if report.reports:
        for row in report.rows:
            if row.report.strip():
                say(f"--- {row.target.label} ---", markup=False)
                say(row.report.rstrip(), markup=False)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


_SHOWN: dict[type, tuple[Callable[[Any], None], Callable[[Any], Any] | None]] = {
    outcomes.Applied: (_applied, None),
    outcomes.Planned: (_planned, plan_document),
    outcomes.Verified: (_verified, None),
    outcomes.DryRun: (_dry_run, None),
    outcomes.Status: (_status, status_document),
    outcomes.EnvironmentsStatus: (_environments, lambda status: status.rows),
    outcomes.History: (_history, lambda history: [_jsonable(r) for r in history.rows]),
    outcomes.DriftReport: (_drift, lambda report: [f.as_dict() for f in report.findings]),
    outcomes.RoundtripReport: (_roundtrip, lambda outcome: outcome.report.as_dict()),
    outcomes.LintReport: (_lint, None),
    outcomes.Created: (_created, None),
    outcomes.Generated: (_generated, None),
    outcomes.Message: (_message, None),
    outcomes.FleetReport: (_fleet, fleet_document),
}
"""Per outcome: its text, and its JSON document (None: text only)."""
