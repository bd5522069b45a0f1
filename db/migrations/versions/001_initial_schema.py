"""initial schema

Revision ID: 001
Revises:
Create Date: 2026-11-23

Story 2.1: the nine tables of the work tracker, the task_status enum, the shared
set_updated_at() trigger function and one updated_at trigger per table that has
the column. Written out in full (no metadata.create_all) so that it stays frozen
when the models change.

Released migrations are immutable: once this file has been applied anywhere
shared, fix mistakes in a new migration instead of editing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Read by the roundtrip: rolling back the initial schema cannot keep any rows.
downgrade_loses_data = "rolling back the initial schema drops every table, and their rows"

LIVE_ROWS = sa.text("deleted_at IS NULL")
TASK_STATUSES = ("todo", "in_progress", "in_review", "done", "canceled")
# Tables with an updated_at column, each of which gets the trigger.
TOUCHED_TABLES = (
    "organizations",
    "users",
    "organization_members",
    "projects",
    "tasks",
    "comments",
    "labels",
)
ALL_TABLES = (*TOUCHED_TABLES, "task_labels", "audit_events")


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _timestamps(*, soft_delete: bool = True, updated_at: bool = True) -> list[sa.Column]:
    now = sa.text("now()")
    columns = [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False)
    ]
    if updated_at:
        columns.append(
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                server_default=now,
                nullable=False,
                comment="Kept current by the set_updated_at() trigger.",
            )
        )
    if soft_delete:
        columns.append(
            sa.Column(
                "deleted_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="Soft delete: NULL for a live row, else when it was deleted.",
            )
        )
    return columns


def _fk(table: str, column: str, referred: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{referred}.id"],
        name=op.f(f"fk_{table}_{column}_{referred}"),
        ondelete=ondelete,
    )


def _length(table: str, column: str, low: int, high: int) -> sa.CheckConstraint:
    return sa.CheckConstraint(
        f"char_length({column}) BETWEEN {low} AND {high}", name=op.f(f"ck_{table}_{column}_length")
    )


def upgrade() -> None:
    """Create the nine tables, the enum, the trigger function, the triggers and the indexes."""
    op.execute(
        sa.text(
            "CREATE TYPE task_status AS ENUM ("
            + ", ".join(f"'{status}'" for status in TASK_STATUSES)
            + ")"
        )
    )
    op.execute("COMMENT ON TYPE task_status IS 'Where a task is in its life cycle.'")
    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at = now();
            RETURN NEW;
        END;
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION set_updated_at() IS "
        "'BEFORE UPDATE trigger function: sets updated_at to now().'"
    )

    op.create_table(
        "organizations",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "slug", sa.Text(), nullable=False, comment="URL name; unique among live organizations."
        ),
        sa.Column(
            "plan",
            sa.Text(),
            server_default=sa.text("'free'"),
            nullable=False,
            comment="Billing plan: free, team or enterprise.",
        ),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="Organization settings (a JSON object).",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        _length("organizations", "name", 1, 200),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name=op.f("ck_organizations_slug_format")
        ),
        sa.CheckConstraint(
            "plan IN ('free', 'team', 'enterprise')", name=op.f("ck_organizations_plan_valid")
        ),
        sa.CheckConstraint(
            "jsonb_typeof(settings) = 'object'", name=op.f("ck_organizations_settings_is_object")
        ),
        comment="A tenant: owns projects and has members (soft-delete).",
    )
    op.create_index(
        op.f("uq_organizations_slug"),
        "organizations",
        ["slug"],
        unique=True,
        postgresql_where=LIVE_ROWS,
    )

    op.create_table(
        "users",
        _id(),
        sa.Column(
            "email",
            sa.Text(),
            nullable=False,
            comment="Sign-in address; unique among live users regardless of case.",
        ),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column(
            "password_hash",
            sa.Text(),
            nullable=True,
            comment="Password hash; NULL for users who sign in through SSO only.",
        ),
        sa.Column(
            "is_active",
            sa.Boolean(),
            server_default=sa.text("true"),
            nullable=False,
            comment="False blocks sign-in without deleting the user.",
        ),
        sa.Column(
            "last_login_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Time of the last sign-in.",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.CheckConstraint("email ~ '^[^@]+@[^@]+$'", name=op.f("ck_users_email_format")),
        sa.CheckConstraint("char_length(email) <= 320", name=op.f("ck_users_email_length")),
        _length("users", "display_name", 1, 100),
        comment="A person who can sign in (soft-delete).",
    )
    op.create_index(
        op.f("uq_users_lower_email"),
        "users",
        [sa.text("lower(email)")],
        unique=True,
        postgresql_where=LIVE_ROWS,
    )

    op.create_table(
        "organization_members",
        _id(),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "role",
            sa.Text(),
            server_default=sa.text("'member'"),
            nullable=False,
            comment="owner, admin, member or viewer.",
        ),
        sa.Column(
            "invited_by",
            sa.Uuid(),
            nullable=True,
            comment="The user who sent the invitation, if any.",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_members")),
        _fk("organization_members", "organization_id", "organizations", "CASCADE"),
        _fk("organization_members", "user_id", "users", "CASCADE"),
        _fk("organization_members", "invited_by", "users", "SET NULL"),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'member', 'viewer')",
            name=op.f("ck_organization_members_role_valid"),
        ),
        comment="A user's membership of an organization, with a role (soft-delete).",
    )
    op.create_index(
        op.f("uq_organization_members_organization_id_user_id"),
        "organization_members",
        ["organization_id", "user_id"],
        unique=True,
        postgresql_where=LIVE_ROWS,
    )
    op.create_index(
        op.f("ix_organization_members_organization_id"), "organization_members", ["organization_id"]
    )
    op.create_index(op.f("ix_organization_members_user_id"), "organization_members", ["user_id"])
    op.create_index(
        op.f("ix_organization_members_invited_by"), "organization_members", ["invited_by"]
    )

    op.create_table(
        "projects",
        _id(),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column(
            "key",
            sa.Text(),
            nullable=False,
            comment="Short upper-case prefix of task references, e.g. WEB in WEB-42.",
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "is_archived",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="Archived projects are read-only but kept.",
        ),
        sa.Column("created_by", sa.Uuid(), nullable=True, comment="The user who created it."),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        _fk("projects", "organization_id", "organizations", "CASCADE"),
        _fk("projects", "created_by", "users", "SET NULL"),
        sa.CheckConstraint("key ~ '^[A-Z][A-Z0-9]{1,9}$'", name=op.f("ck_projects_key_format")),
        _length("projects", "name", 1, 200),
        comment="A project of an organization; holds tasks and labels (soft-delete).",
    )
    op.create_index(
        op.f("uq_projects_organization_id_key"),
        "projects",
        ["organization_id", "key"],
        unique=True,
        postgresql_where=LIVE_ROWS,
    )
    op.create_index(op.f("ix_projects_organization_id"), "projects", ["organization_id"])
    op.create_index(op.f("ix_projects_created_by"), "projects", ["created_by"])

    op.create_table(
        "tasks",
        _id(),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column(
            "number",
            sa.Integer(),
            nullable=False,
            comment="Sequence number within the project (WEB-42); never reused.",
        ),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "status",
            postgresql.ENUM(*TASK_STATUSES, name=op.f("task_status"), create_type=False),
            server_default=sa.text("'todo'"),
            nullable=False,
        ),
        sa.Column(
            "priority",
            sa.SmallInteger(),
            server_default=sa.text("2"),
            nullable=False,
            comment="0 (highest) to 4 (lowest).",
        ),
        sa.Column("assignee_id", sa.Uuid(), nullable=True, comment="Who works on it."),
        sa.Column("reporter_id", sa.Uuid(), nullable=True, comment="Who reported it."),
        sa.Column("parent_task_id", sa.Uuid(), nullable=True, comment="The task this is part of."),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column(
            "completed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When it was finished; only set for done or canceled tasks.",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        _fk("tasks", "project_id", "projects", "CASCADE"),
        _fk("tasks", "assignee_id", "users", "SET NULL"),
        _fk("tasks", "reporter_id", "users", "SET NULL"),
        _fk("tasks", "parent_task_id", "tasks", "SET NULL"),
        # Across all rows, deleted or not: task numbers are never reused.
        sa.UniqueConstraint("project_id", "number", name=op.f("uq_tasks_project_id_number")),
        sa.CheckConstraint("number > 0", name=op.f("ck_tasks_number_positive")),
        _length("tasks", "title", 1, 500),
        sa.CheckConstraint("priority BETWEEN 0 AND 4", name=op.f("ck_tasks_priority_range")),
        sa.CheckConstraint(
            "completed_at IS NULL OR status IN ('done', 'canceled')",
            name=op.f("ck_tasks_completed_at_status"),
        ),
        comment="A unit of work in a project (soft-delete).",
    )
    op.create_index(
        op.f("ix_tasks_project_id_status"),
        "tasks",
        ["project_id", "status"],
        postgresql_where=LIVE_ROWS,
    )
    op.create_index(op.f("ix_tasks_assignee_id"), "tasks", ["assignee_id"])
    op.create_index(op.f("ix_tasks_reporter_id"), "tasks", ["reporter_id"])
    op.create_index(op.f("ix_tasks_parent_task_id"), "tasks", ["parent_task_id"])

    op.create_table(
        "comments",
        _id(),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=True, comment="Who wrote it."),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "edited_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the body was last edited.",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
        _fk("comments", "task_id", "tasks", "CASCADE"),
        _fk("comments", "author_id", "users", "SET NULL"),
        _length("comments", "body", 1, 20000),
        comment="A comment on a task (soft-delete).",
    )
    op.create_index(op.f("ix_comments_task_id_created_at"), "comments", ["task_id", "created_at"])
    op.create_index(op.f("ix_comments_author_id"), "comments", ["author_id"])

    op.create_table(
        "labels",
        _id(),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column(
            "name",
            sa.Text(),
            nullable=False,
            comment="Unique within the project among live labels, ignoring case.",
        ),
        sa.Column(
            "color",
            sa.Text(),
            server_default=sa.text("'#888888'"),
            nullable=False,
            comment="Display colour, #rrggbb.",
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        _fk("labels", "project_id", "projects", "CASCADE"),
        _length("labels", "name", 1, 50),
        sa.CheckConstraint("color ~ '^#[0-9a-fA-F]{6}$'", name=op.f("ck_labels_color_format")),
        comment="A label that tasks of one project can carry (soft-delete).",
    )
    op.create_index(
        op.f("uq_labels_project_id_lower_name"),
        "labels",
        ["project_id", sa.text("lower(name)")],
        unique=True,
        postgresql_where=LIVE_ROWS,
    )
    op.create_index(op.f("ix_labels_project_id"), "labels", ["project_id"])

    op.create_table(
        "task_labels",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        *_timestamps(soft_delete=False, updated_at=False),
        sa.PrimaryKeyConstraint("task_id", "label_id", name=op.f("pk_task_labels")),
        _fk("task_labels", "task_id", "tasks", "CASCADE"),
        _fk("task_labels", "label_id", "labels", "CASCADE"),
        comment="Which labels a task carries (junction table).",
    )
    op.create_index(op.f("ix_task_labels_label_id"), "task_labels", ["label_id"])

    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "organization_id",
            sa.Uuid(),
            nullable=True,
            comment="The tenant the change belongs to, if any.",
        ),
        sa.Column(
            "actor_id",
            sa.Uuid(),
            nullable=True,
            comment="Who made the change; NULL for the system.",
        ),
        sa.Column(
            "entity_type", sa.Text(), nullable=False, comment="The kind of entity that changed."
        ),
        sa.Column(
            "entity_id", sa.Uuid(), nullable=False, comment="The id of the entity that changed."
        ),
        sa.Column(
            "action", sa.Text(), nullable=False, comment="create, update, delete or restore."
        ),
        sa.Column(
            "changes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="The changed fields, old and new.",
        ),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        _fk("audit_events", "organization_id", "organizations", "SET NULL"),
        _fk("audit_events", "actor_id", "users", "SET NULL"),
        sa.CheckConstraint(
            "entity_type IN ('organization', 'user', 'organization_member', 'project', 'task', "
            "'comment', 'label')",
            name=op.f("ck_audit_events_entity_type_valid"),
        ),
        sa.CheckConstraint(
            "action IN ('create', 'update', 'delete', 'restore')",
            name=op.f("ck_audit_events_action_valid"),
        ),
        comment="Append-only record of every change to an entity.",
    )
    op.create_index(
        op.f("ix_audit_events_entity_type_entity_id"), "audit_events", ["entity_type", "entity_id"]
    )
    op.create_index(
        op.f("ix_audit_events_organization_id_occurred_at"),
        "audit_events",
        ["organization_id", sa.text("occurred_at DESC")],
    )
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor_id"])

    for table in TOUCHED_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_set_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    """Drop everything upgrade() created; tables take their indexes and triggers with them."""
    for table in reversed(ALL_TABLES):
        op.drop_table(table)
    op.execute("DROP FUNCTION set_updated_at()")
    op.execute("DROP TYPE task_status")
