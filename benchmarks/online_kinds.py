"""The online forms of the load run's blocking kinds: the same change to `tasks`, written
so that no step holds a lock that blocks the application for longer than an instant.

- type-widen-online (type-widen: `tasks.number` integer → bigint): expand (a nullable
  `number_big` and a trigger that keeps it equal to `number` in every row written),
  backfill in batches that each commit, a unique index built CONCURRENTLY, NOT NULL
  proven by a CHECK … NOT VALID then VALIDATE, and a short contract step (SET NOT NULL
  without a scan, drop the old column, rename, adopt the index as the constraint);
- not-null-online (not-null-with-backfill: a `weight` column filled from `priority`,
  then NOT NULL): ADD COLUMN and its default alone, the backfill in batches, then CHECK
  … NOT VALID, VALIDATE, SET NOT NULL (no scan once the check is valid) and drop the check.

The backfill walks the table by page ranges (`ctid`, a TID range scan since PostgreSQL
14), a few thousand rows a batch, each batch its own transaction (`autocommit_block()`):
an application UPDATE of a row waits at most one batch, and the batches pause three
times as long as they run, leaving the application most of the machine. A last sweep fills the
rows an application UPDATE moved to a page the walk had passed. Scans and the index build
run without parallel workers, so that the migration never takes more than one core.
"""

from __future__ import annotations

from tests.corpus import Case, Expect, Migration

BATCH_PAGES = 20
"""Pages per backfill batch (about 1,000 rows of `tasks`)."""


def _backfill(assignment: str, pending: str) -> str:
    return f"""
import time

bind = op.get_bind()
with op.get_context().autocommit_block():
    # One core at most: parallel workers would take the application's.
    op.execute("SET max_parallel_workers_per_gather = 0")
    pages = bind.execute(
        sa.text("SELECT pg_relation_size('tasks') / current_setting('block_size')::int")
    ).scalar()
    for start in range(0, pages + 1, {BATCH_PAGES}):
        began = time.perf_counter()
        bind.execute(
            sa.text(
                "UPDATE tasks SET {assignment} WHERE {pending} "
                f"AND ctid >= '({{start}},0)'::tid "
                f"AND ctid < '({{start + {BATCH_PAGES}}},0)'::tid"
            )
        )
        time.sleep(3 * (time.perf_counter() - began))
    # Rows an application UPDATE moved behind the walk (to a page already done).
    while bind.execute(
        sa.text(
            "UPDATE tasks SET {assignment} WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM tasks WHERE {pending} LIMIT 2000))"
        )
    ).rowcount:
        pass
    op.execute("RESET max_parallel_workers_per_gather")
"""


_SYNC = (
    "CREATE FUNCTION tasks_number_big() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN NEW.number_big := NEW.number; RETURN NEW; END $$"
)
TYPE_WIDEN_ONLINE = Case(
    "type-widen-online",
    (
        Migration(
            "add_task_number_big",
            f"""
op.add_column("tasks", sa.Column("number_big", sa.BigInteger(), nullable=True))
op.execute("{_SYNC}")
op.execute("CREATE TRIGGER tasks_number_big BEFORE INSERT OR UPDATE ON tasks "
           "FOR EACH ROW EXECUTE FUNCTION tasks_number_big()")
""",
            'op.execute("DROP TRIGGER tasks_number_big ON tasks")\n'
            'op.execute("DROP FUNCTION tasks_number_big()")\n'
            'op.drop_column("tasks", "number_big")',
        ),
        Migration(
            "backfill_task_number_big",
            _backfill("number_big = number", "number_big IS NULL"),
            "pass",
        ),
        Migration(
            "index_task_number_big",
            """
with op.get_context().autocommit_block():
    # One core at most: a parallel build would take the application's.
    op.execute("SET max_parallel_maintenance_workers = 0")
    op.execute("CREATE UNIQUE INDEX CONCURRENTLY uq_tasks_project_id_number_big "
               "ON tasks (project_id, number_big)")
    op.execute("RESET max_parallel_maintenance_workers")
""",
            'op.execute("DROP INDEX uq_tasks_project_id_number_big")',
        ),
        Migration(
            "check_task_number_big",
            'op.execute("ALTER TABLE tasks ADD CONSTRAINT ck_tasks_number_big_not_null '
            'CHECK (number_big IS NOT NULL) NOT VALID")',
            'op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_number_big_not_null")',
        ),
        Migration(
            "validate_task_number_big",
            'op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_number_big_not_null")',
            "pass",
        ),
        Migration(
            "swap_task_number",
            """
# The valid CHECK proves NOT NULL: no scan (PostgreSQL 12+).
op.execute("ALTER TABLE tasks ALTER COLUMN number_big SET NOT NULL")
op.execute("DROP TRIGGER tasks_number_big ON tasks")
op.execute("DROP FUNCTION tasks_number_big()")
op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_number_big_not_null")
op.execute("ALTER TABLE tasks DROP COLUMN number")
op.execute("ALTER TABLE tasks RENAME COLUMN number_big TO number")
op.execute("ALTER TABLE tasks ADD CONSTRAINT uq_tasks_project_id_number "
           "UNIQUE USING INDEX uq_tasks_project_id_number_big")
op.execute("ALTER TABLE tasks ADD CONSTRAINT ck_tasks_number_positive "
           "CHECK (number > 0) NOT VALID")
op.execute("COMMENT ON COLUMN tasks.number IS "
           "'Sequence number within the project (WEB-42); never reused.'")
""",
            "pass",
        ),
        Migration(
            "validate_task_number_positive",
            'op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_number_positive")',
            "pass",
        ),
    ),
    Expect(True),
)

NOT_NULL_ONLINE = Case(
    "not-null-online",
    (
        Migration(
            "add_task_weight",
            'op.add_column("tasks", sa.Column("weight", sa.SmallInteger(), nullable=True))\n'
            'op.alter_column("tasks", "weight", server_default="3")',
            'op.drop_column("tasks", "weight")',
        ),
        Migration(
            "backfill_task_weight",
            _backfill("weight = priority + 1", "weight IS NULL"),
            "pass",
        ),
        Migration(
            "check_task_weight",
            'op.execute("ALTER TABLE tasks ADD CONSTRAINT ck_tasks_weight_not_null '
            'CHECK (weight IS NOT NULL) NOT VALID")',
            'op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_weight_not_null")',
        ),
        Migration(
            "validate_task_weight",
            'op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT ck_tasks_weight_not_null")',
            "pass",
        ),
        Migration(
            "require_task_weight",
            """
# The valid CHECK proves NOT NULL: no scan (PostgreSQL 12+).
op.alter_column("tasks", "weight", nullable=False)
op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_weight_not_null")
""",
            'op.alter_column("tasks", "weight", nullable=True)',
        ),
    ),
    Expect(True),
)

CASES = {case.name: case for case in (TYPE_WIDEN_ONLINE, NOT_NULL_ONLINE)}
