"""Tasks, their comments, and the labels on them."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime

from sqlalchemy import (
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    SmallInteger,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import (
    LIVE_ROWS,
    Base,
    CreatedAt,
    SoftDelete,
    Timestamps,
    UUIDPrimaryKey,
    timestamptz,
)


class TaskStatus(enum.StrEnum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    DONE = "done"
    CANCELED = "canceled"


task_status = Enum(
    TaskStatus,
    name="task_status",
    values_callable=lambda members: [member.value for member in members],
)


class Task(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("number > 0", name="number_positive"),
        CheckConstraint("char_length(title) BETWEEN 1 AND 500", name="title_length"),
        CheckConstraint("priority BETWEEN 0 AND 4", name="priority_range"),
        CheckConstraint(
            "completed_at IS NULL OR status IN ('done', 'canceled')", name="completed_at_status"
        ),
        # Across all rows, deleted or not: task numbers are never reused.
        UniqueConstraint("project_id", "number"),
        Index(
            "ix_tasks_project_id_status", "project_id", "status", postgresql_where=text(LIVE_ROWS)
        ),
        {"comment": "A unit of work in a project (soft-delete)."},
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(
        comment="Sequence number within the project (WEB-42); never reused."
    )
    title: Mapped[str]
    description: Mapped[str | None]
    status: Mapped[TaskStatus] = mapped_column(task_status, server_default=text("'todo'"))
    priority: Mapped[int] = mapped_column(
        SmallInteger, server_default=text("2"), comment="0 (highest) to 4 (lowest)."
    )
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, comment="Who works on it."
    )
    reporter_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, comment="Who reported it."
    )
    parent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True, comment="The task this is part of."
    )
    due_date: Mapped[date | None]
    completed_at: Mapped[datetime | None] = timestamptz(
        comment="When it was finished; only set for done or canceled tasks."
    )


class Comment(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "comments"
    __table_args__ = (
        CheckConstraint("char_length(body) BETWEEN 1 AND 20000", name="body_length"),
        Index("ix_comments_task_id_created_at", "task_id", "created_at"),
        {"comment": "A comment on a task (soft-delete)."},
    )

    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, comment="Who wrote it."
    )
    body: Mapped[str]
    edited_at: Mapped[datetime | None] = timestamptz(comment="When the body was last edited.")


class TaskLabel(CreatedAt, Base):
    __tablename__ = "task_labels"
    __table_args__ = ({"comment": "Which labels a task carries (junction table)."},)

    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    label_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True, index=True
    )
