"""How a roundtrip run looks to a person: one line per step as it finishes, then a table
per revision and every failure's context (the diff, the revision, the database error)."""

from __future__ import annotations

from rich.table import Table

from db.output import console
from db.roundtrip.cycle import DECLARED, FAIL, OK, Report, Result

_STYLE = {OK: "green", FAIL: "bold red", DECLARED: "yellow"}


def live(result: Result) -> None:
    style = _STYLE.get(result.status, "dim")
    console.print(
        f"  {result.revision:<6} {result.step:<20} [{style}]{result.status}[/{style}]"
        f"  [dim]{result.seconds:.2f} s[/dim]"
    )


def summary(report: Report) -> None:
    table = Table(title=f"roundtrip on {report.server}", show_edge=False, pad_edge=False)
    for column in ("revision", "step", "result", "time", "note"):
        table.add_column(column)
    for result in report.results:
        style = _STYLE.get(result.status, "dim")
        note = result.note or (result.detail.splitlines()[0] if result.status == FAIL else "")
        table.add_row(
            result.revision,
            result.step,
            f"[{style}]{result.status}[/{style}]",
            f"{result.seconds:.2f} s",
            note,
        )
    console.print(table)
    declared = [r for r in report.results if r.status == DECLARED]
    if declared:
        console.print("Migrations whose rollback loses data on purpose:")
        for result in declared:
            console.print(f"  {result.revision}: {result.detail}")
    for result in report.failures:
        console.rule(f"[red]{result.revision}: {result.step}")
        console.print(result.detail, markup=False, highlight=False)
    verdict = "[green]passed[/green]" if report.ok else f"[red]{len(report.failures)} failed[/red]"
    console.print(f"Roundtrip {verdict} in {report.seconds:.1f} s on {report.server}.")
