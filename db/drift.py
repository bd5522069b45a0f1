"""Drift: does each database still hold what its migrations say it should hold?

Each target's live catalog is read read-only (no lock, no write: the session is READ
ONLY, so a role that can only read is enough) and compared, by name and with the same
normaliser as the roundtrip (db/catalog.py), with the catalog the migrations produce at
*that target's own revision*. The expected catalogs are built on a throwaway PostgreSQL
of the target's major version where one can run here (Docker, then Debian's binaries),
else on the default throwaway server, with a note: two major versions may print some
definitions differently.

One upward pass over the chain, on one throwaway database per major version, serves
every revision the targets are at: targets at the same revision share one build, and a
fleet of N databases costs N catalog reads plus one chain.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from db import (
    catalog,
    connect,
    failures,
    fanout,
    output,
    planning,
    revisions,
    runner,
    settings,
    targets,
    throwaway,
    urls,
)
from db.errors import ConfigError, DatabaseRefused, RevisionError, UserError

APPLICATION_NAME = f"{settings.APPLICATION_NAME} (drift)"


@dataclass
class Finding:
    """What drift found on one database."""

    target: targets.Target
    database: str = ""
    revision: str | None = None
    server_major: int | None = None
    differences: list[str] | None = None
    """None: not compared (see error)."""
    error: UserError | None = None
    note: str = ""
    seconds: float = 0.0
    live: catalog.Catalog | None = field(default=None, repr=False)

    @property
    def drifted(self) -> bool:
        return bool(self.differences)

    @property
    def result(self) -> str:
        if self.error is not None:
            return output.brief(self.error.message, self.database or self.target.label)
        if self.differences is None:
            return "not checked"
        if not self.differences:
            return "no drift"
        count = len(self.differences)
        return f"drift: {count} difference{'s' if count != 1 else ''}"

    def as_dict(self) -> dict:
        return {
            "environment": self.target.environment,
            "database": self.database,
            "revision": self.revision,
            "drift": None if self.differences is None else bool(self.differences),
            "differences": self.differences,
            "error": self.error.message if self.error else None,
            "note": self.note or None,
            "seconds": round(self.seconds, 3),
        }


def differences(expected: catalog.Catalog, live: catalog.Catalog) -> list[str]:
    """What `live` has that `expected` does not (+), lacks (-) or holds otherwise (~)."""
    if expected.lines() == live.lines():
        return []
    found = catalog.changes(expected, catalog.as_in(live, expected))
    if found:
        return found
    # Equal in every way changes() describes, unequal line by line (a column order, say):
    # show the lines themselves rather than call it clean.
    lines_e, lines_l = set(expected.lines()), set(live.lines())
    return [f"+ {line}" for line in sorted(lines_l - lines_e)] + [
        f"- {line}" for line in sorted(lines_e - lines_l)
    ]


def _read_live(finding: Finding) -> None:
    """The target's revision and catalog, in a READ ONLY session; errors go in `finding`."""
    started = time.perf_counter()
    target = finding.target
    if target.unset is not None:
        finding.error = ConfigError(f"{target.unset} is not set")
        return
    try:
        config = settings.load()
        url = target.url if target.url is not None else connect.target_url(config)
        finding.database = "embedded " if target.url is None and config.uses_embedded else ""
        finding.database += urls.redact(url)
        engine = connect.engine_for(url, config, APPLICATION_NAME)
        try:
            with connect.connect(engine) as connection:
                # Every transaction of this session is read only: drift never writes,
                # whatever the code below it does.
                connection.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
                connection.commit()
                version = connection.dialect.server_version_info
                finding.server_major = int(version[0]) if version else None
                finding.revision = planning.current_revision(connection)
                finding.live = catalog.read(connection)
                connection.rollback()
        finally:
            engine.dispose()
    except UserError as error:
        finding.error = error
    except DBAPIError as error:
        finding.error = failures.describe(error)
        if isinstance(finding.error, DatabaseRefused) and "permission" in finding.error.message:
            finding.error.hint = (
                "drift only reads: the role needs CONNECT, USAGE on the schemas and SELECT "
                f"on {settings.BOOKKEEPING_SCHEMA}.alembic_version (pg_read_all_data is enough)"
            )
    if finding.error is not None and target.variable is not None:
        # Threads read targets at once: name the variable here, not through os.environ.
        failures.naming(finding.error, target.variable)
    finding.seconds = time.perf_counter() - started


@contextmanager
def _server_for(major: int) -> Iterator[tuple[throwaway.Server, str]]:
    """A throwaway server to build the expected catalogs of databases running `major`,
    and a note when its major version differs."""
    chosen = None
    if not os.environ.get("TEST_DATABASE_URL"):
        chosen = next(
            (k for k in (f"docker-{major}", f"debian-{major}") if throwaway.why_not(k) is None),
            None,
        )
    with throwaway.server_of_kind(chosen) if chosen else throwaway.throwaway_server() as server:
        note = ""
        if server.version != major:
            note = (
                f"expected schema built on PostgreSQL {server.version} ({server.kind}), the "
                f"database runs {major}: a difference may only be how the versions print it"
            )
        yield server, note


def _expected(
    major: int, wanted: set[str | None]
) -> tuple[dict[str | None, catalog.Catalog | UserError], str]:
    """The catalog the migrations make at each wanted revision, from one upward pass on
    one throwaway database; a revision the chain cannot reach maps to the error."""
    script = revisions.script_directory()
    chain = [s.revision for s in revisions.chain(script)]
    built: dict[str | None, catalog.Catalog | UserError] = {}
    with _server_for(major) as (server, note):
        url = server.create_database()
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                current: str | None = None
                for revision in [r for r in [None, *chain] if r in wanted]:
                    try:
                        if revision is not None:
                            plan = planning.plan_upgrade(script, current, revision)
                            runner.run(connection, plan)
                    except UserError as error:
                        failed = UserError(
                            "the migrations fail on a fresh database on the way to "
                            f"{revision}: {error.message}",
                            "`invoke migrate.roundtrip` shows the failing migration",
                        )
                        built.update({r: failed for r in wanted if r not in built})
                        break
                    current = revision
                    built[revision] = catalog.read(connection)
                    connection.rollback()
        finally:
            engine.dispose()
            if url.database is not None:
                server.drop_database(url.database)
    return built, note


def check(
    chosen: list[targets.Target],
    *,
    parallel: int = 4,
    on_read: Callable[[Finding], None] | None = None,
) -> list[Finding]:
    """Read every target (`parallel` at a time), build what each revision should hold,
    compare. Never raises for one database: its error is in its Finding."""

    def read(target: targets.Target) -> Finding:
        finding = Finding(target)
        _read_live(finding)
        return finding

    def done(read: fanout.Done[Finding]) -> None:
        if on_read is not None and read.value is not None:
            on_read(read.value)

    findings = [
        d.value
        for d in fanout.over_databases(chosen, read, parallel=parallel, on_done=done)
        if d.value is not None
    ]

    chain = {s.revision for s in revisions.chain(revisions.script_directory())}
    by_major: dict[int, set[str | None]] = {}
    for finding in findings:
        if finding.error is not None:
            continue
        if finding.revision is not None and finding.revision not in chain:
            finding.error = RevisionError(
                f"the database is at revision {finding.revision!r}, which this checkout "
                "does not have",
                "pull the latest main, or check that the URL points at the right database",
            )
            continue
        by_major.setdefault(finding.server_major or 0, set()).add(finding.revision)

    for major, wanted in sorted(by_major.items()):
        built, note = _expected(major, set(wanted))
        for finding in findings:
            if finding.error is not None or finding.server_major != major:
                continue
            expected = built.get(finding.revision)
            if isinstance(expected, UserError):
                finding.error = expected
                continue
            assert expected is not None and finding.live is not None
            finding.differences = differences(expected, finding.live)
            finding.note = note
            finding.live = None  # a fleet's catalogs need not all stay in memory
    return findings
