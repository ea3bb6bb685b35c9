"""Observed records -> versions and change events: the write half of the pipeline.

Every source (API, archive, history) hands :class:`Observation` batches to
:meth:`Ingestor.ingest`. A batch is one transaction: each new version is written
together with its change events, or not at all.

The common case, an unchanged re-read, is settled before anything is normalized: the
record's fingerprints (``mirror.record.hashes``) match the ones stored with the study, and the
batch's ``last_seen_at`` updates go out as one statement. The raw fingerprint, one xxh3 pass
over the bytes as read, settles a record an archive hands over as a :class:`Sighting` before it
is even parsed; the parsed one (one serialization, one hash) settles a record whose bytes moved
but not what normalize reads. Other records are normalized and their content hash decides;
only studies whose content changed have their previous canonical record loaded. Rows are
written with the driver's bulk paths (``mirror.store.rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from mirror.errors import MalformedRecord
from mirror.logging import get_logger
from mirror.pipeline.ingest_items import (
    IngestResult,
    Item,
    Outcome,
    Pending,
    Prepared,
    Sighting,
    Writes,
)
from mirror.record import (
    STUDY_FIELD,
    Canonical,
    ChangeKind,
    FieldChange,
    classify,
    content_hash,
    diff_records,
    encode,
    fingerprints,
    initial_changes,
    normalize,
    raw_fingerprint,
    same_parsed,
    same_raw,
    without_nul,
)
from mirror.source import Disappearance, NotModified, Observation
from mirror.store import (
    BLOCK_COLUMNS,
    CONTENT_COLUMNS,
    ETAG_KEY,
    EVENT_COLUMNS,
    FINGERPRINT_KEY,
    OUTBOX_COLUMNS,
    VERSION_COLUMNS,
    Database,
    RowWriter,
    StudyHead,
    StudyRow,
    StudyState,
    add_watch_members,
    assign_ids,
    block_row,
    class_rows,
    insert_classes,
    insert_studies,
    load_canonicals,
    load_heads,
    load_rows,
    lock_feed,
    update_studies,
)

log = get_logger(__name__)

# A NUL character in a record's raw JSON (it can only be written escaped).
_NUL_ESCAPE = b"\\u0000"


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
        self.rows = RowWriter(db.engine.dialect)

    # -- public -------------------------------------------------------------------------

    def ingest(
        self, observations: Sequence[Observation | Sighting | NotModified]
    ) -> list[IngestResult]:
        """Store what is new in ``observations``; one transaction for the batch."""
        with self.db.session() as session:  # read outside the write lock
            heads = load_heads(session, [obs.nct_id for obs in observations])
        items: list[Item] = []
        results: list[IngestResult] = []
        for obs in observations:
            try:
                items.append(self._item(obs, heads))
            except MalformedRecord as exc:
                log.warning("ingest.malformed", nct_id=obs.nct_id, error=exc.message)
                results.append(IngestResult(obs.nct_id, Outcome.FAILED, error=exc.message))
        return results + self._write_retrying(items, self._write_observations)

    def disappear(self, gone: Sequence[Disappearance]) -> list[IngestResult]:
        """Record that studies left the registry: a tombstone version and a ``removed`` event."""
        return self._write_retrying(list(gone), self._write_disappearances)

    # -- preparation (no database) ------------------------------------------------------

    def prepare(self, obs: Observation, fingerprint: str | None = None) -> Prepared:
        """Normalize and hash ``obs`` (``fingerprint``: its own, kept with the study: see
        ``mirror.record.fingerprints``).

        MalformedRecord when the record cannot be stored: it fails alone, its batch goes on.
        NUL characters of its text become U+FFFD in the canonical record (the raw JSON keeps
        them): no PostgreSQL text can hold one, and both backends keep the same data.
        """
        study = without_nul(obs.study) if _NUL_ESCAPE in obs.raw else obs.study
        try:
            record = normalize(study, self.ignore)
            encoded, parts = encode(record)
        except (orjson.JSONEncodeError, RecursionError) as exc:
            raise MalformedRecord(f"cannot be stored as JSON ({exc})", obs.nct_id) from None
        if record.get("identification.nctId") not in (None, obs.nct_id):
            raise MalformedRecord("record carries a different nctId", obs.nct_id)
        source_date = obs.source_date or _text(record.get("status.lastUpdatePostDate"), 10)
        return Prepared(obs, record, encoded, parts, content_hash(parts), source_date, fingerprint)

    def _item(
        self, obs: Observation | Sighting | NotModified, heads: Mapping[str, StudyHead]
    ) -> Item:
        head = heads.get(obs.nct_id)
        stored = _stored(head)
        if isinstance(obs, NotModified):
            if head is None or head.state is not StudyState.ACTIVE or head.etag != obs.etag:
                raise MalformedRecord("answered 304 for a record not stored as read", obs.nct_id)
            return Pending(obs, stored)
        if stored is not None and same_raw(stored, raw_fingerprint(obs.raw, self.ignore)):
            return Pending(obs, stored)  # the bytes stored before: not even parsed
        if isinstance(obs, Sighting):
            obs = obs.parsed()
            head = heads.get(obs.nct_id)  # the guess was wrong: the record's own study
            stored = _stored(head)
        print_ = fingerprints(obs.raw, obs.study, self.ignore)
        if stored is not None and same_parsed(stored, obs.study, self.ignore, print_):
            return Pending(obs, stored, print_)
        item = self.prepare(obs, print_)
        if head is None or head.content_hash != item.hash:
            item.compressed()  # a new version, most likely: compress before taking the write lock
        return item

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
            nct_id = item.nct_id if isinstance(item, Disappearance) else item.obs.nct_id
            log.error("ingest.failed", nct_id=nct_id, error=str(exc.orig))
            return [IngestResult(nct_id, Outcome.FAILED, error=f"database: {exc.orig}")]

    def _write_observations(self, session: Session, items: list[Item]) -> list[IngestResult]:
        writes = Writes()
        for chunk in _unique_chunks(items):
            heads = load_heads(session, [item.obs.nct_id for item in chunk])
            chunk = [self._settled(item, heads.get(item.obs.nct_id)) for item in chunk]
            new_ids = self._insert_new_studies(session, chunk, heads, writes)
            rows = load_rows(session, _changing(chunk, heads))
            previous = load_canonicals(session, [row.id for row in rows.values()])
            for item in chunk:
                head, row = heads.get(item.obs.nct_id), rows.get(item.obs.nct_id)
                self._plan_observation(item, head, row, new_ids, previous, writes)
            self.flush(session, writes)
        return writes.results

    def _settled(self, item: Item, head: StudyHead | None) -> Item:
        """A pending item whose study changed since it was read is normalized after all."""
        if not isinstance(item, Pending) or _still_stored(item.stored, head):
            return item
        obs = item.obs
        if isinstance(obs, NotModified):
            return item  # the registry says it is what was stored: seen, whatever came since
        # Its content was stored (and so valid) before: this cannot raise MalformedRecord.
        obs = obs.parsed() if isinstance(obs, Sighting) else obs
        return self.prepare(obs, item.renewed or fingerprints(obs.raw, obs.study, self.ignore))

    def _insert_new_studies(
        self,
        session: Session,
        chunk: list[Item],
        heads: Mapping[str, StudyHead],
        writes: Writes,
    ) -> dict[str, int]:
        rows = [
            self._new_study_row(item)
            for item in chunk
            if isinstance(item, Prepared) and item.obs.nct_id not in heads
        ]
        ids = insert_studies(session, rows)
        writes.members += ids.values()
        return ids

    def _write_disappearances(
        self, session: Session, items: list[Disappearance]
    ) -> list[IngestResult]:
        writes = Writes()
        rows = load_rows(session, [d.nct_id for d in items])
        for gone in items:
            self._plan_disappearance(gone, rows.get(gone.nct_id), writes)
        self.flush(session, writes)
        return writes.results

    # -- planning: decide what to write -------------------------------------------------

    def _plan_observation(
        self,
        item: Item,
        head: StudyHead | None,
        row: StudyRow | None,
        new_ids: Mapping[str, int],
        previous: Mapping[int, Canonical],
        writes: Writes,
    ) -> None:
        """``row``: the whole row of a study that gets a new version (else None)."""
        if head is None:
            assert isinstance(item, Prepared)
            self._plan_first_version(item, new_ids[item.obs.nct_id], writes)
        elif row is None:
            self._plan_seen(item, head, writes)
        else:
            assert isinstance(item, Prepared)
            self._plan_change(item, row, previous.get(row.id), writes)

    def _plan_first_version(self, item: Prepared, study_id: int, writes: Writes) -> None:
        obs = item.obs
        writes.versions.append(
            self.version_row(study_id, obs.nct_id, 1, obs.observed_at, item, item.source_date)
        )
        # Every field is `added`, `initial: true` (docs/architecture.md): one block, not rows.
        writes.blocks.append(
            block_row(study_id, obs.nct_id, 1, obs.observed_at, item.source_date, item.record)
        )
        writes.results.append(IngestResult(obs.nct_id, Outcome.NEW, 1, len(item.record)))

    def _plan_seen(self, item: Item, head: StudyHead, writes: Writes) -> None:
        writes.seen.append((head.id, item.obs.observed_at))
        # An archive's record says nothing of the registry's answers: the validator stays.
        etag = item.obs.etag if isinstance(item.obs, Observation | NotModified) else head.etag
        if isinstance(item, Prepared) and (item.fingerprint, etag) != (head.fingerprint, head.etag):
            # Same content under a new fingerprint: remember it for the next re-read.
            parts = _content_columns(item)["part_hashes"]
            writes.fingerprints.append({"b_id": head.id, "parts": parts})
        elif isinstance(item, Pending) and (item.renewed or head.fingerprint, etag) != (
            head.fingerprint,
            head.etag,
        ):
            renewed = {"fingerprint": item.renewed or head.fingerprint, "etag": etag}
            writes.renewed.append({"b_id": head.id, **renewed})
        writes.results.append(IngestResult(item.obs.nct_id, Outcome.UNCHANGED, head.latest_version))

    def _plan_change(
        self, item: Prepared, head: StudyRow, old: Canonical | None, writes: Writes
    ) -> None:
        obs = item.obs
        if old:
            changes = diff_records(old, item.record, head.area_hashes, item.parts)
        else:
            changes = initial_changes(item.record)
        if head.state is not StudyState.ACTIVE:
            changes.insert(0, FieldChange(STUDY_FIELD, ChangeKind.ADDED, None, None))
        version = head.latest_version + 1
        writes.versions.append(
            self.version_row(head.id, obs.nct_id, version, obs.observed_at, item, item.source_date)
        )
        writes.events += self.event_rows(
            head.id, obs.nct_id, version, changes, obs.observed_at, item.source_date, False
        )
        if old:
            writes.classes += class_rows(head.id, obs.nct_id, version, classify(old, item.record))
        writes.study_updates.append(
            {
                "b_id": head.id,
                "state": StudyState.ACTIVE,
                "alias_of": None,
                "latest_version": version,
                "content_version": version,
                "last_seen_at": obs.observed_at,
                **_content_columns(item),
            }
        )
        writes.results.append(IngestResult(obs.nct_id, Outcome.CHANGED, version, len(changes)))

    def _plan_disappearance(
        self, gone: Disappearance, head: StudyRow | None, writes: Writes
    ) -> None:
        new_state = StudyState.MOVED if gone.alias_of else StudyState.GONE
        if head is None and gone.alias_of is None:
            error = f"{gone.nct_id} is not in the registry (404)"
            writes.results.append(IngestResult(gone.nct_id, Outcome.FAILED, error=error))
        elif head is None:
            # A merged id never mirrored before: remember where it went; it has no versions.
            writes.new_studies.append(
                {
                    "nct_id": gone.nct_id,
                    "state": new_state,
                    "alias_of": gone.alias_of,
                    "latest_version": 0,
                    "content_version": None,
                    "first_seen_at": gone.observed_at,
                    "last_seen_at": gone.observed_at,
                    **_content_columns(None),
                }
            )
            writes.results.append(IngestResult(gone.nct_id, Outcome.GONE))
        elif head.state is new_state and head.alias_of == gone.alias_of:
            # Already recorded as gone: nothing new to say.
            writes.results.append(IngestResult(gone.nct_id, Outcome.UNCHANGED, head.latest_version))
        else:
            self._plan_tombstone(gone, head, new_state, writes)

    def _plan_tombstone(
        self, gone: Disappearance, head: StudyRow, new_state: StudyState, writes: Writes
    ) -> None:
        version = head.latest_version + 1
        detail = {"alias_of": gone.alias_of} if gone.alias_of else None
        change = FieldChange(STUDY_FIELD, ChangeKind.REMOVED, None, detail)
        writes.versions.append(
            self.version_row(head.id, gone.nct_id, version, gone.observed_at, None, None)
        )
        writes.events += self.event_rows(
            head.id, gone.nct_id, version, [change], gone.observed_at, None, False
        )
        writes.classes += class_rows(head.id, gone.nct_id, version, classify({}, None))
        writes.study_updates.append(
            {
                "b_id": head.id,
                "state": new_state,
                "alias_of": gone.alias_of,
                "latest_version": version,
                "content_version": head.content_version,
                "last_seen_at": head.last_seen_at,
                # The content of a gone study stays that of its last version.
                **{k: getattr(head, k) for k in CONTENT_COLUMNS},
            }
        )
        writes.results.append(IngestResult(gone.nct_id, Outcome.GONE, version, 1))

    # -- rows ---------------------------------------------------------------------------

    def version_row(
        self,
        study_id: int,
        nct_id: str,
        version: int,
        observed_at: datetime,
        item: Prepared | None,
        source_date: str | None,
    ) -> dict[str, Any]:
        """A ``study_versions`` row (a tombstone without ``item``); ``flush`` writes it."""
        return {
            "study_id": study_id,
            "nct_id": nct_id,
            "version": version,
            "observed_at": observed_at,
            "source_date": source_date,
            "origin": item.obs.origin if item else "tombstone",
            "content_hash": item.hash if item else None,
            "part_hashes": item.parts if item else None,
            "raw": item.compressed()[0] if item else None,
            "canonical": item.compressed()[1] if item else None,
            "run_id": self.run_id,
            "registry_version": item.obs.registry_version if item else None,
        }

    def event_rows(
        self,
        study_id: int,
        nct_id: str,
        version: int,
        changes: Iterable[FieldChange],
        observed_at: datetime,
        source_date: str | None,
        initial: bool,
    ) -> list[tuple[Any, ...]]:
        """``change_events`` rows of one version, for ``Writes.events``."""
        at, json = self.rows.instant(observed_at), self.rows.json
        return [
            (study_id, nct_id, version, c.field, c.kind.value, json(c.old), json(c.new), at,
             source_date, initial)
            for c in changes
        ]  # fmt: skip

    def _new_study_row(self, item: Prepared) -> dict[str, Any]:
        return {
            "nct_id": item.obs.nct_id,
            "state": StudyState.ACTIVE,
            "alias_of": None,
            "latest_version": 1,
            "content_version": 1,
            "first_seen_at": item.obs.observed_at,
            "last_seen_at": item.obs.observed_at,
            **_content_columns(item),
        }

    # -- flushing: write what was planned -----------------------------------------------

    def flush(self, session: Session, writes: Writes) -> None:
        """Write what ``writes`` holds (in this transaction) and empty it."""
        ids = list(insert_studies(session, writes.new_studies).values())
        rows, versions = self.rows, writes.versions
        rows.insert(session, "study_versions", VERSION_COLUMNS, [rows.version(v) for v in versions])
        if writes.events or versions:
            lock_feed(session)
        rows.insert(session, "change_events", EVENT_COLUMNS, writes.events)
        assign_ids(session, writes.blocks)
        rows.insert(session, "event_blocks", BLOCK_COLUMNS, [rows.block(b) for b in writes.blocks])
        insert_classes(session, writes.classes)
        # The outbox row commits with its version: webhooks never miss one (docs/architecture.md).
        rows.insert(session, "outbox", OUTBOX_COLUMNS, [rows.outbox(v) for v in versions])
        update_studies(
            session, writes.study_updates, writes.fingerprints, writes.seen, writes.renewed
        )
        if self.watch_id is not None:
            touched = [*ids, *writes.members, *(u["b_id"] for u in writes.study_updates)]
            add_watch_members(session, self.watch_id, touched + [sid for sid, _ in writes.seen])
        writes.clear_rows()


def _content_columns(item: Prepared | None) -> dict[str, Any]:
    """The columns of ``studies`` that describe its newest content."""
    if item is None:
        return dict.fromkeys(CONTENT_COLUMNS)
    parts: dict[str, str] = item.parts
    if item.fingerprint is not None:
        parts = {**parts, FINGERPRINT_KEY: item.fingerprint}
    if item.obs.etag is not None:
        parts = {**parts, ETAG_KEY: item.obs.etag}
    return {
        "content_hash": item.hash,
        "part_hashes": parts,
        "source_date": item.source_date,
        "title": _title(item.record),
        "overall_status": _text(item.record.get("status.overallStatus"), 40),
    }


def _title(record: Canonical) -> str | None:
    title = record.get("identification.briefTitle") or record.get("identification.officialTitle")
    return title[:1000] if isinstance(title, str) else None


def _text(value: Any, size: int = 1000) -> str | None:
    """A text column's value: a string that fits its column; anything else (a record with a
    field of the wrong type or length, stored as sent) is not guessed at."""
    return value if isinstance(value, str) and len(value) <= size else None


def _stored(head: StudyHead | None) -> str | None:
    """The fingerprints stored with a study a re-read may match: only an active one's."""
    return head.fingerprint if head is not None and head.state is StudyState.ACTIVE else None


def _still_stored(stored: str | None, head: StudyHead | None) -> bool:
    """Whether the study still holds the fingerprints a pending item matched when read."""
    return stored is not None and _stored(head) == stored


def _changing(chunk: list[Item], heads: Mapping[str, StudyHead]) -> list[str]:
    """The NCT ids of the studies that get a new version (not their first)."""
    return [
        item.obs.nct_id
        for item in chunk
        if isinstance(item, Prepared) and _changes(item, heads.get(item.obs.nct_id))
    ]


def _changes(item: Prepared, head: StudyHead | None) -> bool:
    """Whether ``item`` makes a new version of a stored study."""
    return head is not None and (
        head.state is not StudyState.ACTIVE or head.content_hash != item.hash
    )


def _unique_chunks(items: list[Item]) -> Iterable[list[Item]]:
    """Split so that no chunk holds the same study twice (an archive may repeat one)."""
    chunk: list[Item] = []
    seen: set[str] = set()
    for item in items:
        if item.obs.nct_id in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(item.obs.nct_id)
    if chunk:
        yield chunk
