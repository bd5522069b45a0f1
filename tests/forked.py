"""`invoke ARGS…` in a fork of the test worker, for the `invoke` fixture.

A new interpreter spends about a second importing SQLAlchemy, Alembic and psycopg before
it does anything; the tests start `invoke` a few hundred times. A fork of the worker,
which has imported them already, runs the same program (invoke's own `Program` loading
tasks.py from the repository) in a process of its own, with its own environment,
working directory, stdin, stdout, stderr and exit code: what a subprocess gives, less
the imports. Tests about what a fresh interpreter imports, and tests that send signals,
start real subprocesses (`spawn`, `subprocess.run`).

WORKTRACKER_TEST_SUBPROCESS=1 turns it off (every `invoke` a new interpreter).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

AVAILABLE = sys.platform == "linux" and not os.environ.get("WORKTRACKER_TEST_SUBPROCESS")


def _child(args: tuple[str, ...], environ: Mapping[str, str], cwd: Path, out, err) -> int:
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


def run(
    args: tuple[str, ...], environ: Mapping[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `invoke ARGS…` run in a fork."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
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
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(["invoke", *args], timeout)
            time.sleep(0.005)
        texts = []
        for file in (out, err):
            file.seek(0)
            texts.append(file.read().decode(errors="replace"))
        return os.waitstatus_to_exitcode(status), texts[0], texts[1]
