"""Names, comments and shapes.

At 001, the initial migration creates exactly Story 2.1's objects under exactly its names.
At head, every table (including those later migrations add) follows Story 2.1's
conventions: indexed foreign keys, comments, updated_at triggers, text, uq_/ix_ names."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

TABLES = {
    "organizations",
    "users",
    "organization_members",
    "projects",
    "tasks",
    "comments",
    "labels",
    "task_labels",
    "audit_events",
}
TOUCHED = TABLES - {"task_labels", "audit_events"}

EXPECTED_CONSTRAINTS = {
    # primary keys
    *(f"pk_{t}" for t in TABLES),
    # foreign keys: fk_<table>_<column>_<referred_table>
    "fk_organization_members_organization_id_organizations",
    "fk_organization_members_user_id_users",
    "fk_organization_members_invited_by_users",
    "fk_projects_organization_id_organizations",
    "fk_projects_created_by_users",
    "fk_tasks_project_id_projects",
    "fk_tasks_assignee_id_users",
    "fk_tasks_reporter_id_users",
    "fk_tasks_parent_task_id_tasks",
    "fk_comments_task_id_tasks",
    "fk_comments_author_id_users",
    "fk_labels_project_id_projects",
    "fk_task_labels_task_id_tasks",
    "fk_task_labels_label_id_labels",
    "fk_audit_events_organization_id_organizations",
    "fk_audit_events_actor_id_users",
    # unique constraints
    "uq_tasks_project_id_number",
    # checks
    "ck_organizations_name_length",
    "ck_organizations_slug_format",
    "ck_organizations_plan_valid",
    "ck_organizations_settings_is_object",
    "ck_users_email_format",
    "ck_users_email_length",
    "ck_users_display_name_length",
    "ck_organization_members_role_valid",
    "ck_projects_key_format",
    "ck_projects_name_length",
    "ck_tasks_number_positive",
    "ck_tasks_title_length",
    "ck_tasks_priority_range",
    "ck_tasks_completed_at_status",
    "ck_comments_body_length",
    "ck_labels_name_length",
    "ck_labels_color_format",
    "ck_audit_events_entity_type_valid",
    "ck_audit_events_action_valid",
}

EXPECTED_INDEXES = {
    # indexes behind constraints
    *(f"pk_{t}" for t in TABLES),
    "uq_tasks_project_id_number",
    # unique among live rows
    "uq_organizations_slug",
    "uq_users_lower_email",
    "uq_organization_members_organization_id_user_id",
    "uq_projects_organization_id_key",
    "uq_labels_project_id_lower_name",
    # plain indexes
    "ix_organization_members_organization_id",
    "ix_organization_members_user_id",
    "ix_organization_members_invited_by",
    "ix_projects_organization_id",
    "ix_projects_created_by",
    "ix_tasks_project_id_status",
    "ix_tasks_assignee_id",
    "ix_tasks_reporter_id",
    "ix_tasks_parent_task_id",
    "ix_comments_task_id_created_at",
    "ix_comments_author_id",
    "ix_labels_project_id",
    "ix_task_labels_label_id",
    "ix_audit_events_entity_type_entity_id",
    "ix_audit_events_organization_id_occurred_at",
    "ix_audit_events_actor_id",
}


def _names(db: Connection, sql: str) -> set[str]:
    return set(db.execute(text(sql)).scalars())


def _diff(expected: set[str], actual: set[str]) -> str:
    return f"missing: {sorted(expected - actual)}\nunexpected: {sorted(actual - expected)}"


def test_initial_schema_has_exactly_the_nine_tables(db_at_001: Connection) -> None:
    tables = _names(db_at_001, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == TABLES, _diff(TABLES, tables)


def test_initial_constraint_names(db_at_001: Connection) -> None:
    # contype 'n': PostgreSQL 18 catalogues NOT NULL constraints under automatic names,
    # which Story 2.1 exempts.
    actual = _names(
        db_at_001,
        "SELECT conname FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace AND contype <> 'n'",
    )
    assert actual == EXPECTED_CONSTRAINTS, _diff(EXPECTED_CONSTRAINTS, actual)


def test_initial_index_names(db_at_001: Connection) -> None:
    actual = _names(db_at_001, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    assert actual == EXPECTED_INDEXES, _diff(EXPECTED_INDEXES, actual)


def test_index_names_follow_the_convention(db: Connection) -> None:
    """Every unique index is uq_… (or the pk_ of a primary key); every other index ix_…."""
    misnamed = _names(
        db,
        """
        SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = 'public'::regnamespace
           AND NOT CASE WHEN i.indisprimary THEN c.relname LIKE 'pk\\_%'
                        WHEN i.indisunique THEN c.relname LIKE 'uq\\_%'
                        ELSE c.relname LIKE 'ix\\_%' END
        """,
    )
    assert not misnamed, f"indexes not named pk_/uq_/ix_ as Story 2.1 says: {misnamed}"


def test_every_foreign_key_column_has_a_usable_index(db: Connection) -> None:
    """A non-partial index must lead with each FK column, so cascades find deleted rows too."""
    unindexed = _names(
        db,
        """
        SELECT co.conrelid::regclass || '.' || a.attname
          FROM pg_constraint co
          JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = co.conkey[1]
         WHERE co.contype = 'f' AND co.connamespace = 'public'::regnamespace
           AND NOT EXISTS (
               SELECT 1 FROM pg_index i
                WHERE i.indrelid = co.conrelid AND i.indkey[0] = co.conkey[1]
                  AND i.indpred IS NULL)
        """,
    )
    assert not unindexed, f"foreign key columns without a leading, non-partial index: {unindexed}"


def test_every_table_has_a_comment(db: Connection) -> None:
    missing = _names(
        db,
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind = 'r' AND obj_description(oid, 'pg_class') IS NULL",
    )
    assert not missing, f"tables without a COMMENT: {missing}"


def test_initial_updated_at_triggers(db_at_001: Connection) -> None:
    tables = _names(
        db_at_001,
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal",
    )
    assert tables == TOUCHED, _diff(TOUCHED, tables)


def test_one_updated_at_trigger_per_table_that_has_the_column(db: Connection) -> None:
    with_column = _names(
        db,
        "SELECT table_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name = 'updated_at'",
    )
    rows = db.execute(
        text(
            "SELECT c.relname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal"
        )
    ).all()
    tables = sorted(table for table, _ in rows)
    assert tables == sorted(with_column), _diff(with_column, set(tables))
    for _table, definition in rows:
        assert "BEFORE UPDATE" in definition and "FOR EACH ROW" in definition, definition
        assert "EXECUTE FUNCTION set_updated_at()" in definition, definition


def test_task_status_enum_values_in_order(db_at_001: Connection) -> None:
    values = (
        db_at_001.execute(text("SELECT unnest(enum_range(NULL::task_status))::text"))
        .scalars()
        .all()
    )
    assert values == ["todo", "in_progress", "in_review", "done", "canceled"]


def test_text_columns_are_text_never_varchar(db: Connection) -> None:
    varchar = _names(
        db,
        "SELECT table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type = 'character varying'",
    )
    assert not varchar, f"varchar columns: {varchar}"
