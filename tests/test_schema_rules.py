"""Every CHECK, unique, foreign-key and NOT NULL rule of Story 2.1 rejects what it should,
with the SQLSTATE an application would see."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Connection

from tests.helpers import by_hand, refused

CHECK, UNIQUE, FOREIGN_KEY, NOT_NULL = "23514", "23505", "23503", "23502"
BAD_ENUM_VALUE, GENERATED_ALWAYS = "22P02", "428C9"
MISSING = "00000000-0000-0000-0000-000000000000"


def seed(db: Connection) -> dict[str, str]:
    """One row in each table, so that a case can break exactly one rule."""
    ids: dict[str, str] = {}

    def add(key: str, sql: str) -> None:
        params = {k: v for k, v in ids.items() if f":{k}" in sql}
        ids[key] = str(by_hand(db, sql, params).scalar_one())

    add("org", "INSERT INTO organizations (name, slug) VALUES ('Acme', 'acme') RETURNING id")
    add(
        "user",
        "INSERT INTO users (email, display_name) VALUES ('Ada@Example.com', 'Ada') RETURNING id",
    )
    add("user2", "INSERT INTO users (email, display_name) VALUES ('bob@e.com', 'Bob') RETURNING id")
    add(
        "member",
        "INSERT INTO organization_members (organization_id, user_id) VALUES (:org, :user) "
        "RETURNING id",
    )
    add(
        "project",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'WEB', 'Website') "
        "RETURNING id",
    )
    add(
        "task",
        "INSERT INTO tasks (project_id, number, title) VALUES (:project, 1, 'First') RETURNING id",
    )
    add("label", "INSERT INTO labels (project_id, name) VALUES (:project, 'Bug') RETURNING id")
    add(
        "comment",
        "INSERT INTO comments (task_id, body) VALUES (:task, 'Looks good') RETURNING id",
    )
    add(
        "task_label",
        "INSERT INTO task_labels (task_id, label_id) VALUES (:task, :label) RETURNING task_id",
    )
    add(
        "audit",
        "INSERT INTO audit_events (organization_id, entity_type, entity_id, action) "
        "VALUES (:org, 'task', :task, 'create') RETURNING id",
    )
    return ids


LONG = "repeat('x', {n})"

CASES = [
    # organizations
    ("organizations.name empty", "INSERT INTO organizations (name, slug) VALUES ('', 'o1')", CHECK),
    (
        "organizations.name 201 chars",
        f"INSERT INTO organizations (name, slug) VALUES ({LONG.format(n=201)}, 'o1')",
        CHECK,
    ),
    (
        "organizations.slug upper case",
        "INSERT INTO organizations (name, slug) VALUES ('O', 'Bad-Slug')",
        CHECK,
    ),
    (
        "organizations.slug one char",
        "INSERT INTO organizations (name, slug) VALUES ('O', 'a')",
        CHECK,
    ),
    (
        "organizations.slug starts with dash",
        "INSERT INTO organizations (name, slug) VALUES ('O', '-ab')",
        CHECK,
    ),
    (
        "organizations.slug 64 chars",
        f"INSERT INTO organizations (name, slug) VALUES ('O', {LONG.format(n=64)})",
        CHECK,
    ),
    (
        "organizations.plan unknown",
        "INSERT INTO organizations (name, slug, plan) VALUES ('O', 'o1', 'gold')",
        CHECK,
    ),
    (
        "organizations.settings not an object",
        "INSERT INTO organizations (name, slug, settings) VALUES ('O', 'o1', '[]')",
        CHECK,
    ),
    (
        "organizations.slug taken by a live row",
        "INSERT INTO organizations (name, slug) VALUES ('Other', 'acme')",
        UNIQUE,
    ),
    ("organizations.name NULL", "INSERT INTO organizations (slug) VALUES ('o1')", NOT_NULL),
    # users
    (
        "users.email without @",
        "INSERT INTO users (email, display_name) VALUES ('nobody.example.com', 'N')",
        CHECK,
    ),
    (
        "users.email with two @",
        "INSERT INTO users (email, display_name) VALUES ('a@b@c', 'N')",
        CHECK,
    ),
    (
        "users.email 321 chars",
        "INSERT INTO users (email, display_name) "
        f"VALUES ({LONG.format(n=309)} || '@example.com', 'N')",
        CHECK,
    ),
    (
        "users.display_name empty",
        "INSERT INTO users (email, display_name) VALUES ('n@e.com', '')",
        CHECK,
    ),
    (
        "users.display_name 101 chars",
        f"INSERT INTO users (email, display_name) VALUES ('n@e.com', {LONG.format(n=101)})",
        CHECK,
    ),
    (
        "users.email taken, other case",
        "INSERT INTO users (email, display_name) VALUES ('ada@EXAMPLE.com', 'Ada 2')",
        UNIQUE,
    ),
    # organization_members
    (
        "organization_members.role unknown",
        "INSERT INTO organization_members (organization_id, user_id, role) "
        "VALUES (:org, :user, 'boss')",
        CHECK,
    ),
    (
        "organization_members twice live",
        "INSERT INTO organization_members (organization_id, user_id) VALUES (:org, :user)",
        UNIQUE,
    ),
    (
        "organization_members.organization_id missing",
        f"INSERT INTO organization_members (organization_id, user_id) VALUES ('{MISSING}', :user)",
        FOREIGN_KEY,
    ),
    (
        "organization_members.user_id missing",
        f"INSERT INTO organization_members (organization_id, user_id) VALUES (:org, '{MISSING}')",
        FOREIGN_KEY,
    ),
    (
        "organization_members.invited_by missing",
        "INSERT INTO organization_members (organization_id, user_id, invited_by) "
        f"VALUES (:org, :user2, '{MISSING}')",
        FOREIGN_KEY,
    ),
    # projects
    (
        "projects.key lower case",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'web2', 'P')",
        CHECK,
    ),
    (
        "projects.key one char",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'W', 'P')",
        CHECK,
    ),
    (
        "projects.key 11 chars",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'ABCDEFGHIJK', 'P')",
        CHECK,
    ),
    (
        "projects.name empty",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'API', '')",
        CHECK,
    ),
    (
        "projects.key taken in the organization",
        "INSERT INTO projects (organization_id, key, name) VALUES (:org, 'WEB', 'Again')",
        UNIQUE,
    ),
    (
        "projects.organization_id missing",
        f"INSERT INTO projects (organization_id, key, name) VALUES ('{MISSING}', 'API', 'P')",
        FOREIGN_KEY,
    ),
    (
        "projects.created_by missing",
        "INSERT INTO projects (organization_id, key, name, created_by) "
        f"VALUES (:org, 'API', 'P', '{MISSING}')",
        FOREIGN_KEY,
    ),
    # tasks
    (
        "tasks.number zero",
        "INSERT INTO tasks (project_id, number, title) VALUES (:project, 0, 'T')",
        CHECK,
    ),
    (
        "tasks.title empty",
        "INSERT INTO tasks (project_id, number, title) VALUES (:project, 2, '')",
        CHECK,
    ),
    (
        "tasks.title 501 chars",
        f"INSERT INTO tasks (project_id, number, title) VALUES (:project, 2, {LONG.format(n=501)})",
        CHECK,
    ),
    (
        "tasks.priority 5",
        "INSERT INTO tasks (project_id, number, title, priority) VALUES (:project, 2, 'T', 5)",
        CHECK,
    ),
    (
        "tasks.priority -1",
        "INSERT INTO tasks (project_id, number, title, priority) VALUES (:project, 2, 'T', -1)",
        CHECK,
    ),
    (
        "tasks.completed_at while todo",
        "INSERT INTO tasks (project_id, number, title, completed_at) "
        "VALUES (:project, 2, 'T', now())",
        CHECK,
    ),
    (
        "tasks.status unknown",
        "INSERT INTO tasks (project_id, number, title, status) "
        "VALUES (:project, 2, 'T', 'blocked')",
        BAD_ENUM_VALUE,
    ),
    (
        "tasks.number reused",
        "INSERT INTO tasks (project_id, number, title) VALUES (:project, 1, 'T')",
        UNIQUE,
    ),
    (
        "tasks.project_id missing",
        f"INSERT INTO tasks (project_id, number, title) VALUES ('{MISSING}', 1, 'T')",
        FOREIGN_KEY,
    ),
    (
        "tasks.assignee_id missing",
        "INSERT INTO tasks (project_id, number, title, assignee_id) "
        f"VALUES (:project, 2, 'T', '{MISSING}')",
        FOREIGN_KEY,
    ),
    (
        "tasks.reporter_id missing",
        "INSERT INTO tasks (project_id, number, title, reporter_id) "
        f"VALUES (:project, 2, 'T', '{MISSING}')",
        FOREIGN_KEY,
    ),
    (
        "tasks.parent_task_id missing",
        "INSERT INTO tasks (project_id, number, title, parent_task_id) "
        f"VALUES (:project, 2, 'T', '{MISSING}')",
        FOREIGN_KEY,
    ),
    ("tasks.title NULL", "INSERT INTO tasks (project_id, number) VALUES (:project, 2)", NOT_NULL),
    # comments
    ("comments.body empty", "INSERT INTO comments (task_id, body) VALUES (:task, '')", CHECK),
    (
        "comments.body 20001 chars",
        f"INSERT INTO comments (task_id, body) VALUES (:task, {LONG.format(n=20001)})",
        CHECK,
    ),
    (
        "comments.task_id missing",
        f"INSERT INTO comments (task_id, body) VALUES ('{MISSING}', 'c')",
        FOREIGN_KEY,
    ),
    (
        "comments.author_id missing",
        f"INSERT INTO comments (task_id, author_id, body) VALUES (:task, '{MISSING}', 'c')",
        FOREIGN_KEY,
    ),
    # labels
    ("labels.name empty", "INSERT INTO labels (project_id, name) VALUES (:project, '')", CHECK),
    (
        "labels.name 51 chars",
        f"INSERT INTO labels (project_id, name) VALUES (:project, {LONG.format(n=51)})",
        CHECK,
    ),
    (
        "labels.color a word",
        "INSERT INTO labels (project_id, name, color) VALUES (:project, 'x', 'red')",
        CHECK,
    ),
    (
        "labels.color not hex",
        "INSERT INTO labels (project_id, name, color) VALUES (:project, 'x', '#12345G')",
        CHECK,
    ),
    (
        "labels.name taken, other case",
        "INSERT INTO labels (project_id, name) VALUES (:project, 'BUG')",
        UNIQUE,
    ),
    (
        "labels.project_id missing",
        f"INSERT INTO labels (project_id, name) VALUES ('{MISSING}', 'x')",
        FOREIGN_KEY,
    ),
    # task_labels
    (
        "task_labels twice",
        "INSERT INTO task_labels (task_id, label_id) VALUES (:task, :label)",
        UNIQUE,
    ),
    (
        "task_labels.label_id missing",
        f"INSERT INTO task_labels (task_id, label_id) VALUES (:task, '{MISSING}')",
        FOREIGN_KEY,
    ),
    (
        "task_labels.task_id missing",
        f"INSERT INTO task_labels (task_id, label_id) VALUES ('{MISSING}', :label)",
        FOREIGN_KEY,
    ),
    # audit_events
    (
        "audit_events.entity_type unknown",
        "INSERT INTO audit_events (entity_type, entity_id, action) "
        "VALUES ('invoice', :task, 'create')",
        CHECK,
    ),
    (
        "audit_events.action unknown",
        "INSERT INTO audit_events (entity_type, entity_id, action) "
        "VALUES ('task', :task, 'archive')",
        CHECK,
    ),
    (
        "audit_events.actor_id missing",
        "INSERT INTO audit_events (actor_id, entity_type, entity_id, action) "
        f"VALUES ('{MISSING}', 'task', :task, 'create')",
        FOREIGN_KEY,
    ),
    (
        "audit_events.organization_id missing",
        "INSERT INTO audit_events (organization_id, entity_type, entity_id, action) "
        f"VALUES ('{MISSING}', 'task', :task, 'create')",
        FOREIGN_KEY,
    ),
    (
        "audit_events.id given by hand",
        "INSERT INTO audit_events (id, entity_type, entity_id, action) "
        "VALUES (99, 'task', :task, 'create')",
        GENERATED_ALWAYS,
    ),
]


@pytest.mark.parametrize(("rule", "statement", "sqlstate"), CASES, ids=[c[0] for c in CASES])
def test_rule_rejects_bad_row(
    head_transaction: Connection, rule: str, statement: str, sqlstate: str
) -> None:
    db = head_transaction
    ids = seed(db)
    params = {k: v for k, v in ids.items() if f":{k}" in statement}
    got = refused(db, statement, params)
    assert got == sqlstate, (
        f"{rule}: expected SQLSTATE {sqlstate}, got {got}.\n"
        "Likely cause: a migration removed or changed the rule; if that was meant, update "
        "this case (README, Daily workflow, step 5)."
    )


def test_seed_rows_are_valid(head_transaction: Connection) -> None:
    """The rows the cases start from break no rule: each case fails for its own reason."""
    ids = seed(head_transaction)
    assert len(ids) == 10
