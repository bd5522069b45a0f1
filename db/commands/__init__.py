"""What each `invoke migrate.*` and `invoke db.*` task does. tasks.py imports each
command from its module; this package also offers them all by name
(`commands.migrate_up()`), for code that calls them in-process (the tests).

Each command's module is imported when the command is first asked for: a run of
`migrate.up` should not pay for the embedded server, the roundtrip or Rich's tables.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# What the lazy names below are, for mypy and editors (ruff cannot see the dynamic
# __all__, hence the noqa).
if TYPE_CHECKING:
    from db.commands.changes import migrate_down, migrate_new, migrate_plan, migrate_up  # noqa: F401
    from db.commands.checks import migrate_lint, migrate_roundtrip  # noqa: F401
    from db.commands.database import (  # noqa: F401
        db_diagram,
        db_dump,
        db_reset,
        db_shell,
        db_start,
        db_stop,
        db_url,
        psql_command,
    )
    from db.commands.reports import migrate_drift, migrate_history, migrate_status, migrate_verify  # noqa: F401
    from db.commands.target import on_environment, revision_now  # noqa: F401

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
