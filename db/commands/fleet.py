"""Fleet runs: one command over every database of an environment, in parallel.

Each database gets a process of its own, hence its own lock, history and report line:
Alembic's runtime is process-global, so threads could not share it. On Linux the
process is a fork of this one, which has already imported everything the command needs
(a new interpreter would spend most of a database's time importing SQLAlchemy and
Alembic again); elsewhere it is `python -m invoke TASK …`. Either way, DATABASE_URL is
set to the database, and its output is read back for the summary.

By default a failure stops starting new databases and lets the running ones finish;
`--keep-going` runs them all. Running again resumes: databases already at the goal say
"nothing to apply".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from db import failures, output, settings, targets, urls
from db.errors import ConfigError, UserError
from db.output import say

_ARROW = re.compile(r"([\w.-]+) → ([\w.-]+)")
_AT = re.compile(r"is (?:already )?at (\S+?)\.?$", re.M)
_LEFT_AT = re.compile(r"the database is (?:still )?at (\w[\w-]*)")
"""Where a failed run says it left the database (runner's and the interrupt's hints)."""
_STEP_DONE = re.compile(r"^\s+[↑↓] ", re.M)


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
    detail: dict | None = None
    """The database's own JSON document, for commands that print one (plan --json)."""
    report: str = ""
    """What the command printed for this database."""


def _flags(options: dict[str, object]) -> list[str]:
    flags = []
    for name, value in options.items():
        flag = "--" + name.rstrip("_").replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False, 0, ""):
            flags += [flag, str(value)]
    return flags


def _read(code: int, stdout: str, stderr: str, outcome: Outcome) -> None:
    if stdout.lstrip().startswith("{"):  # a command's --json (plan): kept whole
        with contextlib.suppress(ValueError):
            outcome.detail = json.loads(stdout)
    if outcome.detail is not None:
        outcome.start = outcome.detail.get("from") or ""
        outcome.end = outcome.detail.get("to") or ""
        nothing = not outcome.detail.get("steps") and outcome.detail.get("ok", True)
        stdout = "Nothing to" if nothing else ""
    elif arrow := _ARROW.search(stdout):
        outcome.start, outcome.end = arrow[1], arrow[2]
    elif at := _AT.search(stdout):
        outcome.start = outcome.end = at[1]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    if code != 0 and outcome.detail is None and outcome.start:
        # The arrow is where the run was headed; the row shows where it ended.
        if left := _LEFT_AT.search(stderr):
            outcome.end = left[1]
        elif not _STEP_DONE.search(stdout):
            outcome.end = outcome.start
        else:
            outcome.end = "?"
    if code == 0:
        outcome.result = "nothing to apply" if "Nothing to" in stdout else "ok"
    else:
        outcome.result = errors[0].removeprefix("error: ") if errors else stderr[-200:]


def _run_here(command: Callable[[], None]) -> int:
    """The command in this (forked) process, as tasks.py would run it: its exit code,
    and its error on stderr."""
    try:
        command()
        return 0
    except (UserError, *failures.DRIVER_ERRORS) as error:
        described = failures.user_error(error)
    except KeyboardInterrupt:
        described = UserError("interrupted by Ctrl-C; the step in progress was rolled back")
        described.exit_code = 130
    except Exception as error:  # a bug: keep what a traceback would say, in one line
        described = UserError(f"{type(error).__name__}: {error}")
    sys.stdout.flush()
    print(described.render(), file=sys.stderr)
    return described.exit_code


class _Child:
    """One database's process: a fork running `command`, or `python -m invoke`."""

    def __init__(
        self, url: str, variable: str | None, command: Callable[[], None], argv: list[str]
    ) -> None:
        # Closed in finished(), once the process is reaped.
        self.out = tempfile.TemporaryFile()  # noqa: SIM115
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        self.started = time.perf_counter()
        self.process: subprocess.Popen | None = None
        if not FORK:
            environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            environ[settings.URL_SOURCE] = variable or "DATABASE_URL"
            self.process = subprocess.Popen(
                argv,
                cwd=settings.PROJECT_ROOT,
                env={**environ, "DATABASE_URL": url},
                stdin=subprocess.DEVNULL,
                stdout=self.out,
                stderr=self.err,
            )
            self.pid = self.process.pid
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid:
            return
        code = 1
        try:  # the child: never returns into the parent's code
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.environ["DATABASE_URL"] = url
            os.environ[settings.URL_SOURCE] = variable or "DATABASE_URL"
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(self.out.fileno(), 1)
            os.dup2(self.err.fileno(), 2)
            output.use_plain()
            code = _run_here(command)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def finished(self, status: int) -> tuple[int, str, str]:
        """Its exit code and output, from its wait status."""
        code = os.waitstatus_to_exitcode(status)
        if code < 0:  # killed by a signal: the shell's convention
            code = 128 - code
        texts = []
        for file in (self.out, self.err):
            file.seek(0)
            texts.append(file.read().decode(errors="replace"))
            file.close()
        return code, texts[0], texts[1]


def _interrupted(outcomes: list[Outcome], running: dict[int, tuple[int, _Child]]) -> None:
    """Ctrl-C reached every process of the fleet: wait for the running ones to stop (each
    rolls back its step in progress), then say where the fleet stands."""
    for pid in list(running):
        with contextlib.suppress(ChildProcessError, KeyboardInterrupt):
            os.waitpid(pid, 0)
    done = sum(o.code is not None for o in outcomes)
    error = FleetFailed(
        f"interrupted by Ctrl-C: {done} of {len(outcomes)} databases had finished, "
        f"{len(running)} were stopped (their step in progress was rolled back by the "
        f"server), {len(outcomes) - done - len(running)} were not started.",
        "run the command again: databases already at the goal say 'nothing to apply'",
    )
    error.exit_code = 130
    raise error


REPORTS = {"migrate.plan"}
"""Commands whose output for each database is the point (a plan's schema changes and
data at risk): printed whole, database by database, after the summary."""

FORK = sys.platform == "linux"
"""Fork per database on Linux; elsewhere (macOS frameworks and Windows do not take a fork
of a running interpreter well) start `python -m invoke`."""


def run(
    chosen: list[targets.Target],
    task: str,
    options: dict[str, object],
    command: Callable[[], None],
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
    waiting = list(range(len(chosen)))
    running: dict[int, tuple[int, _Child]] = {}
    stop = False
    if not as_json:
        say(f"{task} on {len(chosen)} databases, {parallel} at a time:")
    # One thread starts and reaps every process: a fork is only safe from a process
    # with no other threads.
    while waiting or running:
        while waiting and len(running) < max(parallel, 1) and not stop:
            index = waiting.pop(0)
            url = chosen[index].url
            assert url is not None
            libpq = urls.libpq(url).render_as_string(False)
            child = _Child(libpq, chosen[index].variable, command, argv)
            running[child.pid] = (index, child)
        if not running:
            break
        try:
            pid, status = os.waitpid(-1, 0)
        except KeyboardInterrupt:
            _interrupted(outcomes, running)
        if pid not in running:
            continue
        index, child = running.pop(pid)
        outcome = outcomes[index]
        outcome.code, stdout, stderr = child.finished(status)
        outcome.report = stdout
        outcome.seconds = time.perf_counter() - child.started
        _read(outcome.code, stdout, stderr, outcome)
        if outcome.code != 0 and not keep_going:
            stop = True
        if not as_json:
            say(
                f"  {outcome.target.label}: {outcome.start or '?'} → {outcome.end or '?'} "
                f"{outcome.result} ({outcome.seconds:.1f} s)"
            )
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
                        **({"detail": o.detail} if o.detail is not None else {}),
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
    if task in REPORTS and not as_json:
        for outcome in outcomes:
            if outcome.report.strip():
                say(f"--- {outcome.target.label} ---", markup=False)
                say(outcome.report.rstrip(), markup=False)
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
            "goal say 'nothing to apply'" + ("" if keep_going else "; --keep-going runs them all"),
        )
        error.exit_code = failed[0].code if failed and failed[0].code else 1
        raise error
