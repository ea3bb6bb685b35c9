"""Watches: what to mirror (a list of NCT ids, a saved search, or the whole registry)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from mirror.errors import Conflict, NotFound, UsageError
from mirror.record import parse_nct_id, utcnow
from mirror.source import check_search
from mirror.store import Database, Watch, WatchKind, WatchStudy

WATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# "every 6h", "every 1d", "every 30m", or a five-field crontab line.
INTERVAL = re.compile(r"^every\s+(\d+)\s*([smhd])$")


def validate_schedule(schedule: str | None) -> str | None:
    """The schedule as given, or UsageError saying what a schedule looks like."""
    if schedule is None:
        return None
    text = schedule.strip()
    if INTERVAL.match(text):
        return text
    fields = text.split()
    if len(fields) == 5:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(text)
        except ValueError as exc:
            raise UsageError(f"schedule {schedule!r} is not a valid crontab line: {exc}") from None
        return text
    raise UsageError(
        f"schedule {schedule!r} is neither 'every <N><s|m|h|d>' (e.g. 'every 12h') "
        "nor a five-field crontab line (e.g. '30 9 * * *')"
    )


def add_watch(
    db: Database,
    name: str,
    *,
    nct_ids: Sequence[str] = (),
    query: Mapping[str, str] | None = None,
    everything: bool = False,
    schedule: str | None = None,
) -> Watch:
    """Create a watch of exactly one kind; UsageError if the name is taken or the spec is wrong."""
    if not WATCH_NAME.match(name):
        raise UsageError(
            f"watch name {name!r}: use letters, digits, '.', '_' or '-' (at most 100, no spaces)"
        )
    kinds = [bool(nct_ids), bool(query), everything]
    if sum(kinds) != 1:
        raise UsageError("a watch is exactly one of: NCT ids, a saved search (--query), or --all")
    ids = [parse_nct_id(i) for i in nct_ids]
    kind = WatchKind.IDS if ids else WatchKind.QUERY if query else WatchKind.ALL
    watch = Watch(
        name=name,
        kind=kind,
        nct_ids=list(dict.fromkeys(ids)),
        query=check_search(query) if query else {},
        schedule=validate_schedule(schedule),
        created_at=utcnow(),
    )
    try:
        with db.write() as session:
            session.add(watch)
    except IntegrityError:
        raise Conflict(f"a watch named {name!r} already exists") from None
    return watch


def list_watches(db: Database) -> list[tuple[Watch, int]]:
    """Every watch with the number of studies it covers."""
    members = (
        select(WatchStudy.watch_id, func.count().label("n"))
        .group_by(WatchStudy.watch_id)
        .subquery()
    )
    with db.session() as session:
        rows = session.execute(
            select(Watch, func.coalesce(members.c.n, 0))
            .outerjoin(members, members.c.watch_id == Watch.id)
            .order_by(Watch.name)
        )
        return [(watch, int(n)) for watch, n in rows]


def get_watch(db: Database, name: str) -> Watch:
    with db.session() as session:
        watch = session.scalar(select(Watch).where(Watch.name == name))
    if watch is None:
        raise NotFound(f"no watch named {name!r} (see `ctmirror watch list`)")
    return watch


def remove_watch(db: Database, name: str) -> None:
    """Forget a watch; the studies it brought in and their history stay."""
    watch = get_watch(db, name)
    with db.write() as session:
        session.execute(delete(WatchStudy).where(WatchStudy.watch_id == watch.id))
        session.execute(delete(Watch).where(Watch.id == watch.id))


def describe(watch: Watch) -> dict[str, Any]:
    return {
        "name": watch.name,
        "kind": watch.kind.value,
        "nct_ids": watch.nct_ids,
        "query": watch.query,
        "schedule": watch.schedule,
        "created_at": watch.created_at.isoformat(),
        "last_run_at": watch.last_run_at.isoformat() if watch.last_run_at else None,
        "since_date": watch.since_date,
    }
