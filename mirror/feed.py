"""Reading what the mirror holds: the change feed, a study's versions, diffs between versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from mirror.config import PagesSettings
from mirror.db import Database
from mirror.diff import FieldChange, diff_records
from mirror.errors import NotFound, UsageError
from mirror.ingest import decompress
from mirror.normalize import Canonical
from mirror.source import parse_nct_id
from mirror.store import ChangeEvent, ChangeKind, Study, StudyVersion, Watch, WatchStudy

MAX_LIMIT = 1000


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
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.since and self.until and self.since > self.until:
            raise UsageError("since is after until")


def changes(db: Database, flt: ChangeFilter) -> list[ChangeEvent]:
    """Events matching ``flt`` in id order, starting after ``flt.after``."""
    with db.session() as session:
        return list(session.scalars(_changes_query(session, flt)))


def _changes_query(session: Session, flt: ChangeFilter) -> Select[ChangeEvent]:
    query = select(ChangeEvent).order_by(ChangeEvent.id).limit(flt.limit)
    if flt.after is not None:
        query = query.where(ChangeEvent.id > flt.after)
    if flt.nct_ids:
        query = query.where(ChangeEvent.nct_id.in_([parse_nct_id(n) for n in flt.nct_ids]))
    if flt.fields:
        query = query.where(or_(*(_field_matches(p) for p in flt.fields)))
    if flt.kinds:
        query = query.where(ChangeEvent.kind.in_(flt.kinds))
    if flt.since is not None:
        query = query.where(ChangeEvent.observed_at >= flt.since)
    if flt.until is not None:
        query = query.where(ChangeEvent.observed_at < flt.until)
    if flt.initial is not None:
        query = query.where(ChangeEvent.initial.is_(flt.initial))
    if flt.watch is not None:
        watch_id = session.scalar(select(Watch.id).where(Watch.name == flt.watch))
        if watch_id is None:
            raise NotFound(f"no watch named {flt.watch!r}")
        members = select(WatchStudy.study_id).where(WatchStudy.watch_id == watch_id)
        query = query.where(ChangeEvent.study_id.in_(members))
    return query


def _field_matches(pattern: str) -> Any:
    if not pattern or any(c in pattern for c in "[]"):
        raise UsageError(f"field pattern {pattern!r}: use * and ? only (e.g. 'status.*')")
    if "*" not in pattern and "?" not in pattern:
        return ChangeEvent.field == pattern
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    like = escaped.replace("*", "%").replace("?", "_")
    return ChangeEvent.field.like(like, escape="\\")


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
    """Every stored version of a study, oldest first, with the fields each one changed."""
    with db.session() as session:
        study = get_study(session, nct_id)
        versions = session.scalars(
            select(StudyVersion).where(StudyVersion.study_id == study.id).order_by("version")
        ).all()
        fields: dict[int, list[str]] = {}
        for version, field in session.execute(
            select(ChangeEvent.version, ChangeEvent.field)
            .where(ChangeEvent.study_id == study.id)
            .order_by(ChangeEvent.id)
        ):
            fields.setdefault(version, []).append(field)
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


def load_version(session: Session, study: Study, version: int | None = None) -> StudyVersion:
    """Version ``version`` of a study, or its newest version that has content."""
    query = select(StudyVersion).where(StudyVersion.study_id == study.id)
    if version is None:
        query = query.where(StudyVersion.canonical.is_not(None))
        query = query.order_by(StudyVersion.version.desc()).limit(1)
    else:
        query = query.where(StudyVersion.version == version)
    found = session.scalar(query)
    if found is None:
        which = f"version {version}" if version is not None else "a stored version"
        raise NotFound(f"{study.nct_id} has no {which} (it has 1..{study.latest_version})")
    return found


def raw_json(version: StudyVersion) -> bytes | None:
    return decompress(version.raw) if version.raw is not None else None


def canonical_of(version: StudyVersion) -> Canonical:
    return orjson.loads(decompress(version.canonical)) if version.canonical is not None else {}


def diff_versions(db: Database, nct_id: str, old: int, new: int) -> list[FieldChange]:
    """Field changes from version ``old`` to version ``new`` (any two, computed now)."""
    with db.session() as session:
        study = get_study(session, nct_id)
        a, b = load_version(session, study, old), load_version(session, study, new)
        return diff_records(canonical_of(a), canonical_of(b), a.part_hashes, b.part_hashes)


def recent_events(
    session: Session, study: Study, since: datetime, fields: Sequence[str]
) -> list[ChangeEvent]:
    """A study's events observed since ``since`` on fields matching ``fields``, newest first."""
    query = (
        select(ChangeEvent)
        .where(
            and_(ChangeEvent.study_id == study.id, ChangeEvent.observed_at >= since),
            or_(*(_field_matches(p) for p in fields)),
        )
        .order_by(ChangeEvent.version.desc(), ChangeEvent.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class PageInput:
    """What a study page shows: one version's raw record and the study's recent events."""

    study: dict[str, Any]  # the raw API v2 record of the rendered version
    nct_id: str
    version: int
    last_seen_at: datetime
    events: Sequence[ChangeEvent]  # recent events up to that version, newest version first


def page_input(
    db: Database, nct_id: str, version: int | None, settings: PagesSettings
) -> PageInput:
    """Everything the page of ``nct_id`` (at ``version``, default the newest) needs."""
    with db.session() as session:
        study = get_study(session, nct_id)
        stored = load_version(session, study, version)
        raw = raw_json(stored)
        if raw is None:
            raise NotFound(f"{study.nct_id} version {stored.version} is a tombstone (no record)")
        window = datetime.now(UTC) - timedelta(days=settings.recent_days)
        events = [
            e for e in recent_events(session, study, window, settings.recent_fields)
            if e.version <= stored.version
        ]  # fmt: skip
        return PageInput(
            orjson.loads(raw), study.nct_id, stored.version, study.last_seen_at, events
        )


def study_detail(db: Database, nct_id: str, version: int | None = None) -> dict[str, Any]:
    """A study's state and the canonical record of one version (default: the newest)."""
    with db.session() as session:
        study = get_study(session, nct_id)
        stored = load_version(session, study, version)
        return {
            "nct_id": study.nct_id,
            "state": study.state.value,
            "alias_of": study.alias_of,
            "version": stored.version,
            "latest_version": study.latest_version,
            "first_seen_at": study.first_seen_at.isoformat(),
            "last_seen_at": study.last_seen_at.isoformat(),
            "observed_at": stored.observed_at.isoformat(),
            "source_date": stored.source_date,
            "record": canonical_of(stored),
        }


def counts(session: Session) -> dict[str, int]:
    return {
        "studies": session.scalar(select(func.count()).select_from(Study)) or 0,
        "versions": session.scalar(select(func.count()).select_from(StudyVersion)) or 0,
        "events": session.scalar(select(func.count()).select_from(ChangeEvent)) or 0,
    }
