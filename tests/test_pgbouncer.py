"""PgBouncer in front of the target: with its default configuration (which refuses libpq's
`options`) and session pooling, runs work, the settings sent with SET instead; pooling
per transaction or statement is refused before the migration lock is taken, so no lock
is left behind on a server connection the pooler hands to others."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import URL

from tests.helpers import as_env, current_revision, scalar
from tests.production import PGBOUNCER, pgbouncer

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)

_LOCKS = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"


def test_session_pooled_pgbouncer_with_its_default_config_runs_migrate_up(
    invoke, empty_db: URL
) -> None:
    with pgbouncer(empty_db, "session") as pooled:
        result = invoke("migrate.up", env=as_env(pooled))
        assert result.returncode == 0, result.explain()
        assert current_revision(empty_db) == "001"
        # The bookkeeping ran with the tool's settings although PgBouncer refused them as
        # libpq options: a history row was written under its statement_timeout.
        status = invoke("migrate.status", env=as_env(pooled))
        assert status.returncode == 0, status.explain()
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
