"""Tenants, and the people who belong to them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import LIVE_ROWS, Base, SoftDelete, Timestamps, UUIDPrimaryKey


class Organization(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name="slug_format"),
        CheckConstraint("plan IN ('free', 'team', 'enterprise')", name="plan_valid"),
        CheckConstraint("jsonb_typeof(settings) = 'object'", name="settings_is_object"),
        Index("uq_organizations_slug", "slug", unique=True, postgresql_where=text(LIVE_ROWS)),
        {"comment": "A tenant: owns projects and has members (soft-delete)."},
    )

    name: Mapped[str]
    slug: Mapped[str] = mapped_column(comment="URL name; unique among live organizations.")
    plan: Mapped[str] = mapped_column(
        server_default=text("'free'"), comment="Billing plan: free, team or enterprise."
    )
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), comment="Organization settings (a JSON object)."
    )


class OrganizationMember(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "organization_members"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role_valid"),
        Index(
            "uq_organization_members_organization_id_user_id",
            "organization_id",
            "user_id",
            unique=True,
            postgresql_where=text(LIVE_ROWS),
        ),
        {"comment": "A user's membership of an organization, with a role (soft-delete)."},
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(
        server_default=text("'member'"), comment="owner, admin, member or viewer."
    )
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"),
        index=True,
        comment="The user who sent the invitation, if any.",
    )
