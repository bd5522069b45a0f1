"""Running a corpus case: its chain in a folder of its own, a database cloned at 001, and
the commands called in-process (as `invoke` would, without the start-up cost)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db import planning, revisions, runner
from db.roundtrip import sample_data
from db.roundtrip.results import DECLARED, FAIL, Result
from db.roundtrip.stairway import Stairway
from db.throwaway import Server
from tests.conftest import VERSIONS, Filled, make_engine
from tests.corpus import Case, Expect, write_chain
from tests.helpers import as_env

MODELS_AT_001 = [p.name[:3] for p in sorted(VERSIONS.glob("[0-9][0-9][0-9]_*.py"))][-1:] == ["001"]
"""Whether db/models/ describes 001. A corpus chain is 001 plus a case, while the models
follow the real chain: once the team adds 002, "models vs head" on a corpus chain
compares unrelated things, and the corpus tests leave that step to the real chain's own
tests (test_models_match_migrations.py, test_roundtrip.py)."""


def chain_results(results: list[Result]) -> list[Result]:
    """The results of a corpus chain's whole roundtrip that are about the case."""
    return [
        r for r in results if r.revision != "001" and (MODELS_AT_001 or r.step != "models vs head")
    ]


def use_chain(case: Case, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_chain(folder, case)
    monkeypatch.setenv("WORKTRACKER_VERSIONS_DIR", str(folder))


@contextmanager
def database_at_001(server: Server, template: str) -> Iterator[URL]:
    url = server.create_database(template=template)
    try:
        yield url
    finally:
        server.drop_database(url.database)


@contextmanager
def filled_at_001(server: Server, filled: Filled) -> Iterator[tuple[URL, sample_data.Filler]]:
    """A database at 001 whose tables hold a round of sample rows, and the Filler to go on
    filling it with (tests/conftest.py, filled_template)."""
    with database_at_001(server, filled.database) as url:
        yield url, copy.deepcopy(filled.filler)


def target(url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the commands at `url`, as DATABASE_URL does for `invoke`."""
    for key, value in as_env(url).items():
        monkeypatch.setenv(key, value)


def upgrade_and_fill(
    url: URL, to: str = "head", rounds: int = 2, filler: sample_data.Filler | None = None
) -> None:
    """Fill every table with sample rows at 001 (unless `filler` did: filled_at_001),
    apply the chain, and fill again, as a database that lived through the migrations
    would be."""
    engine = make_engine(url)
    with engine.connect() as connection:
        script = revisions.script_directory()
        if filler is None:
            filler = sample_data.Filler()
            filler.fill(connection)
        runner.run(connection, planning.plan_upgrade(script, "001", to))
        for _ in range(rounds):
            filler.fill(connection)
    engine.dispose()


@contextmanager
def stairway_on(
    server: Server, url: URL, filled_by: sample_data.Filler | None = None
) -> Iterator[Stairway]:
    """A stairway on the database at `url`, which must be at 001 (filled by `filled_by`:
    filled_at_001)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            stairway = Stairway(server, url.database, connection, filled_by=filled_by)
            try:
                yield stairway
            finally:
                stairway.close()
    finally:
        engine.dispose()


def case_scripts() -> list:
    """The case's migrations: the chain after 001 (which is proven elsewhere)."""
    return revisions.chain(revisions.script_directory())[1:]


def stairway_from_001(
    server: Server, url: URL, filled_by: sample_data.Filler | None = None
) -> list[Result]:
    """The stairway over the case's migrations, stopping where the roundtrip would."""
    results: list[Result] = []
    with stairway_on(server, url, filled_by) as stairway:
        for script in case_scripts():
            found = stairway.revision(script)
            results += found
            if any(r.status == FAIL for r in found):
                break
    return results


def check_verdict(results: list[Result], expect: Expect, name: str) -> None:
    shown = "\n".join(f"  {r.revision} {r.step}: {r.status} {r.note}\n{r.detail}" for r in results)
    failures = [r for r in results if r.status == FAIL]
    if expect.ok:
        assert not failures, f"{name}: expected a pass, got failures:\n{shown}"
        if expect.step:
            wanted = DECLARED if expect.step == "declared" else None
            found = [
                r
                for r in results
                if (r.status == wanted if wanted else r.step == expect.step)
                and all(w in r.note + r.detail for w in expect.words)
            ]
            assert found, f"{name}: no {expect.step} result saying {expect.words}:\n{shown}"
        return
    assert failures, f"{name}: expected a failure at {expect.step}, got a pass:\n{shown}"
    assert len(failures) == 1, f"{name}: one defect must make one failure:\n{shown}"
    failure = failures[0]
    assert failure.step == expect.step, f"{name}: failed at {failure.step}:\n{shown}"
    for word in expect.words:
        assert word in failure.detail, f"{name}: {word!r} missing from:\n{failure.detail}"
