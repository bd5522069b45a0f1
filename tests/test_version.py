"""The version comes from the git tags (setuptools-scm, through hatch-vcs: [tool.hatch.version]
in pyproject.toml), says so when it cannot know, and every history row records it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version
from sqlalchemy.engine import URL

from db import history
from db.settings import PROJECT_ROOT
from tests.helpers import as_env

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **_GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _version_of(root: Path) -> str:
    """The version setuptools-scm gives `root` with its pyproject.toml's configuration."""
    import setuptools_scm

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    options = pyproject["tool"]["hatch"]["version"]["raw-options"]
    return setuptools_scm.get_version(root=str(root), **options)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository holding our pyproject.toml, with one commit and no tag."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "pyproject.toml")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_the_version_follows_the_latest_tag(project: Path) -> None:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"], "a version written by hand"
    _git(project, "tag", "-a", "v1.2.3", "-m", "release 1.2.3")
    assert _version_of(project) == "1.2.3"

    _git(project, "commit", "-q", "--allow-empty", "-m", "after the release")
    node = _git(project, "rev-parse", "HEAD")
    after = _version_of(project)
    match = re.fullmatch(r"1\.2\.4\.dev1\+g([0-9a-f]+)", after)
    assert match and node.startswith(match[1]), (after, node)

    with (project / "pyproject.toml").open("a") as file:
        file.write("# an edit not committed\n")
    dirty = _version_of(project)
    assert re.fullmatch(rf"1\.2\.4\.dev1\+g{match[1]}\.d\d{{8}}", dirty), dirty


def test_without_a_tag_the_version_says_it_is_unknown(project: Path) -> None:
    untagged = _version_of(project)
    assert re.fullmatch(r"0\.dev\d+\+unknown\.g[0-9a-f]+", untagged), untagged
    assert Version(untagged) < Version("0.1.0"), "an unknown version passed for a release"

    shutil.rmtree(project / ".git")  # a tarball of the tree
    assert _version_of(project) == "0.dev0+unknown"


def test_checkout_state_is_the_tag_the_commit_and_a_dirty_tree(project: Path) -> None:
    node = _git(project, "rev-parse", "--short", "HEAD")
    assert history.checkout_state(project) == node, "no tag: the commit alone"

    _git(project, "tag", "-a", "v1.2.3", "-m", "release 1.2.3")
    assert history.checkout_state(project) == f"v1.2.3-0-g{node}"

    with (project / "pyproject.toml").open("a") as file:
        file.write("# an edit not committed\n")
    assert history.checkout_state(project) == f"v1.2.3-0-g{node}-dirty"

    shutil.rmtree(project / ".git")
    assert history.checkout_state(project) is None, "no checkout: nothing to describe"


def test_a_history_row_records_the_installed_version_and_the_checkout(
    invoke, empty_db: URL
) -> None:
    env = as_env(empty_db)
    assert invoke("migrate.up", env=env).returncode == 0
    result = invoke("migrate.history", "--json", env=env)
    assert result.returncode == 0, result.explain()
    recorded = {row["tool_version"] for row in json.loads(result.stdout)}

    assert recorded == {history.tool_version()}, recorded
    installed = metadata.version("worktracker-schema")
    (row,) = recorded
    assert row.startswith(f"worktracker-schema {installed}"), row
    state = history.checkout_state(PROJECT_ROOT)
    if state is not None:
        assert f"(checkout {state})" in row, row


def _ours(*args: str) -> str | None:
    """git in this checkout; None without one, or where git refuses (another owner)."""
    if not (PROJECT_ROOT / ".git").exists():
        return None
    try:
        return _git(PROJECT_ROOT, *args)
    except subprocess.CalledProcessError:
        return None


def _latest_tag() -> tuple[str, int] | None:
    """The latest vX.Y.Z tag reachable from HEAD and the commits since, if any."""
    described = _ours("describe", "--tags", "--long", "--match", "v[0-9]*")
    if described is None:
        return None
    tag, distance, _ = described.rsplit("-", 2)
    return tag, int(distance)


def test_the_installed_version_follows_the_checkouts_tags() -> None:
    latest = _latest_tag()
    if latest is None:
        pytest.skip("no vX.Y.Z tag reachable here (tags not fetched, or no .git)")
    tag, distance = latest
    installed = Version(metadata.version("worktracker-schema"))
    released = Version(tag.removeprefix("v"))
    hint = f"installed {installed}, checkout at {tag}+{distance}: reinstall (uv pip install -e .)"
    if distance == 0 and not installed.local:
        assert installed == released, hint
    else:
        # The next patch's dev release: 0.4.1.dev12+gabc1234 after v0.4.0.
        assert installed.release == (*released.release[:-1], released.release[-1] + 1), hint
        assert installed.is_devrelease, hint


def test_every_release_tag_has_a_changelog_section() -> None:
    tags = (_ours("tag", "--list", "v[0-9]*") or "").split()
    if not tags:
        pytest.skip("no vX.Y.Z tag in this clone (no .git, or tags not fetched)")
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    sections = set(re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M))
    missing = sorted(t for t in tags if t.removeprefix("v") not in sections)
    assert not missing, f"tags without a section in CHANGELOG.md: {missing}"
