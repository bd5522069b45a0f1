"""The benchmarks behind `nox -s bench`: whole processes, timed from outside, medians.

- apply: `invoke migrate.up` on an empty database against a bare Alembic environment
  (a minimal env.py, `alembic upgrade head`) running the same migration files; and at
  head (nothing to do) against `alembic current`.
- roundtrip: `invoke migrate.roundtrip` against pytest-alembic's test_up_down_consistency
  and test_downgrade_leaves_no_trace, on the same generated chain (benchmarks/chain.py)
  and the same server, at each size; and the growth between the sizes. Our roundtrip
  runs --roundtrip-runs times, the sizes in turn; pytest-alembic once a size.
- fleet: `invoke migrate.up --env staging` over N databases (--fleet, default 50) from
  base to head with --parallel 1 and 4, then `invoke migrate.drift --env staging` over
  the same N; with the cost per database.

Everything runs on one throwaway PostgreSQL (db/throwaway.py; one we start does not wait
for the disk, for both sides alike). Peak memory is the
largest resident set among the process and its children, as the kernel accounts it.

`python benchmarks/run.py [--sizes 50,200] [--runs 5] [--roundtrip-runs 3]
[--no-pytest-alembic] [--fleet 50] [--only apply|roundtrip|fleet]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chain import generate
from db import urls
from db.throwaway import Server, throwaway_server

BARE_ENV = """
import os

from alembic import context
from sqlalchemy import create_engine

with create_engine(os.environ["ALEMBIC_URL"]).connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""

PYTEST_ALEMBIC_CONFTEST = """
import os

import pytest
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool


@pytest.fixture
def alembic_config():
    return Config(toml_file="pyproject.toml")


@pytest.fixture
def alembic_engine():
    return create_engine(os.environ["BENCH_DATABASE_URL"], poolclass=NullPool)
"""


@dataclass
class Row:
    what: str
    ours: list[float]
    theirs: list[float]
    ours_mib: float = 0.0

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)


def compiled(copy: Path) -> None:
    """Byte-compile the copy (our code and the migrations, which both sides load): a
    user's second run finds them compiled, but where PYTHONDONTWRITEBYTECODE is set (CI
    machines) every run would compile them again, and the figures would measure the
    compiler. The installed packages (SQLAlchemy, Alembic) are compiled by the install."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(copy)], check=True)


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak memory (MiB) of one whole process; exits on failure."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise SystemExit(f"{' '.join(argv)} failed (exit {code}):\n{error[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(extra)
    return env


class Bench:
    def __init__(self, server: Server, copy: Path) -> None:
        self.server, self.copy = server, copy
        compiled(copy)

    def database(self) -> tuple[str, str, str]:
        """A new database: its name, libpq URL and SQLAlchemy URL."""
        url = self.server.create_database()
        return (
            str(url.database),
            urls.libpq(url).render_as_string(hide_password=False),
            url.render_as_string(hide_password=False),
        )

    def bare_alembic(self) -> Path:
        folder = self.copy / "bare_alembic"
        folder.mkdir(exist_ok=True)
        (folder / "env.py").write_text(BARE_ENV)
        ini = self.copy / "bare_alembic.ini"
        versions = self.copy / "db" / "migrations" / "versions"
        ini.write_text(
            f"[alembic]\nscript_location = {folder}\nversion_locations = {versions}\n"
            "prepend_sys_path = .\n"
        )
        return ini

    def ours(self, libpq: str, *task: str) -> tuple[float, float]:
        argv = [sys.executable, "-m", "invoke", *task]
        return timed(argv, self.copy, environ(DATABASE_URL=libpq))

    def alembic(self, ini: Path, url: str, *verb: str) -> tuple[float, float]:
        argv = [sys.executable, "-m", "alembic", "-c", str(ini), *verb]
        return timed(argv, self.copy, environ(ALEMBIC_URL=url))

    def apply(self, runs: int) -> list[Row]:
        ini = self.bare_alembic()
        empty = Row("migrate.up, empty database / bare `alembic upgrade head`", [], [])
        at_head = Row("migrate.up at head (nothing to do) / `alembic current`", [], [])
        for _ in range(runs):
            name, libpq, _ = self.database()
            seconds, mib = self.ours(libpq, "migrate.up")
            empty.ours.append(seconds)
            empty.ours_mib = max(empty.ours_mib, mib)
            at_head.ours.append(self.ours(libpq, "migrate.up")[0])
            self.server.drop_database(name)
            name, _, url = self.database()
            empty.theirs.append(self.alembic(ini, url, "upgrade", "head")[0])
            at_head.theirs.append(self.alembic(ini, url, "current")[0])
            self.server.drop_database(name)
        return [empty, at_head]

    def roundtrip(self) -> tuple[float, float]:
        """One `invoke migrate.roundtrip`: seconds and peak MiB."""
        admin = urls.libpq(self.server.admin_url).render_as_string(hide_password=False)
        return timed(
            [sys.executable, "-m", "invoke", "migrate.roundtrip"],
            self.copy,
            environ(TEST_DATABASE_URL=admin),
        )

    def pytest_alembic(self) -> float:
        """pytest-alembic's two tests on the same chain and server: seconds."""
        (self.copy / "bench_conftest").mkdir(exist_ok=True)
        (self.copy / "bench_conftest" / "conftest.py").write_text(PYTEST_ALEMBIC_CONFTEST)
        name, _, url = self.database()
        try:
            return timed(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--test-alembic",
                    "--alembic-tests-path",
                    "bench_conftest/conftest.py",
                    "-o",
                    "pytest_alembic_include_experimental=downgrade_leaves_no_trace",
                    "-k",
                    "up_down_consistency or downgrade_leaves_no_trace",
                    str(self.copy / "bench_conftest"),
                ],
                self.copy,
                environ(BENCH_DATABASE_URL=url, PYTHONPATH=str(self.copy)),
            )[0]
        finally:
            self.server.drop_database(name)


def fleet(server: Server, copy: Path, count: int) -> list[Row]:
    """`count` databases base → head, one at a time and four at a time; then drift."""
    admin = urls.libpq(server.admin_url).render_as_string(hide_password=False)
    rows = []
    for parallel in (1, 4):
        names, libpqs = [], []
        for _ in range(count):
            name, libpq, _ = Bench(server, copy).database()
            names.append(name)
            libpqs.append(libpq)
        env = environ(STAGING_DATABASE_URL=" ".join(libpqs), TEST_DATABASE_URL=admin)
        task = ["migrate.up", "--env", "staging", "--parallel", str(parallel)]
        seconds, mib = timed([sys.executable, "-m", "invoke", *task], copy, env)
        rows.append(
            Row(f"fleet: {count} databases base → head, --parallel {parallel}", [seconds], [], mib)
        )
        if parallel == 4:
            drift = ["migrate.drift", "--env", "staging"]
            seconds, mib = timed([sys.executable, "-m", "invoke", *drift], copy, env)
            rows.append(
                Row(f"fleet: migrate.drift over the same {count} databases", [seconds], [], mib)
            )
        for name in names:
            server.drop_database(name)
    for row in rows:
        row.what += f" ({statistics.median(row.ours) / count:.2f} s a database)"
    return rows


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--runs", type=int, default=5, help="runs of each apply measurement")
    parser.add_argument(
        "--roundtrip-runs", type=int, default=3, help="runs of our roundtrip at each size"
    )
    parser.add_argument("--no-pytest-alembic", action="store_true")
    parser.add_argument("--fleet", type=int, default=50, help="databases in the fleet")
    parser.add_argument(
        "--only", choices=["apply", "roundtrip", "fleet"], help="one group of measurements"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[Row] = []
    roundtrips: dict[int, Row] = {}
    with throwaway_server() as server, tempfile.TemporaryDirectory() as tmp:
        print(f"server: {server.kind}, PostgreSQL {server.version}", flush=True)
        benches = {}
        for size in sizes if args.only != "fleet" else []:
            benches[size] = Bench(server, generate(size, Path(tmp) / f"chain{size}"))
        if benches and args.only in (None, "apply"):
            rows += benches[sizes[0]].apply(args.runs)
        if benches and args.only in (None, "roundtrip"):
            for size in sizes:
                roundtrips[size] = Row(
                    f"{size} migrations: migrate.roundtrip / pytest-alembic "
                    "(up_down_consistency + no_trace)",
                    [],
                    [],
                )
            # The sizes in turn, run after run: a drift of the machine's speed weighs on
            # every size alike, not on the growth between them.
            for _ in range(args.roundtrip_runs):
                for size in sizes:
                    seconds, mib = benches[size].roundtrip()
                    roundtrips[size].ours.append(seconds)
                    roundtrips[size].ours_mib = max(roundtrips[size].ours_mib, mib)
            for size in sizes if not args.no_pytest_alembic else []:
                # Once a size: the baseline is slow, and far from the ratio that matters.
                roundtrips[size].theirs.append(benches[size].pytest_alembic())
            rows += roundtrips.values()
            print("  measured the roundtrips", flush=True)
        if args.only in (None, "fleet"):
            copy = generate(0, Path(tmp) / "fleet")
            compiled(copy)
            rows += fleet(server, copy, args.fleet)
            print("  measured the fleet", flush=True)
    print()
    print(f"{'what':<86} {'ours':>9} {'theirs':>9} {'ratio':>6} {'peak':>9}")
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.theirs else "-"
        peak = f"{row.ours_mib:.0f} MiB" if row.ours_mib else ""
        print(
            f"{row.what:<86} {_median(row.ours):>9} {_median(row.theirs):>9} {ratio:>6} {peak:>9}"
        )
    if len(roundtrips) > 1:
        small, large = roundtrips[sizes[0]], roundtrips[sizes[-1]]
        growth = statistics.median(large.ours) / statistics.median(small.ours)
        print(
            f"roundtrip growth from {sizes[0]} to {sizes[-1]} migrations: x{growth:.2f} "
            f"(linear would be x{sizes[-1] / sizes[0]:.2f})"
        )


if __name__ == "__main__":
    main()
