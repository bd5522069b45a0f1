"""Human output is plain text when stdout is not a terminal or NO_COLOR is set; styled on
a terminal otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from sqlalchemy.engine import URL

from db.settings import PROJECT_ROOT
from tests.helpers import as_env

ESCAPE = "\x1b["


def _on_a_terminal(env: dict[str, str]) -> str:
    """Run `invoke migrate.status` with a pseudo-terminal as stdout; return what it shows."""
    leader, follower = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DATABASE_URL")}
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "migrate.status"],
        cwd=PROJECT_ROOT,
        env={**environ, "TERM": "xterm-256color", **env},
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_piped_output_is_plain(invoke, initial_db: URL) -> None:
    result = invoke("migrate.status", env=as_env(initial_db))
    assert result.returncode == 0, result.explain()
    assert ESCAPE not in result.stdout, "piped output must carry no escape codes"


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="no pseudo-terminals here")
def test_no_color_keeps_a_terminal_plain(initial_db: URL) -> None:
    styled = _on_a_terminal(as_env(initial_db))
    assert ESCAPE in styled, "on a terminal the table is styled (else this test proves nothing)"
    plain = _on_a_terminal({**as_env(initial_db), "NO_COLOR": "1"})
    assert "001" in plain, plain
    assert ESCAPE not in plain, "NO_COLOR must turn every escape code off"
