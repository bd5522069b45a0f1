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


BOX = set("─│┃━┏┓┗┛┡┩╇╋┼├┤┬┴")


def test_piped_tables_have_no_box_drawing_and_no_padding(invoke, initial_db) -> None:
    from tests.helpers import as_env

    for args in (("migrate.status",), ("migrate.history",)):
        result = invoke(*args, env=as_env(initial_db))
        assert result.returncode == 0, result.explain()
        assert not BOX & set(result.stdout), result.stdout
        assert all(line == line.rstrip() for line in result.stdout.splitlines()), result.stdout


def test_a_typo_in_a_task_name_is_bad_arguments_with_a_suggestion(invoke) -> None:
    result = invoke("migrate.upp")
    assert result.returncode == 2, result.explain()
    assert "did you mean migrate.up?" in result.stderr, result.explain()


def test_numeric_options_read_as_numbers_and_s_means_steps(invoke) -> None:
    down = invoke("--help", "migrate.down")
    assert "-s INT, --steps=INT" in down.stdout, down.stdout
    roundtrip = invoke("--help", "migrate.roundtrip")
    assert "-s," not in roundtrip.stdout and "-s " not in roundtrip.stdout, roundtrip.stdout


def test_a_piped_up_at_head_imports_only_what_it_uses(initial_db, initial_chain) -> None:
    """A deploy's `migrate.up` should not pay for Rich, the catalog reader, the rehearsal,
    the models or the embedded server: a fresh interpreter, as a deploy starts one."""
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print(' '.join(sorted(sys.modules)), file=sys.stderr))\n"
        "from invoke.main import program\n"
        "program.run(['invoke', 'migrate.up'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        env={**os.environ, **as_env(initial_db), "WORKTRACKER_VERSIONS_DIR": str(initial_chain)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Nothing to apply" in done.stdout, done.stdout
    loaded = set(done.stderr.split())
    unwanted = {
        "rich",
        "db.catalog",
        "db.preview",
        "db.rehearsal",
        "db.loss",
        "db.embedded",
        "db.models",
    }
    assert not unwanted & loaded, f"imported without need: {sorted(unwanted & loaded)}"
