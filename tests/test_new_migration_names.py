"""`migrate.new` turns any description into a file that parses, with the description
held safely in its docstring, an ASCII NNN_slug.py name the static checks accept, and a
template that passes our own lint once filled in."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.roundtrip import static
from db.settings import PROJECT_ROOT

MESSAGES = {
    'say """hi"""': "002_say_hi.py",
    "C:\\New folder\\tasks": "002_c_new_folder_tasks.py",
    "add a very long description of what this migration does to the tasks table": (
        "002_add_a_very_long_description_of_what_this.py"
    ),
    "Ajouter l'échéance des tâches": "002_ajouter_l_echeance_des_taches.py",
    "добавить задачи v2": "002_v2.py",
    'ends with a quote"': "002_ends_with_a_quote.py",
    "trailing backslash \\": "002_trailing_backslash.py",
}


@pytest.mark.parametrize("message", MESSAGES)
def test_any_description_gives_a_file_that_parses_and_passes_the_checks(
    invoke, versions_copy: Path, message: str
) -> None:
    result = invoke("migrate.new", message, env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 0, result.explain()
    path = versions_copy / MESSAGES[message]
    assert path.exists(), sorted(p.name for p in versions_copy.iterdir())
    module = ast.parse(path.read_text())
    assert ast.get_docstring(module, clean=False).startswith(message.split()[0]), path.read_text()
    assert " ".join(ast.get_docstring(module).split()).startswith(" ".join(message.split()))
    assert static.check_file(path) == [], static.check_file(path)


def test_a_description_with_nothing_usable_is_refused(invoke, versions_copy: Path) -> None:
    result = invoke("migrate.new", "добавить", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 2, result.explain()
    assert "no letters or digits that can go in a file name" in result.stderr
    assert sorted(p.name for p in versions_copy.glob("*.py")) == ["001_initial_schema.py"]


def test_help_after_the_task_name_creates_nothing(invoke, versions_copy: Path) -> None:
    """`invoke migrate.new --help` hands "--help" over as the description."""
    result = invoke("migrate.new", "--help", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert result.returncode == 2, result.explain()
    assert "invoke --help migrate.new" in result.stderr, result.explain()
    assert sorted(p.name for p in versions_copy.glob("*.py")) == ["001_initial_schema.py"]


def test_a_filled_in_migration_passes_lint(invoke, versions_copy: Path, tmp_path: Path) -> None:
    message = "add an estimate column to tasks so that planners can size the work"
    assert (
        invoke(
            "migrate.new", message, env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
        ).returncode
        == 0
    )
    path = next(versions_copy.glob("002_*.py"))
    source = path.read_text()
    source = source.replace(
        '    raise NotImplementedError("write upgrade() before applying this migration")',
        '    op.add_column("tasks", sa.Column("estimate", sa.Integer(), nullable=True))',
    ).replace(
        '    raise NotImplementedError("write downgrade() before applying this migration")',
        '    op.drop_column("tasks", "estimate")',
    )
    # A copy of the repository's layout and ruff configuration, around the new file.
    root = tmp_path / "repo"
    (root / "db/migrations/versions").mkdir(parents=True)
    (root / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    target = root / "db/migrations/versions" / path.name
    target.write_text(source)
    for check in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *check, str(target.relative_to(root))],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alembic_cli_names_revisions_like_migrate_new(tmp_path: Path) -> None:
    """`alembic revision -m …` in a checkout: NNN id, ASCII slug, the same template."""
    root = tmp_path / "checkout"
    versions = root / "db/migrations/versions"
    versions.mkdir(parents=True)
    (root / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    for name in ("env.py", "script.py.mako"):
        (root / "db/migrations" / name).write_text(
            (PROJECT_ROOT / "db/migrations" / name).read_text()
        )
    (versions / "001_initial_schema.py").write_text(
        (PROJECT_ROOT / "db/migrations/versions/001_initial_schema.py").read_text()
    )
    message = 'Add widget: the café\'s "best" one'
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "revision", "-m", message],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    path = versions / "002_add_widget_the_cafe_s_best_one.py"
    assert path.exists(), sorted(p.name for p in versions.iterdir())
    source = path.read_text()
    assert 'revision: str = "002"' in source and 'down_revision: str | None = "001"' in source
    assert ast.get_docstring(ast.parse(source)).startswith(message)
    assert static.check_file(path) == []
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(path.relative_to(root))],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
