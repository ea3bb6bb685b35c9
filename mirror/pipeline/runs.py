"""A run of the pipeline as it is recorded: a ``sync_runs`` row, its status and counts, and one
summary log line. Syncs and imports are both runs (``selection`` says which: ``ids …``,
``watch …``, ``import <archive>``); ``ctmirror db stats``, ``/metrics`` and ``/healthz`` read them.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from sqlalchemy import select, update

from mirror.logging import bind_context, get_logger, unbind_context
from mirror.record import utcnow
from mirror.store import Database, RunStatus, SyncRun

log = get_logger(__name__)

# The counts a ``sync_runs`` row keeps.
RUN_COUNTS = ("fetched", "new", "changed", "unchanged", "gone", "failed")


class RecordedRun(Protocol):
    """What :func:`recorded` fills in and writes: a sync's or an import's summary."""

    run_id: int
    status: RunStatus
    error: str | None
    seconds: float

    def run_counts(self) -> Mapping[str, int]:
        """The counts for the ``sync_runs`` row (``RUN_COUNTS`` keys)."""
        ...

    def log_fields(self) -> Mapping[str, object]:
        """What the summary log line says besides status, seconds and error."""
        ...


def start_run(db: Database, selection: str) -> int:
    """A new ``sync_runs`` row; this host's runs whose process is gone become ``interrupted``."""
    host, pid = socket.gethostname(), os.getpid()
    with db.write() as session:
        for run in session.scalars(
            select(SyncRun).where(SyncRun.status == RunStatus.RUNNING, SyncRun.host == host)
        ):
            if not process_alive(run.pid):
                run.status, run.error = RunStatus.INTERRUPTED, "process ended mid-run"
        run = SyncRun(
            started_at=utcnow(), status=RunStatus.RUNNING, selection=selection,
            host=host, pid=pid, **dict.fromkeys(RUN_COUNTS, 0),
        )  # fmt: skip
        session.add(run)
        session.flush()
        return run.id


def _finish_run(
    db: Database, run_id: int, status: RunStatus, error: str | None, counts: Mapping[str, int]
) -> None:
    """Close a ``sync_runs`` row with its status and the counts it has (``RUN_COUNTS`` keys)."""
    with db.write() as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                error=error,
                **{k: counts.get(k, 0) for k in RUN_COUNTS},
            )
        )


@contextmanager
def recorded(db: Database, summary: RecordedRun, event: str) -> Iterator[None]:
    """The run of ``summary`` (its row already started): status, duration, the row's close and
    the summary log line ``event``, whatever the body does. A body that leaves the status
    ``running`` has succeeded; one that raises has failed, or was interrupted."""
    started = time.monotonic()
    bind_context(run_id=summary.run_id)
    try:
        yield
        if summary.status is RunStatus.RUNNING:
            summary.status = RunStatus.OK
    except (asyncio.CancelledError, KeyboardInterrupt):
        summary.status, summary.error = RunStatus.INTERRUPTED, "interrupted"
        raise
    except Exception as exc:
        summary.status, summary.error = RunStatus.FAILED, str(exc)
        raise
    finally:
        summary.seconds = time.monotonic() - started
        _finish_run(db, summary.run_id, summary.status, summary.error, summary.run_counts())
        log.info(
            event,
            status=summary.status.value,
            seconds=round(summary.seconds, 2),
            error=summary.error,
            **summary.log_fields(),
        )
        unbind_context("run_id")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (0: unknown, counted as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def relaxed_gc() -> Iterator[None]:
    """Collect garbage less often while parsing thousands of records: every record allocates
    thousands of objects that live until its batch is written, so the default thresholds make the
    collector scan them again and again (a quarter of a sync's time in bench/bench_sync.py)."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 50, 50)
    try:
        yield
    finally:
        gc.set_threshold(*before)
