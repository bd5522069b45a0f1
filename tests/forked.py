"""`invoke ARGS…` in a fork of the test worker, for the `invoke` fixture.

A new interpreter spends about a second importing SQLAlchemy, Alembic and psycopg before
it does anything; the tests start `invoke` a few hundred times. A fork of the worker,
which has imported them already, runs the same program (invoke's own `Program` loading
tasks.py from the repository) in a process of its own, with its own environment,
working directory, stdin, stdout, stderr and exit code: what a subprocess gives, less
the imports. The `spawn` fixture starts `invoke` in the background in a fork too
(`Process`): signals, kill -9 and exit codes reach it as they reach a new interpreter.
Tests about what a fresh interpreter imports start real subprocesses (`subprocess.run`).
Run in a copy of the repository (test_autogenerate.py), the fork imports `db` and
tasks.py from the copy.

WORKTRACKER_TEST_SUBPROCESS=1 turns it off (every `invoke` a new interpreter).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import io
import os
import pkgutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from db.settings import PROJECT_ROOT

AVAILABLE = sys.platform == "linux" and not os.environ.get("WORKTRACKER_TEST_SUBPROCESS")


def _own_project(root: Path) -> None:
    """Run the copy of this repository at `root`, not the worker's: forget the worker's
    `db` and tasks.py, so that the command imports them from `root`. The libraries stay
    imported: what a new interpreter would import again, less its second."""
    for name in list(sys.modules):
        if name in ("db", "tasks") or name.startswith("db."):
            del sys.modules[name]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()


def _child(args: tuple[str, ...], environ: Mapping[str, str], cwd: Path, out, err) -> int:
    if cwd.resolve() != PROJECT_ROOT:
        _own_project(cwd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    # pytest replaced sys.stdout and sys.stderr with its capture: write to the fds again.
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    for signum in (signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["invoke", *args]
    from invoke.main import program

    try:
        program.run(sys.argv)
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
            return 1
        return done.code or 0
    return 0


@functools.cache
def _imported() -> None:
    """Import what the commands import, once, in the worker: every fork would import
    what its parent has not (half of a short command's CPU), and then forget it."""
    from invoke.main import program  # noqa: F401

    import db.commands

    for module in pkgutil.iter_modules(db.commands.__path__):
        importlib.import_module(f"db.commands.{module.name}")
    for name in ("db.preview", "db.impact", "db.process", "db.rehearsal"):
        importlib.import_module(name)
    # What a history row says ran it: a `git describe` in every fork, else.
    importlib.import_module("db.history").tool_version()


def _fork(args: tuple[str, ...], environ: Mapping[str, str], cwd: Path, out, err) -> int:
    """The pid of a fork running `invoke ARGS…` with stdout and stderr in `out` and `err`."""
    _imported()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        # The worker's objects are the fork's to read, not to collect: a collection walks
        # every one of them, and so copies nearly every page the fork shares with the
        # worker (measured: a short command's fork takes about 5 % less CPU).
        gc.freeze()
        code = 1
        try:
            code = _child(args, environ, cwd, out, err)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return pid


class Process:
    """`invoke ARGS…` running in a fork, for the `spawn` fixture: what the tests use of
    subprocess.Popen (pid, poll, wait, send_signal, kill, terminate, communicate and
    returncode), with stdout and stderr read once it has ended."""

    def __init__(self, args: tuple[str, ...], environ: Mapping[str, str], cwd: Path) -> None:
        self.args = ["invoke", *args]
        self.returncode: int | None = None
        self._texts: tuple[str, str] | None = None
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 (closed by communicate)
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self.pid = _fork(args, environ, cwd, self._out, self._err)

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.005)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        if self._texts is None:
            texts = []
            for file in (self._out, self._err):
                file.seek(0)
                texts.append(file.read().decode(errors="replace"))
                file.close()
            self._texts = (texts[0], texts[1])
        return self._texts


def run(
    args: tuple[str, ...], environ: Mapping[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `invoke ARGS…` run in a fork."""
    process = Process(args, environ, cwd)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    stdout, stderr = process.communicate()
    return process.wait(), stdout, stderr
