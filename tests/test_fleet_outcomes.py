"""A fleet's summary row says where each database actually ended, not where its run was
headed: a database left at 001 by a failing 002 reads "base → 001"."""

from __future__ import annotations

import json
from pathlib import Path

from db.settings import PROJECT_ROOT
from tests.helpers import add_migration, as_env, current_revision


def test_a_fleet_row_shows_where_a_failed_database_ended(
    invoke, pg_server, versions_copy: Path
) -> None:
    assert "staging" in (PROJECT_ROOT / "pyproject.toml").read_text()
    add_migration(versions_copy, "002", "001", "fails", 'op.execute("SELECT 1/0")', "pass")
    databases = [pg_server.create_database() for _ in range(2)]
    env = {
        "STAGING_DATABASE_URL": " ".join(as_env(url)["DATABASE_URL"] for url in databases),
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
    }
    try:
        as_json = invoke("migrate.up", "--env", "staging", "--keep-going", "--json", env=env)
        assert as_json.returncode == 4, as_json.explain()
        rows = json.loads(as_json.stdout)
        assert [(row["from"], row["to"]) for row in rows] == [("base", "001")] * 2, rows
        assert [current_revision(url) for url in databases] == ["001", "001"]

        table = invoke("migrate.up", "--env", "staging", env=env)
        assert table.returncode == 4, table.explain()
        assert "001 → 001" in table.stdout and "→ 002" not in table.stdout, table.explain()
    finally:
        for url in databases:
            pg_server.drop_database(url.database)
