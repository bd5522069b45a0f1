"""`--json` prints JSON on stdout, whatever a migration prints: a migration's stdout goes to
stderr while it loads and runs, so that scripts can parse the tool's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db.throwaway import Server
from tests.helpers import add_migration, as_env


@pytest.fixture
def chatty_chain(versions_copy: Path) -> Path:
    path = add_migration(
        versions_copy,
        "002",
        "001",
        "chatty_backfill",
        'print("backfilling tasks")\nop.execute("UPDATE tasks SET priority = priority")',
        'print("undoing the backfill")',
    )
    path.write_text(
        path.read_text().replace(
            "from alembic import op", 'from alembic import op\n\nprint("loading 002")'
        )
    )
    return versions_copy


def _parsed(result) -> object:
    assert result.returncode == 0, result.explain()
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"stdout is not JSON ({error}):\n{result.explain()}") from None


def test_roundtrip_json_stays_json_when_a_migration_prints(
    invoke, pg_server: Server, chatty_chain: Path
) -> None:
    env = {
        "TEST_DATABASE_URL": as_env(pg_server.admin_url)["DATABASE_URL"],
        "WORKTRACKER_VERSIONS_DIR": str(chatty_chain),
    }
    result = invoke("migrate.roundtrip", "--json", env=env, timeout=300)
    assert result.returncode in (0, 8), result.explain()
    document = json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else None
    assert document is not None, f"stdout is not JSON:\n{result.explain()}"
    steps = {(r["revision"], r["step"]): r["status"] for r in document["results"]}
    assert steps[("002", "down")] == "ok", document
    assert "backfilling tasks" in result.stderr and "undoing the backfill" in result.stderr


def test_plan_and_status_json_stay_json_when_a_migration_prints(
    invoke, initial_db: URL, chatty_chain: Path
) -> None:
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(chatty_chain)}
    plan = invoke("migrate.plan", "--json", env=env)
    _parsed(plan)
    assert "backfilling tasks" in plan.stderr, plan.explain()
    status = _parsed(invoke("migrate.status", "--json", env=env))
    assert status, status
    up = invoke("migrate.up", env=env)
    assert up.returncode == 0, up.explain()
    assert "backfilling tasks" in up.stderr and "002" in up.stdout, up.explain()
