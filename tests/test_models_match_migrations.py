"""The SQLAlchemy models and the migrated database agree: autogenerate finds nothing."""

from __future__ import annotations

import pprint

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from db.models import metadata


def test_model_definitions_match_ddl(db: Connection) -> None:
    context = MigrationContext.configure(
        db, opts={"compare_type": True, "compare_server_default": True}
    )
    diff = compare_metadata(context, metadata)
    assert not diff, (
        "the models and the migrations disagree.\n"
        "Likely cause: a model changed without a migration (run `invoke migrate.new`), or a "
        "migration changed the schema without the model.\n"
        f"--- autogenerate diff ---\n{pprint.pformat(diff)}"
    )
