# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Shared fixtures: a real migrated database (SQLite always, PostgreSQL when
``CTMIRROR_TEST_POSTGRES_URL`` is set), the fake API v2, settings pointing at both."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))

from fake_ctgov import FakeCtgov

from mirror.app import App, build_app
from mirror.cli import cli
from mirror.config import Settings, load_settings
from mirror.store import Base, Database

PG_URL = os.environ.get("CTMIRROR_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="CTMIRROR_TEST_POSTGRES_URL is not set")
    for item in items:
        if "postgres" in item.keywords and not PG_URL:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session, migrated once."""
    assert PG_URL, "CTMIRROR_TEST_POSTGRES_URL is not set"
    name = f"ctmirror_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    db.upgrade()
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "mirror.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database of each backend."""
    if request.param == "sqlite":
        target = tmp_path / "mirror.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_database")
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def fake_api() -> Iterator[FakeCtgov]:
    """The fake API v2 serving a handful of real records; tests put/edit what they need."""
    with FakeCtgov(ids=[]) as api:
        yield api


def test_env(db_url: str, base_url: str, **extra: str) -> dict[str, str]:
    """Environment variables that point ctmirror at a test database and the fake API."""
    return {
        "CTMIRROR_DATABASE__URL": db_url,
        "CTMIRROR_SOURCE__BASE_URL": base_url,
        "CTMIRROR_SOURCE__HISTORY_BASE_URL": base_url.replace("/api/v2", "/api/int"),
        "CTMIRROR_SOURCE__REQUESTS_PER_MINUTE": "100000",
        "CTMIRROR_SOURCE__RETRY_BASE_SECONDS": "0.01",
        "CTMIRROR_SOURCE__RETRY_MAX_SECONDS": "0.2",
        "CTMIRROR_SOURCE__TIMEOUT_SECONDS": "2",
        "CTMIRROR_SOURCE__CONCURRENCY": "4",
        "CTMIRROR_LOG__FORMAT": "json",
        "CTMIRROR_LOG__LEVEL": "warning",
        **extra,
    }


@pytest.fixture
def env(db_url: str, fake_api: FakeCtgov, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = test_env(db_url, fake_api.base_url)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def fast_daemon(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Daemon and webhook timings short enough for tests (``daemon_helpers.FAST``)."""
    from daemon_helpers import FAST

    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    env.update(FAST)
    return env


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings()


@pytest.fixture
def app(settings: Settings) -> Iterator[App]:
    application = build_app(settings)
    yield application
    application.close()


class Cli:
    """Runs ``ctmirror`` in-process through click's runner."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int | None = 0, **kwargs: Any) -> Result:
        result = self.runner.invoke(cli, list(args), env=self.env, catch_exceptions=False, **kwargs)
        if expect is not None:
            assert result.exit_code == expect, (
                f"ctmirror {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result


@pytest.fixture
def run(env: dict[str, str]) -> Cli:
    return Cli(env)


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real HTTP receiver on loopback (``receiver.Receiver``), for webhooks and json://."""
    from receiver import Receiver

    with Receiver() as rec:
        yield rec


@pytest.fixture
def write_api(app: App) -> Iterator[Any]:
    """The HTTP API of ``app`` in-process, with ``api.token`` set to ``api_client.WRITE_TOKEN``."""
    from api_client import WRITE_TOKEN, api_client

    settings = load_settings(
        None, api={"token": WRITE_TOKEN}, database={"url": app.settings.database.url}
    )
    with api_client(App(settings, app.db)) as client:
        yield client
