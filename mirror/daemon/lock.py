"""The scheduler lock: held by exactly one daemon per database, so exactly one decides when
watches run.

A session-level PostgreSQL advisory lock held on a dedicated connection, or, on
SQLite, an ``fcntl`` lock on a file beside the database. The operating system (or PostgreSQL,
when the connection drops) releases either when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, text

from mirror.store import Database

SCHEDULER_LOCK_KEY = 0x63746D7363686564  # "ctmsched"


class SchedulerLock(Protocol):
    """Held by at most one process per database; released by the OS or server if it dies."""

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when this process now holds it."""

    def held(self) -> bool:
        """Whether this process still holds it (a dropped connection loses it)."""

    def release(self) -> None: ...


class PostgresLock:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            return self.held()
        conn = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK_KEY})
        if got.scalar():
            self._conn = conn
            return True
        conn.close()
        return False

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception:
            self._drop()
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEDULER_LOCK_KEY})
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()


class FileLock:
    """``flock`` on a file; in-memory SQLite databases (no file) lock within the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def scheduler_lock(db: Database) -> SchedulerLock:
    if not db.is_sqlite:
        return PostgresLock(db)
    database = db.url.database
    if not database or database == ":memory:":
        return FileLock(Path(f"/tmp/ctmirror-memory-{os.getpid()}.scheduler.lock"))
    return FileLock(Path(f"{Path(database).resolve()}.scheduler.lock"))
