"""A sync run: read studies from the source and push them through the ingest stage.

One run = one ``sync_runs`` row, one summary log line, and the counts
fetched / new / changed / unchanged / gone / failed. Fetching and writing
overlap: the source keeps requests in flight while a batch is being written.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from mirror.config import Settings
from mirror.logging import get_logger
from mirror.pipeline.ingest import Ingestor
from mirror.pipeline.ingest_items import IngestResult, Outcome
from mirror.pipeline.runs import RUN_COUNTS, recorded, relaxed_gc, start_run
from mirror.record import utcnow
from mirror.source import (
    Disappearance,
    FetchFailure,
    FetchItem,
    NotModified,
    Observation,
    Page,
    StudySource,
    updated_between,
)
from mirror.store import Database, RunStatus, Study, Watch, WatchKind, WatchStudy, load_heads

log = get_logger(__name__)

# Re-read this many days before the last run's date: LastUpdatePostDate is a date, not a time.
INCREMENTAL_OVERLAP = timedelta(days=1)
VALIDATORS_AT_ONCE = 10_000  # study heads read per query for a conditional re-read by id


@dataclass(frozen=True)
class Part:
    """One slice of a watch's full run (``mirror.daemon.jobs`` plans them): some of an ids watch's
    ids, or the studies of a search last updated within [``updated[0]``, ``updated[1]``]."""

    number: int  # 1, 2, … of ``of``
    of: int
    ids: tuple[str, ...] = ()
    updated: tuple[str, str] | None = None  # inclusive, YYYY-MM-DD, MIN or MAX

    def as_json(self) -> dict[str, Any]:
        if self.updated is not None:
            return {"number": self.number, "of": self.of, "updated": list(self.updated)}
        return {"number": self.number, "of": self.of, "ids": list(self.ids)}

    @classmethod
    def of_json(cls, data: Mapping[str, Any]) -> Part:
        updated = data.get("updated")
        return cls(
            int(data["number"]), int(data["of"]), tuple(data.get("ids", ())),
            (str(updated[0]), str(updated[1])) if updated else None,
        )  # fmt: skip


@dataclass(frozen=True)
class SyncRequest:
    """What to read: ids, a saved search, a watch, or the whole registry (``everything``)."""

    nct_ids: Sequence[str] = ()
    query: dict[str, str] | None = None
    watch: Watch | None = None
    everything: bool = False
    since: date | None = None
    full: bool = False  # a watch: ignore its incremental high-water mark
    part: Part | None = None  # a watch: only this part of its run (its completion is apart)

    def describe(self) -> str:
        if self.watch is not None and self.part is not None:
            what = f"watch {self.watch.name} part {self.part.number}/{self.part.of}"
        elif self.watch is not None:
            what = f"watch {self.watch.name}"
        elif self.query:
            what = "search " + " ".join(f"{k}={v}" for k, v in sorted(self.query.items()))
        elif self.everything:
            what = "all studies"
        else:
            what = "ids " + ",".join(self.nct_ids[:5]) + ("…" if len(self.nct_ids) > 5 else "")
        return what + (f" since {self.since}" if self.since else "")


@dataclass
class RunSummary:
    run_id: int
    selection: str
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    status: RunStatus = RunStatus.RUNNING
    error: str | None = None

    def line(self) -> str:
        c = self.counts
        return (
            f"sync {self.status.value}: {c['fetched']} fetched, {c['new']} new, "
            f"{c['changed']} changed, {c['unchanged']} unchanged, {c['gone']} gone, "
            f"{c['failed']} failed in {self.seconds:.1f}s (run {self.run_id})"
        )

    def run_counts(self) -> Mapping[str, int]:
        return self.counts

    def log_fields(self) -> dict[str, object]:
        return {"selection": self.selection, **{k: self.counts[k] for k in RUN_COUNTS}}


Progress = Callable[[int | None, int], None]  # (total if now known, studies done since last call)


class Syncer:
    """Runs syncs against one database and one source."""

    def __init__(self, db: Database, source: StudySource, settings: Settings) -> None:
        self.db = db
        self.source = source
        self.settings = settings

    async def run(self, request: SyncRequest, progress: Progress | None = None) -> RunSummary:
        with self._recorded(request.describe(), request.watch) as (summary, ingestor):
            with relaxed_gc():
                await self._run(request, summary, ingestor, progress or _no_progress)
            if summary.failures and not summary.counts["fetched"]:
                # Nothing could be read (e.g. the source is unreachable): the run failed.
                summary.status = RunStatus.FAILED
                summary.error = f"no study could be read: {summary.failures[0][1]}"
            elif summary.failures:
                summary.status = RunStatus.PARTIAL
        return summary

    @contextmanager
    def _recorded(
        self, selection: str, watch: Watch | None
    ) -> Iterator[tuple[RunSummary, Ingestor]]:
        """One run (its ``sync_runs`` row, status, duration and summary log line) and the
        ingestor that writes its versions."""
        summary = RunSummary(start_run(self.db, selection), selection)
        with recorded(self.db, summary, "sync.run"):
            yield (
                summary,
                Ingestor(
                    self.db,
                    ignore=self.settings.diff.ignore,
                    run_id=summary.run_id,
                    watch_id=watch.id if watch else None,
                ),
            )

    async def _run(
        self, request: SyncRequest, summary: RunSummary, ingestor: Ingestor, progress: Progress
    ) -> None:
        watch = request.watch
        run_started = utcnow()
        since = request.since
        if watch is not None and since is None and not request.full and watch.since_date:
            since = date.fromisoformat(watch.since_date) - INCREMENTAL_OVERLAP
        seen = await self._consume(self._pages(request, since), ingestor, summary, progress)
        if request.part is not None:
            return  # the run's last part to finish completes it (complete_parts)
        if watch is not None and watch.kind is not WatchKind.IDS and since is None:
            # A full pass of a search: members it no longer returned may have left the registry.
            missing = self._members(watch) - seen
            if missing:
                pages = self._by_ids(sorted(missing))
                await self._consume(pages, ingestor, summary, progress)
        if watch is not None:
            self._mark_watch(watch, run_started.date(), full=since is None)

    async def complete_parts(self, watch: Watch, started_at: datetime) -> RunSummary | None:
        """Complete a full run of ``watch`` done in parts (queued at ``started_at``): re-check
        the members of a search that no part saw (a run of its own), mark the watch's full run."""
        if watch.kind is WatchKind.IDS:  # every id was read by its part
            self._mark_watch(watch, started_at.date(), full=True)
            return None
        with self._recorded(f"watch {watch.name} unseen members", watch) as (summary, ingestor):
            # Every study a part read was seen after the run was queued.
            missing = sorted(self._members(watch, seen_before=started_at))
            if missing:
                await self._consume(self._by_ids(missing), ingestor, summary, _no_progress)
            self._mark_watch(watch, started_at.date(), full=True)
        return summary

    def _pages(self, request: SyncRequest, since: date | None) -> AsyncIterator[Page]:
        watch, part = request.watch, request.part
        if watch is not None and part is not None and part.updated is not None:
            return self.source.search(updated_between(watch.query, *part.updated))
        if watch is not None and part is not None:
            return self._by_ids(part.ids)
        if watch is not None and watch.kind is WatchKind.IDS:
            return self._by_ids(watch.nct_ids)
        if watch is not None:
            return self.source.search(watch.query, since)
        if request.query is not None or request.everything:
            return self.source.search(request.query or {}, since)
        return self._by_ids(request.nct_ids)

    def _by_ids(self, nct_ids: Sequence[str]) -> AsyncIterator[Page]:
        """The source's reads of ``nct_ids``, conditional on the validators stored with them."""
        validators: dict[str, str] = {}
        with self.db.session() as session:
            for start in range(0, len(nct_ids), VALIDATORS_AT_ONCE):
                heads = load_heads(session, nct_ids[start : start + VALIDATORS_AT_ONCE])
                validators.update((i, h.etag) for i, h in heads.items() if h.etag)
        return self.source.by_ids(nct_ids, validators)

    async def _consume(
        self,
        pages: AsyncIterator[Page],
        ingestor: Ingestor,
        summary: RunSummary,
        progress: Progress,
    ) -> set[str]:
        """Ingest every page, writing one batch while the source fetches the next."""
        seen: set[str] = set()
        async for page in pages:
            for batch in _batches(page.items, self.settings.sync.batch_size):
                results = await asyncio.to_thread(_ingest_items, ingestor, batch)
                self._count(results, batch, summary)
                seen.update(item.nct_id for item in batch)
                progress(page.total, len(batch))
            if not page.items:
                progress(page.total, 0)
        return seen

    def _count(
        self, results: list[IngestResult], items: list[FetchItem], summary: RunSummary
    ) -> None:
        # Records actually read; 404s and merged ids count as gone, not fetched.
        summary.counts["fetched"] += sum(isinstance(i, Observation | NotModified) for i in items)
        for result in results:
            summary.counts[result.outcome.value] += 1
            if result.outcome is Outcome.FAILED:
                summary.failures.append((result.nct_id, result.error or "unknown error"))
                log.warning("sync.study_failed", nct_id=result.nct_id, error=result.error)

    # -- bookkeeping ---------------------------------------------------------------------

    def _members(self, watch: Watch, seen_before: datetime | None = None) -> set[str]:
        query = (
            select(Study.nct_id)
            .join(WatchStudy, WatchStudy.study_id == Study.id)
            .where(WatchStudy.watch_id == watch.id)
        )
        if seen_before is not None:
            query = query.where(Study.last_seen_at < seen_before)
        with self.db.session() as session:
            return set(session.scalars(query))

    def _mark_watch(self, watch: Watch, run_date: date, *, full: bool) -> None:
        values: dict[str, object] = {"last_run_at": utcnow(), "since_date": run_date.isoformat()}
        if full:
            values["last_full_run_at"] = values["last_run_at"]
        with self.db.write() as session:
            session.execute(update(Watch).where(Watch.id == watch.id).values(**values))


def _no_progress(total: int | None, done: int) -> None:
    pass


def _ingest_items(ingestor: Ingestor, items: list[FetchItem]) -> list[IngestResult]:
    observed = [i for i in items if isinstance(i, Observation | NotModified)]
    gone = [i for i in items if isinstance(i, Disappearance)]
    failed = [
        IngestResult(i.nct_id, Outcome.FAILED, error=i.error)
        for i in items
        if isinstance(i, FetchFailure)
    ]
    return ingestor.ingest(observed) + ingestor.disappear(gone) + failed


def _batches(items: list[FetchItem], size: int) -> list[list[FetchItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
