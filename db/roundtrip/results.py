"""What the roundtrip found: one Result per step checked, gathered in a Report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

OK, FAIL, DECLARED, SKIPPED = "ok", "FAIL", "declared", "skipped"


@dataclass
class Result:
    revision: str
    step: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    """Everything a reader needs: the diff, the revision, the database error."""
    note: str = ""
    """One short line for the summary table."""


@dataclass
class Report:
    server: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {
            "server": self.server,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "results": [asdict(r) for r in self.results],
        }


OnResult = Callable[[Result], None]


def timed(results: list[Result], on_result: OnResult | None, result: Result) -> None:
    """Add `result`, and tell `on_result` at once (the progress shown as the run goes)."""
    results.append(result)
    if on_result is not None:
        on_result(result)
