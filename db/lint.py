"""squawk on each migration's offline SQL, with findings pointed back at the migration's
own file and line, a hint per rule, and reviewed exceptions declared in the migration.

A migration may declare, at module level, the squawk rules it breaks on purpose and why:

    squawk_ignore = {"renaming-column": "agreed with the API team (ticket 123)"}

That applies to that file only, and the report prints each such exception.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import Script

from db import planning, preview, revisions, settings
from db.errors import CheckFailed, ConfigError

_VERSION_TABLE_DDL = re.compile(
    rf"CREATE TABLE {settings.BOOKKEEPING_SCHEMA}\.alembic_version \(.*?\);\n", re.S
)
_FINDING = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<level>\w+): (?P<rule>[\w-]+) (?P<text>.*)$"
)
DOWNGRADE_EXCLUDED = (
    *(
        f"ban-drop-{kind}"
        for kind in (
            "column", "table", "not-null", "function", "type", "sequence", "schema", "view",
            "constraint", "default",
        )
    ),
    "renaming-column",
    "renaming-table",
    "renaming-object",
)  # fmt: skip
"""Rules about what running clients of the newer schema see, which a rollback breaks by
design: it drops and renames back what its upgrade added (the upgrade's own renames are
reported there). The locking rules (an index built without CONCURRENTLY, a table
rewrite, a constraint validated under lock) apply to a downgrade as to an upgrade."""


HINTS = {
    "require-concurrent-index-creation": "build the index CONCURRENTLY inside "
    "op.get_context().autocommit_block(), with if_not_exists=True",
    "require-concurrent-index-deletion": "drop the index CONCURRENTLY inside "
    "op.get_context().autocommit_block(), with if_exists=True",
    "renaming-column": "running clients still use the old name: add the new column, "
    "backfill, move the readers, drop the old one later; or declare squawk_ignore",
    "renaming-table": "running clients still use the old name: use a view, or declare "
    "squawk_ignore with the reason",
    "renaming-object": "a rename breaks whatever refers to the old name; declare "
    "squawk_ignore with the reason if nothing does",
    "adding-not-nullable-field": "add it nullable, backfill in batches, add CHECK (col IS "
    "NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL",
    "adding-required-field": "give it a default, or add it nullable and backfill first",
    "prefer-text-field": "use text with a CHECK on char_length() instead of varchar(n)",
    "prefer-identity": "use sa.Identity() (GENERATED … AS IDENTITY) instead of serial",
    "prefer-bigint-over-int": "use bigint, or declare squawk_ignore with the bound",
    "constraint-missing-not-valid": "add the constraint NOT VALID, then VALIDATE it in a "
    "separate migration",
    "adding-foreign-key-constraint": "add the foreign key NOT VALID, then VALIDATE it in a "
    "separate migration",
    "disallowed-unique-constraint": "build a unique index CONCURRENTLY first, then add the "
    "constraint USING INDEX",
    "changing-column-type": "most type changes rewrite the table under an ACCESS EXCLUSIVE "
    "lock: add a new column and backfill instead",
    "ban-drop-column": "drop columns only after every reader stopped using them",
    "ban-drop-table": "drop tables only after every reader stopped using them",
    "adding-field-with-default": "a volatile default rewrites the table: add the column, "
    "then set the default",
}


@dataclass
class Finding:
    rule: str
    message: str
    where: str  # file.py:line of the call that wrote the statement
    statement: str
    function: str = "upgrade()"


@dataclass
class FileReport:
    revision: str
    name: str
    findings: list[Finding] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)
    """What lint could not check, and why: SQL that cannot be rendered offline (a
    migration that reads the database, or is not written yet). Warnings: they do not
    fail lint (the roundtrip runs that code)."""


def _squawk() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(found).exists():
        raise ConfigError("squawk is not installed.", "pip install squawk-cli (or: nox -s lint)")
    return found


def declared_ignores(path: Path) -> dict[str, str]:
    """The module's `squawk_ignore = {"rule": "why"}`; ConfigError if malformed."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "squawk_ignore" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()
            ):
                raise ConfigError(
                    f"{path.name}: squawk_ignore must be a dict of rule name to the reason.",
                    'e.g. squawk_ignore = {"renaming-column": "agreed with the API team"}',
                )
            return value
    return {}


def _configured_exclusions(config: Path) -> list[str]:
    """The rules .squawk.toml turns off for the whole project."""
    try:
        return list(tomllib.loads(config.read_text()).get("excluded_rules", []))
    except (OSError, tomllib.TOMLDecodeError):
        return []


def _unchecked(failed: preview.NotOffline) -> str:
    function = f"{failed.step.direction}grade()"
    where = f"{failed.step.path.name}:{failed.line}"
    if "NotImplementedError" in failed.why:
        return f"{function} not checked: it is not written yet ({where} raises NotImplementedError)"
    return (
        f"{function} not checked from {where} on: it {failed.why}, so its SQL cannot be "
        "rendered offline"
    )


def _lint_direction(report: FileReport, script, direction: str, squawk: str, folder: Path) -> None:
    step = planning.Step(script, direction)
    function = f"{direction}grade()"
    if direction == "down" and getattr(script.module, "irreversible", None):
        return  # migrate.down refuses it: its downgrade never runs
    start = script.down_revision if direction == "up" else script.revision
    rendered = preview.render(start, [step], bookkeeping=False)
    sql = rendered.sql
    if rendered.failed is not None:
        report.unchecked.append(_unchecked(rendered.failed))
        sql += "COMMIT;\n"  # the rendering stopped inside the migration's transaction
    # Alembic's own version table is not ours to lint (its varchar(32) is by design);
    # blanked line for line, so that squawk's line numbers still match the rendering.
    sql = _VERSION_TABLE_DDL.sub(lambda m: "\n" * m[0].count("\n"), sql)
    path = folder / f"{step.path.stem}.{direction}.sql"
    path.write_text(sql)
    config = settings.PROJECT_ROOT / ".squawk.toml"
    argv = [squawk, "--config", str(config), "--reporter", "gcc"]
    excluded = [*report.ignored, *(DOWNGRADE_EXCLUDED if direction == "down" else ())]
    if excluded:
        # --exclude replaces the config's excluded_rules: name those too.
        excluded = [*_configured_exclusions(config), *excluded]
        argv += ["--exclude", ",".join(dict.fromkeys(excluded))]
    done = subprocess.run(
        [*argv, str(path)], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
    )
    sql_lines = sql.splitlines()
    found_any = False
    for line in (done.stdout + done.stderr).splitlines():
        found = _FINDING.match(line.strip())
        if found is None:
            continue
        found_any = True
        index = int(found["line"])  # squawk's gcc report counts lines from 0
        statement = sql_lines[index].strip() if index < len(sql_lines) else ""
        number = rendered.source_line(index)
        where = f"{step.path.name}:{number}" if number else step.path.name
        report.findings.append(Finding(found["rule"], found["text"], where, statement, function))
    if done.returncode != 0 and not found_any:
        report.findings.append(
            Finding(
                "squawk", (done.stdout + done.stderr).strip()[:300], step.path.name, "", function
            )
        )


def lint_file(script, squawk: str, folder: Path) -> FileReport:
    """squawk on the migration's upgrade and on its downgrade, each rendered offline."""
    path = revisions.path_of(script)
    report = FileReport(script.revision, path.name, ignored=declared_ignores(path))
    for direction in ("up", "down"):
        _lint_direction(report, script, direction, squawk, folder)
    return report


def lint_chain(scripts: Sequence[Script] | None = None) -> list[FileReport]:
    """Lint every file of the chain, or only `scripts` of it."""
    squawk = _squawk()
    if scripts is None:
        scripts = revisions.chain(revisions.script_directory())
    with tempfile.TemporaryDirectory(prefix="squawk-") as folder:
        return [lint_file(script, squawk, Path(folder)) for script in scripts]


def failed(reports: list[FileReport]) -> CheckFailed | None:
    bad = [r for r in reports if r.findings]
    if not bad:
        return None
    rules = sorted({f.rule for r in bad for f in r.findings})
    return CheckFailed(
        f"squawk found problems in {', '.join(r.revision for r in bad)} ({', '.join(rules)}).",
        "fix the migration as each finding's hint says, or, after review, declare "
        'squawk_ignore = {"rule": "why"} in that migration',
    )
