"""Named environments (`--env`): each resolves to the databases its variable holds;
status shows every database side by side, unreachable ones as rows; up, down and verify
run over a fleet in parallel, stop or keep going, and resume; a protected environment is
never changed without --yes (and never reset); an unset variable is a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from db import revisions, settings
from db.settings import PYPROJECT
from tests.conftest import VERSIONS, Result
from tests.helpers import as_env, current_revision

# The repository's chain, whatever it has grown to.
CHAIN = revisions.chain(revisions.script_directory())
HEAD = CHAIN[-1].revision

ENVIRONMENTS = """
[tool.worktracker.environments]
staging = "STAGING_DATABASE_URL"
production = { url = "PRODUCTION_DATABASE_URL", protected = true }
shards = "SHARD_DATABASE_URLS"
"""
NOWHERE = "postgresql://postgres@/nowhere?host=/nonexistent-socket-dir"


@pytest.fixture
def run(invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`invoke ARGS…` on the repository's chain, reading a pyproject.toml whose environments
    are the test's (in place of the repository's own), as a checkout holding them would."""
    pyproject = tmp_path / "pyproject.toml"
    ours = re.sub(r"\[tool\.worktracker\.environments\][^\[]*", "", PYPROJECT.read_text())
    pyproject.write_text(ours + ENVIRONMENTS)
    # The fork `invoke` runs in (tests/forked.py) inherits the setting, and reads the file.
    monkeypatch.setattr(settings, "PYPROJECT", pyproject)
    settings.pyproject_section.cache_clear()

    def run_(*args: str, env: dict[str, str]) -> Result:
        return invoke(*args, env={"WORKTRACKER_VERSIONS_DIR": str(VERSIONS), **env})

    yield run_
    settings.pyproject_section.cache_clear()


def _urls(staging: URL, production: URL, shard: URL) -> dict[str, str]:
    return {
        "STAGING_DATABASE_URL": as_env(staging)["DATABASE_URL"],
        "PRODUCTION_DATABASE_URL": as_env(production)["DATABASE_URL"],
        "SHARD_DATABASE_URLS": f"{as_env(shard)['DATABASE_URL']} {NOWHERE}",
    }


def test_env_picks_the_database_and_status_shows_them_all(run, pg_server, empty_db: URL) -> None:
    staging, production, shard = empty_db, pg_server.create_database(), pg_server.create_database()
    env = _urls(staging, production, shard)
    done = run("migrate.up", "--env", "staging", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert current_revision(staging) == HEAD and current_revision(production) is None

    status = run("migrate.status", "--env", "all", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "4 database(s), 1 could not be read" in status.stdout, status.stdout
    as_json = run("migrate.status", "--env", "all", "--json", env=env)
    rows = json.loads(as_json.stdout)
    assert [r["environment"] for r in rows] == ["staging", "production", "shards", "shards"]
    assert rows[0]["revision"] == HEAD and rows[0]["pending"] == 0
    assert rows[1]["revision"] == "base" and rows[1]["pending"] == len(CHAIN)
    assert rows[3]["error"] and rows[3]["revision"] is None, rows[3]
    for url in (production, shard):
        pg_server.drop_database(url.database)


def test_a_protected_environment_needs_yes_and_is_never_reset(
    run, pg_server, empty_db: URL
) -> None:
    env = _urls(pg_server.admin_url, empty_db, pg_server.admin_url)
    refused = run("migrate.up", "--env", "production", env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "protected" in refused.stderr and "--yes" in refused.stderr
    assert current_revision(empty_db) is None
    done = run("migrate.up", "--env", "production", "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert current_revision(empty_db) == HEAD
    reset = run("db.reset", "--env", "production", env=env)
    assert reset.returncode == 5, reset.stdout + reset.stderr
    assert "never run on a protected environment" in reset.stderr


def test_an_unset_variable_a_bad_url_and_a_fleet_are_clear_errors(run) -> None:
    unset = run("migrate.status", "--env", "staging", env={})
    assert unset.returncode == 2, unset.stdout + unset.stderr
    assert "STAGING_DATABASE_URL, which is not set" in unset.stderr
    garbled = run("migrate.up", "--env", "shards", env={"SHARD_DATABASE_URLS": "x"})
    assert garbled.returncode == 2, garbled.stdout + garbled.stderr
    assert "SHARD_DATABASE_URLS" in garbled.stderr
    for joined, why in (
        (f"{NOWHERE},{NOWHERE}", "joined without a space"),
        (f"{NOWHERE} {NOWHERE}", "the same database twice"),
    ):
        refused = run("migrate.up", "--env", "shards", env={"SHARD_DATABASE_URLS": joined})
        assert refused.returncode == 2 and why in refused.stderr, refused.stdout + refused.stderr
    # --env all on a laptop: unset environments are rows, the others still show.
    laptop = run("migrate.status", "--env", "all", env={"STAGING_DATABASE_URL": NOWHERE})
    assert laptop.returncode == 0, laptop.stdout + laptop.stderr
    assert "PRODUCTION_DATABASE_URL is not set" in laptop.stdout, laptop.stdout
    assert "3 database(s), 3 could not be read" in laptop.stdout, laptop.stdout
    word = run("migrate.up", "--env", "shards", "--parallel", "abc", env={})
    assert word.returncode == 2 and "Traceback" not in word.stderr, word.stderr
    two = {"SHARD_DATABASE_URLS": f"{NOWHERE} {NOWHERE.replace('nowhere', 'nowhere2')}"}
    fleet = run("migrate.history", "--env", "shards", env=two)
    assert fleet.returncode == 2, fleet.stdout + fleet.stderr
    assert "means 2 databases" in fleet.stderr and "migrate.up" in fleet.stderr, fleet.stderr
    for option in (("--backup", "/tmp/one-file.sql"), ("--dry-run",)):
        refused = run("migrate.down", "--env", "shards", *option, env=two)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "does not go with an environment of 2 databases" in refused.stderr
    unreachable = run("migrate.up", "--env", "shards", env=two)
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert "2 of 2 databases failed" in unreachable.stderr


def test_a_fleet_runs_in_parallel_stops_or_keeps_going_and_resumes(run, pg_server) -> None:
    databases = [pg_server.create_database() for _ in range(5)]
    bad = databases[3]
    with psycopg.connect(as_env(bad)["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int)")  # 001 cannot create its own
    env = {"SHARD_DATABASE_URLS": " ".join(as_env(url)["DATABASE_URL"] for url in databases)}
    try:
        stopped = run("migrate.up", "--env", "shards", "--parallel", "2", env=env)
        assert stopped.returncode == 4, stopped.stdout + stopped.stderr
        assert "1 of 5 databases failed" in stopped.stderr, stopped.stderr
        assert current_revision(bad) is None

        kept = run("migrate.up", "--env", "shards", "--keep-going", env=env)
        assert kept.returncode == 4, kept.stdout + kept.stderr
        assert "1 of 5 databases failed" in kept.stderr and "not started" not in kept.stderr
        assert [current_revision(url) for url in databases].count(HEAD) == 4

        with psycopg.connect(as_env(bad)["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("DROP TABLE users")
        resumed = run("migrate.up", "--env", "shards", "--json", env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        rows = json.loads(resumed.stdout)
        results = [row["result"] for row in rows]
        assert results.count("nothing to apply") == 4 and results.count("ok") == 1, rows
        assert rows[3]["from"] == "base" and rows[3]["to"] == HEAD, rows[3]
        verified = run("migrate.verify", "--env", "shards", env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        for url in databases:
            pg_server.drop_database(url.database)


def test_drift_and_plan_over_a_fleet_are_one_table_drift_exits_8_when_one_drifted(
    run, pg_server, head_template: str
) -> None:
    databases = [pg_server.create_database(template=head_template) for _ in range(3)]
    with psycopg.connect(as_env(databases[1])["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("CREATE INDEX tasks_by_hand ON tasks (id)")  # a column no migration renames
    env = {
        "SHARD_DATABASE_URLS": " ".join(as_env(url)["DATABASE_URL"] for url in databases),
        "TEST_DATABASE_URL": as_env(pg_server.admin_url)["DATABASE_URL"],
    }
    try:
        done = run("migrate.drift", "--env", "shards", "--parallel", "2", env=env)
        assert done.returncode == 8, done.stdout + done.stderr
        assert "1 of 3 database(s) drifted" in done.stderr, done.stderr
        assert done.stdout.count("no drift") == 2 and "drift: 1 difference" in done.stdout
        assert "+ index tasks_by_hand on public.tasks" in done.stdout, done.stdout

        plan = run("migrate.plan", "--env", "shards", "--json", env=env)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        plans = json.loads(plan.stdout)
        assert [r["result"] for r in plans] == ["nothing to apply"] * 3, plans
        assert plans[0]["detail"]["to"] == HEAD and plans[0]["detail"]["ok"], plans[0]

        env["SHARD_DATABASE_URLS"] += f" {NOWHERE}"
        as_json = run("migrate.drift", "--env", "shards", "--json", env=env)
        assert as_json.returncode == 8, as_json.stdout + as_json.stderr
        rows = json.loads(as_json.stdout)
        assert [r["drift"] for r in rows] == [False, True, False, None], rows
        assert rows[3]["error"].startswith("could not connect"), rows[3]
        assert "1 could not be checked" in as_json.stderr

        status = run("migrate.status", "--env", "shards", "--drift", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        lines = [line for line in status.stdout.splitlines() if "shards" in line]
        assert [line.split()[-1] for line in lines[:3]] == ["no", "(1)", "no"], status.stdout
    finally:
        for url in databases:
            pg_server.drop_database(url.database)


def test_without_fork_each_database_runs_in_a_new_interpreter(
    pg_server, initial_template: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from db import fanout, render, targets, urls
    from db.commands import fleet

    monkeypatch.setattr(fanout, "FORK", False)
    databases = [pg_server.create_database(template=initial_template) for _ in range(2)]
    chosen = [
        targets.Target("shards", urls.parse(as_env(url)["DATABASE_URL"])) for url in databases
    ]
    chosen.append(targets.Target("shards", urls.parse(NOWHERE)))

    def never() -> None:
        raise AssertionError("a fork's command ran although FORK is off")

    try:
        with pytest.raises(fleet.FleetFailed) as failed:
            render.deliver(
                fleet.run(
                    chosen, "migrate.verify", {}, never, parallel=2, keep_going=True, as_json=True
                )
            )
    finally:
        for url in databases:
            pg_server.drop_database(url.database)
    rows = json.loads(capsys.readouterr().out)
    assert [r["exit_code"] for r in rows] == [0, 0, 3], rows
    assert rows[2]["result"].startswith("could not connect"), rows[2]
    assert failed.value.exit_code == 3
