"""Story 2.1's behaviour: soft delete frees unique keys, cascades and SET NULL reach the
right rows, and updated_at follows every update."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from tests.helpers import by_hand, refused
from tests.test_schema_rules import seed

# (table, the insert that takes the unique key again, what soft-deletes the first holder)
REUSABLE_KEYS = [
    ("organizations", "INSERT INTO organizations (name, slug) VALUES ('Acme 2', 'acme')"),
    ("users", "INSERT INTO users (email, display_name) VALUES ('ADA@example.com', 'Ada 2')"),
    (
        "organization_members",
        "INSERT INTO organization_members (organization_id, user_id) VALUES (:org, :user)",
    ),
    ("projects", "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'WEB', 'W2')"),
    ("labels", "INSERT INTO labels (project_id, name) VALUES (:project, 'bug')"),
]


def _params(ids: dict[str, str], statement: str) -> dict[str, str]:
    return {k: v for k, v in ids.items() if f":{k}" in statement}


@pytest.mark.parametrize(("table", "insert"), REUSABLE_KEYS, ids=[t for t, _ in REUSABLE_KEYS])
def test_soft_deleted_rows_free_their_unique_keys(
    head_transaction: Connection, table: str, insert: str
) -> None:
    db = head_transaction
    ids = seed(db)
    db.execute(text("SAVEPOINT live"))
    assert refused(db, insert, _params(ids, insert)) == "23505", f"{table}: the key was not taken"
    db.execute(text("ROLLBACK TO SAVEPOINT live"))
    before = _count(db, f"SELECT count(*) FROM {table}")
    db.execute(text(f"UPDATE {table} SET deleted_at = now()"))
    by_hand(db, insert, _params(ids, insert))  # the key is free again
    after = _count(db, f"SELECT count(*) FROM {table}")
    assert after == before + 1, f"{table}: expected the deleted row and the new one to coexist"


def test_task_numbers_are_never_reused(head_transaction: Connection) -> None:
    db = head_transaction
    ids = seed(db)
    db.execute(text("UPDATE tasks SET deleted_at = now()"))
    again = "INSERT INTO tasks (project_id, number, title) VALUES (:p, 1, 'Again')"
    assert refused(db, again, {"p": ids["project"]}) == "23505"


def _count(db: Connection, sql: str, **params: str) -> int:
    return db.execute(text(sql), params).scalar_one()


def test_deleting_an_organization_cascades_to_everything_it_owns(
    head_transaction: Connection,
) -> None:
    db = head_transaction
    ids = seed(db)
    db.execute(text("DELETE FROM organizations WHERE id = :org"), {"org": ids["org"]})
    for table in ("organization_members", "projects", "tasks", "comments", "labels", "task_labels"):
        assert _count(db, f"SELECT count(*) FROM {table}") == 0, f"{table} kept orphans"
    assert _count(db, "SELECT count(*) FROM users") == 2, "users do not belong to an organization"
    audit_org = db.execute(text("SELECT organization_id FROM audit_events")).scalar_one()
    assert audit_org is None, "audit_events.organization_id should be SET NULL, keeping the event"


def test_deleting_a_user_nulls_their_references_and_drops_their_memberships(
    head_transaction: Connection,
) -> None:
    db = head_transaction
    ids = seed(db)
    user = {"u": ids["user"]}
    db.execute(text("UPDATE tasks SET assignee_id = :u, reporter_id = :u"), user)
    db.execute(text("UPDATE comments SET author_id = :u"), user)
    db.execute(text("UPDATE projects SET created_by = :u"), user)
    db.execute(text("UPDATE audit_events SET actor_id = :u"), user)
    by_hand(
        db,
        "INSERT INTO organization_members (organization_id, user_id, invited_by) "
        "VALUES (:org, :bob, :u)",
        {"org": ids["org"], "bob": ids["user2"], **user},
    )
    db.execute(text("DELETE FROM users WHERE id = :u"), user)

    assert _count(db, "SELECT count(*) FROM organization_members WHERE user_id = :u", **user) == 0
    for sql in (
        "SELECT count(*) FROM tasks WHERE assignee_id IS NULL AND reporter_id IS NULL",
        "SELECT count(*) FROM comments WHERE author_id IS NULL",
        "SELECT count(*) FROM projects WHERE created_by IS NULL",
        "SELECT count(*) FROM audit_events WHERE actor_id IS NULL",
        "SELECT count(*) FROM organization_members WHERE invited_by IS NULL",
    ):
        assert _count(db, sql) == 1, f"expected SET NULL to keep the row: {sql}"


def test_deleting_a_parent_task_keeps_its_subtasks(head_transaction: Connection) -> None:
    db = head_transaction
    ids = seed(db)
    by_hand(
        db,
        "INSERT INTO tasks (project_id, number, title, parent_task_id) VALUES (:p, 2, 'Child', :t)",
        {"p": ids["project"], "t": ids["task"]},
    )
    db.execute(text("DELETE FROM tasks WHERE id = :t"), {"t": ids["task"]})
    assert _count(db, "SELECT count(*) FROM tasks WHERE parent_task_id IS NULL") == 1
    assert _count(db, "SELECT count(*) FROM comments") == 0, "comments cascade with their task"


TOUCHED = [
    ("organizations", "name = 'Renamed'"),
    ("users", "display_name = 'Renamed'"),
    ("organization_members", "role = 'admin'"),
    ("projects", "name = 'Renamed'"),
    ("tasks", "title = 'Renamed'"),
    ("comments", "body = 'Edited'"),
    ("labels", "name = 'Renamed'"),
]


@pytest.mark.parametrize(("table", "change"), TOUCHED, ids=[t for t, _ in TOUCHED])
def test_updated_at_moves_on_update(db: Connection, table: str, change: str) -> None:
    seed(db)  # autocommit: each statement is its own transaction, so now() moves
    before = db.execute(text(f"SELECT created_at, updated_at FROM {table} LIMIT 1")).one()
    # Even an explicit value is overridden: the trigger always stamps now().
    by_hand(db, f"UPDATE {table} SET {change}, updated_at = '2000-01-01'")
    after = db.execute(text(f"SELECT created_at, updated_at FROM {table} LIMIT 1")).one()
    assert after.updated_at > before.updated_at, f"{table}.updated_at did not move"
    assert after.created_at == before.created_at, f"{table}.created_at changed on update"
