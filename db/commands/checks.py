"""The checks: squawk lint and the roundtrip."""

from __future__ import annotations

from db import outcomes, render
from db.errors import ConfigError


def migrate_lint() -> outcomes.LintReport:
    """squawk on each migration's offline SQL, revision by revision."""
    from db import lint

    return outcomes.LintReport(lint.lint_chain())


def migrate_roundtrip(
    server_kind: str | None = None, as_json: bool = False
) -> outcomes.RoundtripReport:
    from db import throwaway
    from db.roundtrip import check, report

    if server_kind is not None and (reason := throwaway.why_not(server_kind)) is not None:
        raise ConfigError(f"cannot start a {server_kind} server here: {reason}.")
    with throwaway.throwaway_server(kind=server_kind) as server:
        if as_json:
            result = check.run(server)
        else:
            render.note(
                f"Roundtrip on a throwaway {server.kind} server (PostgreSQL {server.version})."
            )
            with report.progress() as on_result:
                result = check.run(server, on_result=on_result)
    return outcomes.RoundtripReport(result, as_json=as_json)
