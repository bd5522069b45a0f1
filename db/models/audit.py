"""The append-only trail of changes to the other tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, timestamptz

ENTITY_TYPES = (
    "organization",
    "user",
    "organization_member",
    "project",
    "task",
    "comment",
    "label",
)
ACTIONS = ("create", "update", "delete", "restore")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint(_in("entity_type", ENTITY_TYPES), name="entity_type_valid"),
        CheckConstraint(_in("action", ACTIONS), name="action_valid"),
        Index("ix_audit_events_entity_type_entity_id", "entity_type", "entity_id"),
        Index(
            "ix_audit_events_organization_id_occurred_at",
            "organization_id",
            text("occurred_at DESC"),
        ),
        {"comment": "Append-only record of every change to an entity."},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"),
        comment="The tenant the change belongs to, if any.",
    )
    actor_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"),
        index=True,
        comment="Who made the change; NULL for the system.",
    )
    entity_type: Mapped[str] = mapped_column(comment="The kind of entity that changed.")
    entity_id: Mapped[uuid.UUID] = mapped_column(comment="The id of the entity that changed.")
    action: Mapped[str] = mapped_column(comment="create, update, delete or restore.")
    changes: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), comment="The changed fields, old and new."
    )
    occurred_at: Mapped[datetime] = timestamptz(server_default=func.now())
