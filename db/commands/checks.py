"""The checks: squawk lint and the roundtrip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from db import (
    preview,
    revisions,
    runner,
    settings,
)
from db.errors import CheckFailed, ConfigError
from db.output import console, say

_VERSION_TABLE_DDL = re.compile(
    rf"CREATE TABLE {settings.BOOKKEEPING_SCHEMA}\.alembic_version \(.*?\);\n", re.S
)


def migrate_lint() -> None:
    """squawk on each migration's offline SQL, revision by revision."""
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(squawk).exists() and shutil.which("squawk") is None:
        raise ConfigError("squawk is not installed.", "pip install squawk-cli (or: nox -s lint)")
    config = settings.PROJECT_ROOT / ".squawk.toml"
    failed = []
    with tempfile.TemporaryDirectory(prefix="squawk-") as folder:
        for script in revisions.chain(revisions.script_directory()):
            step = runner.Step(script, "up")
            sql = preview.offline_sql(script.down_revision, [step], bookkeeping=False)
            # Alembic's own version table is not ours to lint (its varchar(32) is by design).
            sql = _VERSION_TABLE_DDL.sub("", sql)
            path = Path(folder) / f"{step.path.stem}.sql"
            path.write_text(sql)
            done = subprocess.run(
                [squawk, "--config", str(config), "--reporter", "gcc", str(path)],
                capture_output=True,
                text=True,
                env={**os.environ, "NO_COLOR": "1"},
            )
            if done.returncode == 0:
                say(f"  {script.revision}  {step.path.name}: [green]ok[/green]")
                continue
            failed.append(script.revision)
            say(f"  {script.revision}  {step.path.name}: [red]squawk found problems[/red]")
            console.print(
                (done.stdout + done.stderr).replace(f"{folder}/", ""), markup=False, highlight=False
            )
    if failed:
        raise CheckFailed(
            f"squawk found problems in {', '.join(failed)}.",
            "fix the migration (e.g. CREATE INDEX CONCURRENTLY inside "
            "op.get_context().autocommit_block()), or explain an exception in .squawk.toml",
        )
    say("All migrations pass squawk.")


def migrate_roundtrip(server_kind: str | None = None) -> None:
    from db import throwaway
    from db.roundtrip import cycle, report

    if server_kind is not None and (reason := throwaway.why_not(server_kind)) is not None:
        raise ConfigError(f"cannot start a {server_kind} server here: {reason}.")
    with throwaway.throwaway_server(kind=server_kind) as server:
        say(f"Roundtrip on a throwaway {server.kind} server (PostgreSQL {server.version}).")
        result = cycle.run(server, on_result=report.live)
    report.summary(result)
    if not result.ok:
        raise CheckFailed(
            f"the roundtrip found {len(result.failures)} problem(s); see the report above.",
            "fix the migration it names, then run `invoke migrate.roundtrip` again",
        )
