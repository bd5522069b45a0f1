"""`invoke migrate.new --autogenerate` after a model change: the next NNN file, with the
operations autogenerate finds against a throwaway database at head (never the
developer's own), that passes ruff and the roundtrip as it stands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.chain import generate
from db import revisions
from tests import forked

# The copies are of this repository: the next file follows its chain, however long.
NEXT = revisions.next_revision_id(revisions.script_directory())

CHANGES = {
    "nullable column": (
        "db/models/work_items.py",
        # Anchored on the table's name, not on a column the team may rename.
        '    __tablename__ = "tasks"\n',
        '    __tablename__ = "tasks"\n    estimate: Mapped[int | None] = mapped_column('
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
    if args[0] == "invoke" and forked.AVAILABLE:
        # A fork that imports db and tasks.py from the copy (tests/forked.py).
        code, out, err = forked.run(args[1:], env, copy, 600)
        return subprocess.CompletedProcess(args, code, out, err)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _autogenerate(
    copy: Path, tmp_path: Path, pg_server, message: str
) -> tuple[dict[str, str], Path]:
    """`invoke migrate.new --autogenerate MESSAGE` in `copy`, away from any developer's
    database; the environment it ran with, and the file it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKTRACKER_")}
    env.pop("DATABASE_URL", None)
    env["WORKTRACKER_PGDATA"] = str(tmp_path / "never-started")
    env["TEST_DATABASE_URL"] = pg_server.admin_url.render_as_string(hide_password=False)
    made = _run(copy, "invoke", "migrate.new", "--autogenerate", message, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    return env, copy / f"db/migrations/versions/{NEXT}_{message.replace(' ', '_')}.py"


def test_autogenerate_writes_a_migration_that_passes_lint_and_the_roundtrip(
    tmp_path: Path, pg_server
) -> None:
    # Every change in one migration: a copy, an autogenerate and a roundtrip take seconds.
    copy = generate(0, tmp_path / "checkout")
    for path, anchor, replacement, _ in CHANGES.values():
        model = copy / path
        model.write_text(model.read_text().replace(anchor, replacement, 1))
    env, created = _autogenerate(copy, tmp_path, pg_server, "add the change")
    source = created.read_text()
    for change, (*_, expected) in CHANGES.items():
        for fragment in expected:
            assert fragment in source, f"{change}: {fragment!r} missing\n{source}"
    assert not (tmp_path / "never-started").exists(), "the developer's database was used"
    for check in (["ruff", "check"], ["ruff", "format", "--check"]):
        done = _run(copy, *check, str(created.relative_to(copy)), env=env)
        assert done.returncode == 0, done.stdout + done.stderr + source
    roundtrip = _run(copy, "invoke", "migrate.roundtrip", env=env)
    assert roundtrip.returncode == 0, roundtrip.stdout[-3000:] + roundtrip.stderr + source


def test_a_generated_enum_label_migration_applies_without_the_models(
    tmp_path: Path, pg_server
) -> None:
    copy = generate(0, tmp_path / "checkout")
    model = copy / "db/models/work_items.py"
    label = '    CANCELED = "canceled"\n'
    model.write_text(model.read_text().replace(label, label + '    ARCHIVED = "archived"\n', 1))
    env, created = _autogenerate(copy, tmp_path, pg_server, "archived tasks")
    source = created.read_text()
    assert "op.add_enum_value(" in source, source
    # A downgrade written by hand (the generated one cannot drop a label that a CHECK
    # uses) no longer needs the plugin's TableReference.
    source = source.replace("from alembic_postgresql_enum import TableReference\n", "")
    source = source[: source.index("def downgrade()")] + (
        'def downgrade() -> None:\n    raise NotImplementedError("rebuild the type")\n'
    )
    created.write_text(source)
    # Applying never imports the models, which is where the plugin's op.* came from.
    url = pg_server.create_database()
    env["DATABASE_URL"] = url.render_as_string(hide_password=False).replace("+psycopg", "")
    try:
        applied = _run(copy, "invoke", "migrate.up", env=env)
    finally:
        pg_server.drop_database(url.database)
    assert applied.returncode == 0, applied.stdout + applied.stderr + source


def test_autogenerate_names_a_model_module_that_the_package_does_not_import(
    tmp_path: Path, pg_server
) -> None:
    copy = generate(0, tmp_path / "checkout")
    (copy / "db/models/reminders.py").write_text(
        "import uuid\n\n"
        "from sqlalchemy.orm import Mapped\n\n"
        "from db.models.base import Base, UUIDPrimaryKey\n\n\n"
        "class Reminder(UUIDPrimaryKey, Base):\n"
        '    __tablename__ = "reminders"\n\n'
        "    note: Mapped[str]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKTRACKER_")}
    env.pop("DATABASE_URL", None)
    env["WORKTRACKER_PGDATA"] = str(tmp_path / "never-started")
    env["TEST_DATABASE_URL"] = pg_server.admin_url.render_as_string(hide_password=False)
    made = _run(copy, "invoke", "migrate.new", "--autogenerate", "add reminders", env=env)
    assert made.returncode == 2, made.stdout + made.stderr
    assert "db/models/reminders.py is not imported by db/models/__init__.py" in made.stderr
    assert "from db.models.reminders import Reminder" in made.stderr, made.stderr
    assert "Traceback" not in made.stderr, made.stderr
    assert not list((copy / "db/migrations/versions").glob(f"{NEXT}_*.py")), "nothing written"
