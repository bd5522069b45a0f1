"""How a roundtrip run looks to a person. On a terminal: a progress line while it runs,
then a table; piped (CI logs): one line per step as it finishes, no table. Either way,
then every failure's context (the diff, the revision, the database error) and the
verdict. `--json` prints the report as JSON instead."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from db import output
from db.catalog import counted
from db.output import say
from db.roundtrip.results import DECLARED, FAIL, OK, Report, Result

_STYLE = {OK: "green", FAIL: "bold red", DECLARED: "yellow"}


def _line(result: Result) -> str:
    style = _STYLE.get(result.status, "dim")
    # OK notes too: "drops what 005 created: table x (3 rows)" belongs in a CI log as well.
    note = f"  {output.escaped(result.note)}" if result.note else ""
    return (
        f"  {result.revision:<6} {result.step:<20} [{style}]{result.status}[/{style}]"
        f"  [dim]{result.seconds:.2f} s[/dim]{note}"
    )


@contextmanager
def progress() -> Iterator[Callable[[Result], None]]:
    """Where each result goes as it comes: a transient status line on a terminal, a
    printed line otherwise."""
    if output.is_terminal():
        with output.console.status("Roundtrip: starting") as status:
            yield lambda result: status.update(
                f"Roundtrip: {result.revision} {result.step} {result.status}"
            )
        return
    yield lambda result: say(_line(result))


def summary(report: Report) -> None:
    if output.is_terminal():
        output.table(
            ["revision", "step", "result", "time", "note"],
            [
                [
                    r.revision,
                    r.step,
                    f"[{_STYLE.get(r.status, 'dim')}]{r.status}[/{_STYLE.get(r.status, 'dim')}]",
                    f"{r.seconds:.2f} s",
                    r.note or (r.detail.splitlines()[0] if r.status == FAIL else ""),
                ]
                for r in report.results
            ],
            title=f"roundtrip on {report.server}",
        )
    declared = [r for r in report.results if r.status == DECLARED]
    if declared:
        say("Migrations whose rollback loses earlier data on purpose:")
        for result in declared:
            say(f"  {result.revision}: {result.detail}", markup=False)
    for result in report.failures:
        if output.is_terminal():
            output.console.rule(f"[red]{result.revision}: {result.step}")
        else:  # no box-drawing characters in logs
            say(f"--- {result.revision}: {result.step} ---", markup=False)
        say(result.detail, markup=False)
    problems = counted(len(report.failures), "problem")
    verdict = "[green]passed[/green]" if report.ok else f"[red]failed[/red] ({problems})"
    say(f"Roundtrip {verdict} in {report.seconds:.1f} s on {report.server}.")


def as_json(report: Report) -> None:
    print(json.dumps(report.as_dict(), indent=2))
