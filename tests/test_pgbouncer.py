"""PgBouncer in front of the target: with its default configuration (which refuses libpq's
`options`) and session pooling, runs work, the settings sent with SET instead; pooling
per transaction or statement is refused before the migration lock is taken, so no lock
is left behind on a server connection the pooler hands to others."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from db import connect, settings
from tests.helpers import as_env, current_revision, scalar
from tests.production import PGBOUNCER, pgbouncer

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)

_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"


def test_session_pooled_pgbouncer_with_its_default_config_runs_up_down_and_plan(
    invoke, empty_db: URL
) -> None:
    with pgbouncer(empty_db, "session") as pooled:
        result = invoke("migrate.up", env=as_env(pooled))
        assert result.returncode == 0, result.explain()
        assert current_revision(empty_db) == "001"
        for command in ("migrate.status", "migrate.plan", "migrate.down", "migrate.up"):
            again = invoke(command, env=as_env(pooled))
            assert again.returncode == 0, f"{command}: {again.explain()}"
        assert current_revision(empty_db) == "001"
    assert scalar(empty_db, _LOCKS) == 0


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("transaction", ""),
        ("transaction", "server_round_robin = 1"),
        ("transaction", "ignore_startup_parameters = options"),
        ("statement", ""),
    ],
    ids=["transaction", "transaction-round-robin", "transaction-ignoring-options", "statement"],
)
@pytest.mark.parametrize("command", ["migrate.up", "migrate.plan"])
def test_pooling_per_transaction_is_refused_and_leaves_no_lock(
    invoke, empty_db: URL, mode: str, extra: str, command: str
) -> None:
    with pgbouncer(empty_db, mode, extra) as pooled:
        for _ in range(2):  # the second run must not find a leaked lock either
            result = invoke(command, env=as_env(pooled))
            if mode == "statement":  # PgBouncer refuses the first transaction block
                assert result.returncode == 3, result.explain()
                assert "statement pooling mode" in result.stderr, result.explain()
            else:
                assert result.returncode == 9, result.explain()
                assert "pool_mode = transaction or statement" in result.stderr, result.explain()
            assert "pool_mode = session" in result.stderr, result.explain()
            assert "Traceback" not in result.output, result.explain()
        # Held by nobody while the pooler's server connections are still open.
        assert scalar(empty_db, _LOCKS) == 0
    assert current_revision(empty_db) is None


def test_settings_pgbouncer_refuses_as_options_are_set_first(empty_db: URL) -> None:
    config = settings.load()

    def shown(url: URL) -> tuple[str, str]:
        engine = connect.engine_for(url, config)
        with connect.connect(engine) as connection:
            row = connection.execute(
                text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
            ).one()
        engine.dispose()
        return tuple(row)

    direct = shown(empty_db)
    assert direct != ("0", "0"), "the tool's own timeouts, not the server's defaults"
    with pgbouncer(empty_db, "session") as pooled:
        assert shown(pooled) == direct
