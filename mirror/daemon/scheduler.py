"""When watches run; only the daemon holding the lock (:mod:`mirror.daemon.lock`) decides it.

Every watch has a timing: its ``schedule`` (``every 12h`` or a crontab line, in UTC), or by
default once a day ``daemon.refresh_delay_minutes`` after the registry's daily refresh (the
time of day of ``GET /version``'s ``dataTimestamp``). The daemon holding the scheduler lock
runs an APScheduler ``AsyncIOScheduler`` with one job per watch, which does not sync: it
*queues* a sync job (:mod:`mirror.daemon.jobs`) that any daemon's worker may run. A watch is due
when the first fire time after its last attempt has passed; due watches are queued at once when the
scheduler starts (or first sees the watch), so runs missed while no scheduler ran are caught up.
A run is a full re-check when the watch's last full one is ``daemon.full_recheck_days`` old.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from mirror.config import Settings
from mirror.daemon.jobs import enqueue, last_queued, requeue_expired
from mirror.logging import get_logger
from mirror.pipeline import INTERVAL, validate_schedule
from mirror.record import utcnow
from mirror.store import Database, Watch

log = get_logger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# -- timings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """When a watch runs: every ``interval``, or on a crontab line (UTC)."""

    interval: timedelta | None = None
    crontab: str | None = None

    def trigger(self, jitter: int, last: datetime | None) -> BaseTrigger:
        jitter_or_none = jitter or None
        if self.interval is not None:
            start = (last or utcnow()) + self.interval
            return IntervalTrigger(
                seconds=self.interval.total_seconds(),
                start_date=start,
                timezone=UTC,
                jitter=jitter_or_none,
            )
        assert self.crontab is not None
        return CronTrigger(**_cron_fields(self.crontab), timezone=UTC, jitter=jitter_or_none)

    def next_after(self, last: datetime) -> datetime:
        """The first run time after ``last`` (without jitter)."""
        if self.interval is not None:
            return last + self.interval
        fire = self.trigger(0, last).get_next_fire_time(None, last + timedelta(microseconds=1))
        assert isinstance(fire, datetime)
        return fire

    def describe(self) -> str:
        if self.interval is not None:
            return f"every {self.interval}"
        return f"cron {self.crontab} (UTC)"


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_fields(crontab: str) -> dict[str, str]:
    """APScheduler 3 numbers weekdays from Monday = 0; crontab from Sunday = 0 (or 7): name them."""
    minute, hour, day, month, day_of_week = crontab.split()
    day_of_week = re.sub(r"(?<![/\d])\d+", lambda m: _WEEKDAYS[int(m[0]) % 7], day_of_week)
    return {"minute": minute, "hour": hour, "day": day, "month": month,
            "day_of_week": day_of_week}  # fmt: skip


def _timing_of(schedule: str | None, default: Timing) -> Timing:
    """A watch's timing from its ``schedule`` (validated as ``watch add`` validates it)."""
    text_ = validate_schedule(schedule)
    if text_ is None:
        return default
    match = INTERVAL.match(text_)
    if match:
        return Timing(interval=timedelta(seconds=int(match[1]) * _UNITS[match[2]]))
    return Timing(crontab=text_)


_TIME = re.compile(r"T(\d{2}):(\d{2})")


def default_timing(data_timestamp: str | None, delay_minutes: int) -> Timing:
    """Daily, ``delay_minutes`` after the time of day of the registry's ``dataTimestamp``
    (read as UTC); every 24 hours when the registry did not say."""
    match = _TIME.search(data_timestamp or "")
    if match is None:
        return Timing(interval=timedelta(days=1))
    at = datetime(2000, 1, 1, int(match[1]), int(match[2])) + timedelta(minutes=delay_minutes)
    return Timing(crontab=f"{at.minute} {at.hour} * * *")


# -- what is due --------------------------------------------------------------------------------


def _full_due(watch: Watch, settings: Settings, now: datetime) -> bool:
    """Whether a watch's next run should be a full re-check rather than an incremental pass."""
    last = watch.last_full_run_at
    return last is None or now - last >= timedelta(days=settings.daemon.full_recheck_days)


def is_due(watch: Watch, timing: Timing, last_attempt: datetime | None, now: datetime) -> bool:
    last = max((t for t in (watch.last_run_at, last_attempt) if t is not None), default=None)
    return last is None or timing.next_after(last) <= now


def enqueue_due(
    db: Database, settings: Settings, default: Timing, watches: Sequence[Watch] | None = None
) -> list[int]:
    """Queue a run of every due watch (of ``watches``, default all); the ids of new jobs."""
    now = utcnow()
    if watches is None:
        with db.session() as session:
            watches = list(session.scalars(select(Watch).order_by(Watch.id)))
    attempts = last_queued(db)
    queued = []
    for watch in watches:
        timing = _timing_of(watch.schedule, default)
        if is_due(watch, timing, attempts.get(watch.id), now):
            full = _full_due(watch, settings, now)
            job = enqueue(db, watch.id, full=full, part_size=settings.daemon.part_size)
            if job is not None:
                log.info("daemon.queued", watch=watch.name, job_id=job, reason="due")
                queued.append(job)
    return queued


# -- the scheduler ------------------------------------------------------------------------------


class WatchScheduler:
    """The APScheduler side, run by the daemon holding the lock: one job per watch, plus a
    periodic re-read of the watches (added, removed, re-scheduled) and of stale job leases."""

    def __init__(
        self, db: Database, settings: Settings, default: Timing, on_queued: Callable[[], None]
    ) -> None:
        self.db, self.settings, self.default = db, settings, default
        self._on_queued = on_queued
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._known: dict[int, str | None] = {}  # watch id -> the schedule its job was built for
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._scheduler.add_job(
            self.reconcile, IntervalTrigger(seconds=self.settings.daemon.check_seconds,
                                            timezone=UTC),
            id="reconcile", next_run_time=utcnow(), coalesce=True, misfire_grace_time=None,
        )  # fmt: skip
        self._scheduler.start()
        log.info("daemon.scheduler_started", default_timing=self.default.describe())

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def reconcile(self) -> None:
        """Bring the per-watch jobs in line with the watches table; queue what is due."""
        try:
            async with self._lock:
                await self._reconcile()
        except Exception as exc:  # a database outage: the next re-read tries again
            log.error("daemon.reconcile_failed", error=str(exc), exc_type=type(exc).__name__)

    async def _reconcile(self) -> None:
        if requeued := await asyncio.to_thread(requeue_expired, self.db):
            log.warning("daemon.jobs_requeued", jobs=requeued, reason="lease expired")
            self._on_queued()
        watches = await asyncio.to_thread(_all_watches, self.db)
        attempts = await asyncio.to_thread(last_queued, self.db)
        for gone in set(self._known) - {w.id for w in watches}:
            self._scheduler.remove_job(f"watch:{gone}")
            del self._known[gone]
        fresh = [w for w in watches if self._known.get(w.id, "?") != w.schedule]
        for watch in fresh:
            self._schedule(watch, attempts.get(watch.id))
        if not fresh:
            return
        queued = await asyncio.to_thread(enqueue_due, self.db, self.settings, self.default, fresh)
        if queued:
            self._on_queued()

    def _schedule(self, watch: Watch, last_attempt: datetime | None) -> None:
        timing = _timing_of(watch.schedule, self.default)
        last = max((t for t in (watch.last_run_at, last_attempt) if t), default=None)
        self._scheduler.add_job(
            self.fire, timing.trigger(self.settings.daemon.jitter_seconds, last),
            args=[watch.id], id=f"watch:{watch.id}", name=watch.name, replace_existing=True,
            coalesce=True, misfire_grace_time=None, max_instances=1,
        )  # fmt: skip
        self._known[watch.id] = watch.schedule
        log.info("daemon.watch_scheduled", watch=watch.name, timing=timing.describe())

    async def fire(self, watch_id: int) -> None:
        """A watch's time has come: queue its run (full when the last full one is old)."""
        try:
            async with self._lock:
                job = await asyncio.to_thread(self._enqueue, watch_id)
        except Exception as exc:
            log.error("daemon.queue_failed", watch_id=watch_id, error=str(exc))
            return
        if job is not None:
            self._on_queued()

    def _enqueue(self, watch_id: int) -> int | None:
        with self.db.session() as session:
            watch = session.get(Watch, watch_id)
        if watch is None:
            return None
        full = _full_due(watch, self.settings, utcnow())
        job = enqueue(self.db, watch.id, full=full, part_size=self.settings.daemon.part_size)
        log.info("daemon.queued", watch=watch.name, job_id=job, reason="schedule")
        return job


def _all_watches(db: Database) -> list[Watch]:
    with db.session() as session:
        return list(session.scalars(select(Watch).order_by(Watch.id)))
