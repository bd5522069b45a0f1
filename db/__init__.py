"""The work tracker's PostgreSQL schema and the tools that migrate it.

`db.models` holds the SQLAlchemy models, `db/migrations` the Alembic chain, and
`db.commands` what `invoke migrate.*` and `invoke db.*` run.
"""
