"""A migration names its constraints alike whichever way it is applied: `migrate.up`
(which never imports the models), its dry run, and Alembic's own entry with the models
(`alembic upgrade`, pytest-alembic, autogenerate) all shape a bare name given to
op.create_* by the naming convention (db/naming.py), as the migration template says.
They used to differ: the same file made `estimate_positive` under migrate.up and
`ck_tasks_estimate_positive` under `alembic upgrade`."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import URL

from db import revisions
from db.models import Base
from tests.conftest import make_engine
from tests.helpers import add_migration, as_env, scalar

CHECK = "ck_tasks_estimate_positive"
"""What the models' convention names a CHECK called "estimate_positive" on tasks."""

NAMES = (
    "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint "
    "WHERE conrelid = 'tasks'::regclass AND conname LIKE '%estimate%'"
)


@pytest.fixture
def estimates(versions_copy: Path) -> dict[str, str]:
    add_migration(
        versions_copy,
        "002",
        "001",
        "task_estimates",
        'op.execute("ALTER TABLE tasks ADD COLUMN estimate integer")\n'
        'op.create_check_constraint("estimate_positive", "tasks", "estimate > 0")',
        'op.drop_constraint("estimate_positive", "tasks", type_="check")\n'
        'op.execute("ALTER TABLE tasks DROP COLUMN estimate")',
    )
    return {"WORKTRACKER_VERSIONS_DIR": str(versions_copy)}


def test_the_convention_in_the_template_is_the_models_convention() -> None:
    assert Base.metadata.naming_convention["ck"] == "ck_%(table_name)s_%(constraint_name)s"


def test_migrate_up_and_its_dry_run_use_the_convention(
    invoke, initial_db: URL, estimates: dict[str, str]
) -> None:
    env = {**as_env(initial_db), **estimates}
    dry = invoke("migrate.up", "--dry-run", env=env)
    assert dry.returncode == 0, dry.explain()
    assert f"ADD CONSTRAINT {CHECK} CHECK" in dry.stdout, dry.explain()
    applied = invoke("migrate.up", env=env)
    assert applied.returncode == 0, applied.explain()
    assert scalar(initial_db, NAMES) == CHECK
    down = invoke("migrate.down", env=env)
    assert down.returncode == 0, down.explain()
    assert scalar(initial_db, NAMES) is None, "the downgrade drops it by the same name"


def test_alembics_own_entry_with_the_models_gives_the_same_name(
    initial_db: URL, estimates: dict[str, str], monkeypatch
) -> None:
    for key, value in estimates.items():
        monkeypatch.setenv(key, value)
    config = revisions.alembic_config()
    engine = make_engine(initial_db)
    with engine.connect() as connection:
        # As `alembic upgrade` and pytest-alembic enter env.py: the models are imported.
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    engine.dispose()
    assert scalar(initial_db, NAMES) == CHECK
