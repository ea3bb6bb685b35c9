"""What the benchmarks share: a scratch database on either backend, a local receiver, where
results are written."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mirror.store import Database

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
OUT = Path(__file__).resolve().parent / "out"


def command_env(**settings: str) -> dict[str, str]:
    """The environment of a ctmirror command a bench runs: as a user's, with ``settings``.

    ``CTMIRROR_*`` variables are dropped (they would beat the bench's settings), and so is
    ``PYTHONDONTWRITEBYTECODE``: an installed ctmirror has its bytecode compiled, and without
    it each command would compile ctmirror's sources again (about 0.1 s).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CTMIRROR_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    return env | settings


def write_results(name: str, document: dict[str, object]) -> Path:
    """``document`` with the machine's Python and CPU count as ``bench/out/<name>-<UTC time>.json``;
    says where."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
    path.write_text(json.dumps({**document, **machine}, indent=2))
    print(f"JSON: {path.relative_to(OUT.parents[1])}")
    return path


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReceiverProcess:
    """An HTTP receiver in a subprocess (the receiver of a real subscriber is another machine):
    ``script`` is run as ``python -c script PORT LOG`` and appends a line per arrival to LOG."""

    def __init__(self, script: str, directory: Path, cwd: Path) -> None:
        self.port = free_port()
        self.log = directory / f"arrivals-{self.port}.log"
        self.log.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, str(self.port), str(self.log)], cwd=cwd
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise SystemExit("bench: the receiver did not start")

    def lines(self) -> list[bytes]:
        return [line for line in self.log.read_bytes().splitlines() if line]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
