"""db/schema.sql and docs/schema.md are generated from the migrations at head; these tests
fail when either is stale, so every pull request shows the schema change."""

from __future__ import annotations

import difflib
from pathlib import Path

from sqlalchemy.engine import Connection

from db import schema_docs
from db.throwaway import Server


def _stale(path: Path, expected: str, task: str) -> str:
    committed = path.read_text() if path.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{path.name} (committed)",
            tofile=f"{path.name} (from the migrations)",
        )
    )
    return (
        f"{path.relative_to(schema_docs.PROJECT_ROOT)} is stale.\n"
        f"Likely cause: a migration changed the schema. Run `invoke {task}` and commit the "
        f"result.\n--- diff ---\n{diff}"
    )


def test_schema_sql_is_current(pg_server: Server, head_template: str) -> None:
    expected = schema_docs.schema_sql(pg_server, head_template)
    assert schema_docs.SCHEMA_SQL.read_text() == expected, _stale(
        schema_docs.SCHEMA_SQL, expected, "db.dump"
    )


def test_schema_diagram_is_current(db: Connection) -> None:
    expected = schema_docs.schema_markdown(db)
    assert schema_docs.SCHEMA_DOC.read_text() == expected, _stale(
        schema_docs.SCHEMA_DOC, expected, "db.diagram"
    )


def test_diagram_shows_keys_and_cardinality(db: Connection) -> None:
    diagram = schema_docs.er_diagram(db)
    assert diagram.startswith("erDiagram\n")
    assert "    users ||--o{ organization_members : user_id" in diagram
    assert "    tasks |o--o{ tasks : parent_task_id" in diagram
    assert "        uuid id PK" in diagram
    assert '        text slug UK "URL name; unique among live organizations."' in diagram
    assert "        uuid project_id FK, UK" in diagram  # tasks: UNIQUE (project_id, number)
    assert "        task_status status" in diagram
