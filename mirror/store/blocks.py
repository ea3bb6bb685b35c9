"""A study's first-sight events, stored as one block and read back as events.

The first version of a study records every field of its canonical record as ``added`` with
``initial: true`` (docs/architecture.md). Those ~74 events per study repeat the record itself;
stored as rows they were three quarters of a mirror's database and most of the time of a first
import. So a first version's events are an :class:`~mirror.store.schema.EventBlock`: the writer
reserves one feed id per field (in the record's key order, under the same lock as every other
event id) and stores one row; readers expand it into exactly the events rows would have held,
with those ids, taking the values from the version's canonical record.

Write side: :func:`block_row`, :func:`_reserve_ids`. Read side: :func:`expand` and the
lookups by study and by version; the feed's filtered walk is in ``mirror.feed.query``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, Select, func, select, text, tuple_
from sqlalchemy.orm import Session

from mirror.record import ChangeKind
from mirror.store.rows import BLOCK_COLUMNS, decompress
from mirror.store.schema import ChangeEvent, EventBlock, StudyVersion

# A change event as readers get it, in the order of the event's keys (docs/architecture.md):
# (id, nct_id, version, field, kind, old, new, observed_at, source_date, initial).
EventRow = tuple[int, str, int, str, ChangeKind, Any, Any, datetime, str | None, bool]


def block_row(
    study_id: int,
    nct_id: str,
    version: int,
    observed_at: datetime,
    source_date: str | None,
    fields: Iterable[str],
) -> dict[str, Any]:
    """A planned block (its ids are given when it is written: :func:`assign_ids`); ``fields``
    is never empty (a record always has its nctId)."""
    names = list(fields)
    assert names, "a first version without fields"
    return {
        "study_id": study_id, "nct_id": nct_id, "version": version, "observed_at": observed_at,
        "source_date": source_date, "fields": orjson.dumps(names).decode(), "size": len(names),
    }  # fmt: skip


def assign_ids(session: Session, blocks: Sequence[dict[str, Any]]) -> None:
    """Reserve feed ids for ``blocks`` (in place: ``first_id``, ``last_id``).

    The caller holds the feed lock (``ingest_rows.lock_feed``) or, on SQLite, the write lock.
    """
    total = sum(b["size"] for b in blocks)
    if not total:
        return
    next_id = _reserve_ids(session, total)
    for block in blocks:
        block["first_id"], next_id = next_id, next_id + block["size"]
        block["last_id"] = next_id - 1


def _reserve_ids(session: Session, count: int) -> int:
    """The first of ``count`` consecutive change-event ids no event or block will ever get."""
    if session.get_bind().dialect.name == "postgresql":
        last = session.scalar(
            text("SELECT setval(pg_get_serial_sequence('change_events', 'id'),"
                 " nextval(pg_get_serial_sequence('change_events', 'id')) + :n - 1)"),
            {"n": count},
        )  # fmt: skip
        assert last is not None
        return int(last) - count + 1
    # SQLite: AUTOINCREMENT hands out ids above sqlite_sequence's `seq` (ordinary rows may be
    # updated, per SQLite's documentation), so moving it on reserves the ids in between.
    last = session.scalar(
        text(
            "UPDATE sqlite_sequence SET seq = seq + :n WHERE name = 'change_events' RETURNING seq"
        ),
        {"n": count},
    )
    if last is None:  # no event was ever written: the table has no sqlite_sequence row yet
        session.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('change_events', :n)"),
            {"n": count},
        )
        last = count
    return int(last) - count + 1


# -- reading ------------------------------------------------------------------------------------

# The columns of an event (EventRow), for reading rows without ORM objects.
EVENT_SELECT = (
    ChangeEvent.id, ChangeEvent.nct_id, ChangeEvent.version, ChangeEvent.field,
    ChangeEvent.kind, ChangeEvent.old, ChangeEvent.new, ChangeEvent.observed_at,
    ChangeEvent.source_date, ChangeEvent.initial,
)  # fmt: skip


# A block without its version's canonical record: enough to tell which of its events a page
# takes, before any record is read (a record is ~7 KB compressed, a block may give one event).
_HEAD = tuple(getattr(EventBlock, name) for name in BLOCK_COLUMNS)
# A block with what expanding it needs: its row and the canonical record of its version.
_EXPANDABLE = (*_HEAD, StudyVersion.canonical)


def expandable(*where: Any) -> Select[Any]:
    """Blocks matching ``where``, each with its version's canonical record (unordered)."""
    return (
        select(*_EXPANDABLE)
        .join(
            StudyVersion,
            (StudyVersion.study_id == EventBlock.study_id)
            & (StudyVersion.version == EventBlock.version),
        )
        .where(*where)
    )


def expand(
    block: Row[Any] | Mapping[str, Any], only: Callable[[str], Any] | None = None
) -> list[EventRow]:
    """The events of a block row of :func:`expandable`, in id order (``only``: of the fields
    it is true for)."""
    chosen = chosen_events(block, only)
    if not chosen:
        return []
    return events_of(block, chosen, _record(_row(block)["canonical"]))


def block_heads(*where: Any) -> Select[Any]:
    """Blocks matching ``where``, without their records (unordered): see :func:`expand_chosen`."""
    return select(*_HEAD).where(*where)


def chosen_events(
    block: Row[Any] | Mapping[str, Any], only: Callable[[str], Any] | None = None
) -> list[tuple[int, str]]:
    """(id, field) of a block's events, in id order (``only``: of the fields it is true for)."""
    b = _row(block)
    first, names = b["first_id"], orjson.loads(b["fields"])
    if only is None:
        return [(first + n, field) for n, field in enumerate(names)]
    return [(first + n, field) for n, field in enumerate(names) if only(field)]


def expand_chosen(
    session: Session, taken: Sequence[tuple[Row[Any], list[tuple[int, str]]]]
) -> list[EventRow]:
    """The events ``taken`` ((block head of :func:`block_heads`, its chosen events)), in that
    order, their values from the blocks' canonical records: read in one query, each parsed and
    let go in turn (a page of 1,000 blocks does not hold 1,000 parsed records)."""
    where = {(head.study_id, head.version): n for n, (head, _) in enumerate(taken)}
    if not where:
        return []
    found: list[list[EventRow] | None] = [None] * len(taken)
    query = select(StudyVersion.study_id, StudyVersion.version, StudyVersion.canonical).where(
        tuple_(StudyVersion.study_id, StudyVersion.version).in_(list(where))
    )
    for study_id, version, canonical in session.execute(query):
        n = where[(study_id, version)]
        found[n] = events_of(*taken[n], _record(canonical))
    return [
        event
        for n, events in enumerate(found)
        for event in (events if events is not None else events_of(*taken[n], {}))
    ]


def events_of(
    block: Row[Any] | Mapping[str, Any],
    chosen: Iterable[tuple[int, str]],
    record: Mapping[str, Any],
) -> list[EventRow]:
    """The events ``chosen`` (see :func:`chosen_events`) of a block, their values from
    ``record``, the canonical record of the block's version."""
    b = _row(block)
    nct_id, version = b["nct_id"], b["version"]
    at, source_date, added = b["observed_at"], b["source_date"], ChangeKind.ADDED
    return [
        (id_, nct_id, version, field, added, None, record.get(field), at, source_date, True)
        for id_, field in chosen
    ]


def _row(block: Row[Any] | Mapping[str, Any]) -> Mapping[Any, Any]:
    return block._mapping if isinstance(block, Row) else block


def _record(canonical: bytes | None) -> dict[str, Any]:
    """A version's canonical record from its stored blob ({} for a tombstone's)."""
    return orjson.loads(decompress(canonical)) if canonical is not None else {}


def study_events(
    session: Session, study_id: int, *, since: datetime | None = None
) -> list[EventRow]:
    """Every event of one study (rows and blocks), observed since ``since``, in id order."""
    rows = select(*EVENT_SELECT).where(ChangeEvent.study_id == study_id)
    blocks = expandable(EventBlock.study_id == study_id)
    if since is not None:
        rows = rows.where(ChangeEvent.observed_at >= since)
        blocks = blocks.where(EventBlock.observed_at >= since)
    found: list[EventRow] = [tuple(r) for r in session.execute(rows)]
    for block in session.execute(blocks):
        found += expand(block)
    return sorted(found)


def version_events(
    session: Session, keys: Iterable[tuple[int, int]], *, initial: bool = True
) -> dict[tuple[int, int], list[EventRow]]:
    """The events of the study versions ``keys`` ((study id, version)), in id order.

    ``initial=False`` leaves out first-sight events (blocks, and rows of older mirrors).
    """
    wanted = set(keys)
    found: dict[tuple[int, int], list[EventRow]] = {}
    if not wanted:
        return found
    query = select(*EVENT_SELECT, ChangeEvent.study_id).where(
        tuple_(ChangeEvent.study_id, ChangeEvent.version).in_(wanted)
    )
    if not initial:
        query = query.where(ChangeEvent.initial.is_(False))
    for *event, study_id in session.execute(query):
        found.setdefault((study_id, event[2]), []).append(tuple(event))
    if initial:
        blocks = expandable(tuple_(EventBlock.study_id, EventBlock.version).in_(wanted))
        for block in session.execute(blocks):
            found.setdefault((block.study_id, block.version), []).extend(expand(block))
    for events in found.values():
        events.sort()
    return found


def study_fields(session: Session, study_id: int) -> dict[int, list[str]]:
    """The fields each version of a study changed (blocks: every field), by version."""
    fields: dict[int, list[str]] = {}
    query = select(ChangeEvent.version, ChangeEvent.field).where(ChangeEvent.study_id == study_id)
    for version, field in session.execute(query.order_by(ChangeEvent.id)):
        fields.setdefault(version, []).append(field)
    query = select(EventBlock.version, EventBlock.fields).where(EventBlock.study_id == study_id)
    for version, names in session.execute(query):
        fields.setdefault(version, []).extend(orjson.loads(names))
    return fields


def event_count(session: Session) -> int:
    """How many change events the mirror holds (rows and the events of blocks)."""
    rows = session.scalar(select(func.count()).select_from(ChangeEvent)) or 0
    in_blocks = session.scalar(select(func.sum(EventBlock.last_id - EventBlock.first_id + 1)))
    return int(rows) + int(in_blocks or 0)


def as_event(row: EventRow) -> ChangeEvent:
    """An event as a (detached) ORM object, for code that renders events."""
    id_, nct_id, version, field, kind, old, new, observed_at, source_date, initial = row
    return ChangeEvent(
        id=id_, nct_id=nct_id, version=version, field=field, kind=kind, old=old, new=new,
        observed_at=observed_at, source_date=source_date, initial=initial,
    )  # fmt: skip
