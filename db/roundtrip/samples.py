"""Sample values the roundtrip cannot derive from the catalog.

Values are derived from each column's type and its own CHECK constraints (lists,
comparisons, lengths, regular expressions), and rows that break a CHECK over several
columns are repaired (db/roundtrip/sample_data.py). Only when the roundtrip says it
cannot fill a table, add its column here: keys are "table.column", values take the row
number n and return an SQL expression, e.g. "invoices.number": lambda n: f"'INV-{n:05d}'".
"""

from __future__ import annotations

from collections.abc import Callable

SAMPLES: dict[str, Callable[[int], str]] = {}

EMPTY: set[str] = set()
"""Tables ("table" or "schema.table") the roundtrip leaves without sample rows: only for a
cycle of NOT NULL, non-deferrable foreign keys to keys the server generates (identity),
which no rows can name beforehand (the roundtrip says so, naming the tables)."""
