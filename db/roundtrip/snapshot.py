"""A deterministic, normalised snapshot of the app schemas, from the server's own pg_dump.

The bookkeeping schema is left out (every application schema is dumped), and so is everything
that varies from run to run: header comments, SET lines, and the `\\restrict KEY` lines
that PostgreSQL 18, 17.6+, 16.10+ and 15.14+ print (given a fixed key where supported).
"""

from __future__ import annotations

import difflib
import re

from db import settings
from db.throwaway import Server

RESTRICT_KEY = "worktrackersnapshot"
_NOISE = re.compile(r"^(--|SET |SELECT pg_catalog\.set_config\(|\\restrict |\\unrestrict )")


def pg_dump_args(supports_restrict_key: bool) -> list[str]:
    args = ["--schema-only", "--no-owner", "--no-privileges"]
    listed = settings.app_schemas()
    if listed is None:  # every schema but the system's and the bookkeeping one
        args += ["--exclude-schema", settings.BOOKKEEPING_SCHEMA]
    else:
        for schema in listed:
            args += ["--schema", schema]
    if supports_restrict_key:
        args += ["--restrict-key", RESTRICT_KEY]
    return args


def normalise(dump: str) -> str:
    """Drop the lines that vary between runs and servers of one version; fold blank runs."""
    kept = [line.rstrip() for line in dump.splitlines() if not _NOISE.match(line)]
    text = "\n".join(kept)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def take(server: Server, database: str) -> str:
    """The normalised schema snapshot of `database` on `server`."""
    try:
        dump = server.pg_dump(database, pg_dump_args(supports_restrict_key=True))
    except RuntimeError as error:
        if "restrict-key" not in str(error):
            raise
        # Releases before the \\restrict fix know neither the option nor the lines.
        dump = server.pg_dump(database, pg_dump_args(supports_restrict_key=False))
    return normalise(dump)


def diff(expected: str, actual: str, expected_label: str, actual_label: str) -> str:
    """A unified diff of two snapshots, labelled with what each one is."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=expected_label,
            tofile=actual_label,
            n=2,
        )
    )
