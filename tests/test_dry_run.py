"""`--dry-run` prints the exact SQL from the database's current revision, and changes
nothing: no row, no lock, nothing left behind."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from db import lock
from tests.helpers import add_migration, as_env, connect, current_revision, scalar

TABLES = (
    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
)


def test_dry_run_up_prints_the_sql_and_changes_nothing(invoke, empty_db: URL) -> None:
    with connect(empty_db, autocommit=True) as holder:
        # A held migration lock does not matter: a dry run takes none.
        holder.execute("SELECT pg_advisory_lock(%s)", [lock.LOCK_KEY])
        result = invoke(
            "migrate.up", "--dry-run", env={**as_env(empty_db), "WORKTRACKER_LOCK_TIMEOUT": "0"}
        )
    assert result.returncode == 0, result.explain()
    sql = result.stdout
    for fragment in (
        "-- Dry run of migrate.up on",
        ": base -> 001.",
        "SET lock_timeout = '5000ms';",
        "CREATE TABLE IF NOT EXISTS migrations.history",
        "CREATE TABLE organizations (",
        "CREATE TRIGGER trg_tasks_set_updated_at",
        "INSERT INTO migrations.alembic_version (version_num) VALUES ('001')",
        "INSERT INTO migrations.history (revision",
        "COMMIT;",
    ):
        assert fragment in sql, f"missing {fragment!r}\n{result.explain()}"
    assert scalar(empty_db, TABLES) == 0, "a dry run created tables"
    assert scalar(empty_db, "SELECT to_regnamespace('migrations')") is None


def test_dry_run_down_starts_from_the_current_revision(invoke, empty_db: URL) -> None:
    env = as_env(empty_db)
    assert invoke("migrate.up", env=env).returncode == 0
    rows = scalar(empty_db, "SELECT count(*) FROM migrations.history")
    result = invoke("migrate.down", "--dry-run", env=env)
    assert result.returncode == 0, result.explain()
    for fragment in (
        ": 001 -> base.",
        "DROP TABLE audit_events;",
        "DROP TYPE task_status;",
        "DELETE FROM migrations.alembic_version",
        "'down'",
    ):
        assert fragment in result.stdout, f"missing {fragment!r}\n{result.explain()}"
    assert current_revision(empty_db) == "001"
    assert scalar(empty_db, "SELECT count(*) FROM migrations.history") == rows


def test_dry_run_from_a_revision_needs_no_database(invoke) -> None:
    env = {"DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none"}
    result = invoke("migrate.up", "--dry-run", "--from", "base", env=env)
    assert result.returncode == 0, result.explain()
    assert "CREATE TABLE tasks (" in result.stdout, result.explain()
    down = invoke("migrate.down", "--dry-run", "--from", "001", env=env)
    assert down.returncode == 0 and "DROP TABLE tasks;" in down.stdout, down.explain()


def test_from_without_dry_run_is_refused(invoke, empty_db: URL) -> None:
    result = invoke("migrate.up", "--from", "base", env=as_env(empty_db))
    assert result.returncode == 2 and "--from only goes with --dry-run" in result.stderr
    assert current_revision(empty_db) is None


READS = """
conn = op.get_bind()
rows = conn.execute(sa.text("SELECT id FROM labels")).fetchall()
for (label_id,) in rows:
    conn.execute(sa.text("UPDATE labels SET name = name WHERE id = :i"), {"i": label_id})
"""


def test_a_dry_run_names_each_migration_it_cannot_render(
    invoke, versions_copy: Path, monkeypatch
) -> None:
    from db import commands

    path = add_migration(versions_copy, "002", "001", "touch_labels", READS, READS)
    path.write_text(
        path.read_text().replace("from alembic", "import sqlalchemy as sa\nfrom alembic")
    )
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(versions_copy))
    commands.migrate_new("add reminders")  # 003: upgrade() and downgrade() raise until written
    env = {
        "DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none",
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
    }
    up = invoke("migrate.up", "--dry-run", "--from", "base", env=env)
    assert up.returncode == 2, up.explain()
    assert "Traceback" not in up.output, up.explain()
    assert "002 reads the database (op.get_bind())" in up.stderr, up.explain()
    assert "003 has no upgrade() yet (it raises NotImplementedError)" in up.stderr, up.explain()
    assert "hint: use migrate.plan to rehearse it" in up.stderr, up.explain()
    assert up.stdout == "", "no half of a script"

    down = invoke("migrate.down", "--dry-run", "--from", "002", env=env)
    assert down.returncode == 2, down.explain()
    assert "002 reads the database (op.get_bind()) and cannot be shown as SQL offline" in (
        down.stderr
    ), down.explain()
    assert "migrate.plan --down" in down.stderr, down.explain()
