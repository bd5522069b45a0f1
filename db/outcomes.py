"""What a command found or did, as values: each command returns one of these, and
db/render.py shows it as text or JSON. A command whose outcome is a failure (a rehearsal
that failed, drift found) says so through `problem()`, raised once it has been shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db import targets
from db.errors import CheckFailed, MigrationFailed, UserError

if TYPE_CHECKING:
    from db import drift, lint, preview
    from db.roundtrip import results


@dataclass
class Outcome:
    as_json: bool = field(default=False, kw_only=True)
    """Shown as JSON (for scripts) rather than text."""

    def problem(self) -> UserError | None:
        """The error the command ends with, once the outcome has been shown."""
        return None


@dataclass
class Applied(Outcome):
    """An up or down (or the re-apply of a reset): from `start` to `end`; `steps` of
    them, none when there was nothing to do."""

    direction: str
    database: str
    start: str
    end: str
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Planned(Outcome):
    """A rehearsal of an up or down in one transaction, rolled back."""

    database: str
    direction: str
    start: str
    end: str
    rehearsed: preview.Rehearsed | None = None
    """None: nothing to plan."""
    seconds: float = 0.0

    def problem(self) -> UserError | None:
        if self.rehearsed is None or self.rehearsed.rehearsal.stopped_before is None:
            return None
        failed = self.rehearsed.rehearsal.stopped_before
        return MigrationFailed(
            f"the rehearsal failed at {failed.revision} ({failed.description}): "
            f"{self.rehearsed.rehearsal.reason}.",
            "nothing was changed; the real run would fail the same way. Fix the migration "
            "(or the data it trips on) and plan again",
        )


@dataclass
class Verified(Outcome):
    """Every applied migration's file matches its recorded checksum."""

    applied: int


@dataclass
class DryRun(Outcome):
    """The SQL an up or down would run, rendered offline; nothing was executed."""

    direction: str
    database: str
    start: str
    end: str
    sql: str
    """Empty: nothing to do."""


@dataclass
class Status(Outcome):
    """One database: its revision, and each migration of the chain applied or pending."""

    database: str
    """Redacted URL (JSON)."""
    label: str
    """How the text names it."""
    current: str | None
    migrations: list[dict[str, Any]]
    changed: list[str]
    """Applied migrations whose file changed since, as verify sees them."""
    drift: list[str] | None = None
    """None: not checked."""


@dataclass
class EnvironmentsStatus(Outcome):
    """`status --env`: a row per database, unreachable ones too."""

    rows: list[dict[str, Any]]
    drift_checked: bool


@dataclass
class History(Outcome):
    database: str
    rows: list[dict[str, Any]]


@dataclass
class DriftReport(Outcome):
    findings: list[drift.Finding]
    several: bool
    """Over several databases: a table, and no line per clean database."""

    def problem(self) -> UserError | None:
        """Exit 8 when a database drifted, else the first error's code when one could
        not be checked."""
        findings = self.findings
        drifted = [f for f in findings if f.drifted]
        broken = [f for f in findings if f.error is not None]
        if drifted:
            names = ", ".join(f.database for f in drifted[:3]) + (", …" if len(drifted) > 3 else "")
            return CheckFailed(
                f"{len(drifted)} of {len(findings)} database(s) drifted from what their "
                f"migrations make: {names}"
                + (f"; {len(broken)} could not be checked" if broken else "")
                + ".",
                "put an intended change in a migration (`invoke migrate.new`); undo the others "
                "by hand; each difference is listed above (+ only in the database, - missing "
                "from it, ~ different)",
            )
        if not broken:
            return None
        first = broken[0]
        assert first.error is not None
        if len(findings) == 1:
            return first.error
        error = UserError(
            f"{len(broken)} of {len(findings)} database(s) could not be checked "
            f"(first: {first.database or first.target.label}: {first.result}).",
            first.error.hint,
        )
        error.exit_code = first.error.exit_code
        return error


@dataclass
class RoundtripReport(Outcome):
    report: results.Report

    def problem(self) -> UserError | None:
        if self.report.ok:
            return None
        return CheckFailed(
            f"the roundtrip found {len(self.report.failures)} problem(s); see the report above.",
            "fix what the report names (a migration, or the models), then run "
            "`invoke migrate.roundtrip` again",
        )


@dataclass
class LintReport(Outcome):
    reports: list[lint.FileReport]

    def problem(self) -> UserError | None:
        from db import lint

        return lint.failed(self.reports)


@dataclass
class Created(Outcome):
    """A new migration file."""

    path: str
    revision: str
    autogenerated: bool


@dataclass
class Generated(Outcome):
    """A generated file (db/schema.sql, docs/schema.md) written or already up to date."""

    path: str
    changed: bool
    task: str


@dataclass
class Message(Outcome):
    """A command whose answer is a line or two of text (db.url, db.start, db.stop)."""

    lines: list[str]
    exact: bool = False
    """Printed as is, never through Rich (a URL a script reads)."""


class FleetFailed(UserError):
    """Some databases of the fleet failed; the exit code is the first failure's."""


@dataclass
class FleetRow:
    """One database of a fleet run, as its summary shows it."""

    target: targets.Target
    start: str = ""
    end: str = ""
    result: str = "not started: an earlier database failed"
    seconds: float = 0.0
    code: int | None = None
    detail: dict | None = None
    """The database's own JSON document, for commands that print one (plan --json)."""
    report: str = ""
    """What the command printed for this database."""


@dataclass
class FleetReport(Outcome):
    """One command over every database of an environment."""

    task: str
    rows: list[FleetRow]
    keep_going: bool
    reports: bool = False
    """Each database's own report (a plan) follows the summary."""

    def problem(self) -> UserError | None:
        failed = [o for o in self.rows if o.code not in (0, None)]
        skipped = [o for o in self.rows if o.code is None]
        if not failed and not skipped:
            return None
        summary = f"{self.task}: {len(failed)} of {len(self.rows)} databases failed"
        if skipped:
            summary += f", {len(skipped)} not started"
        if failed:
            summary += f" (first: {failed[0].target.label}: {failed[0].result})"
        error = FleetFailed(
            summary + ".",
            "fix what the failing databases say, then run again: databases already at the "
            "goal say 'nothing to apply'"
            + ("" if self.keep_going else "; --keep-going runs them all"),
        )
        error.exit_code = failed[0].code if failed and failed[0].code else 1
        return error
