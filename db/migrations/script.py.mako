"""${context.get("description", message)}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Released migrations are immutable: once this file has been applied anywhere
shared, fix mistakes in a new migration instead of editing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
# revision identifiers, used by Alembic (double quotes, as `ruff format` wants them).
revision: str = "${up_revision}"
down_revision: str | None = ${'None' if down_revision is None else '"%s"' % down_revision}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dropping in downgrade() what upgrade() created needs no declaration. If downgrade()
# cannot give back rows as they were before upgrade() (a narrowed type, merged values),
# say why, and the roundtrip lists this migration instead of failing it:
# downgrade_loses_data = "titles longer than 200 characters were cut"
# If it cannot be undone at all (migrate.down then refuses it): irreversible = "why"
#
# Names: the models' naming convention (db/naming.py) also shapes the names given to
# op.create_* and op.drop_constraint, whichever tool applies this file: a bare
# "estimate_positive" CHECK on tasks is named ck_tasks_estimate_positive. Write
# op.f("ck_tasks_estimate_positive") to use a full name as it is, as 001 does (a bare
# "ck_tasks_estimate_positive" would become ck_tasks_ck_tasks_…).


def upgrade() -> None:
    """Apply this migration."""
    ${upgrades if upgrades else 'raise NotImplementedError("write upgrade() before applying this migration")'}


def downgrade() -> None:
    """Revert it: leave the schema, and every earlier row, exactly as before upgrade()."""
    ${downgrades if downgrades else 'raise NotImplementedError("write downgrade() before applying this migration")'}
