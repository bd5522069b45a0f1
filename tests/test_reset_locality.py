"""`db.reset` decides whether a database is local from where libpq will really connect
(?host=, ?hostaddr=, PGHOST, PGHOSTADDR, a service file), before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from db import urls
from tests.helpers import as_env, current_revision

ELSEWHERE = "10.255.255.1"  # never contacted: the refusal comes before any connection


@pytest.mark.parametrize(
    ("raw", "environ", "local"),
    [
        ("postgresql://app@localhost/db", {}, True),
        ("postgresql://app@127.0.0.1/db", {}, True),
        ("postgresql://app@[::1]/db", {}, True),
        ("postgresql://app@/db?host=/run/postgresql", {}, True),
        ("postgresql://app@/db", {}, True),
        ("postgresql://app@/db", {"PGHOST": "/tmp"}, True),
        (f"postgresql://app@localhost:5433/prod?host={ELSEWHERE}", {}, False),
        (f"postgresql://app@localhost:5433/prod?hostaddr={ELSEWHERE}", {}, False),
        ("postgresql://app@/prod", {"PGHOST": ELSEWHERE}, False),
        ("postgresql://app@/prod", {"PGHOSTADDR": ELSEWHERE}, False),
        ("postgresql://app@localhost/prod", {"PGHOST": ELSEWHERE}, True),  # the URL wins
        (f"postgresql://app@localhost,{ELSEWHERE}/prod", {}, False),
        ("postgresql://app@db.internal/prod", {}, False),
    ],
)
def test_locality_follows_libpq(raw: str, environ: dict[str, str], local: bool) -> None:
    assert urls.is_local(urls.parse(raw), environ) is local


def test_a_service_file_entry_counts(tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[prod]\nhost={ELSEWHERE}\ndbname=prod\n\n[dev]\nhost=/tmp\n")
    environ = {"PGSERVICEFILE": str(services)}
    assert not urls.is_local(urls.parse("postgresql:///prod?service=prod"), environ)
    assert not urls.is_local(urls.parse("postgresql:///prod"), {**environ, "PGSERVICE": "prod"})
    assert urls.is_local(urls.parse("postgresql:///dev?service=dev"), environ)


@pytest.mark.parametrize(
    ("suffix", "extra"),
    [
        (f"&hostaddr={ELSEWHERE}", {}),
        ("", {"PGHOSTADDR": ELSEWHERE}),
    ],
    ids=["hostaddr-in-url", "PGHOSTADDR"],
)
def test_reset_refuses_what_libpq_sends_elsewhere(
    invoke, initial_db: URL, suffix: str, extra: dict[str, str]
) -> None:
    env = as_env(initial_db)
    env["DATABASE_URL"] += suffix
    result = invoke("db.reset", env={**env, **extra})
    assert result.returncode == 5, result.explain()
    assert "it is not a local database" in result.stderr, result.explain()
    assert ELSEWHERE not in result.output or "refusing" in result.stderr
    assert current_revision(initial_db) == "001"


def test_a_password_with_an_unescaped_at_is_refused_without_echoing_it(invoke) -> None:
    result = invoke("db.url", env={"DATABASE_URL": "postgresql://app:s3cr@t@db.example/app"})
    assert result.returncode == 2, result.explain()
    assert "unescaped @" in result.stderr and "%40" in result.stderr, result.explain()
    assert "s3cr" not in result.output and "t@db" not in result.output
    assert "example" not in result.output, "nothing after the first @ may be echoed"
