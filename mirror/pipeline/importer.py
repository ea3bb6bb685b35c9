"""An import run: an archive's records through the ingest stage, by one or several workers.

One run = one ``sync_runs`` row, one summary line, and the counts read / new / changed /
unchanged / failed. Records are read and parsed in a background thread one batch ahead of the
batch being written, and written by :meth:`Ingestor.ingest` with origin ``archive``. A record
whose NCT id can be seen in its bytes goes as a :class:`Sighting`: it is parsed only when its
bytes are not the ones stored with its study.

An archive that can be split (see :mod:`mirror.source.archive`) is imported in *batches* recorded in
``import_batches``: the first worker plans them, every worker (threads, processes, hosts) claims
one at a time with ``FOR UPDATE SKIP LOCKED`` under a lease that a heartbeat renews while the
batch is written, and marks it done after its write (a replay writes nothing twice: the ingest
stage's unique constraints see to it). A worker that dies loses its lease and another takes its
batch over. Workers given the same archive join the same unfinished import; once an import is
finished the next one of the same archive is a new round. The rest (standard input, a zip
without its central directory) is read in order by one worker, without batches.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from mirror.config import Settings
from mirror.errors import MalformedRecord, UsageError
from mirror.logging import bind_context, configure_logging, get_logger
from mirror.pipeline.import_batches import (
    COUNTS,
    ClaimedBatch,
    ImportRound,
    Tally,
    claim_batch,
    finish_batch,
    open_round,
    records_done,
    release_batches,
    release_orphans,
    renew_leases,
    round_tally,
    wait_time,
)
from mirror.pipeline.ingest import Ingestor
from mirror.pipeline.ingest_items import IngestResult, Outcome, Sighting
from mirror.pipeline.runs import process_alive, recorded, relaxed_gc, start_run
from mirror.record import guess_nct_id, utcnow
from mirror.source import (
    ArchiveDamaged,
    NdjsonArchive,
    Observation,
    Record,
    RecordSource,
    open_archive,
    to_observation,
)
from mirror.store import Database, RunStatus

log = get_logger(__name__)

Progress = Callable[[int | None, int], None]  # (total if now known, records done since last call)
AUTO_WORKERS_MAX = 4
NDJSON_RECORD_BYTES = 20_000  # about what one registry study takes as a line of NDJSON
T = TypeVar("T")


def _quiet(total: int | None, done: int) -> None:
    pass


@dataclass
class ImportSummary:
    run_id: int
    archive: str
    tally: Tally = field(default_factory=Tally)
    seconds: float = 0.0
    status: RunStatus = RunStatus.RUNNING
    error: str | None = None

    def line(self) -> str:
        c = self.tally.counts
        return (
            f"import {self.status.value}: {c['read']} read, {c['new']} new, {c['changed']} "
            f"changed, {c['unchanged']} unchanged, {c['failed']} failed in {self.seconds:.1f}s "
            f"(run {self.run_id})"
        )

    def run_counts(self) -> dict[str, int]:
        c = self.tally.counts
        return {"fetched": c["read"]} | {k: c[k] for k in ("new", "changed", "unchanged", "failed")}

    def log_fields(self) -> dict[str, object]:
        return {"archive": self.archive, **{k: self.tally.counts[k] for k in COUNTS}}

    def settle(self) -> None:
        """A run that read everything it could: failed when the archive was damaged, partial
        when records of it failed."""
        damage = self.tally.damage
        if damage:
            self.status = RunStatus.FAILED
            self.error = "; ".join(damage[:3]) + (" …" if len(damage) > 3 else "")
        elif self.tally.counts["failed"]:
            self.status = RunStatus.PARTIAL


@dataclass
class Loaded:
    """A batch read and parsed, waiting to be written."""

    batch: ClaimedBatch | None
    observations: list[Observation | Sighting]
    labels: dict[str, str]  # nct_id -> record label
    tally: Tally
    size: int  # records the progress bar moves by


# -- one worker ----------------------------------------------------------------------------------


class Importer:
    """Imports archives into one database; one instance is one worker."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        lease: timedelta | None = None,
        owner: str | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.db = db
        self.settings = settings
        self._stop = stop  # asked before each batch is claimed: True ends the work there
        self.batch_size = settings.sync.batch_size
        self.lease = lease or timedelta(seconds=settings.daemon.lease_seconds)
        self.owner = owner or _worker_name()

    def run(
        self,
        source: RecordSource,
        observed_at: datetime | None = None,
        progress: Progress | None = None,
    ) -> ImportSummary:
        """Import ``source`` in this process, as one run."""
        rnd = open_round(self.db, source, self.batch_size, observed_at) if source.key else None
        with _recorded(self.db, source.name) as summary:
            if rnd is None:
                when = observed_at or utcnow()
                self.stream(source, when, summary.run_id, progress, summary.tally)
            else:
                self.work(source, rnd, summary.run_id, progress, summary.tally)
        return summary

    def work(
        self,
        source: RecordSource,
        rnd: ImportRound,
        run_id: int,
        progress: Progress | None = None,
        tally: Tally | None = None,
    ) -> Tally:
        """Claim and write batches of ``rnd`` until none is left (waiting out others' leases).

        Counts go to ``tally`` batch by batch, so an interrupted worker's are not lost.
        """
        (progress or _quiet)(rnd.total, rnd.done)
        release_orphans(self.db, rnd)
        try:
            return self._write(self._claimed(source, rnd), run_id, progress, tally)
        except BaseException:
            release_batches(self.db, self.owner)
            raise

    def stream(
        self,
        source: RecordSource,
        observed_at: datetime,
        run_id: int,
        progress: Progress | None = None,
        tally: Tally | None = None,
    ) -> Tally:
        """Read ``source`` in order and write it, without batches in the database."""
        (progress or _quiet)(source.total, 0)
        return self._write(self._streamed(source, observed_at), run_id, progress, tally)

    def _write(
        self, items: Iterator[Loaded], run_id: int, progress: Progress | None, tally: Tally | None
    ) -> Tally:
        ingestor = Ingestor(self.db, ignore=self.settings.diff.ignore, run_id=run_id)
        tally = Tally() if tally is None else tally
        progress = progress or _quiet
        with self._leases_kept(), _read_ahead(items) as loaded_batches:
            for loaded in loaded_batches:
                batch_tally = _count(loaded, ingestor.ingest(loaded.observations))
                if loaded.batch is not None:
                    finish_batch(self.db, loaded.batch, self.owner, batch_tally, run_id)
                tally.add(batch_tally)
                progress(None, loaded.size)
        return tally

    # -- reading (in the background thread) ------------------------------------------------

    def _claimed(self, source: RecordSource, rnd: ImportRound) -> Iterator[Loaded]:
        while not self._stop():
            batch = claim_batch(self.db, rnd, self.owner, self.lease)
            if batch is None:
                pause = wait_time(self.db, rnd, self.owner)
                if pause is None:
                    return
                time.sleep(pause)
                continue
            records, damage = [], None
            try:
                for chunk in source.batches(batch.count, batch.span):
                    records += chunk
            except ArchiveDamaged as exc:
                damage = exc.message
            yield _parse(records, rnd.observed_at, batch, damage, batch.count)

    def _streamed(self, source: RecordSource, observed_at: datetime) -> Iterator[Loaded]:
        batches = source.batches(self.batch_size)
        while True:
            try:
                records = next(batches, None)
            except ArchiveDamaged as exc:
                yield _parse([], observed_at, None, exc.message, 0)
                return
            if records is None:
                return
            yield _parse(records, observed_at, None, None, len(records))

    @contextmanager
    def _leases_kept(self) -> Iterator[None]:
        """Renew this worker's leases in the background while it works."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease.total_seconds() / 3):
                try:
                    renew_leases(self.db, self.owner, self.lease)
                except Exception as exc:  # the next beat tries again; the lease has slack
                    log.warning("import.lease_renewal_failed", error=str(exc))

        thread = threading.Thread(target=beat, name="ctmirror-import-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _parse(
    records: Sequence[Record],
    observed_at: datetime,
    batch: ClaimedBatch | None,
    damage: str | None,
    size: int,
) -> Loaded:
    loaded = Loaded(batch, [], {}, Tally(), size)
    loaded.tally.counts["read"] = len(records)
    for record in records:
        # Parsed only if its bytes are not the ones stored (the ingest stage's raw fingerprint).
        guess = guess_nct_id(record.data)
        if guess is not None:
            loaded.observations.append(Sighting(guess, record.data, observed_at, record.label))
            loaded.labels[guess] = record.label
            continue
        try:
            obs = to_observation(record, observed_at)
        except MalformedRecord as exc:
            loaded.tally.fail(record.label, exc.message)
            continue
        loaded.observations.append(obs)
        loaded.labels[obs.nct_id] = record.label
    if damage is not None:
        loaded.tally.damage.append(damage)
        log.error("import.archive_damaged", error=damage)
    return loaded


def _count(loaded: Loaded, results: list[IngestResult]) -> Tally:
    tally = loaded.tally
    for result in results:
        if result.outcome is Outcome.FAILED:
            tally.fail(loaded.labels.get(result.nct_id, result.nct_id), result.error or "failed")
        else:
            tally.counts[result.outcome.value] += 1
    return tally


@contextmanager
def _read_ahead(items: Iterator[T]) -> Iterator[Iterator[T]]:
    """Iterate ``items`` in a background thread, one item ahead of the consumer."""
    slot: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slot.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((False, item)):
                    return
            offer((True, None))
        except BaseException as exc:
            offer((True, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            ended, value = slot.get()
            if ended:
                if value is not None:
                    raise value
                return
            yield value

    thread = threading.Thread(target=produce, name="ctmirror-import-reader", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()


# -- the run -------------------------------------------------------------------------------------


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def _recorded(db: Database, archive: str) -> Iterator[ImportSummary]:
    """One import run: its ``sync_runs`` row, status, duration and summary log line."""
    summary = ImportSummary(start_run(db, f"import {archive}"), archive)
    with recorded(db, summary, "import.run"), relaxed_gc():
        yield summary
        summary.settle()


# -- several worker processes --------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process is given (it crosses a process boundary: plain data only)."""

    settings: Settings
    path: str
    round: ImportRound
    run_id: int
    parent_pid: int  # the supervising process: a worker stops taking batches once it is gone


def run_workers(
    db: Database,
    settings: Settings,
    path: str,
    workers: int,
    observed_at: datetime | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import ``path`` with ``workers`` processes of this host, as one run.

    Each process reads, normalizes and writes batches of its own; on SQLite they take turns
    writing (one writer at a time), which costs little: reading and normalizing are most of
    an import.
    """
    if path == "-":
        raise UsageError("standard input can only be read in order: import it without --workers")
    source = open_archive(path)
    if source.key is None:
        raise UsageError(
            f"{source.name} has no central directory (a truncated zip?), so it can only be read "
            "in order: import it without --workers"
        )
    rnd = open_round(db, source, settings.sync.batch_size, observed_at)
    with _recorded(db, source.name) as summary:
        job = WorkerJob(settings, path, rnd, summary.run_id, os.getpid())
        crashed = _supervise(db, job, workers, progress or _quiet)
        summary.tally = round_tally(db, rnd, summary.run_id)
        summary.tally.damage += crashed
    return summary


def auto_workers(source: RecordSource, batch_size: int) -> int:
    """How many worker processes ``ctmirror import`` starts when not told: one per CPU (at most
    AUTO_WORKERS_MAX) for an archive of more than a few batches, else one (no process to start).
    """
    if source.key is None:
        return 1
    total = source.total
    if total is None and isinstance(source, NdjsonArchive) and source.path is not None:
        total = source.path.stat().st_size // NDJSON_RECORD_BYTES  # not counted before planning
    if total is None or total <= 4 * batch_size:
        return 1
    return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_MAX))


def _supervise(db: Database, job: WorkerJob, workers: int, progress: Progress) -> list[str]:
    """Start the worker processes, show their progress, wait for them; what went wrong."""
    context = _worker_context(db)
    processes = [
        context.Process(target=_work_in_process, args=(job,), name=f"import-worker-{n + 1}")
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    shown = job.round.done
    progress(job.round.total, shown)
    try:
        while alive := [p for p in processes if p.is_alive()]:
            alive[0].join(0.5)
            done = records_done(db, job.round)
            progress(None, done - shown)
            shown = done
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
                process.join()
    return [f"{p.name} exited with code {p.exitcode}" for p in processes if p.exitcode]


def _worker_context(db: Database) -> Any:
    """How worker processes start: forked from this process when it runs no other thread (its
    modules are imported already; ``db`` lets go of its connections first, so that none
    crosses the fork); else forked from a fresh server process that imported the pipeline
    once (a progress bar's thread holds locks a fork would copy); else a fresh interpreter
    each. Whichever way, a worker opens its own engine."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        db.dispose()
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _orphaned(parent: int) -> Callable[[], bool]:
    """Whether ``parent``, the process that started this one, is gone (killed, even by
    SIGKILL): a worker then takes no further batch, so it never outlives its import by more
    than a batch or two. A worker forked by the fork server is the server's child: the server
    ends with ``parent``, and the worker is handed to another process. (``parent`` comes from
    the parent: one read here could already be that of the process this one was handed to.)"""
    forked_by = os.getppid()  # parent itself, or the fork server it started

    def gone() -> bool:
        if os.getppid() == forked_by and process_alive(parent):
            return False
        log.warning("import.parent_gone", parent_pid=parent)
        return True

    return gone


def _work_in_process(job: WorkerJob) -> None:
    """A worker process of :func:`run_workers`, with its own engine, logging and lease owner."""
    configure_logging(job.settings.log)
    db = Database(job.settings.database.url)
    bind_context(run_id=job.run_id)
    try:
        source = open_archive(job.path)
        if source.key != job.round.archive:
            raise UsageError(f"{job.path} changed while it was being imported")
        with relaxed_gc():
            importer = Importer(db, job.settings, stop=_orphaned(job.parent_pid))
            importer.work(source, job.round, job.run_id)
    except KeyboardInterrupt:
        pass  # its batches are back in the queue; the parent reports the interruption
    finally:
        db.dispose()
