"""One fan-out over many databases: `over_databases()` runs a piece of work once per
target, `parallel` at a time, and hands back each target's result as a value.

Reads (drift, `status --env`) run in threads. Migrations need a process per database:
Alembic's runtime is process-global. On Linux the process is a fork of this one, which
has already imported everything the work needs (a new interpreter would spend most of a
database's time importing SQLAlchemy and Alembic again); elsewhere it is a new
interpreter running `argv`. Either way the process writes its result as JSON to a file
it was given, never to stdout: what it prints is its report, not its result.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from db import settings, targets, urls

T = TypeVar("T")

REPORT_TO = "WORKTRACKER_REPORT_TO"
"""Where a new interpreter started for one database writes its result (a file path)."""

FORK = sys.platform == "linux"
"""Fork per database on Linux; elsewhere (macOS frameworks and Windows do not take a fork
of a running interpreter well) start `argv` in a new interpreter."""


@dataclass
class Done(Generic[T]):
    """One target's run: its result, or why there is none."""

    target: targets.Target
    value: T | None = None
    code: int | None = None
    """The exit code; None: not started (an earlier database failed)."""
    seconds: float = 0.0
    output: str = ""
    """What a process printed on stdout (its report), for work that runs in processes."""
    errors: str = field(default="", repr=False)
    """A process's stderr: all there is to say when it died without writing its result."""


class Interrupted(Exception):
    """Ctrl-C reached the fan-out: the running processes were waited for."""

    def __init__(self, done: list[Done], running: int) -> None:
        super().__init__("interrupted")
        self.done = done
        self.running = running


@dataclass
class Processes:
    """How each target's work runs in a process of its own: `work` in a fork (it returns
    an exit code and a JSON-able value), or else `argv` in a new interpreter, which
    writes its value itself (report())."""

    work: Callable[[targets.Target], tuple[int, Any]]
    argv: list[str]
    keep_going: bool = False


def over_databases(
    chosen: Sequence[targets.Target],
    work: Callable[[targets.Target], T] | None = None,
    *,
    parallel: int = 4,
    processes: Processes | None = None,
    on_done: Callable[[Done[T]], None] | None = None,
) -> list[Done[T]]:
    """`work` for each of `chosen` in threads, or `processes`; results in `chosen`'s
    order. A thread's work must not raise (its errors belong in its value); a process
    that fails stops new ones from starting unless `keep_going`."""
    if processes is not None:
        return _in_processes(chosen, processes, parallel, on_done)
    assert work is not None
    done: list[Done[T]] = [Done(target) for target in chosen]

    def one(item: Done[T]) -> None:
        started = time.perf_counter()
        item.value = work(item.target)
        item.code = 0
        item.seconds = time.perf_counter() - started
        if on_done is not None:
            on_done(item)

    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        list(pool.map(one, done))
    return done


def report(value: Any) -> None:
    """In a new interpreter started for one database: send `value` back."""
    path = os.environ.get(REPORT_TO)
    if path:
        with open(path, "w") as file:
            json.dump(value, file, default=str)


def reporting() -> bool:
    """Whether this process is one database of a fan-out, started as a new interpreter."""
    return bool(os.environ.get(REPORT_TO))


class _Process:
    """One database's process: a fork running the work, or a new interpreter."""

    def __init__(self, target: targets.Target, how: Processes) -> None:
        # Closed in finished(), once the process is reaped.
        self.out = tempfile.TemporaryFile()  # noqa: SIM115
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        self.result = tempfile.NamedTemporaryFile(suffix=".json", delete=False)  # noqa: SIM115
        self.result.close()
        self.started = time.perf_counter()
        if not FORK:
            url = target.url
            assert url is not None
            environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            environ[settings.URL_SOURCE] = target.variable or "DATABASE_URL"
            environ[REPORT_TO] = self.result.name
            environ["DATABASE_URL"] = urls.libpq(url).render_as_string(False)
            # Kept, and told its exit code once reaped (finished()): a Popen dropped while
            # its process runs joins subprocess's list of strays, which the next Popen
            # anywhere in this process reaps, and os.waitpid(-1) would never see it end.
            self.popen: subprocess.Popen | None = subprocess.Popen(
                how.argv,
                cwd=settings.PROJECT_ROOT,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=self.out,
                stderr=self.err,
            )
            self.pid = self.popen.pid
            return
        self.popen = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid:
            return
        code = 1
        try:  # the child: never returns into the parent's code
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(self.out.fileno(), 1)
            os.dup2(self.err.fileno(), 2)
            code, value = how.work(target)
            with open(self.result.name, "w") as file:
                json.dump(value, file, default=str)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def finished(self, status: int, done: Done) -> None:
        """Its exit code, its value and its output, from its wait status."""
        code = os.waitstatus_to_exitcode(status)
        if self.popen is not None:
            self.popen.returncode = code  # reaped: nothing for subprocess to wait for
        if code < 0:  # killed by a signal: the shell's convention
            code = 128 - code
        done.code = code
        done.seconds = time.perf_counter() - self.started
        texts = []
        for file in (self.out, self.err):
            file.seek(0)
            texts.append(file.read().decode(errors="replace"))
            file.close()
        done.output, done.errors = texts
        with contextlib.suppress(OSError, ValueError), open(self.result.name) as result:
            done.value = json.load(result)
        with contextlib.suppress(OSError):
            os.unlink(self.result.name)


def _in_processes(
    chosen: Sequence[targets.Target],
    how: Processes,
    parallel: int,
    on_done: Callable[[Done], None] | None,
) -> list[Done]:
    done: list[Done] = [Done(target) for target in chosen]
    waiting = list(range(len(chosen)))
    running: dict[int, tuple[int, _Process]] = {}
    stop = False
    # One thread starts and reaps every process: a fork is only safe from a process
    # with no other threads.
    while waiting or running:
        while waiting and len(running) < max(parallel, 1) and not stop:
            index = waiting.pop(0)
            process = _Process(chosen[index], how)
            running[process.pid] = (index, process)
        if not running:
            break
        try:
            pid, status = os.waitpid(-1, 0)
        except KeyboardInterrupt:
            # Ctrl-C reached every process: each rolls back its step in progress.
            for pid in list(running):
                with contextlib.suppress(ChildProcessError, KeyboardInterrupt):
                    os.waitpid(pid, 0)
            raise Interrupted(done, len(running)) from None
        if pid not in running:
            continue
        index, process = running.pop(pid)
        process.finished(status, done[index])
        if done[index].code != 0 and not how.keep_going:
            stop = True
        if on_done is not None:
            on_done(done[index])
    return done
