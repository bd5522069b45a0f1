"""Where human output goes. Rich keeps it plain when stdout is not a terminal or
NO_COLOR is set; soft wrapping keeps long URLs and paths on one line."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output (CI logs, `| less`) has no width to measure; Rich's 80 columns would
# fold every table row into several lines.
console = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 160)


def say(text: str) -> None:
    console.print(text)


def step_line(arrow: str, revision: str, description: str, seconds: float) -> None:
    console.print(f"  {arrow} {revision}  {description}  [dim]({seconds:.2f} s)[/dim]")
