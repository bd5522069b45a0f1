"""The checks: squawk lint and the roundtrip."""

from __future__ import annotations

from db.errors import CheckFailed, ConfigError
from db.output import say


def migrate_lint() -> None:
    """squawk on each migration's offline SQL, revision by revision."""
    from db import lint

    reports = lint.lint_chain()
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
    if (problem := lint.failed(reports)) is not None:
        raise problem
    if unchecked := [r for r in reports if r.unchecked]:
        reads = any("op.get_bind()" in u for r in unchecked for u in r.unchecked)
        say(
            "The SQL that could be rendered passes squawk; not checked: part of "
            f"{', '.join(r.revision for r in unchecked)} (see the warnings above)."
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


def migrate_roundtrip(server_kind: str | None = None, as_json: bool = False) -> None:
    from db import throwaway
    from db.roundtrip import check, report

    if server_kind is not None and (reason := throwaway.why_not(server_kind)) is not None:
        raise ConfigError(f"cannot start a {server_kind} server here: {reason}.")
    with throwaway.throwaway_server(kind=server_kind) as server:
        if as_json:
            result = check.run(server)
        else:
            say(f"Roundtrip on a throwaway {server.kind} server (PostgreSQL {server.version}).")
            with report.progress() as on_result:
                result = check.run(server, on_result=on_result)
    if as_json:
        report.as_json(result)
    else:
        report.summary(result)
    if not result.ok:
        raise CheckFailed(
            f"the roundtrip found {len(result.failures)} problem(s); see the report above.",
            "fix what the report names (a migration, or the models), then run "
            "`invoke migrate.roundtrip` again",
        )
