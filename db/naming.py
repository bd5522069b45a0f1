"""The naming convention of the schema's constraints and indexes, without the models.

Alembic shapes the names a migration gives to `op.create_*` by the convention of the
MetaData it runs with: the models' when they are imported (autogenerate, `alembic
upgrade`, pytest-alembic), none otherwise. Applying never imports the models
(db/migrations/env.py), so env.py hands Alembic this convention itself: a migration
names its constraints alike whichever tool applies it.
"""

from __future__ import annotations

# Story 2.1, "Conventions": no constraint or index name is left to the server.
# Unique *indexes* (partial or on expressions) get explicit `uq_…` names where
# they are declared, because SQLAlchemy would otherwise file them under "ix".
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}
