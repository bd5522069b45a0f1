"""What each `invoke migrate.*` and `invoke db.*` task does. tasks.py only parses
arguments and turns UserError into a clean exit."""

from db.commands.changes import migrate_down, migrate_new, migrate_plan, migrate_up
from db.commands.checks import migrate_lint, migrate_roundtrip
from db.commands.database import (
    db_diagram,
    db_dump,
    db_reset,
    db_shell,
    db_start,
    db_stop,
    db_url,
    psql_command,
)
from db.commands.reports import migrate_history, migrate_status, migrate_verify
from db.commands.target import revision_now

__all__ = [
    "db_diagram",
    "db_dump",
    "db_reset",
    "db_shell",
    "db_start",
    "db_stop",
    "db_url",
    "migrate_down",
    "migrate_history",
    "migrate_lint",
    "migrate_new",
    "migrate_plan",
    "migrate_roundtrip",
    "migrate_status",
    "migrate_up",
    "migrate_verify",
    "psql_command",
    "revision_now",
]
