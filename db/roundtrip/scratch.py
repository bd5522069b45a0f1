"""The databases a roundtrip creates on its throwaway server, and drops."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from db.throwaway import Server


def create(server: Server, template: str | None = None) -> str:
    """A new database (a copy of `template`, if given) on `server`; its name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    server.create_database(template=template, name=name)
    return name


def engine(server: Server, database: str) -> Engine:
    return create_engine(server.admin_url.set(database=database), poolclass=NullPool)
