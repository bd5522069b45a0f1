"""This session's checks on every corpus chain (tests/corpus.py) the roundtrip passes:
`nox -s alembic_plugin_corpus`, not in the default run (a pytest run per chain).

`nox` runs the plugin on our own chain; this proves it stays green when the team adds a
migration of any kind the roundtrip accepts (enum labels, online indexes, …). A corpus
chain is 001 plus a case while the models follow the real chain, so
test_model_definitions_match_ddl is left to the real chain's run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.corpus import CASES, write_chain

PYTEST = [
    "tests_pytest_alembic",
    "--test-alembic",
    "--alembic-tests-path",
    "tests_pytest_alembic/conftest.py",
    "-p",
    "pytest_alembic",
    "-q",
    "-k",
    "not model_definitions_match_ddl",
]


def main(names: list[str]) -> int:
    if unknown := sorted(set(names) - {case.name for case in CASES}):
        print(
            f"error: no corpus case named {', '.join(unknown)}.\n"
            f"hint: the names are in tests/corpus.py (e.g. {CASES[0].name})",
            file=sys.stderr,
        )
        return 2
    failed = []
    for case in CASES:
        if names and case.name not in names:
            continue
        if not case.roundtrip.ok:
            if names:
                print(f"{case.name}: skipped (the roundtrip fails it, as it should)", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="plugin-corpus-") as folder:
            write_chain(Path(folder), case)
            environ = {**os.environ, "WORKTRACKER_VERSIONS_DIR": folder}
            done = subprocess.run(
                [sys.executable, "-m", "pytest", *PYTEST],
                env=environ,
                capture_output=True,
                text=True,
            )
        print(f"{case.name}: {'passed' if done.returncode == 0 else 'FAILED'}", flush=True)
        if done.returncode != 0:
            failed.append(case.name)
            print(done.stdout[-4000:], flush=True)
    if failed:
        print(f"pytest-alembic fails on corpus chains the roundtrip passes: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
