"""The migration chain on disk: numbered files `NNN_slug.py` whose revision id is `NNN`."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import textwrap
import traceback
import unicodedata
import warnings
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from db.errors import ConfigError, RevisionError
from db.settings import PROJECT_ROOT, PYPROJECT, versions_dir

FILENAME = re.compile(r"^(?P<rev>\d{3})_(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)\.py$")
"""What every file in db/migrations/versions must be called."""
BASE = "base"
DEFAULT_VERSIONS = PROJECT_ROOT / "db" / "migrations" / "versions"


def versions_path() -> Path:
    """The directory the chain is read from (WORKTRACKER_VERSIONS_DIR overrides it)."""
    return versions_dir() or DEFAULT_VERSIONS


def alembic_config() -> Config:
    """Alembic's configuration, read from [tool.alembic] in pyproject.toml."""
    config = Config(toml_file=str(PYPROJECT))
    if (override := versions_dir()) is not None:
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", str(override))
    return config


_LOADED: dict[tuple, ScriptDirectory] = {}


def _listing(folder: Path) -> tuple:
    try:
        entries = os.scandir(folder)
    except OSError:
        return ()
    with entries:
        return tuple(
            sorted(
                (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                for e in entries
                if e.name.endswith(".py")
            )
        )


def _broken(folder: Path, error: BaseException) -> ConfigError:
    """Which migration file keeps the chain from loading, and why, in one line."""
    hint = "fix that file, or move it out of the versions folder; nothing was run or recorded"
    if isinstance(error, SyntaxError) and error.filename:
        return ConfigError(
            f"{Path(error.filename).name} does not load: SyntaxError: {error.msg} "
            f"(line {error.lineno}).",
            hint,
        )
    frames = [
        f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).parent == folder
    ]
    if frames:
        return ConfigError(
            f"{Path(frames[-1].filename).name} does not load: {type(error).__name__}: {error} "
            f"(line {frames[-1].lineno}).",
            hint,
        )
    if isinstance(error, KeyError):  # a down_revision that no file has
        missing = str(error.args[0]) if error.args else "?"
        for path in sorted(folder.glob("*.py")):
            if re.search(
                rf"""down_revision[^=\n]*=\s*["']{re.escape(missing)}["']""",
                path.read_text(errors="replace"),
            ):
                return ConfigError(
                    f"{path.name} revises {missing!r}, which no migration file is.", hint
                )
    return ConfigError(
        f"the migration chain cannot be loaded: {type(error).__name__}: {error}.", hint
    )


def _loaded(script: ScriptDirectory, folder: Path) -> ScriptDirectory:
    """`script` with every file loaded; ConfigError (exit 2) naming a file that does not."""
    # A print() at a migration file's top level goes to stderr: stdout may be --json.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")  # Alembic warns of a missing revision, then fails
        try:
            script.revision_map.heads  # noqa: B018 - loads every migration file
        except Exception as error:
            raise _broken(folder, error) from None
    return script


def script_directory(config: Config | None = None) -> ScriptDirectory:
    """The chain, loaded once per process while its files stay as they are.

    Loading imports every migration file; a roundtrip asks for the chain at every step,
    so reloading it each time would make the cost of N migrations grow with N².
    """
    folder = versions_path()
    if config is not None:
        return _loaded(ScriptDirectory.from_config(config), folder)
    key = (str(folder), _listing(folder))
    found = _LOADED.get(key)
    if found is None:
        _LOADED.clear()  # an older listing of the folder, or another folder: stale
        found = _loaded(ScriptDirectory.from_config(alembic_config()), folder)
        _LOADED[key] = found
    return found


def chain(script: ScriptDirectory) -> list[Script]:
    """Every migration, oldest first. The chain must be linear: one base, one head."""
    heads = script.get_heads()
    if len(heads) > 1:
        raise RevisionError(
            f"the migration chain has {len(heads)} heads: {', '.join(sorted(heads))}.",
            "two migrations claim the same parent; renumber the newer one so it revises the "
            "other (migrations are linear in this repository)",
        )
    scripts = list(reversed(list(script.walk_revisions())))
    merges = [
        f"{s.revision} merges {', '.join(s.down_revision)}"
        for s in scripts
        if isinstance(s.down_revision, tuple | list)
    ]
    if merges or len(script.get_bases()) > 1:
        what = merges[0] if merges else f"it has {len(script.get_bases())} bases"
        raise RevisionError(
            f"the migration chain is not a line: {what}.",
            "migrations are linear in this repository: renumber one branch on top of the "
            "other instead of merging",
        )
    return scripts


def resolve(script: ScriptDirectory, name: str) -> str | None:
    """The full revision id for `name` ('head', 'base' or an id); None stands for base."""
    if name == BASE:
        return None
    try:
        found = script.get_revision(name)
    except CommandError as exc:
        found, detail = None, str(exc)
    else:
        detail = ""
    if found is None:
        known = ", ".join(s.revision for s in chain(script)) or "none yet"
        raise RevisionError(
            f"unknown revision {name!r}{f' ({detail})' if detail else ''}.",
            f"known revisions: {known}, plus 'head' and 'base'",
        )
    return found.revision


def next_revision_id(script: ScriptDirectory) -> str:
    numbers = [int(s.revision) for s in chain(script) if s.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:03d}"


SLUG_LENGTH = 40


def slug_words(message: str) -> str:
    """The words of a file name for `message`: ASCII (accents dropped, other scripts left
    out), lower case, at most SLUG_LENGTH characters cut at a word; "" if nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", message).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    kept: list[str] = []
    for word in words:
        if len("_".join([*kept, word])) > SLUG_LENGTH:
            break
        kept.append(word)
    if not kept and words:
        kept = [words[0][:SLUG_LENGTH]]
    return " ".join(kept)


def docstring(message: str, width: int = 96) -> str:
    """`message` as the body of a triple-quoted docstring: escaped, wrapped."""
    safe = message.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return "\n".join(textwrap.wrap(safe, width, break_long_words=False)) or safe


def path_of(script: Script) -> Path:
    return Path(script.path)
