"""The load run behind `nox -s load`: what each corpus kind of migration does to an
application that keeps working while it runs.

For each kind, on a fresh copy of a database at 001 whose `tasks` table holds --rows
rows: a steady application workload (--workers threads, each a point SELECT, UPDATE,
INSERT or DELETE on `tasks` every --pace seconds, autocommit) and one long reader (a
transaction that reads `tasks` and holds it for --reader-hold seconds, again and again)
run against the same server; after --baseline seconds, the kind's migrations are applied
in a process of its own, as `migrate.up` applies them: one transaction each, under lock_timeout
(--lock-timeout) and the blocking budget (--budget, by default the lock timeout: a step
that blocks the application longer is cancelled and rolled back, db/blocking.py),
retried when it waits too long for its lock. Each blocking kind has its online form
beside it (benchmarks/online_kinds.py).

Reported per kind: the migration's seconds and attempts; the application's latency
before (p50, p99, over --baseline seconds) and from the migration's start over as long a
window, or the migration's time if longer (p50, p99, and the longest statement: its max
stall); how many statements were blocked longer than 100 ms, by kind of statement;
and whether it met the goals: max stall ≤ lock_timeout + 100 ms (an unsafe kind meets
it by being applied within the budget or cancelled at it), and the online kinds
(CONCURRENTLY, NOT VALID + VALIDATE, expand/backfill in batches/contract) are applied
and add no more than 10 % to p99 over the baseline.

Only on a throwaway server started here (db/throwaway.py); threads are bounded in count,
and every statement in time (statement_timeout). Figures depend on the machine: quote
them with the size and the server.

`python benchmarks/load.py [--rows 1000000] [--kinds a,b] [--workers 4] [--pace 0.01]
[--lock-timeout SECONDS] [--budget SECONDS] [--retries 10] [--reader-hold SECONDS] [--baseline 10]
[--repeat 1]`
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.online_kinds import CASES as ONLINE_CASES
from db import blocking, planning, revisions, runner, settings, urls
from db.roundtrip import sample_data
from db.throwaway import Server, throwaway_server
from tests.corpus import BY_NAME, write_chain

KINDS = {
    "index-without-concurrently": False,
    "online-index-create": True,
    "type-widen": False,
    "type-widen-online": True,
    "not-null-with-backfill": False,
    "not-null-online": True,
    "check-validating": False,
    "check-not-valid-then-validate": True,
    "foreign-key-validating": False,
    "foreign-key-not-valid-then-validate": True,
    "comment-change": False,
}
"""The corpus kinds that change `tasks` (True: an online kind). Renames are left out:
the workload's statements name the columns, and a rename breaks a client, not a lock."""

STALL_MS = 100.0
STATEMENT_TIMEOUT = "60s"
"""For the workload's sessions: no thread waits forever, whatever the migration does."""


@dataclass
class Sample:
    op: str
    start: float
    seconds: float
    error: str = ""


@dataclass
class Result:
    kind: str
    online: bool
    seconds: float = 0.0
    attempts: int = 1
    error: str = ""
    cancelled: bool = False
    """Cancelled at the blocking budget (and rolled back)."""
    before: list[Sample] = field(default_factory=list)
    during: list[Sample] = field(default_factory=list)
    runs: int = 1

    def pool(self, other: Result) -> None:
        """Another run of the same kind: its samples join these, so that p99 is taken
        over every run's window (one 10 s window's p99 at a few ms moves by ±30 % from
        run to run on a quiet machine, with or without a migration)."""
        self.before += other.before
        self.during += other.during
        self.seconds = max(self.seconds, other.seconds)
        self.attempts = max(self.attempts, other.attempts)
        self.cancelled = self.cancelled or other.cancelled
        self.error = self.error or other.error
        self.runs += 1


def _conninfo(server: Server, database: str) -> str:
    return urls.libpq(server.admin_url.set(database=database)).render_as_string(hide_password=False)


def template(server: Server, rows: int, folder: Path) -> str:
    """A database at 001 with sample rows in every table and `rows` more tasks."""
    initial = folder / "initial"
    initial.mkdir()
    shutil.copy(settings.PROJECT_ROOT / "db/migrations/versions/001_initial_schema.py", initial)
    os.environ["WORKTRACKER_VERSIONS_DIR"] = str(initial)
    url = server.create_database()
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        runner.run(connection, planning.plan_upgrade(revisions.script_directory(), None, "001"))
        sample_data.Filler().fill(connection)
    engine.dispose()
    with psycopg.connect(_conninfo(server, url.database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (project_id, number, title, priority, due_date, reporter_id) "
            "SELECT (SELECT id FROM projects ORDER BY id LIMIT 1), 1000000 + g, "
            "'task ' || g, g %% 5, current_date + g %% 365, "
            "(SELECT id FROM users ORDER BY id LIMIT 1) FROM generate_series(1, %s) AS g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE")
    return url.database


class Workload:
    """The application: steady point statements on `tasks`, and one long reader."""

    def __init__(self, conninfo: str, workers: int, pace: float, hold: float) -> None:
        self.conninfo, self.workers, self.pace, self.hold = conninfo, workers, pace, hold
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.numbers = itertools.count(50_000_000)
        self.lock = threading.Lock()
        with psycopg.connect(conninfo) as conn:
            self.ids = [r[0] for r in conn.execute("SELECT id FROM tasks LIMIT 10000")]
            self.project = conn.execute("SELECT id FROM projects ORDER BY id LIMIT 1").fetchone()[0]
        self.threads = [
            threading.Thread(target=self._worker, args=(n,), daemon=True) for n in range(workers)
        ] + [threading.Thread(target=self._reader, daemon=True)]

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        return conn

    def _worker(self, seed: int) -> None:
        chance = random.Random(seed)
        mine: list = []
        with self._connect() as conn:
            while not self.stop.is_set():
                op = chance.choices(["SELECT", "UPDATE", "INSERT", "DELETE"], [50, 25, 15, 10])[0]
                if op == "DELETE" and not mine:
                    op = "INSERT"
                start = time.perf_counter()
                error = ""
                try:
                    if op == "SELECT":
                        conn.execute(
                            "SELECT id, title, priority FROM tasks WHERE id = %s",
                            (chance.choice(self.ids),),
                        ).fetchall()
                    elif op == "UPDATE":
                        conn.execute(
                            "UPDATE tasks SET priority = %s WHERE id = %s",
                            (chance.randrange(5), chance.choice(self.ids)),
                        )
                    elif op == "INSERT":
                        row = conn.execute(
                            "INSERT INTO tasks (project_id, number, title) VALUES (%s, %s, 'load')"
                            " RETURNING id",
                            (self.project, next(self.numbers)),
                        ).fetchone()
                        mine.append(row[0])
                    else:
                        conn.execute("DELETE FROM tasks WHERE id = %s", (mine.pop(),))
                except psycopg.Error as exc:
                    error = type(exc).__name__
                seconds = time.perf_counter() - start
                with self.lock:
                    self.samples.append(Sample(op, start, seconds, error))
                self.stop.wait(max(0.0, self.pace - seconds))

    def _reader(self) -> None:
        """A report that reads the whole table and keeps its transaction open."""
        with psycopg.connect(self.conninfo) as conn:
            conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
            while not self.stop.is_set():
                try:
                    conn.execute("SELECT count(*), max(priority) FROM tasks").fetchone()
                    self.stop.wait(self.hold)
                finally:
                    conn.rollback()
                self.stop.wait(self.hold / 3)

    def __enter__(self) -> Workload:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)


def _migrator(pipe, url: str, environ: dict[str, str]) -> None:
    """A process of its own that applies the chain as `migrate.up` does (db.runner, one
    transaction per step, lock_timeout, retries, the blocking budget): the workload's
    latencies must not include waits for the GIL behind the migration's Python work, nor
    a process's start. It loads everything, says "ready", and migrates on "go"."""
    os.environ.update(environ)
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from db.errors import UserError

    engine = create_engine(url, poolclass=NullPool)
    plan = planning.plan_upgrade(revisions.script_directory(), "001", "head")
    attempts = [1]

    def said(text: str) -> None:
        attempts[0] += 1

    with engine.connect() as connection:
        pipe.send("ready")
        pipe.recv()
        error, cancelled = "", False
        try:
            runner.run(
                connection,
                plan,
                timeouts=settings.timeouts(),
                say=said,
                budget=blocking.budget(),
            )
        except UserError as exc:
            error = " ".join(exc.message.split())[:240]
            cancelled = isinstance(exc, blocking.BudgetExceeded)
    engine.dispose()
    pipe.send((attempts[0], error, cancelled))


def _start_migrator(url, args, chain: Path):
    environ = {
        "WORKTRACKER_VERSIONS_DIR": str(chain),
        "WORKTRACKER_DDL_LOCK_TIMEOUT": f"{args.lock_timeout}s",
        "WORKTRACKER_STATEMENT_TIMEOUT": "10min",
        "WORKTRACKER_DDL_LOCK_RETRIES": str(args.retries),
        "WORKTRACKER_BLOCKING_BUDGET": f"{args.budget}s",
    }
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_migrator, args=(theirs, url.render_as_string(hide_password=False), environ)
    )
    process.start()
    theirs.close()  # its death then ends our recv() instead of blocking it
    if not ours.poll(120) or ours.recv() != "ready":
        process.kill()
        sys.exit("load: the migrating process did not start")
    return process, ours


def run_kind(server: Server, source: str, kind: str, args, folder: Path) -> Result:
    result = Result(kind, KINDS[kind])
    chain = folder / kind
    write_chain(chain, ONLINE_CASES.get(kind) or BY_NAME[kind])
    url = server.create_database(template=source)
    conninfo = _conninfo(server, url.database)
    process, pipe = _start_migrator(url, args, chain)
    try:
        with Workload(conninfo, args.workers, args.pace, args.reader_hold) as load:
            time.sleep(args.baseline)
            started = time.perf_counter()
            pipe.send("go")
            try:
                result.attempts, result.error, result.cancelled = pipe.recv()
            except EOFError:
                result.error = f"the migrating process died (exit {process.exitcode})"
            result.seconds = time.perf_counter() - started
            # As long a window as the baseline's, or the migration's if longer: a short
            # migration's few statements would make a p99 out of noise.
            ended = started + max(result.seconds, args.baseline)
            time.sleep(max(0.0, ended - time.perf_counter()) + 0.5)
        for sample in load.samples:
            if sample.start + sample.seconds < started:
                result.before.append(sample)
            elif sample.start <= ended:
                result.during.append(sample)
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
        server.drop_database(url.database)
    return result


def _ms(samples: list[Sample], q: float) -> float:
    """The q-quantile of the samples' latencies in ms (q = 1: the largest)."""
    values = sorted(s.seconds * 1000 for s in samples)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def report(results: list[Result], args, rows: int, server: Server) -> None:
    limit = args.lock_timeout * 1000 + STALL_MS
    print()
    print(
        f"{rows} rows in tasks, PostgreSQL {server.version} ({server.kind}); "
        f"lock_timeout {args.lock_timeout * 1000:.0f} ms, blocking budget "
        f"{args.budget * 1000:.0f} ms, up to {args.retries} retries; latencies in ms"
        + (
            f"; each kind run {args.repeat} times, in rounds, its samples pooled"
            if args.repeat > 1
            else ""
        )
    )
    header = (
        f"{'kind':<36} {'online':>6} {'outcome':>9} {'mig s':>6} {'tries':>5} {'p50':>6} "
        f"{'p99':>7} {'p50 mig':>7} {'p99 mig':>8} {'+p99':>7} {'max':>8} "
        f"{'>100ms (S/I/U/D)':>17} goal"
    )
    print(header)
    for r in results:
        p99_before, p99_during = _ms(r.before, 0.99), _ms(r.during, 0.99)
        stall = _ms(r.during, 1)
        slow = [s for s in r.during if s.seconds * 1000 > STALL_MS]
        by_op = "/".join(
            str(sum(s.op == op for s in slow)) for op in ("SELECT", "INSERT", "UPDATE", "DELETE")
        )
        added = (p99_during - p99_before) / p99_before * 100 if p99_before else float("nan")
        outcome = "cancelled" if r.cancelled else "failed" if r.error else "applied"
        misses = []
        if stall > limit:
            misses.append(f"max > {limit:.0f}")
        if r.online and added > 10:
            misses.append("p99 +>10%")
        if r.error and (r.online or not r.cancelled):
            misses.append("migration failed (below)")
        errors = sum(bool(s.error) for s in r.during)
        if errors:
            misses.append(f"{errors} app errors")
        print(
            f"{r.kind:<36} {'yes' if r.online else 'no':>6} {outcome:>9} {r.seconds:>6.2f} "
            f"{r.attempts:>5} {_ms(r.before, 0.5):>6.1f} {p99_before:>7.1f} "
            f"{_ms(r.during, 0.5):>7.1f} {p99_during:>8.1f} {added:>6.0f}% {stall:>8.0f} "
            f"{by_op:>17} {'met' if not misses else '; '.join(misses)}"
        )
    for r in results:
        if r.error:
            print(f"{r.kind}: {r.error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--workers", type=int, default=4, help="application threads (1-16)")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between statements")
    configured = settings.timeouts().lock_ms / 1000
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=configured,
        help=f"seconds (default: WORKTRACKER_DDL_LOCK_TIMEOUT, {configured:g})",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds a step may block the application (default: the lock timeout; 0: off)",
    )
    parser.add_argument(
        "--retries", type=int, default=10, help="retries of a step that waited too long"
    )
    parser.add_argument(
        "--reader-hold",
        type=float,
        help="seconds the long reader holds the table (default: 1.5 x lock timeout, so "
        "that a migration that needs a strong lock gives up and retries)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each kind, in rounds over the kinds; p50/p99 over all runs' samples",
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=10.0,
        help="seconds before migrating (and the shortest window measured from its start)",
    )
    args = parser.parse_args()
    if args.budget is None:
        args.budget = args.lock_timeout
    if args.reader_hold is None:
        args.reader_hold = 1.5 * args.lock_timeout
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not 1 <= args.workers <= 16 or args.repeat < 1:
        parser.error(
            f"unknown kinds {unknown} (known: {', '.join(KINDS)}), workers not 1-16, "
            "or --repeat below 1"
        )
    with throwaway_server() as server, tempfile.TemporaryDirectory() as tmp:
        print(f"server: {server.kind}, PostgreSQL {server.version}", flush=True)
        if not urls.is_local(server.admin_url):
            # TEST_DATABASE_URL may name a shared server: never load one.
            sys.exit("load: the throwaway server is not on this machine; unset TEST_DATABASE_URL")
        source = template(server, args.rows, Path(tmp))
        print(f"  template with {args.rows} tasks ready", flush=True)
        results: dict[str, Result] = {}
        # In rounds, so that a change in the machine's load falls on every kind alike.
        for _ in range(args.repeat):
            for kind in dict.fromkeys(kinds):
                result = run_kind(server, source, kind, args, Path(tmp))
                print(f"  {kind}: {result.seconds:.2f} s", flush=True)
                if kind in results:
                    results[kind].pool(result)
                else:
                    results[kind] = result
        server.drop_database(source)
    report(list(results.values()), args, args.rows, server)


if __name__ == "__main__":
    main()
