"""People who sign in. A user belongs to organizations through memberships."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import LIVE_ROWS, Base, SoftDelete, Timestamps, UUIDPrimaryKey, timestamptz


class User(UUIDPrimaryKey, Timestamps, SoftDelete, Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("email ~ '^[^@]+@[^@]+$'", name="email_format"),
        CheckConstraint("char_length(email) <= 320", name="email_length"),
        CheckConstraint("char_length(display_name) BETWEEN 1 AND 100", name="display_name_length"),
        Index(
            "uq_users_lower_email",
            func.lower(text("email")),
            unique=True,
            postgresql_where=text(LIVE_ROWS),
        ),
        {"comment": "A person who can sign in (soft-delete)."},
    )

    email: Mapped[str] = mapped_column(
        comment="Sign-in address; unique among live users regardless of case."
    )
    display_name: Mapped[str]
    password_hash: Mapped[str | None] = mapped_column(
        comment="Password hash; NULL for users who sign in through SSO only."
    )
    is_active: Mapped[bool] = mapped_column(
        server_default=text("true"), comment="False blocks sign-in without deleting the user."
    )
    last_login_at: Mapped[datetime | None] = timestamptz(comment="Time of the last sign-in.")
