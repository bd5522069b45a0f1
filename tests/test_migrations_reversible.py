"""Going down to base leaves the app schema exactly as it was; going up again rebuilds
exactly what the first upgrade built."""

from __future__ import annotations

from sqlalchemy.engine import URL

from db import planning, revisions, runner
from db.catalog import app_inventory
from tests.conftest import make_engine


def _diff(before: list[str], after: list[str]) -> str:
    return "\n".join(
        [f"- {line}" for line in sorted(set(before) - set(after))]
        + [f"+ {line}" for line in sorted(set(after) - set(before))]
    )


def test_up_down_up_consistency(empty_db: URL) -> None:
    script = revisions.script_directory()
    engine = make_engine(empty_db)
    with engine.connect() as connection:
        empty = app_inventory(connection)
        runner.run(connection, planning.plan_upgrade(script, None, "head"))
        at_head = app_inventory(connection)
        assert len(at_head) > 100, "the upgrade created (almost) nothing"

        plan = planning.plan_downgrade(
            script, planning.current_revision(connection), steps=None, target="base"
        )
        runner.run(connection, plan)
        after_down = app_inventory(connection)
        assert after_down == empty, (
            "downgrade to base left the app schema different from before the upgrade.\n"
            "Likely cause: a downgrade() forgets to drop something its upgrade() created.\n"
            f"--- diff (- before upgrade, + after downgrade) ---\n{_diff(empty, after_down)}"
        )
        assert planning.current_revision(connection) is None

        runner.run(connection, planning.plan_upgrade(script, None, "head"))
        again = app_inventory(connection)
        assert again == at_head, (
            "the second upgrade built something else than the first.\n"
            f"--- diff (- first head, + second head) ---\n{_diff(at_head, again)}"
        )
    engine.dispose()
