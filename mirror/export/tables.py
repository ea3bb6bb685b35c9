"""The tables of an export and how their rows are read, in batches, from the mirror.

Each table is a list of typed columns and a reader yielding tuples in that order. Readers
stream (server-side cursors, ``yield_per``): memory stays flat whatever the mirror's size.

- ``studies``: one row per study (its current state);
- ``versions``: one row per stored version, the canonical record as one JSON text column plus
  a few of its fields as typed columns (docs/export.md says why);
- ``changes``: every event of the feed, first-sight events (stored as blocks) expanded;
- ``classes``: one row per version and change class, its parameters as JSON text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from mirror import feed
from mirror.errors import NotFound, UsageError
from mirror.record import parse_nct_id
from mirror.store import (
    Database,
    Study,
    StudyVersion,
    VersionClassRow,
    Watch,
    WatchStudy,
    decompress,
    event_count,
)

BATCH = 2000  # rows fetched from the database at a time


@dataclass(frozen=True)
class Column:
    """A column: ``kind`` is int, text, bool, time (UTC instant), json (a value to encode) or
    raw (JSON text already encoded)."""

    name: str
    kind: str


@dataclass(frozen=True)
class ExportFilter:
    """What to export: the change feed's filters. ``since``/``until`` select what was observed
    in that window (an incremental export); ``fields`` and ``initial`` narrow ``changes``,
    ``classes`` narrows ``changes`` and ``classes``."""

    nct_ids: Sequence[str] = ()
    watch: str | None = None
    fields: Sequence[str] = ()
    classes: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    initial: bool | None = None

    def change_filter(self) -> feed.ChangeFilter:
        return feed.ChangeFilter(
            nct_ids=self.nct_ids, watch=self.watch, fields=self.fields, classes=self.classes,
            since=self.since, until=self.until, initial=self.initial,
        )  # fmt: skip


STUDY_COLUMNS = [
    Column("nct_id", "text"), Column("title", "text"), Column("overall_status", "text"),
    Column("lead_sponsor", "text"), Column("state", "text"), Column("alias_of", "text"),
    Column("first_seen_at", "time"), Column("last_seen_at", "time"),
    Column("versions", "int"), Column("content_version", "int"),
    Column("last_update_post_date", "text"),
]  # fmt: skip

# Fields of the canonical record also given as columns of their own in ``versions``.
VERSION_FIELDS = {
    "overall_status": ("status.overallStatus", "text"),
    "study_type": ("design.studyType", "text"),
    "enrollment_count": ("design.enrollmentCount", "int"),
    "start_date": ("status.startDate", "text"),
    "primary_completion_date": ("status.primaryCompletionDate", "text"),
    "completion_date": ("status.completionDate", "text"),
    "has_results": ("results.hasResults", "bool"),
}
VERSION_COLUMNS = [
    Column("nct_id", "text"), Column("version", "int"), Column("observed_at", "time"),
    Column("source_date", "text"), Column("origin", "text"), Column("registry_version", "int"),
    Column("content_hash", "text"),
    *(Column(name, kind) for name, (_, kind) in VERSION_FIELDS.items()),
    Column("record", "raw"),
]  # fmt: skip

CHANGE_COLUMNS = [
    Column("id", "int"), Column("nct_id", "text"), Column("version", "int"),
    Column("field", "text"), Column("kind", "text"), Column("old", "json"),
    Column("new", "json"), Column("observed_at", "time"), Column("source_date", "text"),
    Column("initial", "bool"), Column("old_text", "text"), Column("new_text", "text"),
]  # fmt: skip

CLASS_COLUMNS = [
    Column("nct_id", "text"), Column("version", "int"), Column("position", "int"),
    Column("name", "text"), Column("params", "json"), Column("observed_at", "time"),
]  # fmt: skip


Columns = list[list[Any]]  # a batch of rows as one list of values per column


def transpose(rows: Sequence[Any]) -> Columns:
    """Rows as columns (one list comprehension per column: several times faster than zip)."""
    if not rows:
        return []
    return [[row[n] for row in rows] for n in range(len(rows[0]))]


@dataclass(frozen=True)
class Table:
    """A table: its columns, how many rows make a batch (a Parquet row group; it bounds
    memory), and how a batch of what its reader yields becomes columns."""

    name: str
    columns: list[Column]
    batch: int
    columnize: Callable[[Sequence[Any]], Columns] = transpose


def _change_columns(events: Sequence[Any]) -> Columns:
    """A batch of feed events (``EventRow``) as the columns of ``changes``: built column by
    column, which costs a fraction of building a tuple per row."""
    ids, nct_ids, versions, fields, kinds, olds, news, times, dates, initial = transpose(events)
    return [
        ids, nct_ids, versions, fields, [k.value for k in kinds], olds, news, times, dates,
        initial, [_scalar_text(v) for v in olds], [_scalar_text(v) for v in news],
    ]  # fmt: skip


TABLES = {
    "studies": Table("studies", STUDY_COLUMNS, 20_000),
    "versions": Table("versions", VERSION_COLUMNS, 250),  # records are ~10-60 kB each
    # First-sight values are whole texts and lists: 10,000 events can hold ~50 MB of them.
    "changes": Table("changes", CHANGE_COLUMNS, 10_000, _change_columns),
    "classes": Table("classes", CLASS_COLUMNS, 50_000),
}


def check_filter(db: Database, flt: ExportFilter) -> None:
    """UsageError or NotFound now, before any file is written, for a filter that cannot work
    (a bad NCT id or glob, since after until, an unknown watch)."""
    flt.change_filter()
    for pattern in (*flt.fields, *flt.classes):
        if not pattern or "[" in pattern or "]" in pattern:
            raise UsageError(f"pattern {pattern!r}: use * and ? only (e.g. 'status.*')")
    with db.session() as session:
        _study_ids(session, flt)


def read_chunks(db: Database, table: str, flt: ExportFilter) -> Iterator[list[Any]]:
    """The rows of ``table`` matching ``flt`` in a stable order, in consecutive lists (for
    ``changes`` the feed's ``EventRow``s, which its ``columnize`` turns into the columns)."""
    if table == "changes":
        return feed.stream_change_chunks(db, flt.change_filter())
    return _read(db, table, flt)


def _read(db: Database, table: str, flt: ExportFilter) -> Iterator[list[Any]]:
    with db.session() as session:
        query = {"studies": _studies, "versions": _versions, "classes": _classes}[table]
        size = min(BATCH, TABLES[table].batch)
        result = session.execute(query(session, flt), execution_options={"yield_per": size})
        convert = {"studies": _study_row, "versions": _version_row, "classes": _class_row}[table]
        for part in result.partitions():
            yield [convert(row) for row in part]


def estimate(db: Database, table: str, flt: ExportFilter) -> int | None:
    """How many rows ``table`` will have, when that is cheap to know (no filter)."""
    if flt != ExportFilter():
        return None
    model = {"studies": Study, "versions": StudyVersion, "classes": VersionClassRow}.get(table)
    with db.session() as session:
        if model is None:
            return event_count(session)
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- conditions ---------------------------------------------------------------------------


def _study_ids(session: Session, flt: ExportFilter) -> list[Any]:
    """Conditions on ``Study`` for the studies ``flt`` names (ids, watch)."""
    where: list[Any] = []
    if flt.nct_ids:
        where.append(Study.nct_id.in_([parse_nct_id(n) for n in flt.nct_ids]))
    if flt.watch is not None:
        watch_id = session.scalar(select(Watch.id).where(Watch.name == flt.watch))
        if watch_id is None:
            raise NotFound(f"no watch named {flt.watch!r}")
        where.append(
            Study.id.in_(select(WatchStudy.study_id).where(WatchStudy.watch_id == watch_id))
        )
    return where


def _observed(column: Any, flt: ExportFilter) -> list[Any]:
    where = []
    if flt.since is not None:
        where.append(column >= flt.since)
    if flt.until is not None:
        where.append(column < flt.until)
    return where


def _classed(flt: ExportFilter) -> Any:
    """The version has a change class matching one of ``flt.classes``."""
    named = or_(*(VersionClassRow.name.like(_like(p), escape="\\") for p in flt.classes))
    return exists().where(
        VersionClassRow.study_id == StudyVersion.study_id,
        VersionClassRow.version == StudyVersion.version,
        named,
    )


def _like(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


# -- studies ------------------------------------------------------------------------------


def _studies(session: Session, flt: ExportFilter) -> Any:
    current = and_(StudyVersion.study_id == Study.id, StudyVersion.version == Study.content_version)
    query = (
        select(Study, StudyVersion.canonical)
        .outerjoin(StudyVersion, current)
        .where(*_study_ids(session, flt))
        .order_by(Study.id)
    )
    if flt.since is not None or flt.until is not None:  # the studies with a version observed then
        seen = select(StudyVersion.study_id).where(*_observed(StudyVersion.observed_at, flt))
        query = query.where(Study.id.in_(seen))
    return query


def _study_row(row: Any) -> tuple[Any, ...]:
    study, canonical = row
    lead = _record(canonical).get("sponsor.lead") if canonical is not None else None
    return (
        study.nct_id, study.title, study.overall_status,
        lead.get("name") if isinstance(lead, dict) else None, study.state.value,
        study.alias_of, study.first_seen_at, study.last_seen_at, study.latest_version,
        study.content_version, study.source_date,
    )  # fmt: skip


def _record(canonical: bytes) -> dict[str, Any]:
    record = orjson.loads(decompress(canonical))
    return record if isinstance(record, dict) else {}


# -- versions -----------------------------------------------------------------------------

_VERSION_SELECT = (
    Study.nct_id, StudyVersion.version, StudyVersion.observed_at, StudyVersion.source_date,
    StudyVersion.origin, StudyVersion.registry_version, StudyVersion.content_hash,
    StudyVersion.canonical,
)  # fmt: skip


def _versions(session: Session, flt: ExportFilter) -> Any:
    query = (
        select(*_VERSION_SELECT)
        .join(Study, Study.id == StudyVersion.study_id)
        .where(*_study_ids(session, flt), *_observed(StudyVersion.observed_at, flt))
        .order_by(StudyVersion.id)
    )
    return query.where(_classed(flt)) if flt.classes else query


def _version_row(row: Any) -> tuple[Any, ...]:
    *head, canonical = row
    if canonical is None:  # a tombstone: the study left the registry here
        return (*head, *(None for _ in VERSION_FIELDS), None)
    text = decompress(canonical)
    record = orjson.loads(text)
    values = (_typed(record.get(path), kind) for path, kind in VERSION_FIELDS.values())
    return (*head, *values, text.decode())


def _typed(value: Any, kind: str) -> Any:
    """``value`` if it has the column's type (records are stored as sent), else None."""
    wanted = {"text": str, "int": int, "bool": bool}[kind]
    if isinstance(value, bool) and kind != "bool":
        return None
    return value if isinstance(value, wanted) else None


# -- changes ------------------------------------------------------------------------------


_PLAIN = (int, float)


def _scalar_text(value: Any) -> str | None:
    """A string, number or boolean value as plain text (lists, objects, None: None)."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, _PLAIN):
        return orjson.dumps(value).decode()
    return None


# -- classes ------------------------------------------------------------------------------


def _classes(session: Session, flt: ExportFilter) -> Select[Any]:
    version = and_(
        StudyVersion.study_id == VersionClassRow.study_id,
        StudyVersion.version == VersionClassRow.version,
    )
    query = (
        select(
            VersionClassRow.nct_id,
            VersionClassRow.version,
            VersionClassRow.position,
            VersionClassRow.name,
            VersionClassRow.params,
            StudyVersion.observed_at,
        )  # fmt: skip
        .join(StudyVersion, version)
        .join(Study, Study.id == VersionClassRow.study_id)
        .where(*_study_ids(session, flt), *_observed(StudyVersion.observed_at, flt))
        .order_by(VersionClassRow.id)
    )
    if flt.classes:
        query = query.where(
            or_(*(VersionClassRow.name.like(_like(p), escape="\\") for p in flt.classes))
        )
    return query


def _class_row(row: Any) -> tuple[Any, ...]:
    return tuple(row)
