"""Fleet runs: one command over every database of an environment, in parallel.

Each database gets a process of its own (db/fanout.py), hence its own lock, history and
report line. The process runs the command, shows its outcome (the report a plan prints)
and sends back, as a value, where its database started and ended and how the run ended:
the summary is built from those values, never from what the process printed. A fork
gets its database as the command's `target`; a new interpreter, as DATABASE_URL.

By default a failure stops starting new databases and lets the running ones finish;
`--keep-going` runs them all. Running again resumes: databases already at the goal say
"nothing to apply".
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from db import failures, fanout, outcomes, output, render, targets
from db.errors import ConfigError, UserError
from db.outcomes import FleetFailed, FleetReport, FleetRow


def _flags(options: dict[str, object]) -> list[str]:
    flags = []
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False, 0, ""):
            flags += [flag, str(value)]
    return flags


class _Progress:
    """Where this database is, from the steps the run reported as done."""

    def __init__(self) -> None:
        self.start = self.end = ""

    def heard(self, event: render.Event) -> None:
        if isinstance(event, render.Moving):
            self.start = self.end = event.start
        elif isinstance(event, render.StepDone):
            self.end = event.to_revision


def _row(outcome: outcomes.Outcome | None, progress: _Progress) -> dict[str, Any]:
    """What the summary needs of one database's outcome."""
    if isinstance(outcome, outcomes.Planned):
        detail = render.plan_document(outcome)
        nothing = not detail["steps"] and detail["ok"]
        row: dict[str, Any] = {"start": outcome.start, "end": outcome.end, "nothing": nothing}
        if outcome.as_json:
            row["detail"] = detail
        return row
    if isinstance(outcome, outcomes.Applied):
        return {"start": outcome.start, "end": outcome.end, "nothing": not outcome.steps}
    return {"start": progress.start, "end": progress.end, "nothing": False}


def _one(
    command: Callable[[], outcomes.Outcome | None], variable: str | None
) -> tuple[dict, UserError | None, BaseException | None]:
    """Run the command for this process's database and show its outcome: its summary
    row, the error it ended with as the user sees it, and as it was raised. `variable`:
    the environment variable its URL came from, which errors about the URL name."""
    progress = _Progress()
    outcome = None
    with render.listening(progress.heard):
        try:
            outcome = command()
            render.deliver(outcome)
        except BaseException as error:  # every end is this database's result
            if isinstance(error, KeyboardInterrupt):
                described = UserError("interrupted by Ctrl-C; the step in progress was rolled back")
                described.exit_code = 130
            elif isinstance(error, (UserError, *failures.DRIVER_ERRORS)):
                described = failures.user_error(error)
                if variable is not None:
                    failures.naming(described, variable)
            elif isinstance(error, Exception):  # a bug: what a traceback would say, in one line
                described = UserError(f"{type(error).__name__}: {error}")
            else:
                raise
            row = _row(outcome, progress)
            row["error"] = described.render().splitlines()[0].removeprefix("error: ")
            return row, described, error
    return _row(outcome, progress), None, None


def _forked(
    target: targets.Target, command: Callable[..., outcomes.Outcome | None]
) -> tuple[int, dict]:
    """One database in a fork of this process: the command gets its target."""
    output.use_plain()
    row, described, _error = _one(lambda: command(target=target), target.variable)
    if described is None:
        return 0, row
    sys.stdout.flush()
    print(described.render(), file=sys.stderr)
    return described.exit_code, row


def report_from_here(command: Callable[[], outcomes.Outcome | None]) -> None:
    """One database in a new interpreter (fanout.reporting()): run, show, report the row,
    and end as the command ended."""
    row, _described, error = _one(command, None)
    fanout.report(row)
    if error is not None:
        raise error


def _summary(done: fanout.Done, outcome: FleetRow) -> None:
    outcome.code = done.code
    outcome.seconds = done.seconds
    outcome.report = done.output
    row = done.value
    if not isinstance(row, dict):  # the process died before it could say
        outcome.result = done.errors[-200:] or f"exited with code {done.code}"
        return
    outcome.start, outcome.end = row.get("start") or "", row.get("end") or ""
    outcome.detail = row.get("detail")
    if done.code == 0:
        outcome.result = "nothing to apply" if row.get("nothing") else "ok"
    else:
        outcome.result = row.get("error") or done.errors[-200:]


def _interrupted(results: list[FleetRow], stopped: fanout.Interrupted) -> None:
    """Ctrl-C reached every process of the fleet: the running ones were waited for (each
    rolled back its step in progress); say where the fleet stands."""
    done = sum(d.code is not None for d in stopped.done)
    error = FleetFailed(
        f"interrupted by Ctrl-C: {done} of {len(results)} databases had finished, "
        f"{stopped.running} were stopped (their step in progress was rolled back by the "
        f"server), {len(results) - done - stopped.running} were not started.",
        "run the command again: databases already at the goal say 'nothing to apply'",
    )
    error.exit_code = 130
    raise error


REPORTS = {"migrate.plan"}
"""Commands whose output for each database is the point (a plan's schema changes and
data at risk): printed whole, database by database, after the summary."""


def run(
    chosen: list[targets.Target],
    task: str,
    options: dict[str, object],
    command: Callable[..., outcomes.Outcome | None],
    *,
    parallel: int,
    keep_going: bool,
    as_json: bool,
) -> FleetReport:
    # One file or one printout for many databases cannot be what was meant: refuse
    # rather than drop the option (a backup that is silently not written).
    for option, why in (
        ("backup", "each database needs a backup file of its own"),
        ("dry_run", "each database's SQL would be lost in the summary"),
    ):
        if options.get(option):
            raise ConfigError(
                f"--{option.replace('_', '-')} does not go with an environment of "
                f"{len(chosen)} databases: {why}.",
                "run it for one database at a time, with DATABASE_URL set to it",
            )
    argv = [sys.executable, "-m", "invoke", task, *_flags(options)]
    results = [FleetRow(target) for target in chosen]
    if not as_json:
        render.note(f"{task} on {len(chosen)} databases, {parallel} at a time:")

    def finished(done: fanout.Done) -> None:
        row = next(r for r in results if r.target is done.target)
        _summary(done, row)
        if not as_json:
            render.note(render.fleet_row(row))

    how = fanout.Processes(lambda target: _forked(target, command), argv, keep_going)
    try:
        fanout.over_databases(chosen, parallel=parallel, processes=how, on_done=finished)
    except fanout.Interrupted as stopped:
        _interrupted(results, stopped)
    return FleetReport(task, results, keep_going, task in REPORTS, as_json=as_json)
