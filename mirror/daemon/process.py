"""``ctmirror daemon``: the scheduler (when this process holds the lock), sync workers, the
webhook dispatcher and the notification dispatcher (with its digests), in one asyncio loop.

Every daemon runs workers and a dispatcher; only the one holding the scheduler lock queues
runs. SIGTERM or SIGINT stops taking work: a sync in hand is cancelled between its batch
transactions (the batch being written commits whole or rolls back) and its job goes back to
the queue; deliveries in flight get a few seconds to finish, the rest are handed back. The
process exits 0 within ``SHUTDOWN_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mirror.app import App
from mirror.daemon.jobs import (
    ClaimedJob,
    claim_job,
    finish_job,
    finish_part,
    heartbeat,
    requeue_job,
)
from mirror.daemon.lock import SchedulerLock, scheduler_lock
from mirror.daemon.scheduler import Timing, WatchScheduler, default_timing, enqueue_due
from mirror.export import audit_watch, record_audit
from mirror.logging import get_logger
from mirror.notify import HttpSender, WebhookSender, owner_name
from mirror.pipeline import RunSummary, SyncRequest
from mirror.source import ApiSource
from mirror.store import Watch, prune_raw

log = get_logger(__name__)

# Deliveries in flight at a stop get this long to finish; the whole stop stays under 10 s.
SHUTDOWN_GRACE_SECONDS = 4.0
MAINTENANCE_SECONDS = 24 * 3600  # the scheduler runs housekeeping once a day


@dataclass
class OnceSummary:
    scheduler: bool  # this process held the lock and queued the due watches
    queued: int
    runs: list[RunSummary]
    attempts: int  # webhook deliveries attempted
    notifications: int = 0  # notifications attempted (digests due now included)


class Daemon:
    """Wires workers, dispatcher and scheduler; ``run`` until a signal, or ``run_once``."""

    def __init__(self, app: App, sender: WebhookSender | None = None) -> None:
        self.app, self.settings = app, app.settings
        self.owner = owner_name()
        self.sender = sender or app.sender()
        self._owns_sender = sender is None
        self.dispatcher = app.dispatcher(self.sender, self.owner)
        self.notifications = app.notification_dispatcher(app.notifier(), self.owner)
        self.stop = asyncio.Event()
        self._jobs_ready = asyncio.Event()
        self._lease = timedelta(seconds=self.settings.daemon.lease_seconds)
        self._source: ApiSource | None = None
        self._next_prune = 0.0  # time.monotonic() of the next raw-JSON retention pass

    # -- entry points -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop`` is set)."""
        log.info("daemon.start", owner=self.owner)
        self._install_signals()
        async with self.app.source() as source:
            self._source = source
            tasks = [
                asyncio.create_task(self.dispatcher.run(self.stop, SHUTDOWN_GRACE_SECONDS)),
                asyncio.create_task(self.notifications.run(self.stop, SHUTDOWN_GRACE_SECONDS)),
                asyncio.create_task(self._lead()),
                *(asyncio.create_task(self._work()) for _ in range(self.settings.daemon.workers)),
            ]
            await self.stop.wait()
            log.info("daemon.stopping", owner=self.owner)
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._close()
        log.info("daemon.stopped", owner=self.owner)

    async def run_once(self) -> OnceSummary:
        """Queue every due watch (when this process can hold the lock), run the queue empty,
        deliver every due webhook and notification (and digest), and return."""
        self._install_signals()
        lock = scheduler_lock(self.app.db)
        async with self.app.source() as source:
            self._source = source
            leader = await asyncio.to_thread(lock.acquire)
            try:
                queued = await self._queue_due() if leader else []
                if leader:
                    await self._maintain()
                runs = await self._work_until_empty()
                attempts = 0 if self.stop.is_set() else await self.dispatcher.drain()
                notified = 0 if self.stop.is_set() else await self.notifications.drain()
            finally:
                await asyncio.to_thread(lock.release)
        await self._close()
        return OnceSummary(leader, len(queued), runs, attempts, notified)

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("daemon.signal", action="stopping")
        self.stop.set()
        self._jobs_ready.set()
        self._wake_dispatchers()

    def _wake_dispatchers(self) -> None:
        self.dispatcher.wake()
        self.notifications.wake()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)

    async def _close(self) -> None:
        if self._owns_sender and isinstance(self.sender, HttpSender):
            await self.sender.aclose()

    # -- scheduling ---------------------------------------------------------------------------

    async def _default_timing(self) -> Timing:
        assert self._source is not None
        delay = self.settings.daemon.refresh_delay_minutes
        try:
            stamp = await self._source.data_timestamp()
        except Exception as exc:  # the registry is down: run daily from now on
            log.warning("daemon.registry_refresh_unknown", error=str(exc))
            stamp = None
        return default_timing(stamp, delay)

    async def _queue_due(self) -> list[int]:
        default = await self._default_timing()
        return await asyncio.to_thread(enqueue_due, self.app.db, self.settings, default)

    async def _lead(self) -> None:
        """Try to become the scheduler; schedule while the lock holds; else stand by."""
        lock = scheduler_lock(self.app.db)
        standby_logged = False
        while not self.stop.is_set():
            try:
                if await asyncio.to_thread(lock.acquire):
                    log.info("daemon.role", role="scheduler", owner=self.owner)
                    await self._schedule_while_held(lock)
                    standby_logged = False
                elif not standby_logged:
                    log.info("daemon.role", role="standby", owner=self.owner)
                    standby_logged = True
            except Exception as exc:
                log.error("daemon.lock_error", error=str(exc), exc_type=type(exc).__name__)
            await self._pause(self.settings.daemon.check_seconds)
        await asyncio.to_thread(lock.release)

    async def _schedule_while_held(self, lock: SchedulerLock) -> None:
        scheduler = WatchScheduler(
            self.app.db, self.settings, await self._default_timing(), self._jobs_ready.set
        )
        scheduler.start()
        try:
            while not self.stop.is_set():
                await self._maintain()
                await self._pause(self.settings.daemon.check_seconds)
                if not self.stop.is_set() and not await asyncio.to_thread(lock.held):
                    log.warning("daemon.role", role="standby", reason="scheduler lock lost")
                    return
        finally:
            scheduler.shutdown()
            await asyncio.to_thread(lock.release)

    async def _maintain(self) -> None:
        """The scheduler's daily housekeeping: the raw-JSON retention, when configured."""
        days = self.settings.database.raw_retention_days
        if days is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + MAINTENANCE_SECONDS
        try:
            await asyncio.to_thread(prune_raw, self.app.db, days)
        except Exception as exc:  # retried at the next pass; never stops the scheduler
            log.error("daemon.prune_failed", error=str(exc), exc_type=type(exc).__name__)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # -- sync workers -------------------------------------------------------------------------

    async def _work(self) -> None:
        while not self.stop.is_set():
            job = await self._claim()
            if job is not None:
                await self._run_job(job)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._jobs_ready.wait(), self.settings.daemon.check_seconds)
            self._jobs_ready.clear()

    async def _work_until_empty(self) -> list[RunSummary]:
        runs = []
        while not self.stop.is_set() and (job := await self._claim()) is not None:
            if (summary := await self._run_job(job)) is not None:
                runs.append(summary)
        return runs

    async def _claim(self) -> ClaimedJob | None:
        try:
            return await asyncio.to_thread(claim_job, self.app.db, self.owner, self._lease)
        except Exception as exc:
            log.error("daemon.claim_failed", error=str(exc), exc_type=type(exc).__name__)
            return None

    async def _run_job(self, job: ClaimedJob) -> RunSummary | None:
        """Run one claimed job to its end, or until a stop; never raises."""
        watch = await asyncio.to_thread(_load_watch, self.app, job.watch_id)
        if watch is None:
            await self._db(finish_job, job.id, ok=False, run_id=None, error="watch removed")
            return None
        log.info("daemon.job_start", job_id=job.id, watch=watch.name, full=job.full)
        sync = asyncio.create_task(self._sync(watch, job))
        beat = asyncio.create_task(self._heartbeat(job))
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait({sync, stopped}, return_when=asyncio.FIRST_COMPLETED)
        beat.cancel()
        stopped.cancel()
        if not sync.done():
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            await self._db(requeue_job, job.id)
            log.info("daemon.job_interrupted", job_id=job.id, watch=watch.name, requeued=True)
            return None
        return await self._finish(job, watch, sync)

    async def _sync(self, watch: Watch, job: ClaimedJob) -> RunSummary:
        assert self._source is not None
        syncer = self.app.syncer(self._source)
        request = SyncRequest(watch=watch, full=job.full, part=job.part)
        # Each committed batch may hold new versions: let the dispatcher look now.
        return await syncer.run(request, lambda total, done: self._wake_dispatchers())

    async def _finish(
        self, job: ClaimedJob, watch: Watch, sync: asyncio.Task[RunSummary]
    ) -> RunSummary | None:
        error = sync.exception()
        if error is not None:  # e.g. the source is down: logged; the next tick tries again
            log.error("daemon.job_failed", job_id=job.id, watch=watch.name, error=str(error))
            await self._db(finish_job, job.id, ok=False, run_id=None, error=str(error))
            return None
        summary = sync.result()
        ok = summary.status.completed
        if job.group_id is None:
            await self._db(finish_job, job.id, ok=ok, run_id=summary.run_id, error=summary.error)
        else:
            await self._finish_part(job, watch, summary)
        log.info("daemon.job_done", job_id=job.id, watch=watch.name, status=summary.status.value)
        if ok and job.full and job.group_id is None:
            await self._audit(watch)
        self._wake_dispatchers()
        return summary

    async def _finish_part(self, job: ClaimedJob, watch: Watch, summary: RunSummary) -> None:
        """Finish a part; the last one of a run completes the run (mirror.daemon.jobs)."""
        ok = summary.status.completed
        try:
            queued_at = await asyncio.to_thread(
                finish_part, self.app.db, job, self.owner,
                ok=ok, run_id=summary.run_id, error=summary.error,
            )  # fmt: skip
            if queued_at is not None:
                assert self._source is not None
                await self.app.syncer(self._source).complete_parts(watch, queued_at)
        except Exception as exc:  # the run is not recorded as done: the next one is full again
            log.error("daemon.part_finish_failed", job_id=job.id, error=str(exc))
            return
        if queued_at is not None:
            await self._audit(watch)

    async def _audit(self, watch: Watch) -> None:
        """After a full run: is the watch complete? Logged and stored (``/healthz`` shows the
        last one); a failure is logged and never stops the worker."""
        assert self._source is not None
        if not self.settings.daemon.audit_after_full_run:
            return
        try:
            result = await audit_watch(self.app.db, self._source, watch, self.settings)
            await asyncio.to_thread(record_audit, self.app.db, watch, result)
        except Exception as exc:
            log.error("daemon.audit_failed", watch=watch.name, error=str(exc))
            return
        level = log.info if result.status == "ok" else log.warning
        level(
            "daemon.audit", watch=watch.name, status=result.status,
            registry_total=result.registry_total, mirror_total=result.mirror_total,
            missing=result.missing_count, extra=result.extra_count, stale=len(result.stale),
            error=result.error,
        )  # fmt: skip

    async def _heartbeat(self, job: ClaimedJob) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            await self._db(heartbeat, job.id, lease=self._lease)

    async def _db(self, fn: Any, job_id: int, **kwargs: Any) -> None:
        """A job bookkeeping write; a failure is logged (the lease recovers the job)."""
        try:
            await asyncio.to_thread(lambda: fn(self.app.db, job_id, self.owner, **kwargs))
        except Exception as exc:
            log.error("daemon.job_write_failed", job_id=job_id, error=str(exc))


def _load_watch(app: App, watch_id: int) -> Watch | None:
    with app.db.session() as session:
        return session.get(Watch, watch_id)


def run_daemon(app: App, *, once: bool) -> OnceSummary | None:
    """The CLI's entry: a fresh event loop, the daemon, and nothing left running after."""

    async def main() -> OnceSummary | None:
        daemon = Daemon(app)
        if once:
            return await daemon.run_once()
        await daemon.run()
        return None

    return asyncio.run(main())
