"""Reads for the pages for people (``/``, ``/trials``, compare, ``/watches``) and the Atom feed:
the feed grouped by study version with first sights folded, the study list, two versions to
compare, the watches with their last run.

A first sight (a study's first version) records every field as ``added``: hundreds of events
that repeat the record. Listed one by one they bury the changes people look for, and a page of
100 events holds a handful of versions. Here a first sight is one entry that counts its fields
(``VersionChanges.first_sight``) and counts as one event towards a page's ``limit``; its events
stay in the feed (``/v1/changes``) unchanged.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mirror.errors import UsageError
from mirror.feed.query import ChangeFilter, field_test, first_sights, watch_members
from mirror.feed.reads import VersionMark, changes_by_version, get_study, version_marks
from mirror.record import ChangeKind, parse_nct_id
from mirror.store import (
    ChangeEvent,
    Database,
    EventBlock,
    Study,
    SyncRun,
    VersionClassRow,
    Watch,
)


@dataclass(frozen=True)
class VersionChanges:
    """The changes of one study version: its events, or for a folded first sight none and
    the number of its fields (those matching the filter's field globs)."""

    nct_id: str
    version: int
    observed_at: datetime
    source_date: str | None
    first_id: int
    last_id: int
    events: Sequence[ChangeEvent] = ()
    first_sight: int = 0

    @property
    def folded(self) -> bool:
        return self.first_sight > 0


def group_versions(events: Iterable[ChangeEvent], *, fold: bool = True) -> list[VersionChanges]:
    """Events grouped by study version in the order they come; with ``fold``, a version whose
    events are all ``initial`` is folded into its count."""
    groups: dict[tuple[str, int], list[ChangeEvent]] = {}
    for event in events:
        groups.setdefault((event.nct_id, event.version), []).append(event)
    found = []
    for (nct_id, version), group in groups.items():
        ids = [e.id or 0 for e in group]
        folded = fold and all(e.initial for e in group)
        found.append(
            VersionChanges(
                nct_id,
                version,
                group[0].observed_at,
                group[0].source_date,
                min(ids),
                max(ids),
                () if folded else group,
                len(group) if folded else 0,
            )  # fmt: skip
        )
    return found


def version_changes(db: Database, flt: ChangeFilter) -> list[VersionChanges]:
    """A page of the feed as study versions in feed order (``newest_first``: newest first),
    first sights folded: at most about ``flt.limit`` events, a first sight counting as one,
    and a version never cut in two. The next page is after (newest first: before) the last
    entry's ``last_id`` (``first_id``).

    Under a field filter first sights are not folded: the filter asks for those fields'
    values, and a first sight's count would hide them.
    """
    if flt.fields:
        return group_versions(changes_by_version(db, flt), fold=False)
    newest = flt.newest_first
    later: list[VersionChanges] = []
    if flt.initial is not True:
        later = group_versions(changes_by_version(db, replace(flt, initial=False)))
    folded: list[VersionChanges] = []
    if flt.initial is not False and (not flt.kinds or ChangeKind.ADDED in flt.kinds):
        with db.session() as session:
            folded = [_folded(row, flt.fields) for row in first_sights(session, flt)]
    merged = sorted(
        [*later, *(f for f in folded if f.first_sight)],
        key=lambda v: v.last_id if newest else v.first_id,
        reverse=newest,
    )
    page: list[VersionChanges] = []
    size = 0
    for entry in merged:
        if size >= flt.limit:
            break
        page.append(entry)
        size += len(entry.events) or 1
    return page


def _folded(row: Any, patterns: Sequence[str]) -> VersionChanges:
    names = orjson.loads(row.fields)
    wanted = field_test(patterns)
    count = sum(1 for n in names if wanted(n)) if wanted else len(names)
    return VersionChanges(
        row.nct_id, row.version, row.observed_at, row.source_date, row.first_id, row.last_id,
        first_sight=count,
    )  # fmt: skip


@dataclass(frozen=True)
class Labels:
    """What a list of versions shows beside their changes: study titles, version classes."""

    titles: dict[str, str] = field(default_factory=dict)
    classes: dict[tuple[str, int], list[str]] = field(default_factory=dict)


def labels(db: Database, versions: Sequence[VersionChanges]) -> Labels:
    """The titles of the studies of ``versions`` and the change-class names of each version."""
    nct_ids = list({v.nct_id for v in versions})
    if not nct_ids:
        return Labels()
    wanted = {(v.nct_id, v.version) for v in versions}
    with db.session() as session:
        studies = session.execute(
            select(Study.id, Study.nct_id, Study.title).where(Study.nct_id.in_(nct_ids))
        ).all()
        by_id = {sid: nct for sid, nct, _ in studies}
        rows = session.execute(
            select(VersionClassRow.study_id, VersionClassRow.version, VersionClassRow.name)
            .where(VersionClassRow.study_id.in_(list(by_id)))
            .order_by(VersionClassRow.version, VersionClassRow.position)
        ).all()
    classes: dict[tuple[str, int], list[str]] = {}
    for study_id, version, name in rows:
        key = (by_id[study_id], version)
        if key in wanted:
            classes.setdefault(key, []).append(name)
    return Labels({nct: title or nct for _, nct, title in studies}, classes)


# -- the study list -----------------------------------------------------------------------

STUDY_SORTS = ("changed", "id")  # last change first; NCT id


@dataclass(frozen=True)
class StudyQuery:
    """Which studies ``/trials`` lists: ``q`` an NCT id (or its start) or words of the title."""

    q: str = ""
    status: str | None = None
    watch: str | None = None
    sort: str = "changed"
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.sort not in STUDY_SORTS:
            raise UsageError(f"sort must be one of {', '.join(STUDY_SORTS)}, got {self.sort!r}")


@dataclass(frozen=True)
class StudyRow:
    nct_id: str
    title: str
    status: str | None
    state: str
    versions: int
    last_change: datetime | None


def study_rows(db: Database, q: StudyQuery) -> tuple[list[StudyRow], int]:
    """A page of the study list and how many studies match in all.

    "Last change first" orders by each study's newest change event (the feed's order; its
    date is that event's observation). Versions carry their records, so reading every
    study's versions to sort would read most of the database: up to RANK_MAX matches (of a
    search, a status, a watch) are ranked from the (nct_id, id) index of their events; more,
    or the list of everything, walk the feed from its newest event until the page is full."""
    where = _study_conditions(q)
    with db.session() as session:
        if q.watch:
            where.append(Study.id.in_(watch_members(session, q.watch)))
        # One pass over the matches (a title search reads every title): their ids.
        matched = list(session.scalars(select(Study.id).where(*where))) if where else None
        if matched is None:
            total = session.scalar(select(func.count()).select_from(Study)) or 0
        else:
            total = len(matched)
        if q.offset >= total:
            return [], total
        if q.sort == "id":
            query = select(Study.id).where(*where).order_by(Study.nct_id)
            ids = list(session.scalars(query.offset(q.offset).limit(q.limit)))
            latest = _observed(session, _newest_events(session, ids))
        elif matched is not None and total <= RANK_MAX:
            ranked = _newest_events(session, matched)
            ids = sorted(ranked, key=lambda i: -ranked[i])[q.offset : q.offset + q.limit]
            latest = _observed(session, {i: ranked[i] for i in ids})
        else:
            allowed = set(matched) if matched is not None else None
            latest = _walk_newest(session, allowed, q.offset + q.limit)
            ids = list(latest)[q.offset :]
        studies = {
            s.id: s for s in session.scalars(select(Study).where(Study.id.in_(ids)))
        }  # fmt: skip
    rows = []
    for study_id in ids:
        s = studies[study_id]
        at = latest.get(study_id, (0, None))[1]
        rows.append(
            StudyRow(s.nct_id, s.title or s.nct_id, s.overall_status, s.state.value,
                     s.latest_version, at)
        )  # fmt: skip
    return rows, total


RANK_MAX = 1000  # at most this many matching studies are ranked from their events' index
_WALK_CHUNK = 500


def _study_conditions(q: StudyQuery) -> list[Any]:
    where: list[Any] = []
    nct = _nct_prefix(q.q)
    if nct:
        where.append(Study.nct_id.startswith(nct))
    else:
        where += [Study.title.ilike(f"%{_like(w)}%", escape="\\") for w in q.q.split()]
    if q.status:
        where.append(Study.overall_status == q.status.strip().upper())
    return where


def _newest_events(session: Session, studies: Any) -> dict[int, int]:
    """Study id -> the id of its newest change event (a row's, or a block's last), for the
    studies ``studies`` (ids, or a subquery of them): two index seeks per study."""
    e, b = ChangeEvent, EventBlock
    row = select(func.max(e.id)).where(e.nct_id == Study.nct_id).scalar_subquery()
    block = select(func.max(b.last_id)).where(b.study_id == Study.id).scalar_subquery()
    found = session.execute(select(Study.id, row, block).where(Study.id.in_(studies)))
    return {sid: max(r or 0, k or 0) for sid, r, k in found}


def _observed(session: Session, newest: dict[int, int]) -> dict[int, tuple[int, datetime]]:
    """Study id -> (event id, when it was observed) for these newest events."""
    ids = list(newest.values())
    rows = session.execute(select(ChangeEvent.id, ChangeEvent.observed_at).where(
        ChangeEvent.id.in_(ids)))  # fmt: skip
    blocks = session.execute(select(EventBlock.last_id, EventBlock.observed_at).where(
        EventBlock.last_id.in_(ids)))  # fmt: skip
    when = {event_id: at for event_id, at in [*rows, *blocks]}
    return {sid: (eid, when[eid]) for sid, eid in newest.items() if eid in when}


def _walk_newest(
    session: Session, allowed: set[int] | None, wanted: int
) -> dict[int, tuple[int, datetime]]:
    """The first ``wanted`` studies (of ``allowed``, if given) in the order of their newest change,
    walking the feed (rows and blocks) from its newest event."""
    found: dict[int, tuple[int, datetime]] = {}
    e, b = ChangeEvent, EventBlock
    events = _stream(session, select(e.id, e.study_id, e.observed_at), e.id)
    blocks = _stream(session, select(b.last_id, b.study_id, b.observed_at), b.last_id)
    for event_id, study_id, at in heapq.merge(events, blocks, key=lambda r: -r[0]):
        if study_id in found or (allowed is not None and study_id not in allowed):
            continue
        found[study_id] = (event_id, at)
        if len(found) >= wanted:
            break
    return found


def _stream(session: Session, query: Any, column: Any) -> Iterator[tuple[int, int, datetime]]:
    """Rows of ``query`` by ``column`` descending, read in chunks."""
    below = None
    while True:
        page = query if below is None else query.where(column < below)
        rows = [tuple(r) for r in session.execute(page.order_by(column.desc()).limit(_WALK_CHUNK))]
        yield from rows
        if len(rows) < _WALK_CHUNK:
            return
        below = rows[-1][0]


def _nct_prefix(text: str) -> str:
    text = text.strip().upper()
    if text.startswith("NCT") and text[3:].isdigit():
        return parse_nct_id(text) if len(text) == 11 else text
    return ""


def _like(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def statuses(db: Database) -> list[str]:
    """Every overall status the mirror's studies have (for the study list's filter)."""
    with db.session() as session:
        query = select(Study.overall_status).where(Study.overall_status.is_not(None)).distinct()
        return sorted(s for s in session.scalars(query) if s)


# -- versions and comparing ---------------------------------------------------------------


@dataclass(frozen=True)
class CompareInput:
    nct_id: str
    title: str
    versions: list[VersionMark]
    old: int
    new: int


def compare_input(db: Database, nct_id: str, old: int | None, new: int | None) -> CompareInput:
    """The study and the two versions to compare: by default the last two with a record
    (``new`` the newest, ``old`` the one before ``new`` in time)."""
    with db.session() as session:
        study = get_study(session, nct_id)
        marks = version_marks(session, study)
    numbers = [m.version for m in marks]
    held = [m.version for m in marks if m.has_record]
    for wanted in (old, new):
        if wanted is not None and wanted not in numbers:
            raise UsageError(f"{study.nct_id} has no version {wanted} (it has 1..{max(numbers)})")
    if new is None:
        new = study.content_version or numbers[-1]
    if old is None:
        earlier = [v for v in held if numbers.index(v) < numbers.index(new)]
        old = earlier[-1] if earlier else new
    return CompareInput(study.nct_id, study.title or study.nct_id, marks, old, new)


# -- watches ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchRun:
    status: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]


RUN_COUNTS = ("fetched", "new", "changed", "gone", "failed")  # what the watches page shows


def last_watch_runs(db: Database, watches: Sequence[Watch]) -> dict[str, WatchRun]:
    """The most recent sync run of each watch (its own runs: ``watch NAME``, its parts)."""
    found: dict[str, WatchRun] = {}
    with db.session() as session:
        for watch in watches:
            name = f"watch {watch.name}"
            run = session.scalar(
                select(SyncRun)
                .where(
                    or_(
                        SyncRun.selection == name,
                        SyncRun.selection.startswith(name + " ", autoescape=True),
                    )
                )
                .order_by(SyncRun.id.desc())
                .limit(1)
            )
            if run is not None:
                counts = {k: getattr(run, k) for k in RUN_COUNTS}
                found[watch.name] = WatchRun(
                    run.status.value, run.started_at, run.finished_at, counts
                )
    return found
