"""Observed records -> versions and change events: the write half of the pipeline.

Every source (API, archive, history) hands :class:`Observation` batches to
:meth:`Ingestor.ingest`. A batch is one transaction: each new version is written
together with its change events, or not at all. The common case, an unchanged
re-read, costs one hash comparison and a ``last_seen_at`` update.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import structlog
import zstandard
from sqlalchemy import Table, and_, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mirror.classes import VersionClass, classify
from mirror.db import Database
from mirror.diff import FieldChange, diff_records, initial_changes
from mirror.errors import MalformedRecord
from mirror.normalize import Canonical, content_hash, normalize, part_hashes
from mirror.store import (
    STUDY_FIELD,
    ChangeEvent,
    ChangeKind,
    OutboxEntry,
    Study,
    StudyState,
    StudyVersion,
    VersionClassRow,
    WatchStudy,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Observation:
    """One study record as a source returned it."""

    nct_id: str
    raw: bytes  # the JSON exactly as fetched
    study: Mapping[str, Any]
    observed_at: datetime
    origin: str = "api"
    # The registry's date for this version; default: the record's LastUpdatePostDate.
    source_date: str | None = None
    registry_version: int | None = None  # the registry's version number (history backfill)


@dataclass(frozen=True, slots=True)
class Disappearance:
    """The registry no longer has ``nct_id`` (404), or it became an alias (301) of ``alias_of``."""

    nct_id: str
    observed_at: datetime
    alias_of: str | None = None


class Outcome(enum.StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class IngestResult:
    nct_id: str
    outcome: Outcome
    version: int | None = None
    events: int = 0
    error: str | None = None


@dataclass(slots=True)
class Prepared:
    obs: Observation
    record: Canonical
    parts: dict[str, str]
    hash: str
    source_date: str | None


@dataclass(slots=True)
class Writes:
    """Rows one batch will write, accumulated before touching the database."""

    new_studies: list[dict[str, Any]] = field(default_factory=list)
    study_updates: list[dict[str, Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    classes: list[dict[str, Any]] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)


class Ingestor:
    """Writes observations of one run into the database."""

    def __init__(
        self,
        db: Database,
        *,
        ignore: Sequence[str],
        run_id: int | None = None,
        watch_id: int | None = None,
    ) -> None:
        self.db = db
        self.ignore = tuple(ignore)
        self.run_id = run_id
        self.watch_id = watch_id

    # -- public -------------------------------------------------------------------------

    def ingest(self, observations: Sequence[Observation]) -> list[IngestResult]:
        """Store what is new in ``observations``; one transaction for the batch."""
        prepared, results = [], []
        for obs in observations:
            try:
                prepared.append(self.prepare(obs))
            except MalformedRecord as exc:
                log.warning("ingest.malformed", nct_id=obs.nct_id, error=exc.message)
                results.append(IngestResult(obs.nct_id, Outcome.FAILED, error=exc.message))
        return results + self._write_retrying(prepared, self._write_observations)

    def disappear(self, gone: Sequence[Disappearance]) -> list[IngestResult]:
        """Record that studies left the registry: a tombstone version and a ``removed`` event."""
        return self._write_retrying(list(gone), self._write_disappearances)

    # -- preparation (no database) ------------------------------------------------------

    def prepare(self, obs: Observation) -> Prepared:
        record = normalize(obs.study, self.ignore)
        if record.get("identification.nctId") not in (None, obs.nct_id):
            raise MalformedRecord("record carries a different nctId", obs.nct_id)
        parts = part_hashes(record)
        source_date = obs.source_date or record.get("status.lastUpdatePostDate")
        return Prepared(obs, record, parts, content_hash(parts), source_date)

    # -- transactions -------------------------------------------------------------------

    def _write_retrying(self, items: list[Any], write: Any) -> list[IngestResult]:
        """Write ``items`` in one transaction; after a concurrent writer's conflict, one by one."""
        if not items:
            return []
        try:
            with self.db.write() as session:
                return list(write(session, items))
        except IntegrityError:
            if len(items) == 1:
                return self._write_single_again(items[0], write)
            log.info("ingest.conflict", batch=len(items), action="retrying one by one")
            return [r for item in items for r in self._write_retrying([item], write)]

    def _write_single_again(self, item: Any, write: Any) -> list[IngestResult]:
        # Another process stored a version of this study between our read and our write:
        # read its state again and decide anew.
        try:
            with self.db.write() as session:
                return list(write(session, [item]))
        except (IntegrityError, OperationalError) as exc:
            nct_id = item.obs.nct_id if isinstance(item, Prepared) else item.nct_id
            log.error("ingest.failed", nct_id=nct_id, error=str(exc.orig))
            return [IngestResult(nct_id, Outcome.FAILED, error=f"database: {exc.orig}")]

    def _write_observations(self, session: Session, items: list[Prepared]) -> list[IngestResult]:
        writes = Writes()
        for chunk in _unique_chunks(items, key=lambda p: p.obs.nct_id):
            studies = _load_studies(session, [p.obs.nct_id for p in chunk])
            previous = load_canonicals(session, [s for s in studies.values()])
            for item in chunk:
                self._plan_observation(item, studies.get(item.obs.nct_id), previous, writes)
            self.flush(session, writes)
        return writes.results

    def _write_disappearances(
        self, session: Session, items: list[Disappearance]
    ) -> list[IngestResult]:
        writes = Writes()
        studies = _load_studies(session, [d.nct_id for d in items])
        for gone in items:
            self._plan_disappearance(gone, studies.get(gone.nct_id), writes)
        self.flush(session, writes)
        return writes.results

    # -- planning: decide what to write -------------------------------------------------

    def _plan_observation(
        self,
        item: Prepared,
        study: Study | None,
        previous: Mapping[int, Canonical],
        writes: Writes,
    ) -> None:
        obs = item.obs
        if study is None:
            changes = initial_changes(item.record)
            writes.new_studies.append(self._new_study_row(item))
            self._plan_version(writes, obs.nct_id, None, 1, item, None, changes, initial=True)
            writes.results.append(IngestResult(obs.nct_id, Outcome.NEW, 1, len(changes)))
            return
        if study.state is StudyState.ACTIVE and study.content_hash == item.hash:
            writes.seen.append({"b_id": study.id, "last_seen_at": obs.observed_at})
            writes.results.append(IngestResult(obs.nct_id, Outcome.UNCHANGED, study.latest_version))
            return
        old = previous.get(study.id, {})
        if old:
            changes = diff_records(old, item.record, study.part_hashes, item.parts)
        else:
            changes = initial_changes(item.record)
        if study.state is not StudyState.ACTIVE:
            changes.insert(0, FieldChange(STUDY_FIELD, ChangeKind.ADDED, None, None))
        version = study.latest_version + 1
        self._plan_version(
            writes, obs.nct_id, study.id, version, item, old or None, changes, initial=False
        )
        writes.study_updates.append(
            {
                "b_id": study.id,
                "state": StudyState.ACTIVE,
                "alias_of": None,
                "latest_version": version,
                "last_seen_at": obs.observed_at,
                **content_columns(item),
            }
        )
        writes.results.append(IngestResult(obs.nct_id, Outcome.CHANGED, version, len(changes)))

    def _plan_disappearance(self, gone: Disappearance, study: Study | None, writes: Writes) -> None:
        new_state = StudyState.MOVED if gone.alias_of else StudyState.GONE
        if study is None and gone.alias_of is None:
            error = f"{gone.nct_id} is not in the registry (404)"
            writes.results.append(IngestResult(gone.nct_id, Outcome.FAILED, error=error))
            return
        if study is None:
            # A merged id never mirrored before: remember where it went; it has no versions.
            writes.new_studies.append(
                {
                    "nct_id": gone.nct_id,
                    "state": new_state,
                    "alias_of": gone.alias_of,
                    "latest_version": 0,
                    "first_seen_at": gone.observed_at,
                    "last_seen_at": gone.observed_at,
                    **content_columns(None),
                }
            )
            writes.results.append(IngestResult(gone.nct_id, Outcome.GONE))
            return
        if study.state is new_state and study.alias_of == gone.alias_of:
            # Already recorded as gone: nothing new to say.
            writes.results.append(
                IngestResult(gone.nct_id, Outcome.UNCHANGED, study.latest_version)
            )
            return
        version = study.latest_version + 1
        detail = {"alias_of": gone.alias_of} if gone.alias_of else None
        change = FieldChange(STUDY_FIELD, ChangeKind.REMOVED, None, detail)
        writes.versions.append(
            self.version_row(study.id, gone.nct_id, version, gone.observed_at, None, None)
        )
        writes.events.append(
            event_row(study.id, gone.nct_id, version, change, gone.observed_at, None, False)
        )
        writes.classes += class_rows(study.id, gone.nct_id, version, classify({}, None))
        writes.study_updates.append(
            {
                "b_id": study.id,
                "state": new_state,
                "alias_of": gone.alias_of,
                "latest_version": version,
                "last_seen_at": study.last_seen_at,
                # The content of a gone study stays that of its last version.
                **{k: getattr(study, k) for k in _CONTENT_COLUMNS},
            }
        )
        writes.results.append(IngestResult(gone.nct_id, Outcome.GONE, version, 1))

    def _plan_version(
        self,
        writes: Writes,
        nct_id: str,
        study_id: int | None,
        version: int,
        item: Prepared,
        old: Canonical | None,
        changes: Iterable[FieldChange],
        *,
        initial: bool,
    ) -> None:
        obs = item.obs
        row = self.version_row(study_id, nct_id, version, obs.observed_at, item, item.source_date)
        writes.versions.append(row)
        writes.events.extend(
            event_row(study_id, nct_id, version, c, obs.observed_at, item.source_date, initial)
            for c in changes
        )
        if old is not None:
            writes.classes += class_rows(study_id, nct_id, version, classify(old, item.record))

    def version_row(
        self,
        study_id: int | None,
        nct_id: str,
        version: int,
        observed_at: datetime,
        item: Prepared | None,
        source_date: str | None,
    ) -> dict[str, Any]:
        return {
            "study_id": study_id,
            "_nct_id": nct_id,
            "version": version,
            "observed_at": observed_at,
            "source_date": source_date,
            "origin": item.obs.origin if item else "tombstone",
            "content_hash": item.hash if item else None,
            "part_hashes": item.parts if item else None,
            "raw": compress(item.obs.raw) if item else None,
            "canonical": compress(orjson.dumps(item.record)) if item else None,
            "run_id": self.run_id,
            "registry_version": item.obs.registry_version if item else None,
        }

    def _new_study_row(self, item: Prepared) -> dict[str, Any]:
        return {
            "nct_id": item.obs.nct_id,
            "state": StudyState.ACTIVE,
            "alias_of": None,
            "latest_version": 1,
            "first_seen_at": item.obs.observed_at,
            "last_seen_at": item.obs.observed_at,
            **content_columns(item),
        }

    # -- flushing: write what was planned -----------------------------------------------

    def flush(self, session: Session, writes: Writes) -> None:
        ids: dict[str, int] = {}
        if writes.new_studies:
            rows = session.execute(
                insert(Study).returning(Study.id, Study.nct_id), writes.new_studies
            )
            ids = {nct: id_ for id_, nct in rows}
        versions = [_resolve(row, ids) for row in writes.versions]
        events = [_resolve(row, ids) for row in writes.events]
        classes = [_resolve(row, ids) for row in writes.classes]
        if versions:
            session.execute(insert(StudyVersion), versions)
        if events or versions:
            lock_feed(session)
        if events:
            session.execute(insert(ChangeEvent), events)
        if classes:
            session.execute(insert(VersionClassRow), classes)
        if versions:
            # The outbox row commits with its version: webhooks never miss one (DESIGN.md).
            outbox = [_outbox_row(row, ids) for row in writes.versions]
            session.execute(insert(OutboxEntry), outbox)
        conn = session.connection()
        if writes.study_updates:
            conn.execute(_STUDY_UPDATE, writes.study_updates)
        if writes.seen:
            conn.execute(_SEEN_UPDATE, writes.seen)
        if self.watch_id is not None:
            touched = [*ids.values(), *(u["b_id"] for u in writes.study_updates)]
            add_watch_members(session, self.watch_id, touched + [s["b_id"] for s in writes.seen])
        writes.new_studies, writes.study_updates, writes.seen = [], [], []
        writes.versions, writes.events, writes.classes = [], [], []


_CONTENT_COLUMNS = ("content_hash", "part_hashes", "source_date", "title", "overall_status")
_studies = Study.__table__
assert isinstance(_studies, Table)
# Executed with many parameter sets at once; "b_id" avoids clashing with the SET columns.
_STUDY_UPDATE = (
    update(_studies)
    .where(_studies.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        alias_of=bindparam("alias_of"),
        latest_version=bindparam("latest_version"),
        last_seen_at=bindparam("last_seen_at"),
        **{column: bindparam(column) for column in _CONTENT_COLUMNS},
    )
)
_SEEN_UPDATE = (
    update(_studies)
    .where(_studies.c.id == bindparam("b_id"))
    .values(last_seen_at=bindparam("last_seen_at"))
)


def content_columns(item: Prepared | None) -> dict[str, Any]:
    """The columns of ``studies`` that describe its newest content."""
    if item is None:
        return dict.fromkeys(_CONTENT_COLUMNS)
    return {
        "content_hash": item.hash,
        "part_hashes": item.parts,
        "source_date": item.source_date,
        "title": _title(item.obs.study),
        "overall_status": item.record.get("status.overallStatus"),
    }


def _title(study: Mapping[str, Any]) -> str | None:
    ident = study.get("protocolSection", {}).get("identificationModule", {})
    title = ident.get("briefTitle") or ident.get("officialTitle")
    return str(title)[:1000] if title else None


def _resolve(row: dict[str, Any], new_ids: Mapping[str, int]) -> dict[str, Any]:
    """The row without its routing key, with the id of a study inserted in this batch."""
    row = dict(row)
    nct_id = row.pop("_nct_id")
    if row["study_id"] is None:
        row["study_id"] = new_ids[nct_id]
    return row


def _outbox_row(version: Mapping[str, Any], new_ids: Mapping[str, int]) -> dict[str, Any]:
    """The outbox row of a planned version row (which still carries its routing key)."""
    nct_id = version["_nct_id"]
    return {
        "study_id": version["study_id"] or new_ids[nct_id],
        "nct_id": nct_id,
        "version": version["version"],
        "origin": version["origin"],
        "created_at": version["observed_at"],
    }


def event_row(
    study_id: int | None,
    nct_id: str,
    version: int,
    change: FieldChange,
    observed_at: datetime,
    source_date: str | None,
    initial: bool,
) -> dict[str, Any]:
    return {
        "study_id": study_id,
        "_nct_id": nct_id,
        "nct_id": nct_id,
        "version": version,
        "field": change.field,
        "kind": change.kind,
        "old": change.old,
        "new": change.new,
        "observed_at": observed_at,
        "source_date": source_date,
        "initial": initial,
    }


def class_rows(
    study_id: int | None, nct_id: str, version: int, classes: Iterable[VersionClass]
) -> list[dict[str, Any]]:
    """Rows of ``version_classes`` for the classes of one version, in order."""
    return [
        {
            "study_id": study_id,
            "_nct_id": nct_id,
            "nct_id": nct_id,
            "version": version,
            "position": position,
            "name": c.name,
            "params": dict(c.params),
        }
        for position, c in enumerate(classes)
    ]


def _unique_chunks(items: list[Prepared], key: Any) -> Iterable[list[Prepared]]:
    """Split so that no chunk holds the same study twice (an archive may repeat one)."""
    chunk: list[Prepared] = []
    seen: set[str] = set()
    for item in items:
        if key(item) in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(key(item))
    if chunk:
        yield chunk


def _load_studies(session: Session, nct_ids: Sequence[str]) -> dict[str, Study]:
    query = select(Study).where(Study.nct_id.in_(set(nct_ids)))
    # Earlier chunks of this transaction updated these rows through Core: reload them.
    rows = session.scalars(query.execution_options(populate_existing=True))
    return {study.nct_id: study for study in rows}


def load_canonicals(session: Session, studies: Iterable[Study]) -> dict[int, Canonical]:
    """The newest canonical record of each study (tombstones have none)."""
    ids = [s.id for s in studies]
    if not ids:
        return {}
    newest = (
        select(StudyVersion.study_id, func.max(StudyVersion.version).label("version"))
        .where(StudyVersion.study_id.in_(ids), StudyVersion.canonical.is_not(None))
        .group_by(StudyVersion.study_id)
        .subquery()
    )
    rows = session.execute(
        select(StudyVersion.study_id, StudyVersion.canonical).join(
            newest,
            and_(
                StudyVersion.study_id == newest.c.study_id,
                StudyVersion.version == newest.c.version,
            ),
        )
    )
    return {study_id: orjson.loads(decompress(blob)) for study_id, blob in rows if blob}


# Event ids are the feed cursor: a reader that has seen id N must never later find an id below N.
# PostgreSQL hands out sequence values at insert time, not commit time, so writers take this
# lock before their events get ids and hold it until commit. (SQLite writers are serialized by
# BEGIN IMMEDIATE already.)
FEED_LOCK_KEY = 0x63746D6972726F72  # "ctmirror"


def lock_feed(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK_KEY})


def add_watch_members(session: Session, watch_id: int, study_ids: Iterable[int]) -> None:
    rows = [{"watch_id": watch_id, "study_id": sid} for sid in set(study_ids)]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(WatchStudy).on_conflict_do_nothing(), rows)


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)
