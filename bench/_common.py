"""What the benchmarks share: a scratch database on either backend."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mirror.store import Database

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def fresh_database(backend: str, pg_url: str = DEFAULT_PG_URL) -> Iterator[str]:
    """The URL of a new database at the newest revision; deleted afterwards.

    SQLite: a file in a temporary directory. PostgreSQL: ``ctmirror_bench_<hex>`` on the
    server of ``pg_url`` (which must allow CREATE DATABASE).
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ctmirror-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'mirror.db'}"
            _upgrade(url)
            yield url
        return
    name = f"ctmirror_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        _upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _upgrade(url: str) -> None:
    db = Database(url)
    db.upgrade()
    db.dispose()
