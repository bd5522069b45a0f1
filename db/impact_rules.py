"""squawk's rules read as predictions of what the rehearsal measures (db/impact.py), so
that a static finding and a measurement can be compared, migration by migration.

Two measured facts make a migration dangerous to a live application, both on a table
that existed and held rows:
- a rewrite: the table's file node changed (ALTER COLUMN TYPE, a volatile default),
  under ACCESS EXCLUSIVE, for as long as copying every row takes;
- a blocking scan: the statement read the table's rows while a lock that blocks the
  application's writes (or reads) was held on it until commit: a validating ADD
  CONSTRAINT or SET NOT NULL, a foreign key's check, an index built without
  CONCURRENTLY. A scan under SHARE UPDATE EXCLUSIVE (VALIDATE CONSTRAINT, CREATE INDEX
  CONCURRENTLY) blocks none of them, and a backfill's UPDATE scans under ROW EXCLUSIVE.
A strong lock held for an instant (ADD COLUMN, a rename, CREATE TRIGGER) is no danger by
itself: what it makes the application wait is its queueing, which lock_timeout bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.impact import StepImpact
from db.lock_modes import APPLICATION, conflicts

REWRITE = "rewrite"
BLOCKING_SCAN = "blocking scan"
ACCESS_EXCLUSIVE = "access exclusive"
"""Not a danger by itself (most DDL takes it for an instant): what a rule about a lock
alone predicts."""

PREDICTS: dict[str, frozenset[str] | None] = {
    "require-concurrent-index-creation": frozenset({BLOCKING_SCAN}),
    "constraint-missing-not-valid": frozenset({BLOCKING_SCAN}),
    "adding-foreign-key-constraint": frozenset({BLOCKING_SCAN}),
    "disallowed-unique-constraint": frozenset({BLOCKING_SCAN}),
    "adding-not-nullable-field": frozenset({BLOCKING_SCAN, REWRITE}),
    "changing-column-type": frozenset({REWRITE}),
    "adding-field-with-default": frozenset({REWRITE}),
    "adding-serial-primary-key-field": frozenset({REWRITE, BLOCKING_SCAN}),
    "adding-primary-key-constraint": frozenset({BLOCKING_SCAN}),
    "require-concurrent-index-deletion": frozenset({ACCESS_EXCLUSIVE}),
    # About compatibility, types or style, not about locks: nothing to measure.
    "renaming-column": None,
    "renaming-table": None,
    "renaming-object": None,
    "adding-required-field": None,
    "prefer-text-field": None,
    "prefer-identity": None,
    "prefer-bigint-over-int": None,
    "prefer-bigint-over-smallint": None,
    "prefer-big-int": None,
    "prefer-timestamptz": None,
    "prefer-robust-stmts": None,
    "ban-drop-column": None,
    "ban-drop-table": None,
    "ban-drop-database": None,
    "ban-drop-not-null": None,
    "ban-drop-constraint": None,
    "ban-drop-default": None,
    "ban-drop-type": None,
    "ban-char-field": None,
    "ban-create-domain-with-constraint": None,
    "ban-alter-domain-with-add-constraint": None,
    "ban-concurrent-index-creation-in-transaction": None,
    "ban-truncate-cascade": None,
    "require-timeout-settings": None,
    "transaction-nesting": None,
}
"""What each squawk rule predicts the rehearsal will measure (None: nothing lock-related).
A rule missing here is a new one: decide what it predicts before trusting the check."""


def _blocks_writes(mode: str) -> bool:
    return conflicts(mode, APPLICATION["INSERT"])


@dataclass(frozen=True)
class Fact:
    kind: str
    table: str
    statement: str

    def __str__(self) -> str:
        return f"{self.kind} of {self.table} ({self.statement[:70]})"


def measured(step: StepImpact) -> list[Fact]:
    """The dangers (rewrite, blocking scan) and ACCESS EXCLUSIVE locks measured in a
    migration, on tables that held rows (a scan read some) or existed (a lock)."""
    found: list[Fact] = []
    for statement in step.statements:
        held: dict[str, list[str]] = {}
        for lock in statement.locks:
            if lock.until == "commit":
                held.setdefault(lock.table, []).append(lock.mode)
        for lock in statement.locks:
            if lock.mode == "AccessExclusiveLock" and lock.until == "commit":
                found.append(Fact(ACCESS_EXCLUSIVE, lock.table, statement.sql))
        for table, rows in statement.scanned.items():
            if not rows:
                continue
            if table in statement.rewritten:
                found.append(Fact(REWRITE, table, statement.sql))
                continue
            modes = [*held.get(table, []), statement.under.get(table, "AccessShareLock")]
            if any(_blocks_writes(mode) for mode in modes):
                found.append(Fact(BLOCKING_SCAN, table, statement.sql))
    return list(dict.fromkeys(found))  # an index's lock repeats its table's


def mismatches(rules: set[str], step: StepImpact) -> list[str]:
    """Where squawk's findings for one migration (`rules`) and its measurement disagree:
    a rule whose prediction was not measured, a danger that no rule predicted, a rule
    this table does not know."""
    facts = measured(step)
    kinds = {fact.kind for fact in facts}
    found = []
    predicted: set[str] = set()
    for rule in sorted(rules):
        if rule not in PREDICTS:
            found.append(f"{step.revision}: squawk rule {rule} is not in PREDICTS")
            continue
        expected = PREDICTS[rule]
        if expected is None:
            continue
        predicted |= expected
        if not expected & kinds:
            found.append(
                f"{step.revision}: squawk says {rule} ({' or '.join(sorted(expected))}), "
                "the rehearsal measured none"
            )
    for fact in facts:
        if fact.kind != ACCESS_EXCLUSIVE and fact.kind not in predicted:
            found.append(f"{step.revision}: measured a {fact}, no squawk rule predicts it")
    return found
