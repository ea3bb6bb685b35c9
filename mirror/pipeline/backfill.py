"""History backfill: every registry version of a study, with the registry's own dates.

``ctmirror backfill`` reads a study's record history (``{history_base}/studies/{nct}?history=true``)
and each of its versions (``{history_base}/studies/{nct}/history/{v}``), and stores every registry
version as a study version: origin ``history``, source date the registry's date, observed at that
date's midnight (UTC), with its field events and change classes derived from the version before.

Merging with what the mirror observed itself (docs/history.md):

- A registry version is stored once: ``study_versions.registry_version`` is unique per study, so a
  re-run skips what is stored, and an interrupted run resumes where it stopped (versions are
  written every ``CHUNK`` requests, so an interruption loses at most one chunk of requests).
- A version the mirror observed live that equals a registry version (same content hash, and the
  same date or both the newest) *is* that version: it gets the registry's number, not a twin.
- Nothing stored is renumbered or rewritten: registry versions get the next version numbers,
  whatever their date, with events and classes against the version before them in time
  (``StudyVersion.in_time``). The first version observed live, stored as a first sight, gets
  what changed into it from its new predecessor as new events. The study's present
  (``content_version``) moves only to a registry version newer than anything observed.

Backfilled versions are never delivered to webhooks: they describe the past.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as clock
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from mirror.config import Settings
from mirror.errors import MirrorError, NotFound, UsageError
from mirror.logging import bind_context, get_logger, unbind_context
from mirror.pipeline.ingest import Ingestor
from mirror.pipeline.ingest_items import Prepared, Writes
from mirror.record import (
    STUDY_FIELD,
    Canonical,
    ChangeKind,
    FieldChange,
    classify,
    diff_records,
    initial_changes,
    utcnow,
)
from mirror.source import HistoryEntry, HistorySource, Observation
from mirror.store import (
    ChangeEvent,
    Database,
    EventBlock,
    Study,
    StudyState,
    StudyVersion,
    VersionClassRow,
    Watch,
    WatchKind,
    WatchStudy,
    block_row,
    class_rows,
    decompress,
    in_time,
)

log = get_logger(__name__)

CHUNK = 25  # registry versions fetched, then written in one transaction
ORIGIN = "history"


@dataclass(frozen=True)
class BackfillRequest:
    """Which studies: ids, a watch's studies, or every study the mirror tracks."""

    nct_ids: Sequence[str] = ()
    watch: Watch | None = None
    all_tracked: bool = False
    max_versions: int | None = None  # only the newest N registry versions of each study

    def __post_init__(self) -> None:
        if sum([bool(self.nct_ids), self.watch is not None, self.all_tracked]) != 1:
            raise UsageError("backfill takes exactly one of: NCT ids, --watch NAME, --all-tracked")
        if self.max_versions is not None and self.max_versions < 1:
            raise UsageError("--max-versions must be at least 1")


@dataclass
class BackfillSummary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """``ok``, ``partial`` (some studies failed) or ``failed`` (every study failed)."""
        if not self.failures:
            return "ok"
        return "partial" if self.counts["studies"] else "failed"

    def line(self) -> str:
        c = self.counts
        return (
            f"backfill {self.status}: {c['studies']} studies, {c['versions']} versions stored, "
            f"{c['merged']} matched to observed ones, {c['present']} already stored, "
            f"{c['events']} events, {c['failed']} failed in {self.seconds:.1f}s"
        )


Progress = Callable[[int | None, int], None]  # (total studies, studies done since last call)


class Backfiller:
    """Runs backfills against one database and one history source."""

    def __init__(self, db: Database, source: HistorySource, settings: Settings) -> None:
        self.db = db
        self.source = source
        self.writer = HistoryWriter(db, settings.diff.ignore)

    async def run(
        self, request: BackfillRequest, progress: Progress | None = None
    ) -> BackfillSummary:
        summary, started = BackfillSummary(), time.monotonic()
        nct_ids = await asyncio.to_thread(self._targets, request)
        step = progress or (lambda total, done: None)
        step(len(nct_ids), 0)
        try:
            for nct_id in nct_ids:
                await self._study(nct_id, request.max_versions, summary)
                step(len(nct_ids), 1)
        finally:
            summary.seconds = time.monotonic() - started
            log.info("backfill.run", seconds=round(summary.seconds, 2), **summary.counts)
        return summary

    async def _study(self, nct_id: str, max_versions: int | None, summary: BackfillSummary) -> None:
        bind_context(nct_id=nct_id)
        try:
            counts = await self._backfill(nct_id, max_versions)
            summary.counts.update(counts)
            summary.counts["studies"] += 1
        except MirrorError as exc:
            summary.counts["failed"] += 1
            summary.failures.append((nct_id, exc.message))
            log.warning("backfill.study_failed", error=exc.message)
        finally:
            unbind_context("nct_id")

    async def _backfill(self, nct_id: str, max_versions: int | None) -> Counter[str]:
        entries = await self.source.history(nct_id)
        if entries is None:
            raise NotFound(f"{nct_id} has no record history in the registry (404)")
        if max_versions is not None:
            entries = entries[-max_versions:]
        stored, has_live = await asyncio.to_thread(self.writer.stored, nct_id)
        missing = [e for e in entries if e.version not in stored]
        counts = Counter({"present": len(entries) - len(missing)})
        newest = entries[-1].version if entries else None
        # Beside versions observed live, the whole past goes in one write: the first of them
        # then learns the version right before it, once (HistoryWriter._plan_known_past).
        size = max(len(missing), 1) if has_live else CHUNK
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            fetched = await asyncio.gather(*(self._fetch(nct_id, e) for e in chunk))
            counts += await asyncio.to_thread(self.writer.write, nct_id, fetched, newest)
        return counts

    async def _fetch(self, nct_id: str, entry: HistoryEntry) -> Observation:
        raw, study = await self.source.history_version(nct_id, entry.version)
        return Observation(
            nct_id,
            raw,
            study,
            observed_at=datetime.combine(date.fromisoformat(entry.date), clock(), UTC),
            origin=ORIGIN,
            source_date=entry.date,
            registry_version=entry.version,
        )

    def _targets(self, request: BackfillRequest) -> list[str]:
        if request.nct_ids:
            return list(dict.fromkeys(request.nct_ids))
        with self.db.session() as session:
            if request.watch is not None and request.watch.kind is WatchKind.IDS:
                return list(request.watch.nct_ids)
            query = select(Study.nct_id).where(Study.state == StudyState.ACTIVE)
            if request.watch is not None:
                members = select(WatchStudy.study_id).where(WatchStudy.watch_id == request.watch.id)
                query = query.where(Study.id.in_(members))
            return list(session.scalars(query.order_by(Study.nct_id)))


# -- writing -----------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One version in the study's merged sequence: a stored row, or a registry version to add."""

    key: tuple[str, datetime, int]  # its place in time (StudyVersion.in_time)
    row: StudyVersion | None = None
    item: Prepared | None = None
    version: int = 0  # a new one's number, given when it is planned
    _record: Canonical | None = None

    @property
    def has_content(self) -> bool:
        return self.item is not None or (self.row is not None and self.row.canonical is not None)

    def record(self) -> Canonical:
        """The version's canonical record (a stored one is decompressed once)."""
        if self.item is not None:
            return self.item.record
        if self._record is None:
            assert self.row is not None and self.row.canonical is not None
            self._record = orjson.loads(decompress(self.row.canonical))
        return self._record

    def parts(self) -> dict[str, Any] | None:
        """Its per-area hashes, so that only areas that changed are diffed."""
        if self.item is not None:
            return self.item.parts
        return self.row.part_hashes if self.row is not None else None


class HistoryWriter:
    """Merges fetched registry versions into a study's stored versions, one transaction each."""

    def __init__(self, db: Database, ignore: Sequence[str]) -> None:
        self.db = db
        self.ingestor = Ingestor(db, ignore=ignore)

    def stored(self, nct_id: str) -> tuple[set[int], bool]:
        """The registry versions stored for ``nct_id``, and whether it has live versions."""
        with self.db.session() as session:
            rows = session.execute(
                select(StudyVersion.registry_version, StudyVersion.canonical.is_not(None))
                .join(Study, Study.id == StudyVersion.study_id)
                .where(Study.nct_id == nct_id)
            ).all()
        registry = {rv for rv, _ in rows if rv is not None}
        return registry, any(rv is None and content for rv, content in rows)

    def write(
        self, nct_id: str, observations: Sequence[Observation], newest: int | None
    ) -> Counter[str]:
        items = [self.ingestor.prepare(o) for o in observations]
        for attempt in range(3):
            try:
                with self.db.write() as session:
                    return self._merge(session, nct_id, items, newest)
            except IntegrityError:  # a concurrent writer stored some of these: look again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _merge(
        self, session: Session, nct_id: str, items: list[Prepared], newest: int | None
    ) -> Counter[str]:
        study = session.scalar(select(Study).where(Study.nct_id == nct_id)) or _new_study(
            session, nct_id
        )
        rows = list(session.scalars(select(StudyVersion).where(StudyVersion.study_id == study.id)))
        present = {r.registry_version for r in rows if r.registry_version is not None}
        items = [i for i in items if i.obs.registry_version not in present]
        items, merged = _match_observed(sorted(rows, key=lambda r: r.version), items, newest)
        history = sorted(
            [_Slot(r.in_time, row=r) for r in rows] + [_Slot(_item_time(i), item=i) for i in items],
            key=lambda slot: slot.key,
        )
        counts = Counter({"merged": merged, "versions": len(items)})
        counts["events"] = self._add(session, study, history)
        return counts

    def _add(self, session: Session, study: Study, history: list[_Slot]) -> int:
        """Store the new slots of ``history`` (the study's versions in time order) after every
        stored version number, each with its events and classes against the version before it
        in time. Stored versions, their numbers and their events stay as they are: what has
        been shown of them keeps its meaning (docs/history.md)."""
        writes = Writes()
        number = study.latest_version
        previous: _Slot | None = None
        gone = False
        for slot in history:
            if slot.item is None:
                if previous is not None and previous.item is not None and _first_sight(slot):
                    self._plan_known_past(writes, study, slot, previous)
                previous = slot if slot.has_content else previous
                gone = not slot.has_content
                continue
            number += 1
            slot.version = number
            self._plan(writes, study, number, slot, previous, gone=gone)
            previous, gone = slot, False
        if number == study.latest_version:
            return 0
        events = _event_count(writes)
        self.ingestor.flush(session, writes)
        self._point_at_present(session, study, history, number)
        return events

    def _plan(
        self,
        writes: Writes,
        study: Study,
        version: int,
        slot: _Slot,
        previous: _Slot | None,
        *,
        gone: bool,
    ) -> None:
        assert slot.item is not None
        record, obs = slot.record(), slot.item.obs
        if previous is None:
            changes = initial_changes(record)
        else:
            changes = diff_records(previous.record(), record, previous.parts(), slot.parts())
        if gone:
            changes.insert(0, FieldChange(STUDY_FIELD, ChangeKind.ADDED, None, None))
        writes.versions.append(
            self.ingestor.version_row(
                study.id, study.nct_id, version, obs.observed_at, slot.item, obs.source_date
            )
        )
        if previous is None:  # a first version in time: its events are a block (store.blocks)
            fields = [c.field for c in changes]
            writes.blocks.append(
                block_row(study.id, study.nct_id, version, obs.observed_at, obs.source_date, fields)
            )
            return
        writes.events += self.ingestor.event_rows(
            study.id, study.nct_id, version, changes, obs.observed_at, obs.source_date, False
        )
        writes.classes += class_rows(
            study.id, study.nct_id, version, classify(previous.record(), record)
        )

    def _plan_known_past(self, writes: Writes, study: Study, slot: _Slot, previous: _Slot) -> None:
        """The study's first version as the mirror saw it (its events are first-sight ones) now
        has a past: what changed from the version before it joins its events, with new ids,
        and its classes. Nothing it had is touched."""
        assert slot.row is not None
        row, record = slot.row, slot.record()
        changes = diff_records(previous.record(), record, previous.parts(), slot.parts())
        writes.events += self.ingestor.event_rows(
            study.id, study.nct_id, row.version, changes, row.observed_at, row.source_date, False
        )
        writes.classes += class_rows(
            study.id, study.nct_id, row.version, classify(previous.record(), record)
        )

    def _point_at_present(
        self, session: Session, study: Study, history: list[_Slot], latest: int
    ) -> None:
        """The study's newest number, and its present: moved only when the newest version in
        time is one just stored (a registry version the mirror had not seen live yet)."""
        values: dict[str, Any] = {"latest_version": latest}
        present = history[-1]
        if present.item is not None:
            record, item = present.record(), present.item
            title = record.get("identification.briefTitle") or record.get(
                "identification.officialTitle"
            )
            status = record.get("status.overallStatus")
            values |= {
                "state": StudyState.ACTIVE,
                "alias_of": None,
                "content_version": present.version,
                "content_hash": item.hash,
                "part_hashes": item.parts,
                "source_date": item.source_date,
                "title": title[:1000] if isinstance(title, str) else None,
                "overall_status": status if isinstance(status, str) and len(status) <= 40 else None,
            }
        session.execute(update(Study).where(Study.id == study.id).values(**values))


def _event_count(writes: Writes) -> int:
    return len(writes.events) + sum(int(block["size"]) for block in writes.blocks)


def _new_study(session: Session, nct_id: str) -> Study:
    now = utcnow()
    study = Study(
        nct_id=nct_id, state=StudyState.ACTIVE, latest_version=0,
        first_seen_at=now, last_seen_at=now,
    )  # fmt: skip
    session.add(study)
    session.flush()
    return study


def _match_observed(
    rows: list[StudyVersion], items: list[Prepared], newest: int | None
) -> tuple[list[Prepared], int]:
    """Label live versions equal to a registry version with its number; the rest to store."""
    live = [r for r in rows if r.registry_version is None and r.canonical is not None]
    rest, merged = [], 0
    for item in items:
        same = [r for r in live if r.content_hash == item.hash]
        dated = [r for r in same if r.source_date == item.obs.source_date]
        if item.obs.registry_version == newest and same and same[-1] is live[-1]:
            dated = dated or [same[-1]]
        if dated:
            dated[0].registry_version = item.obs.registry_version
            live.remove(dated[0])
            merged += 1
        else:
            rest.append(item)
    return rest, merged


def _first_sight(slot: _Slot) -> bool:
    """A stored version with content whose events are its first sight (it had no version
    before it in time when it was stored)."""
    row = slot.row
    if row is None or row.canonical is None:
        return False
    session = object_session(row)
    assert session is not None
    blocks = select(EventBlock.first_id).where(
        EventBlock.study_id == row.study_id, EventBlock.version == row.version
    )
    initial = select(ChangeEvent.id).where(
        ChangeEvent.study_id == row.study_id,
        ChangeEvent.version == row.version,
        ChangeEvent.initial.is_(True),
    )
    return session.scalar(select(blocks.exists() | initial.exists())) is True


def _item_time(item: Prepared) -> tuple[str, datetime, int]:
    obs = item.obs
    return in_time(obs.source_date, obs.observed_at, obs.registry_version, 0)


# -- classifying again -------------------------------------------------------------------------


def reclassify(db: Database, nct_ids: Sequence[str] = (), progress: Progress | None = None) -> int:
    """Derive the change classes of stored versions again (all studies, or ``nct_ids``).

    For versions stored before classes existed, and after the classes' definitions change.
    One transaction per study; returns the number of classes written.
    """
    with db.session() as session:
        query = select(Study.id).order_by(Study.id)
        if nct_ids:
            query = query.where(Study.nct_id.in_(list(nct_ids)))
        study_ids = list(session.scalars(query))
    step = progress or (lambda total, done: None)
    step(len(study_ids), 0)
    written = 0
    for study_id in study_ids:
        with db.write() as session:
            written += _reclassify_study(session, study_id)
        step(len(study_ids), 1)
    return written


def _reclassify_study(session: Session, study_id: int) -> int:
    session.execute(delete(VersionClassRow).where(VersionClassRow.study_id == study_id))
    nct_id = session.scalar(select(Study.nct_id).where(Study.id == study_id))
    versions = session.scalars(select(StudyVersion).where(StudyVersion.study_id == study_id))
    planned: list[dict[str, Any]] = []
    previous: Canonical | None = None
    for version in sorted(versions, key=lambda v: v.in_time):  # each against the one before
        blob = version.canonical
        record = orjson.loads(decompress(blob)) if blob is not None else None
        if previous is not None and nct_id is not None:  # a first version has no classes
            planned += class_rows(study_id, nct_id, version.version, classify(previous, record))
        previous = record if record is not None else previous
    if planned:
        session.execute(insert(VersionClassRow), [_strip(r) for r in planned])
    return len(planned)


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}
