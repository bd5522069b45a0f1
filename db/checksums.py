"""Applied migrations are immutable: compare each still-applied migration's file with the
sha256 recorded in the history when it was applied (Flyway's `validate`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from db import history, revisions
from db.errors import ChecksumMismatch, RevisionError


@dataclass(frozen=True)
class ChangedFile:
    """An applied migration whose file changed (or vanished) since it was applied."""

    revision: str
    description: str
    path: Path | None
    recorded: str | None
    actual: str | None

    @property
    def missing(self) -> bool:
        """The checkout has no such revision: the database is ahead of it (or the file
        was deleted; a file deleted mid-chain breaks the chain, which is reported first)."""
        return self.path is None or self.actual is None

    @property
    def what(self) -> str:
        if self.path is None or self.missing:
            return f"{self.revision} ({self.description}): not in this checkout"
        return f"{self.path.name}: edited"


def refuse_if_ahead(changed: list[ChangedFile]) -> None:
    """Raise RevisionError when the database has applied revisions this checkout lacks:
    an older checkout must neither run nor accept anything there (--allow-changed would
    record a row that breaks the newer checkout's history)."""
    missing = [d for d in changed if d.missing]
    if missing:
        raise RevisionError(
            "the database is ahead of this checkout: it has "
            + ", ".join(f"{d.revision} ({d.description})" for d in missing)
            + ", which this checkout lacks.",
            "update your checkout (git pull) and run the command again; if you deleted the "
            "file by mistake, restore it (git checkout -- FILE). --allow-changed never "
            "accepts a migration this checkout does not have",
        )


def _path(script: ScriptDirectory, revision: str) -> Path | None:
    try:
        found = script.get_revision(revision)
    except Exception:  # a broken chain is reported by whatever loads it next
        return None
    return revisions.path_of(found) if found is not None else None


def changed_files(
    connection: Connection,
    script: ScriptDirectory,
    applied: dict[str, dict[str, Any]] | None = None,
) -> list[ChangedFile]:
    """Applied migrations whose file changed or vanished since it was applied.

    `applied` is history.applied_checksums(), for a caller that has read it already.
    """
    if applied is None:
        applied = history.applied_checksums(connection)
    changed = []
    for revision, row in applied.items():
        path = _path(script, revision)
        actual = history.checksum(path) if path is not None else None
        if actual != row["checksum"]:
            changed.append(ChangedFile(revision, row["description"], path, row["checksum"], actual))
    return sorted(changed, key=lambda d: d.revision)


def verify(
    connection: Connection,
    script: ScriptDirectory,
    *,
    allow_changed: bool = False,
    who: history.Who | None = None,
) -> list[ChangedFile]:
    """Raise ChecksumMismatch on a changed file, unless allowed; an allowed change is recorded.
    RevisionError, allowed or not, when the database is ahead of this checkout."""
    changed = changed_files(connection, script)
    if not changed:
        return []
    refuse_if_ahead(changed)
    if not allow_changed:
        raise ChecksumMismatch(
            "applied migrations changed since they were applied: "
            + "; ".join(d.what for d in changed)
            + ".",
            "released migrations are immutable: restore the file as it was applied (git "
            "checkout -- FILE, once committed) and "
            "put the change in a new migration (invoke migrate.new). If the edit is harmless, "
            "run again with --allow-changed to accept it; that is recorded in the history. A "
            "migration not yet shared: undo the edit, invoke migrate.down, edit it again, up",
        )
    who = who or history.Who.here()
    with connection.begin():
        for d in changed:
            history.record(
                connection,
                revision=d.revision,
                from_revision=None,
                to_revision=None,
                direction="accept-changed",
                description=d.description,
                checksum=d.actual,
                started_at=datetime.now(UTC),
                duration_ms=0.0,
                success=True,
                who=who,
                note=f"--allow-changed accepted {d.what}: checksum was {d.recorded}, "
                f"now {d.actual}",
            )
    return changed
