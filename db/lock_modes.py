"""PostgreSQL's table-level lock modes and which of them the application's ordinary
statements wait for: what the rehearsal's measurements (db/impact.py) and the blocking
budget's guard (db/blocking.py) both judge locks by."""

from __future__ import annotations

import re

# PostgreSQL's table-level lock modes, weakest first, as pg_locks names them.
MODES = (
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
)
SHOWN = {mode: re.sub(r"(?<!^)(?=[A-Z])", " ", mode[:-4]).upper() for mode in MODES}
"""AccessShareLock → ACCESS SHARE, as the documentation's conflict table names them."""

_CONFLICTS = {
    "AccessShareLock": {"AccessExclusiveLock"},
    "RowShareLock": {"ExclusiveLock", "AccessExclusiveLock"},
    "RowExclusiveLock": {
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    },
    "ShareUpdateExclusiveLock": set(MODES[3:]),
    "ShareLock": {"RowExclusiveLock", *MODES[3:4], *MODES[5:]},
    "ShareRowExclusiveLock": set(MODES[2:4]) | set(MODES[4:]),
    "ExclusiveLock": set(MODES[1:]),
    "AccessExclusiveLock": set(MODES),
}
"""PostgreSQL's "Conflicting Lock Modes" table (explicit-locking.html)."""

APPLICATION = {
    "SELECT": "AccessShareLock",
    "INSERT": "RowExclusiveLock",
    "UPDATE": "RowExclusiveLock",
    "DELETE": "RowExclusiveLock",
}
"""The lock an ordinary application statement takes on its table and, through the
planner and executor, on each of the table's indexes."""


def conflicts(held: str, wanted: str) -> bool:
    return wanted in _CONFLICTS[held]


def blocked_by(mode: str) -> list[str]:
    """The application statements that wait while `mode` is held on their table or on
    one of its indexes."""
    return [name for name, wanted in APPLICATION.items() if conflicts(mode, wanted)]


BLOCKING = tuple(mode for mode in MODES if blocked_by(mode))
"""The modes that block some application statement on their table: SHARE and stronger
(SHARE UPDATE EXCLUSIVE, taken by VALIDATE and CONCURRENTLY, blocks none)."""
