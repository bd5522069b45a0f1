"""Where human output goes. Rich keeps it plain when stdout is not a terminal or
NO_COLOR is set; soft wrapping keeps long URLs and paths on one line."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True, highlight=False)


def say(text: str) -> None:
    console.print(text)


def step_line(arrow: str, revision: str, description: str, seconds: float) -> None:
    console.print(f"  {arrow} {revision}  {description}  [dim]({seconds:.2f} s)[/dim]")
