"""The roundtrip over the real chain: every revision up, down and up again with the catalog
and the rows compared, then the whole chain, then the models against head."""

from __future__ import annotations

import pytest
from alembic.script import Script

from db import planning, revisions, runner
from db.roundtrip.chain import whole_chain
from db.roundtrip.results import FAIL, Result
from db.roundtrip.stairway import Stairway
from db.throwaway import Server
from tests.conftest import VERSIONS, make_engine
from tests.helpers import as_env

CHAIN = revisions.chain(revisions.script_directory())


def _explain(results: list[Result]) -> str:
    return "\n\n".join(
        f"--- {r.revision} {r.step}: {r.status} ---\n{r.detail}" for r in results if r.detail
    )


@pytest.mark.parametrize("script", CHAIN, ids=[s.revision for s in CHAIN])
def test_up_down_up_consistency(pg_server: Server, script: Script) -> None:
    url = pg_server.create_database()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            parent = script.down_revision or "base"
            if script.down_revision:
                runner.run(
                    connection, planning.plan_upgrade(revisions.script_directory(), None, parent)
                )
            results = Stairway(pg_server, url.database, connection).revision(script)
    finally:
        engine.dispose()
        pg_server.drop_database(url.database)
    failed = [r for r in results if r.status == FAIL]
    assert not failed, f"revision {script.revision} is not reversible:\n{_explain(failed)}"
    steps = [r.step for r in results]
    assert steps == ["up", "down", "data", "up again"], steps


def test_whole_chain_and_models_match_head(pg_server: Server) -> None:
    results = whole_chain(pg_server)
    failed = [r for r in results if r.status == FAIL]
    assert not failed, _explain(failed)
    assert [r.step for r in results] == [
        "base → head",
        "head → base",
        "base → head again",
        "models vs head",
    ]


def test_the_roundtrip_prints_each_step_once_and_json_for_ci(invoke, pg_server: Server) -> None:
    import json
    import re

    # On the tests' server: starting a server of its own is what `nox -s roundtrip` does.
    # The real chain: "models vs head" compares the models with its head.
    env = {
        "TEST_DATABASE_URL": as_env(pg_server.admin_url)["DATABASE_URL"],
        "WORKTRACKER_VERSIONS_DIR": str(VERSIONS),
    }
    piped = invoke("migrate.roundtrip", env=env, timeout=300)
    assert piped.returncode == 0, piped.explain()
    lines = [line for line in piped.stdout.splitlines() if line.strip().startswith("001")]
    steps = [re.split(r"\s{2,}", line.strip())[1] for line in lines]
    assert "up again" in steps, piped.stdout
    assert len(steps) == len(set(steps)), piped.stdout
    data = next(line for line in lines if re.split(r"\s{2,}", line.strip())[1] == "data")
    assert "drops what 001 created" in data or "no rows lost" in data, (
        "the notes of steps that passed show in a CI log too:\n" + data
    )
    as_json = invoke("migrate.roundtrip", "--json", env=env, timeout=300)
    assert as_json.returncode == 0, as_json.explain()
    document = json.loads(as_json.stdout)
    assert document["ok"] is True and document["results"], document
    assert {"revision", "step", "status", "seconds", "detail", "note"} <= set(
        document["results"][0]
    )
