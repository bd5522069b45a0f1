"""Sample values for columns whose CHECK constraints a type-based value would break.

Keys are "table.column"; values take the row number n and return an SQL expression.
When a new migration adds a constrained column and the roundtrip says it could not fill
the table, add the column here.
"""

from __future__ import annotations

from collections.abc import Callable

SAMPLES: dict[str, Callable[[int], str]] = {
    "organizations.slug": lambda n: f"'org-{n}'",
    "organizations.plan": lambda n: ("'free'", "'team'", "'enterprise'")[n % 3],
    "users.email": lambda n: f"'user{n}@example.com'",
    "organization_members.role": lambda n: ("'owner'", "'admin'", "'member'", "'viewer'")[n % 4],
    "projects.key": lambda n: f"'P{n}'",
    "tasks.status": lambda n: ("'done'", "'canceled'")[n % 2],  # completed_at is set
    "tasks.priority": lambda n: str(n % 5),
    "labels.color": lambda n: f"'#{n % 0xFFFFFF:06x}'",
    "audit_events.entity_type": lambda n: "'task'",
    "audit_events.action": lambda n: ("'create'", "'update'", "'delete'", "'restore'")[n % 4],
}
