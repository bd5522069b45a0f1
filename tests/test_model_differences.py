"""What "models vs head" says when the models and the database disagree: a readable line
for every kind of autogenerate difference, and the fix that fits this schema (no
op.sync_enum_values). The models here are the test's own, so the test does not follow
the real schema."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from db.roundtrip.models_check import models_match
from db.roundtrip.results import FAIL, Result
from tests.conftest import make_engine

MODELS = sa.MetaData()
sa.Table(
    "gadgets",
    MODELS,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, server_default=sa.text("3")),
    sa.Column("note", sa.Text),
    sa.Column("mood", sa.Enum("calm", "busy", "blocked", name="mood")),
    sa.Index("ix_gadgets_name", "name"),
)
sa.Table("wanted", MODELS, sa.Column("id", sa.Integer, primary_key=True))

DATABASE = [
    "CREATE TYPE mood AS ENUM ('calm', 'busy')",
    "CREATE TABLE gadgets (id int PRIMARY KEY, name varchar(20), size int DEFAULT 5, "
    "extra int, mood mood)",
    "CREATE TABLE stray (id int PRIMARY KEY)",
]


@pytest.fixture
def report(empty_db: URL, monkeypatch: pytest.MonkeyPatch) -> Result:
    import db.models

    monkeypatch.setattr(db.models, "metadata", MODELS)
    engine = make_engine(empty_db)
    try:
        with engine.connect() as connection:
            for statement in DATABASE:
                connection.execute(sa.text(statement))
            connection.commit()
            return models_match(connection)
    finally:
        engine.dispose()


def test_every_kind_of_model_difference_reads_as_a_sentence(report: Result) -> None:
    assert report.status == FAIL
    lines = report.detail.split("Fix:")[0]
    for expected in (
        "table public.wanted: in the models, not in the database",
        "table public.stray: in the database, not in the models",
        "column public.gadgets.note (TEXT): in the models, not in the database",
        "column public.gadgets.extra (INTEGER): in the database, not in the models",
        "column public.gadgets.name: type VARCHAR(20) in the database, TEXT in the models",
        "column public.gadgets.name: NULL allowed in the database, NOT NULL in the models",
        "column public.gadgets.size: default 5 in the database, 3 in the models",
        "index ix_gadgets_name on public.gadgets (name): in the models, not in the database",
        "enum of public.gadgets.mood: labels ['calm', 'busy'] in the database",
        "(only in the models: blocked)",
    ):
        assert expected in lines, f"{expected!r} missing from:\n{report.detail}"
    # Autogenerate's raw entries are tuples of SQLAlchemy objects.
    for raw in ("('", "Column(", "Table(", "TableReference(", "Index("):
        assert raw not in lines, f"a raw entry ({raw}) in:\n{report.detail}"


def test_a_missing_enum_label_gets_add_value_not_sync_enum_values(report: Result) -> None:
    assert "op.sync_enum_values(" not in report.detail, report.detail
    assert "ALTER TYPE public.mood ADD VALUE IF NOT EXISTS 'blocked' AFTER 'busy'" in (
        report.detail
    ), report.detail
    assert "autocommit_block()" in report.detail, report.detail
    # The other differences still get their operations.
    assert "op.create_table('wanted'" in report.detail, report.detail
