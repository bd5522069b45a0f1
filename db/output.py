"""Where human output goes. Rich keeps it plain when stdout is not a terminal or
NO_COLOR is set; soft wrapping keeps long URLs and paths on one line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

# Plain output when piped (CI logs, `| less`) or when NO_COLOR is set: no escape codes
# at all (Rich's own NO_COLOR support still emits bold). Piped output also has no width
# to measure, and Rich's 80 columns would fold every table row into several lines.
_PLAIN = "NO_COLOR" in os.environ or not sys.stdout.isatty()


class _Stdout:
    """sys.stdout, except that a reader that went away (`| head -1`) never raises: the
    rest of the output goes nowhere. Output is written while a migration's transaction is
    open, and a BrokenPipeError there would roll the migration back."""

    closed_by_reader = False

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        _Stdout.closed_by_reader = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def __getattr__(self, name: str):
        return getattr(sys.stdout, name)


stdout = _Stdout()
console = Console(
    file=stdout,  # type: ignore[arg-type]
    soft_wrap=True,
    highlight=False,
    color_system=None if _PLAIN else "auto",
    width=160 if not sys.stdout.isatty() else None,
)


def say(text: str) -> None:
    console.print(text)


def step_line(arrow: str, revision: str, description: str, seconds: float) -> None:
    console.print(f"  {arrow} {revision}  {description}  [dim]({seconds:.2f} s)[/dim]")


@contextmanager
def waiting(message: str, every: float = 5.0) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; elsewhere (CI logs) a plain line at most every `every` s.

    Yields a function that replaces the message.
    """
    if console.is_terminal:
        with console.status(message) as status:
            yield lambda text: status.update(text)
        return
    console.print(message)
    last = time.monotonic()

    def update(text: str) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            console.print(f"  {text}")
            last = time.monotonic()

    yield update


def table(columns: list[str], rows: list[list[str]], title: str | None = None) -> None:
    """A table: Rich's on a terminal; plain aligned columns when piped or NO_COLOR (no
    box-drawing characters, no padding past the last column)."""
    if console.is_terminal and not _PLAIN:
        from rich.table import Table

        shown = Table(title=title, show_edge=False, pad_edge=False)
        for column in columns:
            shown.add_column(column)
        for row in rows:
            shown.add_row(*row)
        console.print(shown)
        return
    from rich.text import Text

    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in plain)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    for cells in [columns, *plain]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    console.print("\n".join(lines), markup=False, highlight=False)


def brief(text: str, where: str = "", limit: int = 110) -> str:
    """An error shown in a table's cell: one line, without the database's name (the row
    has it), cut at `limit` characters."""
    text = " ".join(text.split())
    if where:
        text = text.replace(f"could not connect to {where}: ", "could not connect: ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
