"""The invoke tasks, run as a user runs them: subprocesses with DATABASE_URL set.

Good input does what it says; bad input gets one line, a hint, a non-zero exit code,
no traceback, and never the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from db import embedded, urls
from db.settings import PROJECT_ROOT
from db.throwaway import PASSWORD_ROLE, Server
from tests.helpers import as_env, current_revision

SECRET = "hunter2-not-for-logs"


def assert_clean_failure(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert "hint:" in result.stderr, result.explain()
    assert SECRET not in result.output, "the password leaked:\n" + result.explain()
    for fragment in fragments:
        assert fragment in result.output, result.explain()


def test_up_status_down_roundtrip(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    up = invoke("migrate.up", env=env)
    assert up.returncode == 0, up.explain()
    assert "001" in up.stdout and "Done: at 001" in up.stdout, up.explain()

    status = invoke("migrate.status", env=env)
    assert status.returncode == 0, status.explain()
    assert "Current:  001" in status.stdout and "applied" in status.stdout, status.explain()

    again = invoke("migrate.up", env=env)
    assert again.returncode == 0 and "Nothing to apply" in again.stdout, again.explain()

    down = invoke("migrate.down", env=env)
    assert down.returncode == 0 and "Done: at base" in down.stdout, down.explain()
    status = invoke("migrate.status", env=env)
    assert "base (nothing applied)" in status.stdout and "pending" in status.stdout, (
        status.explain()
    )


def test_unreachable_host(invoke) -> None:
    env = {"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/app"}
    assert_clean_failure(invoke("migrate.up", env=env), 3, "could not connect", "app:***@")


def test_wrong_password(invoke, pg_server: Server, empty_db: URL) -> None:
    role = f"pw_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as admin:
        # On servers we configure ourselves only members of PASSWORD_ROLE need a password;
        # elsewhere (a container, TEST_DATABASE_URL) the server's own rules apply.
        member = f" IN ROLE {PASSWORD_ROLE}" if pg_server.password_auth else ""
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-password'{member}")
    try:
        wrong = empty_db.set(username=role, password=SECRET)
        try:
            psycopg.connect(urls.libpq(wrong).render_as_string(hide_password=False)).close()
        except psycopg.OperationalError:
            pass
        else:
            pytest.skip(f"{pg_server.kind} server accepts any password for {role} (trust auth)")
        assert_clean_failure(
            invoke("migrate.up", env=as_env(wrong)), 3, "password authentication failed"
        )
        right = wrong.set(password="right-password")
        status = invoke("migrate.status", env=as_env(right))
        assert status.returncode == 0, status.explain()
        assert "right-password" not in status.output, "the password leaked into status"
        assert f"{role}:***@" in status.stdout, status.explain()
    finally:
        with pg_server.admin() as admin:
            admin.execute(f"DROP ROLE {role}")


def test_unknown_revision(invoke, empty_db: URL) -> None:
    assert_clean_failure(
        invoke("migrate.up", "--to", "999", env=as_env(empty_db)), 2, "unknown revision '999'"
    )


def test_down_below_base(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    assert_clean_failure(invoke("migrate.down", env=env), 2, "nothing to roll back")
    assert invoke("migrate.up", env=env).returncode == 0
    assert_clean_failure(
        invoke("migrate.down", "--steps", "2", env=env), 2, "only 1 migration(s) are applied"
    )
    status = invoke("migrate.status", env=env)
    assert "Current:  001" in status.stdout, "a refused rollback must change nothing"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "set but empty"),
        ("not a url", "is not a URL"),
        (f"mysql://app:{SECRET}@localhost/app", "scheme 'mysql'"),
        (f"postgresql://app:{SECRET}@localhost:notaport/app", "could not be parsed"),
    ],
    ids=["empty", "no-scheme", "wrong-scheme", "bad-port"],
)
def test_garbled_database_url(invoke, raw: str, fragment: str) -> None:
    result = invoke("migrate.status", env={"DATABASE_URL": raw})
    assert_clean_failure(result, 2, fragment)


def test_steps_and_to_together_are_refused(invoke, empty_db: URL) -> None:
    result = invoke("migrate.down", "--steps", "1", "--to", "base", env=as_env(empty_db))
    assert result.returncode == 2 and "not both" in result.stderr, result.explain()


def test_no_database_url_uses_the_embedded_server(invoke, embedded_pgdata: Path) -> None:
    pgdata = embedded_pgdata
    try:
        up = invoke("migrate.up")
        assert up.returncode == 0, up.explain()
        assert f"embedded postgresql://postgres@/worktracker?host={pgdata}" in up.stdout, (
            up.explain()
        )
        assert embedded.running(pgdata) is not None, "the server should keep running"
        url = invoke("db.url")
        assert url.stdout.strip() == f"postgresql://postgres@/worktracker?host={pgdata}"
        stop = invoke("db.stop")
        assert stop.returncode == 0 and "Stopped" in stop.stdout, stop.explain()
        assert embedded.running(pgdata) is None
        # A command that finds it stopped starts it again, data intact.
        status = invoke("migrate.status")
        assert "Current:  001" in status.stdout, status.explain()
    finally:
        embedded.stop(pgdata)


def test_db_url_hides_the_password(invoke) -> None:
    result = invoke("db.url", env={"DATABASE_URL": f"postgres://app:{SECRET}@db.internal/app"})
    assert result.returncode == 0, result.explain()
    assert result.stdout.strip() == "postgresql://app:***@db.internal/app"


def test_reset_refuses_a_remote_database_without_force(invoke) -> None:
    env = {"DATABASE_URL": f"postgresql://app:{SECRET}@db.example.com/app"}
    assert_clean_failure(invoke("db.reset", env=env), 5, "not a local database", "--force")


def test_reset_drops_data_and_reapplies(invoke, initial_db: URL) -> None:
    with psycopg.connect(urls.libpq(initial_db).render_as_string(False), autocommit=True) as c:
        c.execute("INSERT INTO users (email, display_name) VALUES ('a@b.c', 'A')")
        c.execute("CREATE TABLE stray (id int)")
    result = invoke("db.reset", "--allow-data-loss", env=as_env(initial_db))
    assert result.returncode == 0, result.explain()
    with psycopg.connect(urls.libpq(initial_db).render_as_string(False)) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert c.execute("SELECT to_regclass('stray')").fetchone() == (None,)
        assert c.execute("SELECT version_num FROM migrations.alembic_version").fetchone() == (
            "001",
        )


def test_new_creates_the_next_numbered_migration(invoke, versions_copy: Path) -> None:
    env = {"WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    result = invoke("migrate.new", "Add task reminders!", env=env)
    assert result.returncode == 0, result.explain()
    created = versions_copy / "002_add_task_reminders.py"
    assert created.exists(), f"{sorted(p.name for p in versions_copy.iterdir())}\n" + (
        result.explain()
    )
    source = created.read_text()
    assert 'revision: str = "002"' in source or "revision: str = '002'" in source, source
    assert "down_revision: str | None = '001'" in source or '= "001"' in source, source
    assert source.startswith('"""Add task reminders!\n'), source


def test_new_refuses_an_empty_message(invoke, versions_copy: Path) -> None:
    result = invoke("migrate.new", "  !! ", env={"WORKTRACKER_VERSIONS_DIR": str(versions_copy)})
    assert_clean_failure(result, 2, "no letters or digits")
    assert sorted(p.name for p in versions_copy.glob("*.py")) == ["001_initial_schema.py"]


def test_unwritten_migration_fails_cleanly_and_leaves_the_previous_revision(
    invoke, versions_copy: Path, empty_db: URL
) -> None:
    env = {"WORKTRACKER_VERSIONS_DIR": str(versions_copy), **as_env(empty_db)}
    assert invoke("migrate.new", "not written yet", env=env).returncode == 0
    result = invoke("migrate.up", env=env)
    assert_clean_failure(result, 4, "migration 002", "NotImplementedError", "at 001")
    status = invoke("migrate.status", env=env)
    assert "Current:  001" in status.stdout, status.explain()


def test_shell_runs_psql_on_the_target(initial_db: URL, tmp_path: Path) -> None:
    """db.shell hands over to psql (the embedded one when none is on PATH)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKTRACKER_")}
    env.update(as_env(initial_db), WORKTRACKER_PGDATA=str(tmp_path / "pgdata"))
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "db.shell"],
        cwd=PROJECT_ROOT,
        env=env,
        input="SELECT count(*) AS tables FROM pg_tables WHERE schemaname = 'public';\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert " 9" in done.stdout and "tables" in done.stdout, done.stdout


def test_psql_gets_the_password_through_the_environment() -> None:
    from db.commands import psql_command
    from db.urls import parse

    argv, env = psql_command(parse(f"postgresql://app:{SECRET}@db.internal:5432/app"))
    assert SECRET not in " ".join(argv), "a password on argv shows in ps"
    assert env["PGPASSWORD"] == SECRET
    assert argv[1] == "postgresql://app@db.internal:5432/app"


def test_steps_0_is_refused_and_rolls_nothing_back(invoke, initial_db: URL) -> None:
    result = invoke("migrate.down", "--steps", "0", env=as_env(initial_db))
    assert_clean_failure(result, 2, "--steps takes a whole number of 1 or more, not 0")
    assert current_revision(initial_db) == "001", "--steps 0 rolled back a migration"


@pytest.mark.parametrize(
    "args",
    [
        ("migrate.down", "--steps", "-1"),
        ("migrate.plan", "--down", "--steps", "0"),
        ("migrate.history", "--limit", "0"),
        ("migrate.history", "--limit", "-2"),
        ("migrate.up", "--parallel", "0"),
        ("migrate.verify", "--parallel", "0"),
        ("migrate.drift", "--parallel", "-1"),
        ("migrate.up", "--lock-timeout", "-1"),
    ],
    ids=lambda args: " ".join(args),
)
def test_numeric_options_out_of_range_are_bad_input(invoke, args: tuple[str, ...]) -> None:
    # Checked before anything connects: the URL leads nowhere.
    result = invoke(*args, env={"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/app"})
    assert result.returncode == 2, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert args[-2] in result.stderr and "could not connect" not in result.stderr, result.explain()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("migrate.up", "--bogus"), "unknown option --bogus for the task before it"),
        (("migrate.up", "--to"), "--to needs a value"),
        (("migrate.down", "--steps", "abc"), "a number was expected"),
        (("migrate.up", "extra"), "no task named 'extra'"),
        (("migrate.new",), "did not receive required positional arguments: 'message'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_arguments_invoke_cannot_read_are_bad_input(invoke, args, fragment: str) -> None:
    # invoke itself exits 1 (or shows a ValueError's traceback) before any task runs.
    result = invoke(*args, env={"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:1/app"})
    assert_clean_failure(result, 2, fragment)
    assert "could not connect" not in result.stderr, result.explain()


@pytest.mark.parametrize("name", ["migrate.up", "migrate.down", "migrate.plan", "migrate.verify"])
def test_each_database_of_a_fleet_is_given_the_options_of_its_task_but_the_fleets_own(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database's run (`python -m invoke TASK FLAGS`, where there is no fork) reads back
    every option it was given, and only the options that choose the databases (--env,
    --yes) or shape the fleet (--parallel, --keep-going, the summary's --json) stay
    with the fleet."""
    from invoke import Context
    from invoke.parser import Parser

    import tasks
    from db.commands import fleet

    values = {
        "to": "001",
        "steps": 2,
        "lock_timeout": "5",
        "allow_changed": True,
        "dry_run": True,
        "from_": "base",
        "allow_data_loss": True,
        "backup": "before.sql",
        "down": True,
        "env": "shards",
        "yes": True,
        "parallel": 3,
        "keep_going": True,
        "json": True,
    }
    task = tasks.ns[name]
    given = {option: values[option] for option in task.options}
    seen: dict = {}
    monkeypatch.setattr(tasks, "_on", lambda env, command, **kw: seen.update(kw, env=env))
    task(Context(), **given)

    assert seen["env"] == "shards" and seen.get("yes", "yes" not in given), seen
    assert (seen["parallel"], seen["keep_going"], seen["as_json"]) == (3, True, True), seen
    task_name, forwarded = seen["fleet"]
    assert task_name == name
    kept = {"env", "yes", "parallel", "keep_going", "json"}
    assert forwarded == {k: v for k, v in given.items() if k not in kept}, forwarded
    parsed = Parser(contexts=tasks.ns.to_contexts()).parse_argv([name, *fleet._flags(forwarded)])
    read = {k: v for k, v in parsed[0].as_kwargs.items() if k in forwarded}
    assert read == forwarded, f"{name} {fleet._flags(forwarded)} was read as {read}"


@pytest.mark.parametrize("args", [("--help", "migrate.up"), ("--list",)], ids=["help", "list"])
def test_help_whose_reader_went_away_ends_quietly_with_141(args: tuple[str, ...]) -> None:
    """`invoke --help TASK | head`: the reader is gone before invoke writes (its end of
    the pipe closed first, so the write surely fails), as a task's output does."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=PROJECT_ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 141, (done.returncode, done.stderr)
