"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Released migrations are immutable: once this file has been applied anywhere
shared, fix mistakes in a new migration instead of editing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401
${imports if imports else ""}
# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Apply: ${message}."""
    ${upgrades if upgrades else 'raise NotImplementedError("write upgrade() before applying this migration")'}


def downgrade() -> None:
    """Revert: ${message}. Leave the schema exactly as it was before upgrade()."""
    ${downgrades if downgrades else 'raise NotImplementedError("write downgrade() before applying this migration")'}
