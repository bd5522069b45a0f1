"""`invoke migrate.new --autogenerate` after a model change: the next NNN file, with the
operations autogenerate finds against a throwaway database at head (never the
developer's own), that passes ruff and the roundtrip as it stands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.chain import generate

CHANGES = {
    "nullable column": (
        "db/models/work_items.py",
        "    title: Mapped[str]\n",
        "    title: Mapped[str]\n    estimate: Mapped[int | None] = mapped_column("
        'comment="Estimated hours.")\n',
        ["op.add_column(", '"estimate"'],
    ),
    "new table": (
        "db/models/users.py",
        "class User(",
        "class Team(UUIDPrimaryKey, Base):\n"
        '    __tablename__ = "teams"\n'
        '    __table_args__ = ({"comment": "A group of users."},)\n\n'
        "    name: Mapped[str]\n\n\n"
        "class User(",
        ['op.create_table(\n        "teams"'],
    ),
}


def _run(copy: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("change", CHANGES)
def test_autogenerate_writes_a_migration_that_passes_lint_and_the_roundtrip(
    tmp_path: Path, pg_server, change: str
) -> None:
    copy = generate(0, tmp_path / "checkout")
    path, anchor, replacement, expected = CHANGES[change]
    model = copy / path
    model.write_text(model.read_text().replace(anchor, replacement, 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKTRACKER_")}
    env.pop("DATABASE_URL", None)
    env["WORKTRACKER_PGDATA"] = str(tmp_path / "never-started")
    env["TEST_DATABASE_URL"] = pg_server.admin_url.render_as_string(hide_password=False)
    made = _run(copy, "invoke", "migrate.new", "--autogenerate", "add the change", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    created = copy / "db/migrations/versions/002_add_the_change.py"
    source = created.read_text()
    for fragment in expected:
        assert fragment in source, source
    assert not (tmp_path / "never-started").exists(), "the developer's database was used"
    for check in (["ruff", "check"], ["ruff", "format", "--check"]):
        done = _run(copy, *check, str(created.relative_to(copy)), env=env)
        assert done.returncode == 0, done.stdout + done.stderr + source
    roundtrip = _run(copy, "invoke", "migrate.roundtrip", env=env)
    assert roundtrip.returncode == 0, roundtrip.stdout[-3000:] + roundtrip.stderr + source
