"""What each `invoke migrate.*` and `invoke db.*` task does. tasks.py only parses
arguments and turns UserError into a clean exit.

Each command's module is imported when the command is first asked for: a run of
`migrate.up` should not pay for the embedded server, the roundtrip or Rich's tables.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "migrate_down": "changes",
    "migrate_new": "changes",
    "migrate_plan": "changes",
    "migrate_up": "changes",
    "migrate_lint": "checks",
    "migrate_roundtrip": "checks",
    "db_diagram": "database",
    "db_dump": "database",
    "db_reset": "database",
    "db_shell": "database",
    "db_start": "database",
    "db_stop": "database",
    "db_url": "database",
    "psql_command": "database",
    "migrate_drift": "reports",
    "migrate_history": "reports",
    "migrate_status": "reports",
    "migrate_verify": "reports",
    "revision_now": "target",
    "on_environment": "target",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'db.commands' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"db.commands.{module}"), name)
    globals()[name] = value
    return value
