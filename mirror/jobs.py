"""The sync job queue: the scheduler queues due runs of watches; any daemon's worker runs them.

A worker claims the oldest queued job with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; on SQLite
write transactions are serialized), marks it ``running`` under a lease it renews while the
sync runs, and marks it ``done`` or ``failed`` at the end. A worker stopped by a signal puts
its job back in the queue; a worker that died silently loses its lease, and the scheduler
queues the job again. A watch has at most one open (queued or running) job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from mirror.db import Database
from mirror.store import JobStatus, SyncJob, utcnow

OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    watch_id: int
    full: bool


def enqueue(db: Database, watch_id: int, *, full: bool) -> int | None:
    """Queue a run of a watch; None when one is already queued or running."""
    with db.write() as session:
        busy = session.scalar(
            select(SyncJob.id)
            .where(SyncJob.watch_id == watch_id, SyncJob.status.in_(OPEN))
            .limit(1)
        )
        if busy is not None:
            return None
        job = SyncJob(
            watch_id=watch_id, full=full, status=JobStatus.QUEUED, queued_at=utcnow(), attempts=0
        )
        session.add(job)
        session.flush()
        return job.id


def claim_job(db: Database, owner: str, lease: timedelta) -> ClaimedJob | None:
    """The oldest queued job, now ``running`` for ``owner``; None when the queue is empty."""
    now = utcnow()
    with db.write() as session:
        job = session.scalars(
            select(SyncJob)
            .where(SyncJob.status == JobStatus.QUEUED)
            .order_by(SyncJob.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if job is None:
            return None
        job.status, job.claimed_by, job.lease_until = JobStatus.RUNNING, owner, now + lease
        job.started_at, job.attempts = now, job.attempts + 1
        return ClaimedJob(job.id, job.watch_id, job.full)


def heartbeat(db: Database, job_id: int, owner: str, lease: timedelta) -> None:
    _update_own(db, job_id, owner, lease_until=utcnow() + lease)


def finish_job(
    db: Database, job_id: int, owner: str, *, ok: bool, run_id: int | None, error: str | None
) -> None:
    status = JobStatus.DONE if ok else JobStatus.FAILED
    _update_own(
        db, job_id, owner,
        status=status, finished_at=utcnow(), lease_until=None, run_id=run_id, error=error,
    )  # fmt: skip


def requeue_job(db: Database, job_id: int, owner: str) -> None:
    """Put a job this worker was stopped in the middle of back in the queue."""
    _update_own(db, job_id, owner, status=JobStatus.QUEUED, claimed_by=None, lease_until=None)


def _update_own(db: Database, job_id: int, owner: str, **values: Any) -> None:
    with db.write() as session:
        session.execute(
            update(SyncJob)
            .where(
                SyncJob.id == job_id,
                SyncJob.claimed_by == owner,
                SyncJob.status == JobStatus.RUNNING,
            )
            .values(**values)
        )


def requeue_expired(db: Database) -> int:
    """Queue again the running jobs whose worker stopped renewing its lease."""
    with db.write() as session:
        result = session.connection().execute(
            update(SyncJob)
            .where(SyncJob.status == JobStatus.RUNNING, SyncJob.lease_until < utcnow())
            .values(status=JobStatus.QUEUED, claimed_by=None, lease_until=None)
        )
        return int(result.rowcount or 0)


def last_queued(db: Database) -> dict[int, datetime]:
    """When each watch's newest job was queued: a failed run counts as an attempt."""
    with db.session() as session:
        rows = session.execute(
            select(SyncJob.watch_id, func.max(SyncJob.queued_at)).group_by(SyncJob.watch_id)
        )
        return {watch_id: queued for watch_id, queued in rows if queued is not None}


def job_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = dict(
            session.execute(select(SyncJob.status, func.count()).group_by(SyncJob.status)).all()
        )
    return {status.value: int(rows.get(status, 0)) for status in JobStatus}
