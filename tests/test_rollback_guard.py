"""A rollback (or reset) that would drop tables or columns holding rows is refused unless
--allow-data-loss; --backup FILE writes a pg_dump of them first."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from tests.helpers import add_migration, as_env, connect, current_revision, scalar


def _add_user(url: URL) -> None:
    with connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, display_name) VALUES ('keep@me.io', 'Keep')")


def test_rollback_of_tables_holding_rows_is_refused(invoke, initial_db: URL) -> None:
    _add_user(initial_db)
    result = invoke("migrate.down", env=as_env(initial_db))
    assert result.returncode == 5, result.explain()
    assert "this would destroy data: table public.users (1 row)" in result.stderr, result.explain()
    assert "--allow-data-loss" in result.stderr
    assert current_revision(initial_db) == "001"
    assert scalar(initial_db, "SELECT count(*) FROM users") == 1


def test_empty_tables_roll_back_without_a_flag(invoke, initial_db: URL) -> None:
    result = invoke("migrate.down", env=as_env(initial_db))
    assert result.returncode == 0, result.explain()
    assert current_revision(initial_db) is None


def test_allow_data_loss_goes_ahead(invoke, initial_db: URL) -> None:
    _add_user(initial_db)
    result = invoke("migrate.down", "--allow-data-loss", env=as_env(initial_db))
    assert result.returncode == 0, result.explain()
    assert "Going ahead although it destroys" in result.stdout, result.explain()
    assert current_revision(initial_db) is None


def test_backup_is_written_first(invoke, initial_db: URL, tmp_path: Path) -> None:
    _add_user(initial_db)
    backup = tmp_path / "before-rollback.sql"
    env = as_env(initial_db)
    refused = invoke("migrate.down", "--backup", str(backup), env=env)
    assert refused.returncode == 5, "a backup alone does not allow the loss"
    assert "keep@me.io" in backup.read_text(), "the backup must hold the rows"
    backup.unlink()
    done = invoke("migrate.down", "--backup", str(backup), "--allow-data-loss", env=env)
    assert done.returncode == 0, done.explain()
    dump = backup.read_text()
    assert "CREATE TABLE public.users" in dump and "keep@me.io" in dump


def test_dropping_a_column_with_values_is_refused(
    invoke, initial_db: URL, versions_copy: Path
) -> None:
    path = add_migration(
        versions_copy,
        "002",
        "001",
        "estimate",
        'op.execute("ALTER TABLE users ADD COLUMN nickname text")',
        'op.drop_column("users", "nickname")',
    )
    env = {**as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(versions_copy)}
    assert invoke("migrate.up", env=env).returncode == 0
    with connect(initial_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, display_name, nickname) VALUES ('a@b.c', 'A', 'ace')"
        )
        conn.execute("INSERT INTO users (email, display_name) VALUES ('d@e.f', 'D')")
    result = invoke("migrate.down", env=env)
    assert result.returncode == 5, result.explain()
    assert "column public.users.nickname (1 value)" in result.stderr, result.explain()
    assert "table public.users" not in result.stderr, "only the column is dropped"
    assert current_revision(initial_db) == "002"
    assert path.exists()


def test_reset_with_rows_is_refused_without_the_flag(invoke, initial_db: URL) -> None:
    _add_user(initial_db)
    result = invoke("db.reset", env=as_env(initial_db))
    assert result.returncode == 5, result.explain()
    assert "table public.users (1 row)" in result.stderr, result.explain()
    assert scalar(initial_db, "SELECT count(*) FROM users") == 1


def test_reset_counts_materialized_views_and_other_schemas(invoke, initial_db: URL) -> None:
    with connect(initial_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA reporting")
        conn.execute("CREATE TABLE reporting.snapshots AS SELECT generate_series(1, 1000) AS n")
        conn.execute("CREATE MATERIALIZED VIEW numbers AS SELECT generate_series(1, 5000) AS n")
    result = invoke("db.reset", env=as_env(initial_db))
    assert result.returncode == 5, result.explain()
    assert "materialized view public.numbers (5000 rows)" in result.stderr, result.explain()
    assert "table reporting.snapshots (1000 rows)" in result.stderr, result.explain()
    done = invoke("db.reset", "--allow-data-loss", env=as_env(initial_db))
    assert done.returncode == 0, done.explain()
    assert scalar(initial_db, "SELECT to_regnamespace('reporting')") is None
    assert scalar(initial_db, "SELECT to_regclass('public.numbers')") is None
    assert current_revision(initial_db) == "001"
