"""The GitHub workflows call what exists: every `invoke TASK --flag` they run names a real
task and real options, every `--env` they pass is configured, and the step-summary
script keeps a failing command's exit code and output."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

import tasks
from db import targets
from db.settings import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))
SUMMARIZE = PROJECT_ROOT / ".github" / "scripts" / "summarize"


def _invocations() -> list[tuple[str, list[str]]]:
    found = []
    for path in WORKFLOWS:
        text = path.read_text().replace(">-\n", "")
        for match in re.finditer(r"\binvoke (migrate\.\w+|db\.\w+)([^\n]*)", text):
            found.append((f"{path.name}: {match[0].strip()}", [match[1], *shlex.split(match[2])]))
    return found


@pytest.mark.parametrize(("where", "argv"), _invocations(), ids=lambda v: str(v)[:60])
def test_workflows_call_real_tasks_with_real_options(where: str, argv: list[str]) -> None:
    task = tasks.ns.task_with_config(argv[0])[0]
    known = {f"--{a.name.strip('_').replace('_', '-')}" for a in task.get_arguments()}
    flags = [arg.split("=")[0] for arg in argv[1:] if arg.startswith("--")]
    unknown = [flag for flag in flags if flag not in known]
    assert not unknown, f"{where}: {argv[0]} has no option {unknown}; it has {sorted(known)}"
    if "--env" in argv:
        value = argv[argv.index("--env") + 1]
        if not value.startswith("$"):
            assert value in targets.environments(), f"{where}: no environment {value!r}"


def test_the_deploy_workflow_offers_the_configured_environments() -> None:
    text = (PROJECT_ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    options = re.search(r"options: \[([^\]]*)\]", text)
    assert options is not None, "deploy.yml offers no choice of environment"
    offered = {o.strip() for o in options[1].split(",")}
    assert offered == set(targets.environments()), (offered, set(targets.environments()))
    for environment in targets.environments().values():
        assert f"secrets.{environment.variable}" in text, (
            f"deploy.yml does not set {environment.variable} from the environment's secret"
        )


def test_the_summary_keeps_the_output_and_the_exit_code(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    failed = subprocess.run(
        [str(SUMMARIZE), "A failing step", "sh", "-c", "echo done half; echo oops >&2; exit 7"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert failed.returncode == 7, failed
    assert "done half" in failed.stdout and "oops" in failed.stdout
    passed = subprocess.run(
        [str(SUMMARIZE), "A quiet step", "true"], capture_output=True, text=True, env=env
    )
    assert passed.returncode == 0, passed
    text = summary.read_text()
    assert "### A failing step\n\n```text\ndone half\noops\n```" in text, text
    assert "**Failed: exit code 7.**" in text and "### A quiet step\n\n(no output)" in text


def test_every_nox_installed_is_one_the_noxfile_accepts() -> None:
    """noxfile.py refuses an older nox (nox.needs_version): a workflow or .ci/run that
    installs one would fail before running a session."""
    needed = re.search(r'needs_version = ">=([\d.]+)"', (PROJECT_ROOT / "noxfile.py").read_text())
    assert needed, "noxfile.py states no nox.needs_version"
    minimum = tuple(int(part) for part in needed[1].split("."))
    for path in [*WORKFLOWS, PROJECT_ROOT / ".ci" / "run"]:
        for found in re.findall(r"nox>=([\d.]+)", path.read_text()):
            version = tuple(int(part) for part in found.split("."))
            assert version >= minimum, (
                f"{path.name} installs nox>={found}; noxfile.py needs {needed[1]}"
            )
