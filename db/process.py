"""How a command's process treats Python's garbage collector."""

from __future__ import annotations

import atexit
import gc


def short_lived() -> None:
    """Tune the collector for a process that runs one command and exits.

    A command builds a large graph of objects that live until it ends (SQLAlchemy,
    Alembic, the loaded chain). The collector would walk that graph again and again
    while it grows, and once more at exit, for garbage it does not hold: about a quarter
    of `migrate.up` at head (benchmarks/run.py). Young objects are collected less often
    (cycles are still found, in batches), and everything is frozen at exit, after the
    atexit handlers registered later have run (they run last-in, first-out).
    """
    gc.set_threshold(10_000, 10, 10)
    atexit.register(gc.freeze)
