"""A migration never queues behind a long transaction for longer than its lock_timeout,
so the application's writes are never stuck behind it for longer either; it retries with
backoff, and completes once the holder ends or fails clearly after its retries."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import finish
from tests.helpers import (
    add_task_estimates,
    an_attempt_failed,
    as_env,
    connect,
    current_revision,
    scalar,
    tasks_in_a_project,
    wait_until,
)

LOCK_TIMEOUT_S = 1.0
# How much longer than lock_timeout a write may wait: scheduling and commit, not locks.
MARGIN_S = 1.0


class Workload:
    """Inserts tasks in a loop and records how long each insert took."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with connect(self.url, autocommit=True) as conn:
                project = conn.execute("SELECT id FROM projects").fetchone()[0]
                number = 1000
                deadline = time.monotonic() + 60  # bounded, whatever happens
                while not self._stop.is_set() and time.monotonic() < deadline:
                    started = time.monotonic()
                    conn.execute(
                        "INSERT INTO tasks (project_id, number, title) VALUES (%s, %s, 'w')",
                        [project, number],
                    )
                    self.latencies.append(time.monotonic() - started)
                    number += 1
                    time.sleep(0.05)
        except BaseException as error:  # surfaced by the test
            self.errors.append(error)

    def __enter__(self) -> Workload:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def busy_tasks(initial_db: URL, versions_copy: Path) -> dict[str, str]:
    """A database at 001 with an organization and a project, and a 002 that alters tasks."""
    tasks_in_a_project(initial_db)
    add_task_estimates(versions_copy)
    return {
        **as_env(initial_db),
        "WORKTRACKER_VERSIONS_DIR": str(versions_copy),
        "WORKTRACKER_DDL_LOCK_TIMEOUT": f"{LOCK_TIMEOUT_S}s",
        "WORKTRACKER_DDL_LOCK_BACKOFF": "0.3",
    }


def _assert_writes_were_never_stuck(workload: Workload) -> None:
    assert not workload.errors, workload.errors
    assert len(workload.latencies) > 10, "the workload barely ran"
    worst = max(workload.latencies)
    assert worst < LOCK_TIMEOUT_S + MARGIN_S, (
        f"a write waited {worst:.2f} s behind the migration, longer than its lock_timeout "
        f"({LOCK_TIMEOUT_S} s). Likely cause: migrations run without lock_timeout."
    )


@pytest.mark.waits
def test_migration_retries_until_the_long_transaction_ends(
    spawn, initial_db: URL, busy_tasks: dict[str, str]
) -> None:
    with Workload(initial_db) as workload:
        holder = connect(initial_db)
        holder.execute("SELECT count(*) FROM tasks")  # holds ACCESS SHARE until it ends
        process = spawn("migrate.up", env={**busy_tasks, "WORKTRACKER_DDL_LOCK_RETRIES": "10"})
        # Let go once an attempt has given up (however long the run took to start).
        wait_until(
            lambda: an_attempt_failed(initial_db, "002"),
            "an attempt to give up on lock_timeout",
            timeout=60,
        )
        holder.rollback()
        holder.close()
        result = finish(process)
        time.sleep(0.5)
    assert result.returncode == 0, result.explain()
    assert "retrying in" in result.stdout, result.explain()
    assert current_revision(initial_db) == "002"
    # The blocking budget defaults to the lock timeout: on a busy machine its guard may end
    # a wait first, and the row then names the budget.
    failures = scalar(
        initial_db,
        "SELECT count(*) FROM migrations.history WHERE revision = '002' AND NOT success "
        "AND (error LIKE '%%lock timeout%%' OR error LIKE '%%blocking budget%%')",
    )
    assert failures >= 1, "each attempt that gave up leaves a failure row"
    _assert_writes_were_never_stuck(workload)


# The blocking budget (db/blocking.py) also cuts a long lock wait; whichever of it and
# lock_timeout ends the wait first, giving up after the retries reads the same.
@pytest.mark.parametrize(
    "cut_by", [{}, {"WORKTRACKER_BLOCKING_BUDGET": "300ms"}], ids=["lock_timeout", "budget"]
)
@pytest.mark.waits
def test_migration_gives_up_clearly_after_its_retries(
    invoke, initial_db: URL, busy_tasks: dict[str, str], cut_by: dict[str, str]
) -> None:
    with Workload(initial_db) as workload:
        holder = connect(initial_db)
        holder.execute("SELECT count(*) FROM tasks")
        try:
            result = invoke(
                "migrate.up", env={**busy_tasks, "WORKTRACKER_DDL_LOCK_RETRIES": "2", **cut_by}
            )
        finally:
            holder.rollback()
            holder.close()
    assert result.returncode == 4, result.explain()
    assert "could not get its locks: 3 attempt(s)" in result.stderr, result.explain()
    assert "Traceback" not in result.output
    assert current_revision(initial_db) == "001"
    _assert_writes_were_never_stuck(workload)
