"""Finding a pg_dump whose major version matches the server: dumps differ between versions."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

DEBIAN_BIN = "/usr/lib/postgresql/{version}/bin"


def _major(binary: Path) -> int | None:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    found = re.search(r"(\d+)(?:\.\d+)?", done.stdout)
    return int(found.group(1)) if done.returncode == 0 and found else None


def matching_pg_dump(major: int, preferred: Path | None = None) -> Path:
    """A pg_dump of the server's major version: dumps differ from one version to the next."""
    from db import embedded

    candidates = [
        *([preferred / "pg_dump"] if preferred else []),
        Path(DEBIAN_BIN.format(version=major)) / "pg_dump",
        embedded.BIN_DIR / "pg_dump",
        *([Path(found)] if (found := shutil.which("pg_dump")) else []),
    ]
    for candidate in candidates:
        if candidate.exists() and _major(candidate) == major:
            return candidate
    raise RuntimeError(
        f"no pg_dump for PostgreSQL {major} here (looked at {', '.join(map(str, candidates))}); "
        f"install postgresql-client-{major}"
    )
