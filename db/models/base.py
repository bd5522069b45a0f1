"""The declarative base: one MetaData whose naming convention yields the spec's names."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.naming import NAMING_CONVENTION

LIVE_ROWS = "deleted_at IS NULL"
"""The WHERE clause of every partial unique index on a soft-delete table."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Story 2.1: text with CHECK constraints, never varchar(n).
    type_annotation_map: ClassVar[dict[Any, Any]] = {str: Text}


def timestamptz(**kwargs) -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), **kwargs)


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=func.gen_random_uuid(), sort_order=-100
    )


class CreatedAt:
    created_at: Mapped[datetime] = timestamptz(server_default=func.now(), sort_order=100)


class Timestamps(CreatedAt):
    updated_at: Mapped[datetime] = timestamptz(
        server_default=func.now(),
        sort_order=101,
        comment="Kept current by the set_updated_at() trigger.",
    )


class SoftDelete:
    deleted_at: Mapped[datetime | None] = timestamptz(
        sort_order=102, comment="Soft delete: NULL for a live row, else when it was deleted."
    )
