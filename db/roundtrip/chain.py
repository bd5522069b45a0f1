"""The whole chain: base → head → base (equal to the empty start) → head (equal to the
first head) on a fresh database, comparing pg_dump snapshots; with irreversible
migrations, down to the newest of them instead of base. Then models vs head."""

from __future__ import annotations

import time
from collections.abc import Collection

from db import planning, revisions, runner
from db.errors import UserError
from db.roundtrip import scratch, snapshot
from db.roundtrip.models_check import models_match
from db.roundtrip.results import FAIL, OK, SKIPPED, OnResult, Result, timed
from db.roundtrip.stairway import declared
from db.throwaway import Server


def whole_chain(
    server: Server, on_result: OnResult | None = None, failing_downs: Collection[str] = ()
) -> list[Result]:
    """base → head → base → head on a fresh database, comparing snapshots; then models.

    Past an irreversible migration there is no way back: the chain goes down to the
    newest irreversible migration instead of base, and back up. `failing_downs`: the
    revisions whose down the stairway failed; above the floor, the chain's way down
    would only fail again at them, so it is skipped, naming them (no second report).
    """
    results: list[Result] = []
    script = revisions.script_directory()
    chain = revisions.chain(script)
    blockers = [s for s in chain if declared(s, "irreversible")]
    floor = blockers[-1].revision if blockers else None
    database = scratch.create(server)
    engine = scratch.engine(server, database)
    try:
        with engine.connect() as connection:
            bottom = snapshot.take(server, database) if floor is None else None
            label = "base" if floor is None else floor
            if floor is not None:
                runner.run(connection, planning.plan_upgrade(script, None, floor), scripts=script)
                bottom = snapshot.take(server, database)
            first_head: str | None = None
            steps = [
                (f"{label} → head", "head"),
                (f"head → {label}", floor or "base"),
                (f"{label} → head again", "head"),
            ]
            above = {s.revision for s in chain[chain.index(blockers[-1]) + 1 :]} if floor else None
            failing = [r for r in failing_downs if above is None or r in above]
            for step, target in steps:
                if failing and step != steps[0][0]:
                    note = f"not run: the down of {', '.join(failing)} fails (stairway, above)"
                    timed(results, on_result, Result("chain", step, SKIPPED, note=note))
                    continue
                current = planning.current_revision(connection)
                if target == "head":
                    plan = planning.plan_upgrade(script, current, "head")
                else:
                    plan = planning.plan_downgrade(script, current, steps=None, target=target)
                if not plan:
                    note = f"{floor} is irreversible and is the head" if floor else "empty chain"
                    timed(results, on_result, Result("chain", step, SKIPPED, note=note))
                    continue
                started = time.perf_counter()
                try:
                    runner.run(connection, plan, scripts=script)
                except UserError as error:
                    timed(results, on_result, Result("chain", step, FAIL, detail=error.render()))
                    break
                seconds = time.perf_counter() - started
                now = snapshot.take(server, database)
                if target == "head" and first_head is None:
                    first_head = now
                expected, what = (
                    (first_head, "the first head")
                    if target == "head"
                    else (bottom, f"the schema at {label}")
                )
                detail = ""
                if now != expected:
                    detail = f"after {step} the schema differs from {what}.\n" + snapshot.diff(
                        expected or "", now, what, f"after {step}"
                    )
                timed(
                    results,
                    on_result,
                    Result("chain", step, FAIL if detail else OK, seconds, detail),
                )
                if detail:
                    skipped = Result("chain", steps[-1][0], SKIPPED, note=f"{step} failed")
                    if step != steps[-1][0]:
                        timed(results, on_result, skipped)
                    break
            if planning.current_revision(connection) != (chain[-1].revision if chain else None):
                runner.run(
                    connection,
                    planning.plan_upgrade(script, planning.current_revision(connection), "head"),
                    scripts=script,
                )
            timed(results, on_result, models_match(connection))
    finally:
        engine.dispose()
        server.drop_database(database)
    return results
