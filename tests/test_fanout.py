"""over_databases() hands each database's result back as a value: from a thread, or from
a process (a fork) whatever that process printed; a failure stops new processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from db import fanout, targets, urls


def _targets(count: int) -> list[targets.Target]:
    return [
        targets.Target("shards", urls.parse(f"postgresql://u@db{n}.example/app"))
        for n in range(count)
    ]


def test_thread_results_come_back_in_the_order_of_the_targets() -> None:
    chosen = _targets(5)
    done = fanout.over_databases(chosen, lambda t: t.label, parallel=3)
    assert [d.value for d in done] == [t.label for t in chosen]
    assert all(d.code == 0 for d in done)


@pytest.mark.skipif(not fanout.FORK, reason="processes are forks on Linux only")
def test_a_process_result_is_its_value_not_its_printout() -> None:
    def work(target: targets.Target) -> tuple[int, dict]:
        # Text that looks like a result: only the value counts.
        os.write(1, "Upgrading x: 001 → 999\nNothing to apply: x is at 999.\n".encode())
        failing = "db2" in target.label
        return (4 if failing else 0), {"host": target.label, "end": "001"}

    how = fanout.Processes(work, [sys.executable, "-c", "pass"], keep_going=True)
    done = fanout.over_databases(_targets(3), parallel=2, processes=how)
    assert [d.value["end"] for d in done if d.value] == ["001"] * 3
    assert [d.code for d in done] == [0, 0, 4]
    assert "→ 999" in done[0].output


@pytest.mark.skipif(not fanout.FORK, reason="processes are forks on Linux only")
def test_a_failed_process_stops_new_ones_unless_keep_going() -> None:
    how = fanout.Processes(lambda target: (3, {}), [sys.executable, "-c", "pass"])
    done = fanout.over_databases(_targets(4), parallel=1, processes=how)
    assert [d.code for d in done] == [3, None, None, None]


def test_new_interpreters_are_all_reaped_when_other_code_starts_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without fork (macOS), each database runs in a new interpreter. Any subprocess
    started meanwhile in the same process (here, by the progress callback) must not reap
    them behind over_databases's back: it lost their results, then raised
    ChildProcessError, a traceback."""
    monkeypatch.setattr(fanout, "FORK", False)

    def meanwhile(done: fanout.Done) -> None:
        time.sleep(0.3)  # the other interpreter has ended by now, and is not reaped yet
        subprocess.run(["true"], check=True)

    how = fanout.Processes(lambda target: (0, {}), [sys.executable, "-c", "pass"])
    done = fanout.over_databases(_targets(2), parallel=2, processes=how, on_done=meanwhile)
    assert [d.code for d in done] == [0, 0], [(d.code, d.errors) for d in done]
