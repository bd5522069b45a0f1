"""Where human output goes. On a terminal, Rich (colours, tables, spinners; soft
wrapping keeps long URLs and paths on one line). When stdout is not a terminal or
NO_COLOR is set, plain text, written without Rich: a piped `migrate.up` in CI or a
deploy script should not pay for importing it."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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

# Rich's markup tags (rich/markup.py, RE_TAGS): what the plain path strips, so that
# `[red]FAILED[/red]` prints as FAILED and `\\[literal]` as [literal], as Rich would.
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")


def plain_text(markup: str) -> str:
    """`markup` without Rich's tags, as Rich prints it without colour."""

    def one(match: re.Match[str]) -> str:
        backslashes, tag = match[1], match[2]
        if len(backslashes) % 2:  # an escaped bracket: literal text
            return backslashes[: len(backslashes) // 2] + f"[{tag}]"
        return backslashes[: len(backslashes) // 2]

    return _TAG.sub(one, markup)


def escaped(text: str) -> str:
    """`text` with its brackets kept literal by Rich and by plain_text()."""
    return _TAG.sub(lambda m: m[1] * 2 + "\\" + f"[{m[2]}]", text)


def __getattr__(name: str):
    """`console`, Rich's Console, made on first use."""
    if name != "console":
        raise AttributeError(f"module 'db.output' has no attribute {name!r}")
    from rich.console import Console

    made = Console(
        file=stdout,  # type: ignore[arg-type]
        soft_wrap=True,
        highlight=False,
        color_system=None if _PLAIN else "auto",
        width=160 if not sys.stdout.isatty() else None,
    )
    globals()["console"] = made
    return made


def is_terminal() -> bool:
    return not _PLAIN


def use_plain() -> None:
    """Plain text from now on, wherever stdout goes (a fleet's child writes to a file)."""
    global _PLAIN
    _PLAIN = True


def say(text: str, *, markup: bool = True) -> None:
    if _PLAIN:
        stdout.write((plain_text(text) if markup else text) + "\n")
        stdout.flush()
        return
    __getattr__("console").print(text, markup=markup, highlight=False)


def step_line(arrow: str, revision: str, description: str, seconds: float) -> None:
    say(f"  {arrow} {revision}  {description}  [dim]({seconds:.2f} s)[/dim]")


@contextmanager
def waiting(message: str, every: float = 5.0) -> Iterator[Callable[[str], None]]:
    """A spinner on a terminal; elsewhere (CI logs) a plain line at most every `every` s.

    Yields a function that replaces the message.
    """
    if not _PLAIN:
        with __getattr__("console").status(message) as status:
            yield lambda text: status.update(text)
        return
    say(message)
    last = time.monotonic()

    def update(text: str) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            say(f"  {text}")
            last = time.monotonic()

    yield update


def table(columns: list[str], rows: list[list[str]], title: str | None = None) -> None:
    """A table: Rich's on a terminal; plain aligned columns when piped or NO_COLOR (no
    box-drawing characters, no padding past the last column)."""
    if not _PLAIN:
        from rich.table import Table

        shown = Table(title=title, show_edge=False, pad_edge=False)
        for column in columns:
            shown.add_column(column)
        for row in rows:
            shown.add_row(*row)
        __getattr__("console").print(shown)
        return
    plain = [[plain_text(cell) for cell in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in plain)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    for cells in [columns, *plain]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    say("\n".join(lines), markup=False)


_LIBPQ_PREAMBLE = re.compile(
    r'connection to server (?:on socket "[^"]*"|at "[^"]*"(?: \([^)]*\))?, port \d+) failed: '
)


def brief(text: str, where: str = "", limit: int = 110) -> str:
    """An error shown in a table's cell: one line, without the database's name (the row
    has it), cut at `limit` characters."""
    text = " ".join(text.split())
    if where:
        text = text.replace(f"could not connect to {where}: ", "could not connect: ")
    # libpq's preamble names the socket or host the row already names: keep the cause.
    text = _LIBPQ_PREAMBLE.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
