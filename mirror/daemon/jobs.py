"""The sync job queue: the scheduler queues due runs of watches; any daemon's worker runs them.

A worker claims the oldest queued job with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; on SQLite
write transactions are serialized), marks it ``running`` under a lease it renews while the
sync runs, and marks it ``done`` or ``failed`` at the end. A worker stopped by a signal puts
its job back in the queue; a worker that died silently loses its lease, and the scheduler
queues the job again. A watch has at most one open (queued or running) run.

A full run of a watch covering more than ``daemon.part_size`` studies is queued as parts, one
job each, so that the daemons sharing the database (on any host) run it together: an ids watch
in slices of its ids; a search (or the whole registry) in ranges of LastUpdatePostDate cut at
the dates that split its current members evenly. The worker that finishes the last part
completes the run (``Syncer.complete_parts``): members no part saw are re-checked by id (a
study updated mid-run may move between ranges; one that left the registry is found gone) and
the watch's full run is recorded. Incremental runs are small and never split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Update, func, select, update
from sqlalchemy.orm import Session

from mirror.pipeline import Part
from mirror.record import utcnow
from mirror.store import Database, JobStatus, Study, SyncJob, Watch, WatchKind, WatchStudy

OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    watch_id: int
    full: bool
    part: Part | None = None
    group_id: int | None = None


def enqueue(db: Database, watch_id: int, *, full: bool, part_size: int | None = None) -> int | None:
    """Queue a run of a watch (a full one of a watch of more than ``part_size`` studies in
    parts); the id of its (first) job, or None when a run is already queued or running."""
    with db.write() as session:
        busy = session.scalar(
            select(SyncJob.id)
            .where(SyncJob.watch_id == watch_id, SyncJob.status.in_(OPEN))
            .limit(1)
        )
        watch = session.get(Watch, watch_id)
        if busy is not None or watch is None:
            return None
        parts = _plan_parts(session, watch, part_size) if full and part_size else []
        slices: list[Part | None] = [*parts] or [None]
        now = utcnow()
        jobs = [
            SyncJob(
                watch_id=watch_id,
                full=full,
                status=JobStatus.QUEUED,
                queued_at=now,
                attempts=0,
                part=part.as_json() if part else None,
                parts=max(1, len(parts)),
            )  # fmt: skip
            for part in slices
        ]
        session.add_all(jobs)
        session.flush()
        if len(jobs) > 1:
            for job in jobs:
                job.group_id = jobs[0].id
        return jobs[0].id


def _plan_parts(session: Session, watch: Watch, part_size: int) -> list[Part]:
    """The parts of a full run of ``watch``: none when it covers at most ``part_size`` studies."""
    if watch.kind is WatchKind.IDS:
        ids = list(watch.nct_ids)
        slices = [tuple(ids[i : i + part_size]) for i in range(0, len(ids), part_size)]
        if len(slices) < 2:
            return []
        return [Part(n, len(slices), ids=chunk) for n, chunk in enumerate(slices, 1)]
    members = session.scalars(
        select(Study.source_date)
        .join(WatchStudy, WatchStudy.study_id == Study.id)
        .where(WatchStudy.watch_id == watch.id)
    )
    dates = sorted(day for day in members if day is not None)
    if not dates:
        return []
    # Cut at the dates that split the members evenly (a date is one cut: ranges are whole days).
    cuts = sorted({dates[i] for i in range(part_size, len(dates), part_size)} - {dates[0]})
    if not cuts:
        return []
    starts = ["MIN", *cuts]
    ends = [_day_before(cut) for cut in cuts] + ["MAX"]
    return [
        Part(n, len(starts), updated=(low, high))
        for n, (low, high) in enumerate(zip(starts, ends, strict=True), 1)
    ]


def _day_before(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


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
        part = Part.of_json(job.part) if job.part else None
        return ClaimedJob(job.id, job.watch_id, job.full, part, job.group_id)


def heartbeat(db: Database, job_id: int, owner: str, lease: timedelta) -> None:
    _update_own(db, job_id, owner, lease_until=utcnow() + lease)


def finish_job(
    db: Database, job_id: int, owner: str, *, ok: bool, run_id: int | None, error: str | None
) -> None:
    with db.write() as session:
        session.execute(_finished(job_id, owner, ok=ok, run_id=run_id, error=error))


def finish_part(
    db: Database, job: ClaimedJob, owner: str, *, ok: bool, run_id: int | None, error: str | None
) -> datetime | None:
    """Finish a part like :func:`finish_job`; when it was the last part of its run and every
    part succeeded, when the run was queued (the caller completes the run), else None. Exactly
    one finisher of a run gets a time: finishers of one run take turns on its first row.
    """
    assert job.group_id is not None
    with db.write() as session:
        session.scalars(
            select(SyncJob.id).where(SyncJob.id == job.group_id).with_for_update()
        ).first()
        done = session.execute(_finished(job.id, owner, ok=ok, run_id=run_id, error=error))
        if not ok or not getattr(done, "rowcount", 0):
            return None
        statuses = session.execute(
            select(SyncJob.status, func.min(SyncJob.queued_at))
            .where(SyncJob.group_id == job.group_id)
            .group_by(SyncJob.status)
        ).all()
    if [status for status, _ in statuses] != [JobStatus.DONE]:
        return None  # parts still open, or one failed (the next scheduled run tries again)
    queued: datetime | None = statuses[0][1]
    return queued


def requeue_job(db: Database, job_id: int, owner: str) -> None:
    """Put a job this worker was stopped in the middle of back in the queue."""
    _update_own(db, job_id, owner, status=JobStatus.QUEUED, claimed_by=None, lease_until=None)


def _update_own(db: Database, job_id: int, owner: str, **values: Any) -> None:
    with db.write() as session:
        session.execute(_own(job_id, owner).values(**values))


def _own(job_id: int, owner: str) -> Update:
    """An update of job ``job_id`` that changes it only while ``owner`` runs it."""
    return update(SyncJob).where(
        SyncJob.id == job_id, SyncJob.claimed_by == owner, SyncJob.status == JobStatus.RUNNING
    )


def _finished(
    job_id: int, owner: str, *, ok: bool, run_id: int | None, error: str | None
) -> Update:
    status = JobStatus.DONE if ok else JobStatus.FAILED
    return _own(job_id, owner).values(
        status=status, finished_at=utcnow(), lease_until=None, run_id=run_id, error=error
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


def _job_counts(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = dict(
            session.execute(select(SyncJob.status, func.count()).group_by(SyncJob.status)).all()
        )
    return {status.value: int(rows.get(status, 0)) for status in JobStatus}
