"""Finding one page of change events, fast, under any combination of filters.

Correctness: a page is read inside one transaction (on SQLite one snapshot; on PostgreSQL
each statement sees only committed events, and ids are handed out in commit order, see
``ingest.lock_feed``), so a cursor never skips an event that a later page could show.

Speed: the query is driven by the most selective *ordered* index stream available, so a page
costs about ``limit`` rows however deep the cursor:
  - NCT ids (given, or those of a small watch): the (nct_id, id) index, one stream per study;
  - field names (exact, or what a glob expands to, on SQLite): the (field, id) index;
  - otherwise the primary key from the cursor, testing each row.
Several streams are merged: each yields at most ``limit`` ids in order, and the union is cut
to ``limit``. A glob matching many events is first tried as a short primary-key walk, which
is cheaper than merging when matches are dense. SQLite has no statistics to choose with: by
itself it would read every match of a glob and sort them all. PostgreSQL plans from its own
statistics, so there globs stay plain LIKEs and only NCT ids get streams.

Without an index of their own (see the issue note), ``kind`` and ``initial`` filters are
tested row by row on the walk: a sparse one costs a scan up to its next match.

First-sight events are stored as blocks (``mirror.store.blocks``), not rows: a page is the rows it
finds merged with the events of the blocks it finds, walked in id order over the blocks'
``last_id`` index. A field filter is tested on a block's list of field names in SQL (a
superset: a glob may match across two names) and exactly after expanding it.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Row, Select, exists, false, func, or_, select, text, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from mirror.errors import NotFound, UsageError
from mirror.record import ChangeKind, parse_nct_id
from mirror.store import (
    EVENT_SELECT,
    ChangeEvent,
    EventBlock,
    EventRow,
    Study,
    VersionClassRow,
    Watch,
    WatchStudy,
    block_heads,
    chosen_events,
    expand,
    expand_chosen,
    expandable,
)

MAX_LIMIT = 1000
MERGE_MAX = 64  # more streams than this: walking the primary key is cheaper
SINCE_SCAN_MAX = 50_000  # at most this many events since `since`: start from the first of them
WALK_FIRST = 30  # a glob first walks up to this many ids per requested event


@dataclass(frozen=True)
class ChangeFilter:
    """Which change events to return. Field patterns are globs: ``*`` any run, ``?`` one char."""

    nct_ids: Sequence[str] = ()
    fields: Sequence[str] = ()
    kinds: Sequence[ChangeKind] = ()
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    initial: bool | None = None
    watch: str | None = None
    classes: Sequence[str] = ()  # change-class globs: events of versions classified so
    limit: int = 100
    newest_first: bool = False  # the newest ``limit`` events (after ``after``), newest first
    before: int | None = None  # only events with a smaller id
    version: int | None = None  # only events of this study version (with one NCT id)

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.since and self.until and self.since > self.until:
            raise UsageError("since is after until")


def event_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A row of EVENT_SELECT as the event's JSON object (what ``ChangeEvent.as_dict`` gives)."""
    id_, nct_id, version, field, kind, old, new, observed_at, source_date, initial = row
    return {
        "id": id_,
        "nct_id": nct_id,
        "version": version,
        "field": field,
        "kind": kind.value,
        "old": old,
        "new": new,
        # format_instant's format; isoformat is several times faster than strftime.
        "observed_at": observed_at.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z",
        "source_date": source_date,
        "initial": initial,
    }


def find(session: Session, flt: ChangeFilter) -> list[EventRow]:
    """The events matching ``flt``: rows and blocks merged, in id order (``newest_first``:
    reversed), at most ``flt.limit``."""
    rows: list[EventRow] = [tuple(r) for r in _rows(session, flt)]
    blocks = _block_events(session, flt)
    merged = heapq.merge(rows, blocks, key=_event_id, reverse=flt.newest_first)
    return [event for event, _ in zip(merged, range(flt.limit), strict=False)]


STREAM_BATCH = 2000  # rows fetched at a time by a stream


def stream(session: Session, flt: ChangeFilter) -> Iterator[EventRow]:
    """Every event matching ``flt`` after ``flt.after``, in id order (``flt.limit`` and
    ``newest_first`` do not apply), read in batches so that memory stays flat however many
    events match. The caller keeps ``session`` open while it reads."""
    return itertools.chain.from_iterable(stream_chunks(session, flt))


def stream_chunks(session: Session, flt: ChangeFilter) -> Iterator[list[EventRow]]:
    """:func:`stream` in consecutive lists of events (``STREAM_BATCH`` or so each).

    Rows and blocks come from two cursors. A block holds a range of ids no row has, so the
    merge goes block by block: the rows before a block, then the block's events whole.
    """
    rows = _stream_rows(session, flt)
    row = next(rows, None)
    chunk: list[EventRow] = []
    for first_id, events in _stream_blocks(session, flt):
        while row is not None and row[0] < first_id:
            chunk.append(row)
            row = next(rows, None)
        chunk += events
        if len(chunk) >= STREAM_BATCH:
            yield chunk
            chunk = []
    if row is not None:
        chunk.append(row)
    for row in rows:
        chunk.append(row)
        if len(chunk) >= STREAM_BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stream_rows(session: Session, flt: ChangeFilter) -> Iterator[EventRow]:
    sqlite = session.get_bind().dialect.name == "sqlite"
    col = _off_index if sqlite else _as_is
    where = _common_conditions(session, flt, col)
    where += _bounds(flt)
    if flt.after:
        where.append(ChangeEvent.id > flt.after)
    if flt.watch is not None:
        where.append(col(ChangeEvent.study_id).in_(watch_members(session, flt.watch)))
    if flt.nct_ids:
        nct_ids = list(dict.fromkeys(parse_nct_id(n) for n in flt.nct_ids))
        where.append(ChangeEvent.nct_id.in_(nct_ids))
    if flt.fields:
        where.append(_fields_condition(session, flt.fields, col))
    if flt.since is not None:
        where += _since_floor(session, flt.since, ChangeEvent.id, ChangeEvent.observed_at)
    query = select(*EVENT_SELECT).where(*where).order_by(ChangeEvent.id)
    result = session.execute(query, execution_options={"yield_per": STREAM_BATCH})
    for part in result.partitions():
        yield from map(tuple, part)


def _stream_blocks(session: Session, flt: ChangeFilter) -> Iterator[tuple[int, list[EventRow]]]:
    """Each matching block's first id and its matching events, in id order."""
    where = _block_conditions(session, replace(flt, newest_first=False))
    if where is None:
        return
    only = field_test(flt.fields)
    bounded = flt.after is not None or flt.before is not None
    keep = _id_test(flt)
    query = expandable(*where).order_by(EventBlock.first_id)
    for block in session.execute(query, execution_options={"yield_per": STREAM_BATCH // 20}):
        events = expand(block, only)
        if bounded:
            events = [e for e in events if keep(e[0])]
        if events:
            yield block.first_id, events


def _event_id(event: EventRow) -> int:
    return event[0]


def _rows(session: Session, flt: ChangeFilter) -> Sequence[Row[Any]]:
    also = _bounds(flt)
    if _walk_first(session, flt):
        found = session.execute(_query(_short_walk(session, flt, also), flt)).all()
        if len(found) == flt.limit:  # every id up to the window's end was looked at
            return found
    plan = _plan(session, flt)
    plan = replace(plan, where=[*plan.where, *also])
    return session.execute(_query(plan, flt)).all()


def _bounds(flt: ChangeFilter) -> list[Any]:
    """The row conditions of the internal filters ``before`` and ``version``."""
    where = []
    if flt.before is not None:
        where.append(ChangeEvent.id < flt.before)
    if flt.version is not None:
        where.append(ChangeEvent.version == flt.version)
    return where


def _walk_first(session: Session, flt: ChangeFilter) -> bool:
    """Whether to try a short primary-key walk first: a glob that SQLite would merge."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    globbed = any("*" in p or "?" in p for p in flt.fields)
    return sqlite and globbed and not (flt.nct_ids or flt.watch or flt.newest_first)


def _short_walk(session: Session, flt: ChangeFilter, also: Sequence[Any]) -> _Plan:
    """The primary-key walk of ``flt`` over the next WALK_FIRST * limit ids only."""
    where = _common_conditions(session, flt, _off_index)
    where.append(_fields_condition(session, flt.fields, _off_index))
    where.append(ChangeEvent.id > (flt.after or 0))
    where.append(ChangeEvent.id <= (flt.after or 0) + WALK_FIRST * flt.limit)
    return _Plan(None, (), [*where, *also])


@dataclass(frozen=True)
class _Plan:
    driver: Any  # the column whose index drives the query, or None for the primary key
    values: Sequence[str]
    where: Sequence[Any]  # every other condition, the cursor included


_NOTHING = _Plan(None, (), [false()])


def _query(plan: _Plan, flt: ChangeFilter, columns: Sequence[Any] = EVENT_SELECT) -> Select[Any]:
    order = ChangeEvent.id.desc() if flt.newest_first else ChangeEvent.id.asc()
    if plan.driver is None or len(plan.values) == 1:
        where = list(plan.where)
        if plan.driver is not None:
            where.append(plan.driver == plan.values[0])
        return select(*columns).where(*where).order_by(order).limit(flt.limit)
    streams = [
        select(ChangeEvent.id)
        .where(plan.driver == value, *plan.where)
        .order_by(order)
        .limit(flt.limit)
        .subquery()
        for value in plan.values
    ]
    merged = union_all(*(select(s.c.id) for s in streams)).subquery()
    first = merged.c.id.desc() if flt.newest_first else merged.c.id.asc()
    ids = select(merged.c.id).order_by(first).limit(flt.limit)
    return select(*columns).where(ChangeEvent.id.in_(ids)).order_by(order)


def _plan(session: Session, flt: ChangeFilter) -> _Plan:
    sqlite = session.get_bind().dialect.name == "sqlite"
    # On SQLite a condition that merely filters must not divert the planner to its index:
    # unary + keeps a column off every index (SQLite's documented idiom).
    col = _off_index if sqlite else _as_is
    where = _common_conditions(session, flt, col)
    if flt.after:
        where.append(ChangeEvent.id > flt.after)
    nct_ids = list(dict.fromkeys(parse_nct_id(n) for n in flt.nct_ids))
    if flt.watch is not None:
        members = watch_members(session, flt.watch)
        where.append(col(ChangeEvent.study_id).in_(members))
        if not nct_ids:
            few = _few_nct_ids(session, members)
            if few == []:  # an empty watch
                return _NOTHING
            nct_ids = few or []
    if flt.fields and (nct_ids or not sqlite):
        where.append(_fields_condition(session, flt.fields, col))
    if 0 < len(nct_ids) <= MERGE_MAX:
        return _Plan(ChangeEvent.nct_id, nct_ids, where)
    if nct_ids:  # many studies: their index, then a sort of their events
        return _Plan(None, (), [*where, ChangeEvent.nct_id.in_(nct_ids)])
    if flt.fields and sqlite:
        names = _field_names(session, flt.fields)
        if names is not None:
            return _Plan(ChangeEvent.field, names, where) if names else _NOTHING
        where.append(_fields_condition(session, flt.fields, col))
    if flt.since is not None and not flt.newest_first:
        where += _since_floor(session, flt.since, ChangeEvent.id, ChangeEvent.observed_at)
    return _Plan(None, (), where)


def _since_floor(session: Session, since: datetime, walked: Any, observed: Any) -> list[Any]:
    """Start the walk (over the id column ``walked``) at the first event observed since
    ``since``, when few events are; ``observed``: the observation time of ``walked``'s table.

    Observation times are not monotonic in id (history imports carry the registry's dates),
    so this is the true minimum, found through the observed_at index.
    """
    recent = (select(walked).where(observed >= since).limit(SINCE_SCAN_MAX + 1)).subquery()
    count, first = session.execute(select(func.count(), func.min(recent.c[walked.key]))).one()
    if first is None:
        return [false()]
    return [walked >= first] if count <= SINCE_SCAN_MAX else []


def _common_conditions(session: Session, flt: ChangeFilter, col: Any) -> list[Any]:
    where = []
    if flt.classes:
        where.append(_classes_condition(session, flt.classes))
    if flt.kinds:
        where.append(col(ChangeEvent.kind).in_(list(dict.fromkeys(flt.kinds))))
    if flt.since is not None:
        where.append(col(ChangeEvent.observed_at) >= flt.since)
    if flt.until is not None:
        where.append(col(ChangeEvent.observed_at) < flt.until)
    if flt.initial is not None:
        where.append(col(ChangeEvent.initial).is_(flt.initial))
    return where


def _classes_condition(
    session: Session,
    patterns: Sequence[str],
    table: type[ChangeEvent] | type[EventBlock] = ChangeEvent,
) -> Any:
    """The event's study version has a change class matching one of the globs ``patterns``."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    named = or_(*(_field_matches(p, VersionClassRow.name, sqlite=sqlite) for p in patterns))
    return exists().where(
        VersionClassRow.study_id == table.study_id,
        VersionClassRow.version == table.version,
        named,
    )


def _off_index(column: Any) -> Any:
    return UnaryExpression(column.expression, operator=custom_op("+"), type_=column.type)


def _as_is(column: Any) -> Any:
    return column


def watch_members(session: Session, name: str) -> Select[int]:
    """The ids of the studies of watch ``name`` (a subquery); NotFound if there is none."""
    watch_id = session.scalar(select(Watch.id).where(Watch.name == name))
    if watch_id is None:
        raise NotFound(f"no watch named {name!r}")
    return select(WatchStudy.study_id).where(WatchStudy.watch_id == watch_id)


def _few_nct_ids(session: Session, members: Select[int]) -> list[str] | None:
    """The NCT ids of a watch's studies, or None if it has more than MERGE_MAX of them."""
    query = select(Study.nct_id).where(Study.id.in_(members)).limit(MERGE_MAX + 1)
    found = list(session.scalars(query))
    return found if len(found) <= MERGE_MAX else None


def _fields_condition(session: Session, patterns: Sequence[str], col: Any = _as_is) -> Any:
    """The event's field matches one of the globs ``patterns``."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    return or_(*(_field_matches(p, col(ChangeEvent.field), sqlite=sqlite) for p in patterns))


def _field_matches(pattern: str, column: Any, *, sqlite: bool) -> Any:
    """``column`` matches the glob ``pattern``, case-sensitively on both backends."""
    _check_pattern(pattern)
    if "*" not in pattern and "?" not in pattern:
        return column == pattern
    if sqlite:  # GLOB is case-sensitive; SQLite's LIKE is not
        return column.op("GLOB")(pattern)
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _check_pattern(pattern: str) -> None:
    if not pattern or any(c in pattern for c in "[]"):
        raise UsageError(f"field pattern {pattern!r}: use * and ? only (e.g. 'status.*')")


def _field_names(session: Session, patterns: Sequence[str]) -> list[str] | None:
    """Every stored field name matching one of ``patterns`` (SQLite), or None if too many."""
    names: list[str] = []
    for pattern in patterns:
        _check_pattern(pattern)
        if "*" not in pattern and "?" not in pattern:
            names.append(pattern)
            continue
        found = _stored_fields_with_prefix(session, pattern.split("*")[0].split("?")[0])
        if found is None:
            return None
        names += [f for f in found if fnmatch.fnmatchcase(f, pattern)]
    return sorted(set(names))


_NEXT_FIELD = text(
    """
    WITH RECURSIVE name(field) AS (
        SELECT (SELECT field FROM change_events WHERE field >= :low AND field < :high
                ORDER BY field LIMIT 1)
        UNION ALL
        SELECT (SELECT field FROM change_events WHERE field > name.field AND field < :high
                ORDER BY field LIMIT 1)
        FROM name WHERE name.field IS NOT NULL
    )
    SELECT field FROM name WHERE field IS NOT NULL LIMIT :cap
    """
)


def _stored_fields_with_prefix(session: Session, prefix: str) -> list[str] | None:
    """Distinct field names starting with ``prefix``, one index seek each; None if > MERGE_MAX.

    (A "loose index scan" of the (field, id) index; SQLite compares text bytewise, so the
    names with a prefix are exactly those in [prefix, prefix with its last character + 1).)
    """
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return None
    high = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    params = {"low": prefix, "high": high, "cap": MERGE_MAX + 1}
    found = list(session.scalars(_NEXT_FIELD, params))
    return found if len(found) <= MERGE_MAX else None


# -- blocks ---------------------------------------------------------------------------------

BLOCK_CHUNK = 4  # blocks read by the first query of a page (a block holds ~74 events)


def _block_events(session: Session, flt: ChangeFilter) -> list[EventRow]:
    """The events of the blocks matching ``flt``, in feed order, at most ``flt.limit``.

    Blocks are walked without their records (a block's field list says which of its events
    match); only the records of the blocks the page takes are read, in one query at the end.
    """
    where = _block_conditions(session, flt)
    if where is None:
        return []
    keep = _id_test(flt)
    only = field_test(flt.fields)
    newest = flt.newest_first
    order = EventBlock.last_id.desc() if newest else EventBlock.last_id.asc()
    chunk = BLOCK_CHUNK  # grows each round: a page often needs only a block or two
    taken: list[tuple[Row[Any], list[tuple[int, str]]]] = []
    count = walked = 0
    beyond: list[Any] = []
    while count < flt.limit:
        heads = session.execute(block_heads(*where, *beyond).order_by(order).limit(chunk)).all()
        for head in heads:
            chosen = [(i, f) for i, f in chosen_events(head, only) if keep(i)]
            if newest:
                chosen.reverse()
            if chosen:
                taken.append((head, chosen[: flt.limit - count]))
                count += len(taken[-1][1])
                if count >= flt.limit:
                    break
        if len(heads) < chunk:
            break
        last = heads[-1].last_id
        beyond = [EventBlock.last_id < last if newest else EventBlock.last_id > last]
        walked += len(heads)
        # As many blocks as the page still needs at the rate seen so far (a field filter may
        # take one event a block), and at least four times more when none matched yet.
        needed = (flt.limit - count) * walked // count + BLOCK_CHUNK if count else 4 * chunk
        chunk = min(max(needed, BLOCK_CHUNK), MAX_LIMIT)
    return expand_chosen(session, taken)


def _block_conditions(session: Session, flt: ChangeFilter) -> list[Any] | None:
    """SQL conditions on event_blocks for ``flt``; None when no block can match."""
    if flt.initial is False or (flt.kinds and ChangeKind.ADDED not in flt.kinds):
        return None
    b = EventBlock
    where: list[Any] = []
    if flt.after:
        where.append(b.last_id > flt.after)
    if flt.before is not None:
        where.append(b.first_id < flt.before)
    if flt.version is not None:
        where.append(b.version == flt.version)
    if flt.since is not None:
        where.append(b.observed_at >= flt.since)
        if not flt.newest_first:
            # else the walk would test every block observed before
            where += _since_floor(session, flt.since, b.last_id, b.observed_at)
    if flt.until is not None:
        where.append(b.observed_at < flt.until)
    if flt.nct_ids:
        nct_ids = list(dict.fromkeys(parse_nct_id(n) for n in flt.nct_ids))
        where.append(b.study_id.in_(select(Study.id).where(Study.nct_id.in_(nct_ids))))
    if flt.watch is not None:
        where.append(b.study_id.in_(watch_members(session, flt.watch)))
    if flt.classes:
        where.append(_classes_condition(session, flt.classes, EventBlock))
    if flt.fields:
        sqlite = session.get_bind().dialect.name == "sqlite"
        where.append(or_(*(_listed(p, b.fields, sqlite=sqlite) for p in flt.fields)))
    return where


def _listed(pattern: str, column: Any, *, sqlite: bool) -> Any:
    """A JSON list of names (``column``) may hold a name matching the glob ``pattern``."""
    _check_pattern(pattern)
    quoted = orjson.dumps(pattern).decode()  # the name as the list spells it, quotes included
    if sqlite:
        return column.op("GLOB")("*" + quoted + "*")
    escaped = quoted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like("%" + escaped.replace("*", "%").replace("?", "_") + "%", escape="\\")


def _id_test(flt: ChangeFilter) -> Callable[[int], bool]:
    """What the id of a block's event must also pass: the cursor bounds."""
    low, high = flt.after or 0, flt.before

    def keep(event_id: int) -> bool:
        return event_id > low and (high is None or event_id < high)

    return keep


def field_test(patterns: Sequence[str]) -> Callable[[str], Any] | None:
    """Whether a field name matches one of the globs ``patterns`` (None: no patterns); a set
    lookup when they are all plain names."""
    if patterns and not any("*" in p or "?" in p for p in patterns):
        return frozenset(patterns).__contains__
    regex = glob_regex(patterns)
    return regex.fullmatch if regex else None


def glob_regex(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching what any of the globs ``patterns`` matches (``*``, ``?``); None for
    no patterns. Use ``fullmatch``."""
    if not patterns:
        return None
    parts = [re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns]
    return re.compile("(?:" + "|".join(parts) + ")", re.DOTALL)


def first_sights(session: Session, flt: ChangeFilter) -> list[Row[Any]]:
    """The blocks (first sights) matching ``flt``, unexpanded: at most ``flt.limit`` of them in
    feed order (``newest_first``: reversed), each with its ``fields`` JSON list."""
    where = _block_conditions(session, flt)
    if where is None:
        return []
    b = EventBlock
    order = b.last_id.desc() if flt.newest_first else b.last_id.asc()
    columns = (b.first_id, b.last_id, b.nct_id, b.version, b.observed_at, b.source_date, b.fields)
    return list(session.execute(select(*columns).where(*where).order_by(order).limit(flt.limit)))
