"""The corpus: the migration kinds teams write after 001, each a small chain on top of it,
with the verdict expected from the roundtrip, the rollback guard and the plan.

Every case is written the way a team would write it (op.* calls, raw SQL where Alembic
has no operation). The tests that run them are test_corpus_*.py.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import INITIAL


@dataclass(frozen=True)
class Migration:
    slug: str
    upgrade: str
    downgrade: str
    declarations: dict[str, str] = field(default_factory=dict)
    down_revision: str | tuple[str, ...] | None = None
    """Default: the previous migration of the case."""


@dataclass(frozen=True)
class Expect:
    """A verdict: passes or not, at which step, and the key words of its message."""

    ok: bool
    step: str = ""
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    migrations: tuple[Migration, ...]
    roundtrip: Expect
    guard: Expect | None = None
    """`migrate.down` (one step) at head, after the tables were filled with sample rows."""
    plan: tuple[str, ...] = ()
    """Key words of `migrate.plan` from 001 to head."""
    plan_down: tuple[str, ...] = ()
    """Key words of `migrate.plan --down` at head."""
    whole_chain: bool = False
    """Run the whole roundtrip (static checks, stairway, whole chain, models)."""
    lint: Expect | None = None
    """`migrate.lint` (squawk) on the chain; `words` are rule names."""


def _indent(code: str) -> str:
    return textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")


def write_chain(folder: Path, case: Case) -> list[Path]:
    """001 and the case's migrations (002, 003, …) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INITIAL.name).write_text(INITIAL.read_text())
    paths, previous = [], "001"
    for number, migration in enumerate(case.migrations, start=2):
        revision = f"{number:03d}"
        down = migration.down_revision or previous
        down_repr = repr(down) if isinstance(down, tuple) else f'"{down}"'
        declarations = "".join(f"{k} = {v!r}\n" for k, v in migration.declarations.items())
        source = (
            f'"""{migration.slug.replace("_", " ")}"""\n\n'
            "from __future__ import annotations\n\n"
            "import sqlalchemy as sa\n"
            "from alembic import op\n\n"
            f'revision = "{revision}"\n'
            f"down_revision = {down_repr}\n"
            "branch_labels = None\n"
            "depends_on = None\n"
            f"{declarations}\n\n"
            f"def upgrade() -> None:\n{_indent(migration.upgrade)}\n\n\n"
            f"def downgrade() -> None:\n{_indent(migration.downgrade)}\n"
        )
        path = folder / f"{revision}_{migration.slug}.py"
        path.write_text(source)
        paths.append(path)
        previous = revision
    return paths


# --- pieces used by several cases --------------------------------------------------------

CHECK_NOT_VALID = """
op.execute("ALTER TABLE tasks ADD CONSTRAINT ck_tasks_priority_not_negative "
           "CHECK (priority >= 0) NOT VALID")
"""
FK_NOT_VALID = """
op.create_foreign_key("fk_tasks_reviewer_id_users", "tasks", "users", ["reviewer_id"], ["id"],
                      ondelete="SET NULL", postgresql_not_valid=True)
"""

ENUM_REBUILD = """
op.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_completed_at_status")
op.execute("ALTER TABLE tasks ALTER COLUMN status DROP DEFAULT")
op.execute("ALTER TYPE task_status RENAME TO task_status_old")
op.execute(
    "CREATE TYPE task_status AS ENUM ({labels})"
)
op.execute("COMMENT ON TYPE task_status IS 'Where a task is in its life cycle.'")
op.execute(
    "ALTER TABLE tasks ALTER COLUMN status TYPE task_status USING status::text::task_status"
)
op.execute("ALTER TABLE tasks ALTER COLUMN status SET DEFAULT 'todo'")
op.execute("DROP TYPE task_status_old")
op.execute(
    "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_completed_at_status "
    "CHECK (completed_at IS NULL OR status IN ('done', 'canceled'))"
)
"""
LABELS_001 = "'todo', 'in_progress', 'in_review', 'done', 'canceled'"
ADD_ON_HOLD = """
with op.get_context().autocommit_block():
    op.execute("ALTER TYPE task_status ADD VALUE IF NOT EXISTS 'on_hold' AFTER 'in_progress'")
"""
ONLINE_INDEX = """
with op.get_context().autocommit_block():
    op.create_index(
        "ix_tasks_due_date", "tasks", ["due_date"], postgresql_concurrently=True,
        if_not_exists=True,
    )
"""
DROP_ONLINE_INDEX = """
with op.get_context().autocommit_block():
    op.drop_index(
        "ix_tasks_due_date", table_name="tasks", postgresql_concurrently=True, if_exists=True
    )
"""
WIDGETS = """
op.create_table(
    "widgets",
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
"""
ESTIMATES = """
op.create_table(
    "task_estimates",
    sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
    sa.Column("task_id", sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"),
              nullable=False, unique=True),
    sa.Column("hours", sa.Numeric(6, 1), nullable=False),
    sa.Column("unit", sa.Text(), nullable=False),
    sa.Column("code", sa.Text(), nullable=False),
    sa.Column("note", sa.Text(), nullable=True),
    sa.CheckConstraint("hours BETWEEN 0 AND 1000", name=op.f("ck_task_estimates_hours_range")),
    sa.CheckConstraint("unit IN ('hours', 'days', 'points')", name=op.f("ck_task_estimates_unit")),
    sa.CheckConstraint("code ~ '^[A-Z]{2}-[0-9]{3}$'", name=op.f("ck_task_estimates_code")),
    sa.CheckConstraint(
        "char_length(note) BETWEEN 3 AND 40", name=op.f("ck_task_estimates_note_length")
    ),
    sa.CheckConstraint(
        "unit <> 'points' OR hours <= 100", name=op.f("ck_task_estimates_points_small")
    ),
)
"""
REPORTING = """
op.execute("CREATE SCHEMA reporting")
op.create_table(
    "daily_counts",
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("open_tasks", sa.Integer(), nullable=False),
    schema="reporting",
)
op.create_index("ix_daily_counts_open", "daily_counts", ["open_tasks"], schema="reporting")
"""

# --- the cases ---------------------------------------------------------------------------

CASES: list[Case] = [
    Case(
        "enum-label-add",
        (
            Migration(
                "add_on_hold_status",
                ADD_ON_HOLD,
                "op.execute(\"UPDATE tasks SET status = 'todo' WHERE status = 'on_hold'\")\n"
                + ENUM_REBUILD.format(labels=LABELS_001),
            ),
        ),
        Expect(True),
        guard=Expect(False, "refused", ("table public.tasks", "changed")),
        plan=("+ enum label public.task_status 'on_hold'",),
        plan_down=("- enum label public.task_status 'on_hold'",),
        # The downgrade rebuilds the type: a rewrite of tasks, and a CHECK validated under
        # its lock. Lint reports a downgrade's locks as an upgrade's.
        lint=Expect(False, "lint", ("changing-column-type", "constraint-missing-not-valid")),
    ),
    Case(
        "enum-label-add-unsafe-downgrade",
        (
            Migration(
                "add_on_hold_status",
                ADD_ON_HOLD,
                ENUM_REBUILD.format(labels=LABELS_001),  # forgets the on_hold rows
            ),
        ),
        Expect(False, "down", ("invalid input value for enum", "on_hold")),
        guard=Expect(False, "fails", ("fails in its rehearsal", "on_hold")),
    ),
    Case(
        "enum-label-rename",
        (
            Migration(
                "rename_in_review",
                "op.execute(\"ALTER TYPE task_status RENAME VALUE 'in_review' TO 'review'\")",
                "op.execute(\"ALTER TYPE task_status RENAME VALUE 'review' TO 'in_review'\")",
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("~ enum label public.task_status 'in_review' renamed to 'review'",),
    ),
    Case(
        "enum-label-remove",
        (
            Migration(
                "drop_in_review",
                "op.execute(\"UPDATE tasks SET status = 'in_progress' WHERE status = 'in_review'\")"
                "\n" + ENUM_REBUILD.format(labels="'todo', 'in_progress', 'done', 'canceled'"),
                ADD_ON_HOLD.replace("on_hold", "in_review").replace(
                    "AFTER 'in_progress'", "BEFORE 'done'"
                ),
                {"downgrade_loses_data": "tasks in review were moved to in progress"},
            ),
        ),
        Expect(True, "declared", ("tasks in review were moved",)),
        plan=("- enum label public.task_status 'in_review'",),
    ),
    Case(
        "online-index-create",
        (Migration("index_due_date", ONLINE_INDEX, DROP_ONLINE_INDEX),),
        Expect(True),
        guard=Expect(True),
        plan=("+ index ix_tasks_due_date on public.tasks",),
        plan_down=("- index ix_tasks_due_date on public.tasks",),
        lint=Expect(True),
    ),
    Case(
        "index-without-concurrently",
        (
            Migration(
                "index_due_date",
                'op.create_index("ix_tasks_due_date", "tasks", ["due_date"])',
                'op.drop_index("ix_tasks_due_date", table_name="tasks")',
            ),
        ),
        Expect(True),
        guard=Expect(True),
        lint=Expect(False, "lint", ("require-concurrent-index-creation",)),
    ),
    Case(
        "online-index-drop",
        (
            Migration(
                "drop_reporter_index",
                """
                with op.get_context().autocommit_block():
                    op.drop_index("ix_tasks_reporter_id", table_name="tasks",
                                  postgresql_concurrently=True, if_exists=True)
                """,
                """
                with op.get_context().autocommit_block():
                    op.create_index("ix_tasks_reporter_id", "tasks", ["reporter_id"],
                                    postgresql_concurrently=True, if_not_exists=True)
                """,
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("- index ix_tasks_reporter_id on public.tasks",),
    ),
    Case(
        "column-rename",
        (
            Migration(
                "rename_task_title",
                """
                op.alter_column("tasks", "title", new_column_name="name")
                op.execute("ALTER TABLE tasks RENAME CONSTRAINT ck_tasks_title_length "
                           "TO ck_tasks_name_length")
                op.alter_column("tasks", "assignee_id", new_column_name="owner_id")
                op.execute("ALTER INDEX ix_tasks_assignee_id RENAME TO ix_tasks_owner_id")
                op.execute("ALTER TABLE tasks RENAME CONSTRAINT fk_tasks_assignee_id_users "
                           "TO fk_tasks_owner_id_users")
                """,
                """
                op.execute("ALTER TABLE tasks RENAME CONSTRAINT fk_tasks_owner_id_users "
                           "TO fk_tasks_assignee_id_users")
                op.execute("ALTER INDEX ix_tasks_owner_id RENAME TO ix_tasks_assignee_id")
                op.alter_column("tasks", "owner_id", new_column_name="assignee_id")
                op.execute("ALTER TABLE tasks RENAME CONSTRAINT ck_tasks_name_length "
                           "TO ck_tasks_title_length")
                op.alter_column("tasks", "name", new_column_name="title")
                """,
            ),
        ),
        Expect(True, "data", ("no rows lost",)),
        guard=Expect(True),
        plan=("~ column public.tasks.title renamed to name",),
        plan_down=("~ column public.tasks.name renamed to title",),
        lint=Expect(False, "lint", ("renaming-column",)),
    ),
    Case(
        "table-rename",
        (
            Migration(
                "rename_labels_to_tags",
                'op.rename_table("labels", "tags")',
                'op.rename_table("tags", "labels")',
            ),
        ),
        Expect(True, "data", ("no rows lost",)),
        guard=Expect(True),
        plan=("~ table public.labels renamed to public.tags",),
    ),
    Case(
        "type-widen",
        (
            Migration(
                "widen_task_number",
                'op.alter_column("tasks", "number", type_=sa.BigInteger())',
                'op.alter_column("tasks", "number", type_=sa.Integer())',
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("~ column public.tasks.number type integer → bigint",),
    ),
    Case(
        "type-narrow-in-upgrade",
        (
            Migration(
                "shorten_titles",
                'op.execute("ALTER TABLE tasks ALTER COLUMN title TYPE varchar(5) '
                'USING left(title, 5)")',
                'op.execute("ALTER TABLE tasks ALTER COLUMN title TYPE text")',
            ),
        ),
        Expect(False, "data", ("public.tasks", "existed before up are gone or changed")),
    ),
    Case(
        "type-narrow-in-downgrade",
        (
            Migration(
                "add_task_code",
                'op.add_column("tasks", sa.Column("code", sa.String(5)))',
                'op.drop_column("tasks", "code")',
            ),
            Migration(
                "widen_task_code",
                'op.alter_column("tasks", "code", type_=sa.Text())',
                'op.execute("ALTER TABLE tasks ALTER COLUMN code TYPE varchar(5) '
                'USING left(code, 5)")',
            ),
        ),
        Expect(True),
        guard=Expect(False, "refused", ("table public.tasks", "changed")),
    ),
    Case(
        "not-null-with-backfill",
        (
            Migration(
                "add_task_weight",
                """
                op.add_column("tasks", sa.Column("weight", sa.SmallInteger(), nullable=True))
                op.execute("UPDATE tasks SET weight = priority + 1")
                op.alter_column("tasks", "weight", nullable=False, server_default="3")
                """,
                'op.drop_column("tasks", "weight")',
            ),
        ),
        Expect(True, "data", ("drops what 002 created", "column public.tasks.weight")),
        guard=Expect(False, "refused", ("column public.tasks.weight",)),
        plan=("+ column public.tasks.weight smallint not null default '3'::smallint",),
        lint=Expect(False, "lint", ("adding-not-nullable-field",)),
    ),
    Case(
        "data-only",
        (
            Migration(
                "turn_on_beta",
                'op.execute("UPDATE organizations SET settings = settings || '
                '\'{\\"beta\\": true}\'")',
                "pass",
            ),
        ),
        Expect(True, "data", ("data-only migration",)),
        guard=Expect(True),
        plan=("Schema changes: none.",),
    ),
    Case(
        "new-table-with-checks",
        (Migration("add_task_estimates", ESTIMATES, 'op.drop_table("task_estimates")'),),
        Expect(True, "data", ("drops what 002 created", "table public.task_estimates")),
        guard=Expect(False, "refused", ("table public.task_estimates",)),
        plan=("+ table public.task_estimates (6 columns, 8 constraints)",),
    ),
    Case(
        "stock-create-drop",
        (Migration("add_widgets", WIDGETS, 'op.drop_table("widgets")'),),
        Expect(True, "data", ("drops what 002 created: table public.widgets",)),
        guard=Expect(False, "refused", ("table public.widgets",)),
        lint=Expect(False, "lint", ("prefer-identity", "prefer-text-field")),
    ),
    Case(
        "other-schema",
        (
            Migration(
                "add_reporting",
                REPORTING,
                'op.drop_table("daily_counts", schema="reporting")\n'
                'op.execute("DROP SCHEMA reporting")',
            ),
        ),
        Expect(True, "data", ("table reporting.daily_counts",)),
        guard=Expect(False, "refused", ("table reporting.daily_counts",)),
        plan=("+ schema reporting", "+ table reporting.daily_counts"),
        plan_down=("- schema reporting", "- table reporting.daily_counts"),
    ),
    Case(
        "other-schema-left-behind",
        (
            Migration(
                "add_reporting",
                REPORTING,
                'op.drop_index("ix_daily_counts_open", table_name="daily_counts", '
                'schema="reporting")',
            ),
        ),
        Expect(False, "down", ("+ schema reporting", "+ table reporting.daily_counts")),
    ),
    Case(
        "view-and-matview",
        (
            Migration(
                "add_task_views",
                """
                op.execute("CREATE VIEW open_tasks AS SELECT id, title FROM tasks "
                           "WHERE completed_at IS NULL")
                op.execute("CREATE MATERIALIZED VIEW task_counts AS "
                           "SELECT project_id, count(*) AS n FROM tasks GROUP BY project_id")
                """,
                """
                op.execute("DROP MATERIALIZED VIEW task_counts")
                op.execute("DROP VIEW open_tasks")
                """,
            ),
        ),
        Expect(True),
        guard=Expect(False, "refused", ("materialized view public.task_counts",)),
        plan=("+ view public.open_tasks", "+ materialized view public.task_counts"),
    ),
    Case(
        "function-and-trigger",
        (
            Migration(
                "touch_task_on_comment",
                """
                op.execute(
                    "CREATE FUNCTION touch_task() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN UPDATE tasks SET updated_at = now() WHERE id = NEW.task_id; "
                    "RETURN NEW; END $$"
                )
                op.execute("CREATE TRIGGER trg_comments_touch_task AFTER INSERT ON comments "
                           "FOR EACH ROW EXECUTE FUNCTION touch_task()")
                """,
                """
                op.execute("DROP TRIGGER trg_comments_touch_task ON comments")
                op.execute("DROP FUNCTION touch_task()")
                """,
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("+ function touch_task() in public", "+ trigger trg_comments_touch_task"),
    ),
    Case(
        "trigger-forgotten",
        (
            Migration(
                "touch_users",
                'op.execute("CREATE TRIGGER trg_users_touch BEFORE UPDATE ON users '
                'FOR EACH ROW EXECUTE FUNCTION set_updated_at()")',
                'op.execute("SELECT 1")',
            ),
        ),
        Expect(False, "down", ("CREATE TRIGGER trg_users_touch",)),
    ),
    Case(
        "sequence",
        (
            Migration(
                "add_invoice_numbers",
                'op.execute(sa.schema.CreateSequence(sa.Sequence("invoice_number_seq", '
                "start=1000)))",
                'op.execute(sa.schema.DropSequence(sa.Sequence("invoice_number_seq")))',
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("+ sequence invoice_number_seq in public",),
    ),
    Case(
        "comment-change",
        (
            Migration(
                "reword_task_comment",
                'op.create_table_comment("tasks", "Work to do.")',
                'op.create_table_comment("tasks", "A unit of work in a project (soft-delete).")',
            ),
        ),
        Expect(True),
        guard=Expect(True),
        plan=("~ comment on table public.tasks",),
    ),
    Case(
        "comment-forgotten",
        (
            Migration(
                "reword_task_comment",
                'op.create_table_comment("tasks", "Work to do.")',
                'op.drop_table_comment("tasks")',
            ),
        ),
        Expect(False, "down", ("~ comment on table public.tasks",)),
    ),
    Case(
        "downgrade-deletes-rows",
        (
            Migration(
                "pin_comments",
                'op.add_column("comments", sa.Column("pinned", sa.Boolean(), nullable=True))',
                'op.drop_column("comments", "pinned")\n'
                "op.execute(\"DELETE FROM comments WHERE body <> 'keep'\")",
            ),
        ),
        Expect(False, "data", ("public.comments", "existed before up are gone or changed")),
        guard=Expect(False, "refused", ("table public.comments:", "deleted")),
    ),
    Case(
        "downgrade-rewrites-rows",
        (
            Migration(
                "add_task_summary",
                'op.add_column("tasks", sa.Column("summary", sa.Text(), nullable=True))',
                'op.drop_column("tasks", "summary")\n'
                'op.execute("UPDATE tasks SET title = left(title, 4)")',
            ),
        ),
        Expect(False, "data", ("public.tasks", "gone or changed")),
        guard=Expect(False, "refused", ("table public.tasks:", "changed")),
    ),
    Case(
        "downgrade-forgets-table",
        (Migration("add_widgets", WIDGETS, 'op.execute("SELECT 1")'),),
        Expect(False, "down", ("+ table public.widgets",)),
    ),
    Case(
        "downgrade-not-written",
        (
            Migration(
                "add_widgets",
                WIDGETS,
                'raise NotImplementedError("write downgrade() before applying this migration")',
            ),
        ),
        Expect(False, "down", ("NotImplementedError", "irreversible")),
    ),
    Case(
        "unsatisfiable-check",
        (
            Migration(
                "add_odd_table",
                'op.execute("CREATE TABLE odd (a int NOT NULL, CONSTRAINT ck_odd_never '
                'CHECK (a > 10 AND a < 5))")',
                'op.drop_table("odd")',
            ),
        ),
        Expect(False, "sample rows", ("odd", "ck_odd_never")),
    ),
    Case(
        "irreversible-in-the-middle",
        (
            Migration(
                "merge_duplicate_labels",
                "op.execute(\"UPDATE labels SET color = '#000000'\")",
                'raise NotImplementedError("the merge cannot be undone")',
                {"irreversible": "duplicate labels are merged"},
            ),
            Migration(
                "add_task_touch_function",
                'op.execute("CREATE FUNCTION task_touch() RETURNS int LANGUAGE sql AS '
                "'SELECT 1'\")",
                'op.execute("DROP FUNCTION task_touch()")',
            ),
        ),
        Expect(True),
        whole_chain=True,
    ),
    Case(
        "merge",
        (
            Migration("branch_a", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
            Migration(
                "branch_b", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")', down_revision="001"
            ),
            Migration("merge_branches", "pass", "pass", down_revision=("002", "003")),
        ),
        Expect(False, "static checks", ("004 merges 002, 003",)),
        whole_chain=True,
    ),
    Case(
        "two-heads",
        (
            Migration("branch_a", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")'),
            Migration(
                "branch_b", 'op.execute("SELECT 1")', 'op.execute("SELECT 1")', down_revision="001"
            ),
        ),
        Expect(False, "static checks", ("2 heads", "002", "003")),
        whole_chain=True,
    ),
    # --- one run, every defect (stairway): rows after irreversible, column order -----
    Case(
        "irreversible-then-a-down-that-deletes-its-rows",
        (
            Migration(
                "add_archive",
                'op.create_table("archive", sa.Column("id", sa.Integer(), sa.Identity(), '
                'primary_key=True), sa.Column("note", sa.Text(), nullable=False))',
                'raise NotImplementedError("the archive stays")',
                {"irreversible": "the archive stays"},
            ),
            Migration(
                "index_archive_note",
                'op.create_index("ix_archive_note", "archive", ["note"])',
                'op.drop_index("ix_archive_note", table_name="archive")\n'
                'op.execute("DELETE FROM archive")',
            ),
        ),
        Expect(False, "data", ("public.archive", "existed before up")),
    ),
    Case(
        "down-re-adds-a-column-at-the-end",
        (
            Migration(
                "add_widgets",
                'op.create_table("widgets", sa.Column("a", sa.Integer()), '
                'sa.Column("b", sa.Integer()), sa.Column("c", sa.Integer()))',
                'op.drop_table("widgets")',
            ),
            Migration(
                "drop_widgets_b",
                'op.drop_column("widgets", "b")',
                'op.add_column("widgets", sa.Column("b", sa.Integer()))',
                {"downgrade_loses_data": "b is gone"},
            ),
        ),
        Expect(
            False,
            "down",
            ("~ table public.widgets: column order differs: (a, b, c) → (a, c, b)",),
        ),
    ),
    # --- sample rows: what a revision newly allows, NULLs, foreign-key cycles ------------
    Case(
        "relaxed-not-null-downgrade-blind",
        (
            Migration(
                "optional_display_name",
                'op.alter_column("users", "display_name", nullable=True)',
                'op.alter_column("users", "display_name", nullable=False)',
            ),
        ),
        Expect(False, "down", ("display_name", "null values")),
    ),
    Case(
        "relaxed-not-null-downgrade-backfills",
        (
            Migration(
                "optional_display_name",
                'op.alter_column("users", "display_name", nullable=True)',
                "op.execute(\"UPDATE users SET display_name = 'unknown' "
                'WHERE display_name IS NULL")\n'
                'op.alter_column("users", "display_name", nullable=False)',
            ),
        ),
        Expect(True, "data", ("no rows lost",)),
    ),
    Case(
        "relaxed-foreign-key-downgrade-blind",
        (
            Migration(
                "drop_assignee_key",
                'op.drop_constraint("fk_tasks_assignee_id_users", "tasks", type_="foreignkey")',
                'op.create_foreign_key("fk_tasks_assignee_id_users", "tasks", "users", '
                '["assignee_id"], ["id"], ondelete="SET NULL")',
            ),
        ),
        Expect(False, "down", ("fk_tasks_assignee_id_users",)),
    ),
    Case(
        "relaxed-unique-downgrade-blind",
        (
            Migration(
                "allow_repeated_numbers",
                'op.drop_constraint("uq_tasks_project_id_number", "tasks", type_="unique")',
                'op.create_unique_constraint("uq_tasks_project_id_number", "tasks", '
                '["project_id", "number"])',
            ),
        ),
        Expect(False, "down", ("uq_tasks_project_id_number",)),
    ),
    Case(
        "relaxed-unique-index-downgrade-blind",
        (
            Migration(
                "allow_repeated_emails",
                'op.drop_index("uq_users_lower_email", table_name="users")',
                'op.create_index("uq_users_lower_email", "users", [sa.text("lower(email)")], '
                'unique=True, postgresql_where=sa.text("deleted_at IS NULL"))',
            ),
        ),
        Expect(False, "down", ("uq_users_lower_email",)),
    ),
    Case(
        "relaxed-check-downgrade-blind",
        (
            Migration(
                "allow_task_number_zero",
                'op.drop_constraint(op.f("ck_tasks_number_positive"), "tasks", type_="check")\n'
                'op.create_check_constraint(op.f("ck_tasks_number_positive"), "tasks", '
                '"number >= 0")',
                'op.drop_constraint(op.f("ck_tasks_number_positive"), "tasks", type_="check")\n'
                'op.create_check_constraint(op.f("ck_tasks_number_positive"), "tasks", '
                '"number > 0")',
            ),
        ),
        Expect(False, "down", ("ck_tasks_number_positive", "violated")),
    ),
    Case(
        "relaxed-in-list-downgrade-blind",
        (
            Migration(
                "add_startup_plan",
                'op.drop_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                'type_="check")\n'
                'op.create_check_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                "\"plan IN ('free', 'startup', 'team', 'enterprise')\")",
                'op.drop_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                'type_="check")\n'
                'op.create_check_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                "\"plan IN ('free', 'team', 'enterprise')\")",
            ),
        ),
        Expect(False, "down", ("ck_organizations_plan_valid", "violated")),
    ),
    Case(
        "nullable-type-change-using-coalesce",
        (
            Migration(
                "add_task_estimate",
                # Every existing row gets 1: only the sample rows can hold a NULL here.
                'op.add_column("tasks", sa.Column("estimate", sa.Float(), nullable=True, '
                'server_default="1"))',
                'op.drop_column("tasks", "estimate")',
            ),
            Migration(
                "estimate_as_numeric",
                'op.execute("ALTER TABLE tasks ALTER COLUMN estimate TYPE numeric(8, 2)")',
                'op.execute("ALTER TABLE tasks ALTER COLUMN estimate TYPE double precision '
                'USING coalesce(estimate, 0)")',
            ),
        ),
        Expect(False, "data", ("public.tasks", "gone or changed")),
    ),
    Case(
        "foreign-key-cycle",
        (
            Migration(
                "add_teams",
                """
                op.create_table(
                    "teams",
                    sa.Column("id", sa.Uuid(), primary_key=True),
                    sa.Column("name", sa.Text(), nullable=False),
                    sa.Column("lead_id", sa.Uuid(), nullable=True),
                )
                op.create_table(
                    "team_members",
                    sa.Column("id", sa.Uuid(), primary_key=True),
                    sa.Column("team_id", sa.Uuid(), sa.ForeignKey("teams.id"), nullable=False),
                    sa.Column("mentor_id", sa.Uuid(), sa.ForeignKey("team_members.id"),
                              nullable=False),
                )
                op.create_foreign_key("fk_teams_lead_id_team_members", "teams", "team_members",
                                      ["lead_id"], ["id"])
                """,
                """
                op.drop_constraint("fk_teams_lead_id_team_members", "teams", type_="foreignkey")
                op.drop_table("team_members")
                op.drop_table("teams")
                """,
            ),
        ),
        Expect(True, "data", ("drops what 002 created", "table public.team_members")),
    ),
    Case(
        "two-foreign-keys-to-one-parent-that-differ",
        (
            Migration(
                "add_task_links",
                """
                op.create_table(
                    "task_links",
                    sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
                    sa.Column("source_id", sa.Uuid(), sa.ForeignKey("tasks.id"), nullable=False),
                    sa.Column("target_id", sa.Uuid(), sa.ForeignKey("tasks.id"), nullable=False),
                    sa.CheckConstraint("source_id <> target_id", name="ck_task_links_differ"),
                    sa.UniqueConstraint("source_id", "target_id"),
                )
                """,
                'op.drop_table("task_links")',
            ),
        ),
        Expect(True, "data", ("drops what 002 created", "table public.task_links")),
    ),
    Case(
        "set-not-null-with-backfill",
        (
            Migration(
                "require_description",
                "op.execute(\"UPDATE tasks SET description = '' WHERE description IS NULL\")\n"
                'op.alter_column("tasks", "description", nullable=False)',
                'op.alter_column("tasks", "description", nullable=True)',
            ),
        ),
        # The NULLs the upgrade filled in do not come back: a loss, unless declared.
        Expect(False, "data", ("public.tasks", "gone or changed")),
    ),
    Case(
        "set-not-null-with-backfill-declared",
        (
            Migration(
                "require_description",
                "op.execute(\"UPDATE tasks SET description = '' WHERE description IS NULL\")\n"
                'op.alter_column("tasks", "description", nullable=False)',
                'op.alter_column("tasks", "description", nullable=True)',
                {"downgrade_loses_data": "missing descriptions become empty ones"},
            ),
        ),
        Expect(True, "declared", ("missing descriptions become empty ones",)),
    ),
    Case(
        "relaxed-foreign-key-downgrade-clears-orphans-first",
        (
            Migration(
                "drop_assignee_key",
                'op.drop_constraint("fk_tasks_assignee_id_users", "tasks", type_="foreignkey")',
                'op.execute("UPDATE tasks SET assignee_id = NULL '
                'WHERE assignee_id NOT IN (SELECT id FROM users)")\n'
                'op.create_foreign_key("fk_tasks_assignee_id_users", "tasks", "users", '
                '["assignee_id"], ["id"], ondelete="SET NULL")',
            ),
        ),
        Expect(True, "data", ("no rows lost",)),
    ),
    Case(
        "relaxed-in-list-downgrade-moves-rows-first",
        (
            Migration(
                "add_startup_plan",
                'op.drop_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                'type_="check")\n'
                'op.create_check_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                "\"plan IN ('free', 'startup', 'team', 'enterprise')\")",
                "op.execute(\"UPDATE organizations SET plan = 'team' WHERE plan = 'startup'\")\n"
                'op.drop_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                'type_="check")\n'
                'op.create_check_constraint(op.f("ck_organizations_plan_valid"), "organizations", '
                "\"plan IN ('free', 'team', 'enterprise')\")",
            ),
        ),
        Expect(True, "data", ("no rows lost",)),
    ),
    Case(
        "foreign-key-cycle-not-null",
        (
            Migration(
                "add_accounts_and_owners",
                """
                op.create_table(
                    "accounts",
                    sa.Column("id", sa.Uuid(), primary_key=True),
                    sa.Column("owner_id", sa.Uuid(), nullable=False),
                )
                op.create_table(
                    "account_owners",
                    sa.Column("id", sa.Uuid(), primary_key=True),
                    sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id"),
                              nullable=False),
                )
                op.create_foreign_key("fk_accounts_owner_id_account_owners", "accounts",
                                      "account_owners", ["owner_id"], ["id"])
                """,
                """
                op.drop_constraint("fk_accounts_owner_id_account_owners", "accounts",
                                   type_="foreignkey")
                op.drop_table("account_owners")
                op.drop_table("accounts")
                """,
            ),
        ),
        Expect(True, "data", ("drops what 002 created", "table public.accounts")),
    ),
    # --- never a traceback, half-applied steps (lint, dry run, static checks) ------------
    Case(
        "reads-through-get-bind",
        (
            Migration(
                "recolor_labels",
                """
                op.add_column("labels", sa.Column("shade", sa.Text(), nullable=True))
                conn = op.get_bind()
                rows = conn.execute(sa.text("SELECT id, color FROM labels")).fetchall()
                for label_id, color in rows:
                    conn.execute(
                        sa.text("UPDATE labels SET shade = :c WHERE id = :i"),
                        {"c": color.lower(), "i": label_id},
                    )
                op.create_index("ix_labels_shade", "labels", ["shade"])
                """,
                'op.drop_column("labels", "shade")',
            ),
        ),
        Expect(True),
        # What is rendered before the read is checked; the rest is a warning, not a pass
        # that says nothing (the index after the read is not seen).
        lint=Expect(
            True, "lint", ("upgrade() not checked from 002_recolor_labels.py:", "op.get_bind()")
        ),
    ),
    Case(
        "upgrade-not-written",
        (
            Migration(
                "add_widgets",
                'raise NotImplementedError("write upgrade() before applying this migration")',
                'raise NotImplementedError("write downgrade() before applying this migration")',
            ),
        ),
        Expect(False, "up", ("NotImplementedError",)),
        lint=Expect(
            True,
            "lint",
            ("upgrade() not checked: it is not written yet", "downgrade() not checked"),
        ),
    ),
    Case(
        "downgrade-builds-index-under-lock",
        (
            Migration(
                "drop_reporter_index",
                """
                with op.get_context().autocommit_block():
                    op.drop_index("ix_tasks_reporter_id", table_name="tasks",
                                  postgresql_concurrently=True, if_exists=True)
                """,
                'op.create_index("ix_tasks_reporter_id", "tasks", ["reporter_id"])',
            ),
        ),
        Expect(True),
        lint=Expect(False, "lint", ("require-concurrent-index-creation (in downgrade())",)),
    ),
    Case(
        "autocommit-mixed-with-transaction",
        (
            Migration(
                "cap_priorities",
                """
                op.execute("UPDATE tasks SET priority = 2 WHERE priority > 2")
                with op.get_context().autocommit_block():
                    op.execute("VACUUM (ANALYZE) tasks")
                """,
                "pass",
            ),
        ),
        Expect(
            False,
            "static checks",
            (
                "upgrade() runs SQL outside its autocommit_block()",
                "between two revisions",
                "Split it into two migrations",
            ),
        ),
        whole_chain=True,
    ),
    # --- reports and the daily loop: a backfill on a table whose first column cannot be
    # set (GENERATED ALWAYS identity) and whose updated_at trigger the backfill fires.
    Case(
        "backfill-on-identity-table",
        (
            Migration(
                "add_things",
                """
                op.execute(
                    "CREATE TABLE things (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                    "name text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                )
                op.execute(
                    "CREATE TRIGGER trg_things_set_updated_at BEFORE UPDATE ON things "
                    "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
                )
                """,
                'op.drop_table("things")',
            ),
            Migration(
                "add_thing_codes",
                """
                op.add_column("things", sa.Column("code", sa.Text(), nullable=True))
                op.execute("UPDATE things SET code = upper(name)")
                """,
                'op.drop_column("things", "code")',
            ),
        ),
        Expect(True),
        plan=("+ table public.things (4 columns",),
        plan_down=("- column public.things.code text",),
    ),
    # --- measured lock impact: constraints that validate (scan under a blocking lock) and
    # their online form (NOT VALID, then VALIDATE in a migration of its own) -------------
    Case(
        "check-validating",
        (
            Migration(
                "check_priority_not_negative",
                'op.create_check_constraint(op.f("ck_tasks_priority_not_negative"), "tasks", '
                '"priority >= 0")',
                'op.drop_constraint(op.f("ck_tasks_priority_not_negative"), "tasks", '
                'type_="check")',
            ),
        ),
        Expect(True),
        guard=Expect(True),
        lint=Expect(False, "lint", ("constraint-missing-not-valid",)),
    ),
    Case(
        "check-not-valid-then-validate",
        (
            Migration(
                "check_priority_not_negative",
                CHECK_NOT_VALID,
                'op.drop_constraint(op.f("ck_tasks_priority_not_negative"), "tasks", '
                'type_="check")',
            ),
            Migration(
                "validate_priority_check",
                'op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT '
                'ck_tasks_priority_not_negative")',
                # Back to NOT VALID: the catalog must be as it was before the upgrade.
                'op.drop_constraint(op.f("ck_tasks_priority_not_negative"), "tasks", '
                'type_="check")\n' + CHECK_NOT_VALID,
            ),
        ),
        Expect(True),
        guard=Expect(True),
        lint=Expect(True),
    ),
    Case(
        "foreign-key-validating",
        (
            Migration(
                "add_task_reviewer",
                """
                op.add_column("tasks", sa.Column("reviewer_id", sa.Uuid(), nullable=True))
                op.create_foreign_key("fk_tasks_reviewer_id_users", "tasks", "users",
                                      ["reviewer_id"], ["id"], ondelete="SET NULL")
                """,
                'op.drop_column("tasks", "reviewer_id")',
            ),
        ),
        Expect(True, "data", ("drops what 002 created", "column public.tasks.reviewer_id")),
        guard=Expect(False, "refused", ("column public.tasks.reviewer_id",)),
        lint=Expect(False, "lint", ("adding-foreign-key-constraint",)),
    ),
    Case(
        "foreign-key-not-valid-then-validate",
        (
            Migration(
                "add_task_reviewer",
                'op.add_column("tasks", sa.Column("reviewer_id", sa.Uuid(), nullable=True))\n'
                + FK_NOT_VALID,
                'op.drop_column("tasks", "reviewer_id")',
            ),
            Migration(
                "validate_reviewer_fk",
                'op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT fk_tasks_reviewer_id_users")',
                'op.drop_constraint("fk_tasks_reviewer_id_users", "tasks", type_="foreignkey")\n'
                + FK_NOT_VALID,
            ),
        ),
        Expect(True),
        guard=Expect(True),
        lint=Expect(True),
    ),
]

BY_NAME = {case.name: case for case in CASES}
