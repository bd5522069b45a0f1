"""The roundtrip, whole: static checks, the stairway over every revision, the whole
chain, and models vs head, on a throwaway server."""

from __future__ import annotations

import time

from db import revisions
from db.roundtrip import scratch, static
from db.roundtrip.chain import whole_chain
from db.roundtrip.results import FAIL, OK, SKIPPED, OnResult, Report, Result, timed
from db.roundtrip.stairway import Stairway
from db.throwaway import Server


def run(server: Server, on_result: OnResult | None = None) -> Report:
    """Static checks, the stairway over every revision, the whole chain, models vs head."""
    started = time.perf_counter()
    report = Report(server=f"{server.kind}, PostgreSQL {server.version}")
    problems, usable = static.check_all()
    timed(
        report.results,
        on_result,
        Result("files", "static checks", FAIL if problems else OK, detail="\n".join(problems)),
    )
    if not usable:
        timed(
            report.results,
            on_result,
            Result("chain", "stairway", SKIPPED, note="the chain cannot be run (see above)"),
        )
        report.seconds = time.perf_counter() - started
        return report
    database = scratch.create(server)
    engine = scratch.engine(server, database)
    try:
        with engine.connect() as connection:
            scripts = revisions.script_directory()
            stairway = Stairway(server, database, connection, scripts)
            try:
                report.results += stairway.climb(revisions.chain(scripts), on_result)
            finally:
                stairway.close()
    finally:
        engine.dispose()
        server.drop_database(database)
    if stairway.blocked:
        timed(
            report.results,
            on_result,
            Result("chain", "whole chain", SKIPPED, note=stairway.blocked),
        )
    else:
        downs = [r.revision for r in report.failures if r.step == "down"]
        report.results += whole_chain(server, on_result, failing_downs=downs)
    report.seconds = time.perf_counter() - started
    return report
