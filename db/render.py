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
    for line in impact.notes(settings.timeouts().lock_ms):
        # Wrapped here: CI's summary shows it in a code block, which does not wrap.
        say(textwrap.fill(line, 88, initial_indent="  ", subsequent_indent="  "), markup=False)


def _verified(outcome: outcomes.Verified) -> None:
    say(f"OK: the {outcome.applied} applied migration(s) match their recorded checksums.")


_SHOWN: dict[type, tuple[Callable[[Any], None], Callable[[Any], Any] | None]] = {
    outcomes.Applied: (_applied, None),
    outcomes.Planned: (_planned, plan_document),
    outcomes.Verified: (_verified, None),
}
"""Per outcome: its text, and its JSON document (None: text only)."""
