"""Projects of an organization, and the labels each project defines."""

from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import LIVE_ROWS, Base, SoftDelete, Timestamps, UUIDPrimaryKey


class Project(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("key ~ '^[A-Z][A-Z0-9]{1,9}$'", name="key_format"),
        CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
        Index(
            "uq_projects_organization_id_key",
            "organization_id",
            "key",
            unique=True,
            postgresql_where=text(LIVE_ROWS),
        ),
        {"comment": "A project of an organization; holds tasks and labels (soft-delete)."},
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(
        comment="Short upper-case prefix of task references, e.g. WEB in WEB-42."
    )
    name: Mapped[str]
    description: Mapped[str | None]
    is_archived: Mapped[bool] = mapped_column(
        server_default=text("false"), comment="Archived projects are read-only but kept."
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, comment="The user who created it."
    )


class Label(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 50", name="name_length"),
        CheckConstraint("color ~ '^#[0-9a-fA-F]{6}$'", name="color_format"),
        Index(
            "uq_labels_project_id_lower_name",
            "project_id",
            func.lower(text("name")),
            unique=True,
            postgresql_where=text(LIVE_ROWS),
        ),
        {"comment": "A label that tasks of one project can carry (soft-delete)."},
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(
        comment="Unique within the project among live labels, ignoring case."
    )
    color: Mapped[str] = mapped_column(
        server_default=text("'#888888'"), comment="Display colour, #rrggbb."
    )
