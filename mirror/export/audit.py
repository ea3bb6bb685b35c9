"""Is the mirror complete? A watch's studies as the registry lists them against the mirror's.

The registry side goes through the source's search: its ``totalCount`` always, and the ids of
every study it lists when there are at most ``ids_max`` (one page per 1,000 studies; an ids
watch asks for its own ids, 100 at a time). The mirror side is the watch's members.

- **missing**: listed by the registry, not held (active) by the mirror;
- **extra**: held as active by the mirror, no longer listed by the registry;
- **stale**: held, but not seen for longer than the watch's schedule allows (its full re-check
  interval plus two scheduled runs).

Without ids (a search too large to list), missing and extra are the difference of the counts.
Every audit is stored (``AuditRun``): ``/healthz`` reports the last one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from mirror.config import Settings
from mirror.errors import NotFound
from mirror.logging import get_logger
from mirror.record import format_instant, utcnow
from mirror.source import FetchFailure, Observation, StudySource
from mirror.store import AuditRun, Database, Study, StudyState, Watch, WatchKind, WatchStudy

log = get_logger(__name__)

IDS_MAX = 20_000  # list the ids of searches up to this size (20 pages); above, counts only
ID_CHUNK = 100  # ids per filter.ids request
DETAIL_MAX = 1_000  # ids of each kind kept with a stored audit
_EVERY = re.compile(r"^every\s+(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass
class AuditResult:
    watch: str
    at: datetime
    registry_total: int | None
    mirror_total: int
    ids_compared: bool
    stale_after: timedelta
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    missing_count: int = 0
    extra_count: int = 0
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "incomplete" if self.missing_count else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "watch": self.watch, "status": self.status, "at": format_instant(self.at),
            "registry_total": self.registry_total, "mirror_total": self.mirror_total,
            "ids_compared": self.ids_compared, "missing_count": self.missing_count,
            "extra_count": self.extra_count, "stale_count": len(self.stale),
            "stale_after_hours": round(self.stale_after.total_seconds() / 3600, 1),
            "missing": self.missing, "extra": self.extra, "stale": self.stale,
            "error": self.error,
        }  # fmt: skip

    def line(self) -> str:
        """One line for a person (and the daemon's log)."""
        if self.error is not None:
            return f"{self.watch}: failed: {self.error}"
        listed = "?" if self.registry_total is None else f"{self.registry_total:,}"
        how = "ids compared" if self.ids_compared else "counts only"
        return (
            f"{self.watch}: {self.status}: registry lists {listed}, mirror holds "
            f"{self.mirror_total:,}; {self.missing_count:,} missing, {self.extra_count:,} "
            f"extra, {len(self.stale):,} stale ({how})"
        )


async def audit_watch(
    db: Database, source: StudySource, watch: Watch, settings: Settings, ids_max: int = IDS_MAX
) -> AuditResult:
    """Audit one watch (never raises for a registry failure: the result says ``failed``)."""
    stale_after = allowed_gap(watch.schedule, settings.daemon.full_recheck_days)
    now = utcnow()
    held, last_seen = await asyncio.to_thread(_held, db, watch)
    result = AuditResult(watch.name, now, None, len(held), False, stale_after)
    result.stale = sorted(n for n in held if now - last_seen[n] > stale_after)
    try:
        total, listed = await _registry(source, watch, ids_max)
    except Exception as exc:  # the registry is down or answered nonsense: say so
        result.error = str(exc) or type(exc).__name__
        return result
    result.registry_total = total
    if listed is not None:
        result.ids_compared = True
        result.missing = sorted(listed - held)
        result.extra = sorted(held - listed)
        result.missing_count, result.extra_count = len(result.missing), len(result.extra)
    else:
        result.missing_count = max(0, total - len(held))
        result.extra_count = max(0, len(held) - total)
    return result


async def _registry(source: StudySource, watch: Watch, ids_max: int) -> tuple[int, set[str] | None]:
    """How many studies the registry lists for ``watch``, and their ids when affordable."""
    if watch.kind is WatchKind.IDS:
        listed: set[str] = set()
        ids = list(watch.nct_ids)
        for start in range(0, len(ids), ID_CHUNK):
            query = {"filter.ids": ",".join(ids[start : start + ID_CHUNK])}
            listed |= await _listed(source, query)
        return len(listed), listed
    params = dict(watch.query) if watch.kind is WatchKind.QUERY else {}
    pages = source.search(params)
    try:
        first = await anext(pages)
    finally:
        close = getattr(pages, "aclose", None)
        if close is not None:
            await close()
    total = first.total if first.total is not None else len(first.items)
    if total > ids_max:
        return total, None
    return total, await _listed(source, params)


async def _listed(source: StudySource, params: dict[str, str]) -> set[str]:
    found: set[str] = set()
    async for page in source.search(params):
        for item in page.items:
            if isinstance(item, Observation | FetchFailure):
                found.add(item.nct_id)
    return found


def _held(db: Database, watch: Watch) -> tuple[set[str], dict[str, datetime]]:
    """The watch's studies the mirror holds as active, and when each was last seen."""
    query = (
        select(Study.nct_id, Study.last_seen_at)
        .join(WatchStudy, WatchStudy.study_id == Study.id)
        .where(WatchStudy.watch_id == watch.id, Study.state == StudyState.ACTIVE)
    )
    with db.session() as session:
        seen = {nct_id: at for nct_id, at in session.execute(query)}
    return set(seen), seen


def allowed_gap(schedule: str | None, full_recheck_days: float) -> timedelta:
    """How long a watch's study may go unseen: a full re-check touches every study, and runs
    come every schedule interval (daily without one), so the full interval plus two runs."""
    return timedelta(days=full_recheck_days) + 2 * schedule_interval(schedule)


def schedule_interval(schedule: str | None) -> timedelta:
    """The time between two runs of a schedule (``every 6h`` or a crontab line; None: daily)."""
    if schedule is None:
        return timedelta(days=1)
    every = _EVERY.match(schedule.strip())
    if every:
        return timedelta(**{_UNITS[every.group(2)]: int(every.group(1))})
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(schedule, timezone="UTC")
    first = trigger.get_next_fire_time(None, utcnow())
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=1)
    gap: timedelta = second - first
    return max(gap, timedelta(minutes=1))


def watches_to_audit(db: Database, name: str | None) -> list[Watch]:
    """The watch named ``name``, or every watch (None)."""
    with db.session() as session:
        query = select(Watch).order_by(Watch.name)
        if name is not None:
            query = query.where(Watch.name == name)
        found = list(session.scalars(query))
    if name is not None and not found:
        raise NotFound(f"no watch named {name!r}")
    return found


def record_audit(db: Database, watch: Watch, result: AuditResult) -> None:
    """Store ``result`` (the last audit is what ``/healthz`` reports)."""
    detail = {
        "missing": result.missing[:DETAIL_MAX], "extra": result.extra[:DETAIL_MAX],
        "stale": result.stale[:DETAIL_MAX],
    }  # fmt: skip
    with db.write() as session:
        session.add(
            AuditRun(
                watch_id=watch.id,
                watch_name=watch.name,
                at=result.at,
                status=result.status,
                registry_total=result.registry_total,
                mirror_total=result.mirror_total,
                missing=result.missing_count,
                extra=result.extra_count,
                stale=len(result.stale),
                ids_compared=result.ids_compared,
                detail=detail,
                error=result.error,
            )  # fmt: skip
        )


def last_audit(db: Database) -> dict[str, Any] | None:
    """The newest stored audit, as ``/healthz`` reports it."""
    with db.session() as session:
        run = session.scalar(select(AuditRun).order_by(AuditRun.id.desc()).limit(1))
    if run is None:
        return None
    return {
        "watch": run.watch_name, "at": format_instant(run.at), "status": run.status,
        "registry_total": run.registry_total, "mirror_total": run.mirror_total,
        "missing": run.missing, "extra": run.extra, "stale": run.stale,
    }  # fmt: skip


def summary_status(results: Sequence[AuditResult]) -> str:
    """``failed`` if any audit failed, else ``incomplete`` if any found missing studies."""
    statuses = {r.status for r in results}
    return next((s for s in ("failed", "incomplete") if s in statuses), "ok")
