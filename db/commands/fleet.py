"""Fleet runs: one command over every database of an environment, in parallel.

Each database gets a process of its own (`invoke TASK …` with DATABASE_URL set to it),
hence its own lock, history and report line; Alembic's runtime is process-global, so
threads could not share it. By default a failure stops starting new databases and lets
the running ones finish; `--keep-going` runs them all. Running again resumes: databases
already at the goal say "nothing to apply".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from db import output, settings, targets, urls
from db.errors import ConfigError, UserError
from db.output import say

_ARROW = re.compile(r"([\w.-]+) → ([\w.-]+)")
_AT = re.compile(r"is (?:already )?at (\S+?)\.?$", re.M)


class FleetFailed(UserError):
    """Some databases of the fleet failed; the exit code is the first failure's."""


@dataclass
class Outcome:
    target: targets.Target
    start: str = ""
    end: str = ""
    result: str = "not started: an earlier database failed"
    seconds: float = 0.0
    code: int | None = None


def _flags(options: dict[str, object]) -> list[str]:
    flags = []
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False, 0, ""):
            flags += [flag, str(value)]
    return flags


def _read(done: subprocess.CompletedProcess, outcome: Outcome) -> None:
    if arrow := _ARROW.search(done.stdout):
        outcome.start, outcome.end = arrow[1], arrow[2]
    elif at := _AT.search(done.stdout):
        outcome.start = outcome.end = at[1]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    if done.returncode == 0:
        nothing = "Nothing to" in done.stdout
        outcome.result = "nothing to apply" if nothing else "ok"
    else:
        outcome.result = errors[0].removeprefix("error: ") if errors else done.stderr[-200:]


def run(
    chosen: list[targets.Target],
    task: str,
    options: dict[str, object],
    *,
    parallel: int,
    keep_going: bool,
    as_json: bool,
) -> None:
    # One file or one printout for many databases cannot be what was meant: refuse
    # rather than drop the option (a backup that is silently not written).
    for option, why in (
        ("backup", "each database needs a backup file of its own"),
        ("dry_run", "each database's SQL would be lost in the summary"),
    ):
        if options.get(option):
            raise ConfigError(
                f"--{option.replace('_', '-')} does not go with an environment of "
                f"{len(chosen)} databases: {why}.",
                "run it for one database at a time, with DATABASE_URL set to it",
            )
    argv = [sys.executable, "-m", "invoke", task, *_flags(options)]
    outcomes = [Outcome(target) for target in chosen]
    stop, printing = threading.Event(), threading.Lock()

    def one(index: int) -> None:
        outcome = outcomes[index]
        if stop.is_set():
            return
        assert outcome.target.url is not None
        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        environ["DATABASE_URL"] = urls.libpq(outcome.target.url).render_as_string(False)
        started = time.perf_counter()
        done = subprocess.run(
            argv,
            cwd=settings.PROJECT_ROOT,
            env=environ,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        outcome.seconds, outcome.code = time.perf_counter() - started, done.returncode
        _read(done, outcome)
        if done.returncode != 0 and not keep_going:
            stop.set()
        if not as_json:
            with printing:
                say(
                    f"  {outcome.target.label}: {outcome.start or '?'} → {outcome.end or '?'} "
                    f"{outcome.result} ({outcome.seconds:.1f} s)"
                )

    if not as_json:
        say(f"{task} on {len(chosen)} databases, {parallel} at a time:")
    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        list(pool.map(one, range(len(chosen))))
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "environment": o.target.environment,
                        "database": o.target.label.partition(": ")[2] or o.target.label,
                        "from": o.start or None,
                        "to": o.end or None,
                        "result": o.result,
                        "exit_code": o.code,
                        "seconds": round(o.seconds, 3),
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    else:
        output.table(
            ["database", "from → to", "result", "seconds"],
            [
                [
                    o.target.label,
                    f"{o.start} → {o.end}" if o.start or o.end else "",
                    o.result,
                    f"{o.seconds:.1f}" if o.code is not None else "",
                ]
                for o in outcomes
            ],
        )
    failed = [o for o in outcomes if o.code not in (0, None)]
    skipped = [o for o in outcomes if o.code is None]
    if failed or skipped:
        summary = f"{task}: {len(failed)} of {len(chosen)} databases failed"
        if skipped:
            summary += f", {len(skipped)} not started"
        if failed:
            summary += f" (first: {failed[0].target.label}: {failed[0].result})"
        error = FleetFailed(
            summary + ".",
            "fix what the failing databases say, then run again: databases already at the "
            "goal say 'nothing to apply'; --keep-going runs them all",
        )
        error.exit_code = failed[0].code if failed and failed[0].code else 1
        raise error
