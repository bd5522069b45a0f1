"""A generated chain of migrations, with matching models, in a copy of the repository:
what the benchmarks run on.

`python benchmarks/chain.py N DEST` copies the repository to DEST (without .git, .nox,
.venv, .pgdata) and adds N migrations after 001: most create a table with a foreign key
to tasks and an index on it; every fifth adds a nullable column to the table before it.
db/models/bench_generated.py holds the matching models, so the copy's roundtrip passes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".nox", ".venv", ".pgdata", "__pycache__", ".ruff_cache", ".pytest_cache"}

MIGRATION = '''"""{doc}"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _table(rev: str) -> tuple[str, str, str]:
    name = f"bench_{rev}"
    upgrade = f"""    op.create_table(
        "{name}",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_{name}_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_{name}")),
    )
    op.create_index(op.f("ix_{name}_task_id"), "{name}", ["task_id"])"""
    downgrade = f'    op.drop_table("{name}")'
    model = f'''

class Bench{rev}(Base):
    __tablename__ = "{name}"
    __table_args__ = (Index("ix_{name}_task_id", "task_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, server_default=func.gen_random_uuid())
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    name: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
'''
    return upgrade, downgrade, model


def generate(count: int, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT, dest, ignore=lambda _dir, names: [n for n in names if n in SKIP])
    versions = dest / "db" / "migrations" / "versions"
    models = [
        '"""Generated for the benchmarks: the tables of the generated migrations."""\n\n'
        "from __future__ import annotations\n\n"
        "import uuid\nfrom datetime import datetime\n\n"
        "from sqlalchemy import DateTime, ForeignKey, Index, Text, func\n"
        "from sqlalchemy.orm import Mapped, mapped_column\n\n"
        "from db.models.base import Base\n"
    ]
    extra_columns: dict[int, list[str]] = {}
    last_table = None
    for number in range(2, count + 2):
        rev, down = f"{number:03d}", f"{number - 1:03d}"
        if number % 5 == 0 and last_table is not None:
            column = f"note_{rev}"
            upgrade = f'    op.add_column("bench_{last_table}", sa.Column("{column}", sa.Text()))'
            downgrade = f'    op.drop_column("bench_{last_table}", "{column}")'
            doc = f"add {column} to bench_{last_table}"
            extra_columns.setdefault(len(models) - 1, []).append(column)
        else:
            upgrade, downgrade, model = _table(rev)
            doc = f"add bench_{rev}"
            models.append(model)
            last_table = rev
        source = MIGRATION.format(doc=doc, rev=rev, down=down, upgrade=upgrade, downgrade=downgrade)
        (versions / f"{rev}_{doc.replace(' ', '_')}.py").write_text(source)
    for index, columns in extra_columns.items():
        models[index] += "".join(
            f"    {c}: Mapped[str | None] = mapped_column(Text)\n" for c in columns
        )
    (dest / "db" / "models" / "bench_generated.py").write_text("".join(models))
    init = dest / "db" / "models" / "__init__.py"
    init.write_text(
        init.read_text() + "\nfrom db.models import bench_generated  # noqa: E402,F401\n"
    )
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: python benchmarks/chain.py N DEST")
    print(generate(int(sys.argv[1]), Path(sys.argv[2])))
