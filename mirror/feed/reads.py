"""Reading what the mirror holds: the change feed, a study's versions, diffs between versions."""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from mirror.config import PagesSettings
from mirror.errors import NotFound, UsageError
from mirror.feed.query import (
    MAX_LIMIT,
    ChangeFilter,
    event_dict,
    field_test,
    find,
    stream,
    stream_chunks,
    watch_members,
)
from mirror.record import Canonical, FieldChange, diff_records, format_instant, parse_nct_id
from mirror.store import (
    ChangeEvent,
    Database,
    EventRow,
    Study,
    StudyState,
    StudyVersion,
    SyncRun,
    VersionClassRow,
    as_event,
    decompress,
    event_count,
    in_time,
    study_events,
    study_fields,
)


def changes(db: Database, flt: ChangeFilter) -> list[ChangeEvent]:
    """Events matching ``flt`` in id order, starting after ``flt.after``.

    With ``flt.newest_first``: the newest ``flt.limit`` matching events, newest first.
    """
    with db.session() as session:
        return [as_event(row) for row in find(session, flt)]


def change_dicts(db: Database, flt: ChangeFilter) -> list[dict[str, Any]]:
    """:func:`changes` as the event's JSON objects, read without ORM objects (the API's path)."""
    with db.session() as session:
        rows = find(session, flt)
    return [event_dict(row) for row in rows]


def stream_changes(db: Database, flt: ChangeFilter) -> Generator[EventRow, None, None]:
    """Every event matching ``flt`` after ``flt.after``, in id order, with flat memory: the
    whole feed in one read (``flt.limit`` does not apply). Close the iterator (or read it to
    its end) to end the read transaction."""
    with db.session() as session:
        yield from stream(session, flt)


def stream_change_chunks(db: Database, flt: ChangeFilter) -> Generator[list[EventRow], None, None]:
    """:func:`stream_changes` in consecutive lists of events (for writers that take batches)."""
    with db.session() as session:
        yield from stream_chunks(session, flt)


def changes_by_version(db: Database, flt: ChangeFilter) -> list[ChangeEvent]:
    """Like :func:`changes`, but the last study version of the page is never cut in two."""
    with db.session() as session:
        events = find(session, flt)
        if len(events) < flt.limit:
            return [as_event(row) for row in events]
        last_id, nct_id, version = events[-1][:3]
        rest_of_version = replace(flt, limit=MAX_LIMIT, nct_ids=[nct_id], version=version)
        if flt.newest_first:
            rest_of_version = replace(rest_of_version, before=last_id)
        else:
            rest_of_version = replace(rest_of_version, after=last_id)
        rest = find(session, rest_of_version)
        return [as_event(row) for row in events + rest]


# -- studies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFilter:
    """Which studies to list, in the order they were first stored; ``after`` is a study id."""

    status: str | None = None  # overall status, e.g. RECRUITING
    watch: str | None = None
    changed_since: datetime | None = None  # with a version (so an event) observed since
    after: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")


def studies(db: Database, flt: StudyFilter) -> list[Study]:
    """A page of studies matching ``flt`` with ids above ``flt.after``, in id order."""
    query = select(Study).where(Study.id > flt.after).order_by(Study.id).limit(flt.limit)
    if flt.status is not None:
        query = query.where(Study.overall_status == flt.status.strip().upper())
    if flt.changed_since is not None:
        # Every version has events observed with it: one probe of the (study, version) index.
        query = query.where(
            exists().where(
                StudyVersion.study_id == Study.id, StudyVersion.observed_at >= flt.changed_since
            )
        )
    with db.session() as session:
        if flt.watch is not None:
            query = query.where(Study.id.in_(watch_members(session, flt.watch)))
        return list(session.scalars(query))


def last_sync(db: Database) -> SyncRun | None:
    """The most recently started sync run."""
    with db.session() as session:
        return session.scalar(select(SyncRun).order_by(SyncRun.id.desc()).limit(1))


# -- one study ------------------------------------------------------------------------------


def get_study(session: Session, nct_id: str) -> Study:
    nct_id = parse_nct_id(nct_id)
    study = session.scalar(select(Study).where(Study.nct_id == nct_id))
    if study is None:
        raise NotFound(f"{nct_id} is not in this mirror (run `ctmirror sync {nct_id}`)")
    return study


@dataclass(frozen=True)
class VersionInfo:
    version: int
    observed_at: datetime
    source_date: str | None
    origin: str
    events: int
    fields: list[str]


def history(db: Database, nct_id: str) -> tuple[Study, list[VersionInfo]]:
    """Every stored version of a study, oldest first in time, with the fields each changed."""
    with db.session() as session:
        study = get_study(session, nct_id)
        versions = _in_time(session, study)
        fields = study_fields(session, study.id)
        infos = [
            VersionInfo(
                v.version,
                v.observed_at,
                v.source_date,
                v.origin,
                len(fields.get(v.version, [])),
                fields.get(v.version, []),
            )  # fmt: skip
            for v in versions
        ]
        return study, infos


# What the timeline shows of each version besides its classes (the HTML page charts them).
SNAPSHOT_FIELDS = {
    "overall_status": "status.overallStatus",
    "enrollment": "design.enrollmentCount",
    "enrollment_type": "design.enrollmentType",
    "primary_completion": "status.primaryCompletionDate",
    "primary_completion_type": "status.primaryCompletionDateType",
}


def timeline(db: Database, nct_id: str) -> list[dict[str, Any]]:
    """One entry per stored version, oldest first: its dates, change classes and key values."""
    with db.session() as session:
        return _study_timeline(session, get_study(session, nct_id))


def _study_timeline(
    session: Session,
    study: Study,
    up_to: int | None = None,
    classes: dict[int, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """:func:`timeline` of a loaded study, up to version ``up_to`` in time (default: all);
    ``classes``: its :func:`version_classes`, when the caller has them already."""
    versions = _in_time(session, study, up_to)
    if classes is None:
        classes = version_classes(session, study.id)
    return [
        {
            "version": v.version,
            "source_date": v.source_date,
            "observed_at": format_instant(v.observed_at),
            "origin": v.origin,
            "registry_version": v.registry_version,
            "classes": classes.get(v.version, []),
            "snapshot": _snapshot(v),
        }
        for v in versions
    ]


def version_classes(session: Session, study_id: int) -> dict[int, list[dict[str, Any]]]:
    """The change classes of a study's versions: version -> ``[{"name": …, **params}]``."""
    found: dict[int, list[dict[str, Any]]] = {}
    for version, name, params in session.execute(
        select(VersionClassRow.version, VersionClassRow.name, VersionClassRow.params)
        .where(VersionClassRow.study_id == study_id)
        .order_by(VersionClassRow.version, VersionClassRow.position)
    ):
        found.setdefault(version, []).append({"name": name, **params})
    return found


def _snapshot(version: StudyVersion) -> dict[str, Any] | None:
    if version.canonical is None:
        return None  # the study left the registry here
    record = _canonical_of(version)
    return {key: record.get(path) for key, path in SNAPSHOT_FIELDS.items()}


def _in_time(session: Session, study: Study, up_to: int | None = None) -> list[StudyVersion]:
    """The study's versions in the order of its history (``StudyVersion.in_time``), those
    up to version ``up_to`` when given."""
    versions = sorted(
        session.scalars(select(StudyVersion).where(StudyVersion.study_id == study.id)),
        key=lambda v: v.in_time,
    )
    if up_to is not None:
        cut = next((i for i, v in enumerate(versions) if v.version == up_to), len(versions))
        versions = versions[: cut + 1]
    return versions


@dataclass(frozen=True)
class VersionMark:
    """A version in a study's version bar: when, from where, and whether it holds a record
    (a tombstone, recording that the study left the registry, holds none)."""

    version: int
    observed_at: datetime
    source_date: str | None
    origin: str
    has_record: bool


def version_marks(session: Session, study: Study) -> list[VersionMark]:
    """Every version of a study, oldest first in time (``StudyVersion.in_time``), read
    without the records themselves."""
    v = StudyVersion
    rows = session.execute(
        select(v.version, v.observed_at, v.source_date, v.origin, v.registry_version,
               v.canonical.is_not(None))
        .where(v.study_id == study.id)
    ).all()  # fmt: skip
    ordered = sorted(rows, key=lambda r: in_time(r[2], r[1], r[4], r[0]))
    return [VersionMark(r[0], r[1], r[2], r[3], bool(r[5])) for r in ordered]


def _load_version(session: Session, study: Study, version: int | None = None) -> StudyVersion:
    """Version ``version`` of a study, or the one holding its current content."""
    wanted = study.content_version if version is None else version
    query = select(StudyVersion).where(
        StudyVersion.study_id == study.id, StudyVersion.version == wanted
    )
    found = session.scalar(query) if wanted is not None else None
    if found is None:
        which = f"version {version}" if version is not None else "stored record"
        held = f"1..{study.latest_version}" if study.latest_version else "none"
        raise NotFound(f"{study.nct_id} has no {which} (it has {held})")
    return found


def _raw_json(version: StudyVersion) -> bytes | None:
    return decompress(version.raw) if version.raw is not None else None


def raw_version(db: Database, nct_id: str, version: int) -> bytes:
    """The JSON of a version exactly as the source served it; NotFound for a tombstone."""
    with db.session() as session:
        return _with_raw(session, nct_id, version)[2]


def _with_raw(
    session: Session, nct_id: str, version: int | None
) -> tuple[Study, StudyVersion, bytes]:
    """The study, its version (default: the newest with content) and the version's raw JSON;
    NotFound when the version holds none (a tombstone, or raw JSON pruned)."""
    study = get_study(session, nct_id)
    stored = _load_version(session, study, version)
    raw = _raw_json(stored)
    if raw is None:
        raise NotFound(_no_raw(study.nct_id, stored))
    return study, stored, raw


def _no_raw(nct_id: str, version: StudyVersion) -> str:
    if version.canonical is None:
        return (
            f"{nct_id} version {version.version} records that the study left the registry: "
            "it has no record"
        )
    return (
        f"{nct_id} version {version.version}: its raw JSON was dropped by the retention setting "
        f"(database.raw_retention_days); its canonical record is at "
        f"/v1/studies/{nct_id}?version={version.version}"
    )


def _canonical_of(version: StudyVersion) -> Canonical:
    return orjson.loads(decompress(version.canonical)) if version.canonical is not None else {}


def diff_versions(db: Database, nct_id: str, old: int, new: int) -> list[FieldChange]:
    """Field changes from version ``old`` to version ``new`` (any two, computed now)."""
    with db.session() as session:
        study = get_study(session, nct_id)
        a, b = _load_version(session, study, old), _load_version(session, study, new)
        return diff_records(_canonical_of(a), _canonical_of(b), a.part_hashes, b.part_hashes)


def _recent_events(
    session: Session, study: Study, since: datetime, fields: Sequence[str]
) -> tuple[list[ChangeEvent], dict[int, int]]:
    """A study's events observed since ``since`` on fields matching the globs ``fields``, the
    newest version first (each version's in id order); and the number of fields of each
    first sight among them (every field, listed or not)."""
    rows = study_events(session, study.id, since=since)
    first_seen: dict[int, int] = {}
    for row in rows:
        if row[9]:
            first_seen[row[2]] = first_seen.get(row[2], 0) + 1
    wanted = field_test(fields)
    if wanted is None:  # no fields listed
        return [], first_seen
    found = [as_event(row) for row in rows if wanted(row[3])]
    return sorted(found, key=lambda e: -e.version), first_seen


@dataclass(frozen=True)
class Departure:
    """How a study left the registry: ``gone`` (404) or ``moved`` (merged into ``alias_of``),
    observed at ``since``."""

    state: str
    since: datetime
    alias_of: str | None = None


def departure(session: Session, study: Study) -> Departure | None:
    """None while the registry lists the study; else when and how it left (its newest
    tombstone: the version that records the departure)."""
    if study.state is StudyState.ACTIVE:
        return None
    since = session.scalar(
        select(StudyVersion.observed_at)
        .where(StudyVersion.study_id == study.id, StudyVersion.canonical.is_(None))
        .order_by(StudyVersion.version.desc())
        .limit(1)
    )
    return Departure(study.state.value, since or study.last_seen_at, study.alias_of)


@dataclass(frozen=True)
class PageInput:
    """What a study page shows: one version's raw record and the study's recent events."""

    study: dict[str, Any]  # the raw API v2 record of the rendered version
    nct_id: str
    version: int
    last_seen_at: datetime
    events: Sequence[ChangeEvent]  # recent events up to that version, newest version first
    # Recent change classes up to that version, newest version first: each
    # {"version", "observed_at" (datetime), "name", **params}.
    classes: Sequence[dict[str, Any]] = ()
    timeline: Sequence[dict[str, Any]] = ()  # _study_timeline() up to that version
    departure: Departure | None = None  # the study left the registry (the page says so)
    versions: Sequence[VersionMark] = ()  # every version of the study, oldest first in time
    latest: int | None = None  # the version holding the study's present content
    first_seen: Mapping[int, int] = field(default_factory=dict)  # first sight: its field count


def page_input(
    db: Database, nct_id: str, version: int | None, settings: PagesSettings
) -> PageInput:
    """Everything the page of ``nct_id`` (at ``version``, default the newest) needs."""
    with db.session() as session:
        study, stored, raw = _with_raw(session, nct_id, version)
        window = datetime.now(UTC) - timedelta(days=settings.recent_days)
        marks = version_marks(session, study)
        cut = next(i for i, m in enumerate(marks) if m.version == stored.version)
        shown = {m.version for m in marks[: cut + 1]}
        recent, first_seen = _recent_events(session, study, window, settings.recent_fields)
        events = [e for e in recent if e.version in shown]
        by_version = version_classes(session, study.id)
        classes = _recent_classes(session, study, window, shown, by_version)
        return PageInput(
            orjson.loads(raw), study.nct_id, stored.version, study.last_seen_at, events,
            classes, _study_timeline(session, study, stored.version, by_version),
            departure(session, study), marks, study.content_version,
            {v: n for v, n in first_seen.items() if v in shown},
        )  # fmt: skip


def _recent_classes(
    session: Session,
    study: Study,
    since: datetime,
    shown: set[int],
    classes: dict[int, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The classes of the ``shown`` versions observed since ``since``, newest first."""
    rows = session.execute(
        select(StudyVersion.version, StudyVersion.observed_at)
        .where(StudyVersion.study_id == study.id, StudyVersion.observed_at >= since)
        .order_by(StudyVersion.observed_at.desc(), StudyVersion.version.desc())
    ).all()
    return [
        {"version": version, "observed_at": observed_at, **c}
        for version, observed_at in rows
        if version in shown
        for c in classes.get(version, [])
    ]


def study_detail(db: Database, nct_id: str, version: int | None = None) -> dict[str, Any]:
    """A study's state and the canonical record of one version (default: the newest)."""
    with db.session() as session:
        study = get_study(session, nct_id)
        stored = _load_version(session, study, version)
        left = departure(session, study)
        return {
            "nct_id": study.nct_id,
            "title": study.title,
            "overall_status": study.overall_status,
            "state": study.state.value,
            "alias_of": study.alias_of,
            "left_registry_at": format_instant(left.since) if left else None,
            "version": stored.version,
            "latest_version": study.latest_version,
            "first_seen_at": study.first_seen_at.isoformat(),
            "last_seen_at": study.last_seen_at.isoformat(),
            "observed_at": stored.observed_at.isoformat(),
            "source_date": stored.source_date,
            "record": _canonical_of(stored),
        }


def counts(session: Session) -> dict[str, int]:
    return {
        "studies": session.scalar(select(func.count()).select_from(Study)) or 0,
        "versions": session.scalar(select(func.count()).select_from(StudyVersion)) or 0,
        "events": event_count(session),
    }
