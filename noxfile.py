"""Sessions: plain `nox` runs lint, tests and the roundtrip; `nox -s NAME` runs one;
`nox -l` lists them."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nox

nox.needs_version = ">=2026.10.20"  # nox.options.parallel
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests", "alembic_plugin", "roundtrip", "unavailable"]
# The sessions that allow it run side by side (`nox -j 1`: one at a time): alembic_plugin
# and the roundtrips take turns with the tests' workers while those wait on PostgreSQL
# (10 s less of `nox` on 2 cores). Each session's output is printed when it ends.
nox.options.parallel = os.cpu_count() or 1

PYPROJECT = nox.project.load_toml("pyproject.toml")
SERVERS = PYPROJECT["tool"]["worktracker"]["roundtrip_servers"]


def _why_not(kind: str) -> str | None:
    """Why a server kind cannot run here, decided with the standard library only, so
    that an unavailable kind costs no virtualenv (db/throwaway.py checks again, fully)."""
    family, _, version = kind.partition("-")
    if family == "debian":
        binary = Path(f"/usr/lib/postgresql/{version}/bin/postgres")
        return None if binary.exists() else f"{binary} is not installed"
    if family == "docker":
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        socket = host.removeprefix("unix://")
        if host.startswith("unix://") and not Path(socket).exists():
            return f"no Docker engine here (no {socket})"
    return None


AVAILABLE = [kind for kind in SERVERS if _why_not(kind) is None]
UNAVAILABLE = [kind for kind in SERVERS if _why_not(kind) is not None]


def _initdb_cache() -> None:
    """One directory per `nox` run where the throwaway servers keep initdb's output and
    copy it (TEST_INITDB_CACHE, db/throwaway.py): a dozen servers start in one run, each
    spent half a second of CPU in initdb. Each session runs in a nox process of its own,
    which inherits the variable; the run that made the directory removes it."""
    if "TEST_INITDB_CACHE" in os.environ:
        return
    base = _scratch().get("TMPDIR") or os.environ.get("TMPDIR") or tempfile.gettempdir()
    folder = tempfile.mkdtemp(prefix="worktracker-initdb-", dir=base)
    os.chmod(folder, 0o755)  # servers run as another user when we are root
    os.environ["TEST_INITDB_CACHE"] = folder
    atexit.register(shutil.rmtree, folder, True)


def _scratch() -> dict[str, str]:
    """TMPDIR on a file system in memory, where one has room, for the sessions that start
    throwaway servers (db/throwaway.py puts their data under TMPDIR). On a journaled
    disk, creating a database's few hundred files and unlinking them when it is dropped
    costs the kernel half the tests' CPU; their data never outlives them (fsync is off).
    Docker's 64 MB /dev/shm has no room: the default stays, as does a TMPDIR already set."""
    shm = Path("/dev/shm")
    if "TMPDIR" in os.environ or not shm.is_dir() or not os.access(shm, os.W_OK):
        return {}
    return {"TMPDIR": str(shm)} if shutil.disk_usage(shm).free >= 4 * 2**30 else {}


_initdb_cache()


def _install(
    session: nox.Session,
    *groups: str,
    project: bool = True,
    compiled: bool = False,
    extra: str | None = None,
    also: tuple[str, ...] = (),
) -> None:
    """Install the dependency groups of pyproject.toml, the project itself (editable,
    with `extra`), and `also`, in one install (one resolution).

    uv installs without compiling bytecode, and where PYTHONDONTWRITEBYTECODE is set (CI
    here) nothing compiles it later. `compiled` compiles it all at install (6 s of CPU):
    worth it where many interpreters start and are timed (each would compile SQLAlchemy
    and Alembic first, 1.6 s a process instead of 0.7 s), not for a session that starts
    one or two."""
    env = {"UV_COMPILE_BYTECODE": "1"} if compiled else {}
    wanted = [*(["-e", f".[{extra}]" if extra else "."] if project else []), *also]
    wanted += nox.project.dependency_groups(PYPROJECT, *groups)
    if wanted:
        session.install(*wanted, env=env)


def _install_to_run_from_checkout(
    session: nox.Session, *groups: str, extra: str | None = None, also: tuple[str, ...] = ()
) -> None:
    """_install() for a session that runs the project from this checkout (tasks.py imports
    db from beside it; mypy reads the files): the project's dependencies without the
    project. Building it (hatchling and hatch-vcs, for an editable install) took a second
    of CPU in each such session, for nothing it runs. The tests session installs the
    project: it checks what an install gives (tests/test_version.py). uv reads the
    dependencies from pyproject.toml; pip cannot, and installs the project instead."""
    if session.venv_backend != "uv":
        _install(session, *groups, extra=extra, also=also)
        return
    wanted = ("-r", "pyproject.toml", *((f"--extra={extra}",) if extra else ()), *also)
    _install(session, *groups, project=False, also=wanted)


@nox.session(allow_parallel=True)
def lint(session: nox.Session) -> None:
    """Lint Python (ruff, mypy), the workflows (actionlint) and each migration's SQL
    (squawk)."""
    _install_to_run_from_checkout(session, "lint")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    # Which files, and how strictly: [tool.mypy] in pyproject.toml.
    session.run("mypy")
    session.run("actionlint")
    session.run("invoke", "migrate.lint")


@nox.session(allow_parallel=True)
def tests(session: nox.Session) -> None:
    """Run the test suite against a throwaway PostgreSQL (see db/throwaway.py)."""
    _install(session, "test")
    # One throwaway server per worker (tests/conftest.py), so workers never share one.
    # One worker more than cores: a fifth of the tests' time is spent waiting on purpose
    # (lock timeouts, stalled links, budgets), and another worker's tests fill it (on 2
    # cores: 94 s with 2 workers, 77 s with 3, 76 s with 4).
    # worksteal: a worker that runs out of tests takes some from the other's queue,
    # instead of waiting at the end for the batch it was dealt at the start.
    workers = str((os.cpu_count() or 1) + 1)
    # Most `invoke` runs are forks of a worker (tests/forked.py); the few new interpreters
    # (a few dozen) would each compile what they import where PYTHONDONTWRITEBYTECODE is
    # set (CI here): the first one writes the bytecode, the others read it. Compiling
    # every installed package beforehand costs more than that.
    env = {**_scratch(), "PYTHONDONTWRITEBYTECODE": ""}
    session.run("pytest", "-n", workers, "--dist", "worksteal", *session.posargs, env=env)


@nox.session(allow_parallel=True)
def alembic_plugin(session: nox.Session) -> None:
    """pytest-alembic's built-in tests, and its downgrade_leaves_no_trace with committed
    steps (tests_pytest_alembic/test_downgrade_leaves_no_trace.py), on our chain."""
    # pytest-alembic 0.13 cannot collect under pytest 9.
    _install_to_run_from_checkout(session, also=("pytest>=8,<9", "pytest-alembic==0.13.1"))
    # `python -m`: the checkout on sys.path, for tests_pytest_alembic's `import db`.
    session.run(
        "python",
        "-m",
        "pytest",
        "tests_pytest_alembic",
        "--test-alembic",
        "--alembic-tests-path",
        "tests_pytest_alembic/conftest.py",
        "-p",
        "pytest_alembic",
        *session.posargs,
        env=_scratch(),
    )


# Side by side with others is harmless; without it, `nox -s alembic_plugin_corpus` alone
# warned that it ignores nox.options.parallel.
@nox.session(allow_parallel=True)
def alembic_plugin_corpus(session: nox.Session) -> None:
    """alembic_plugin's checks on every corpus chain the roundtrip passes (not in the
    default run); `-- NAME…` picks cases of tests/corpus.py."""
    # pytest-alembic 0.13 cannot collect under pytest 9.
    _install_to_run_from_checkout(session, also=("pytest>=8,<9", "pytest-alembic==0.13.1"))
    session.run("python", "-m", "tests_pytest_alembic.corpus", *session.posargs)


@nox.session(venv_backend="none", allow_parallel=True)
def unavailable(session: nox.Session) -> None:
    """Say which server kinds the roundtrip cannot run on here, and why (no virtualenv)."""
    # One session for all: run side by side, each session is a nox process of its own.
    reasons = [f"{kind}: {_why_not(kind)}" for kind in UNAVAILABLE]
    session.skip("; ".join(reasons) if reasons else "every kind runs")


@nox.session(allow_parallel=True)
@nox.parametrize("server", AVAILABLE)
def roundtrip(session: nox.Session, server: str) -> None:
    """Apply, roll back and reapply every migration on one kind of PostgreSQL server."""
    # testcontainers (the deploy extra) for the docker-NN kinds.
    _install_to_run_from_checkout(session, extra="deploy")
    if server.startswith("docker-"):
        # Whether the engine answers (not only its socket) takes testcontainers: ask
        # db/throwaway.py in the virtualenv. AVAILABLE decided the other kinds fully.
        reason = session.run(
            "python",
            "-m",
            "db.throwaway",
            "why-not",
            server,
            silent=True,
            stderr=subprocess.DEVNULL,
        )
        if reason and reason.strip():
            session.skip(f"{server} is not available here: {reason.strip()}")
    session.run("invoke", "migrate.roundtrip", "--server", server, *session.posargs, env=_scratch())


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not in the default run): apply vs bare Alembic, roundtrip vs pytest-alembic."""
    # Timed as an installed tool runs: compiled, or each process would compile it first.
    _install(session, compiled=True)
    # pytest-alembic 0.13 cannot collect under pytest 9.
    session.install("pytest>=8,<9", "pytest-alembic==0.13.1", env={"UV_COMPILE_BYTECODE": "1"})
    session.run("python", "-m", "compileall", "-q", "db", "tasks.py", "benchmarks", silent=True)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Soak (not in the default run): concurrent runs and kill -9 at random moments."""
    _install(session, "test", compiled=True)
    session.run("pytest", "-m", "soak", "-s", "tests/test_soak.py", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """Load run (not in the default run): each corpus kind applied to 1M rows under traffic."""
    _install(session, "test")
    session.run("python", "benchmarks/load.py", *session.posargs)
