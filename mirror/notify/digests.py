"""Digests: one message per period for a target, with the period's versions grouped by study.

The fan-out writes a *digest item* (the version's summary) for a digest target instead of a
delivery. At the target's time (``next_digest_at``, a local time of day in
``notifications.timezone``, weekly on a given day) any daemon's notification dispatcher may
build the digest: in one transaction it claims the due target row with ``FOR UPDATE SKIP
LOCKED`` (SQLite: the write lock), writes one delivery holding every item not yet sent, marks
the items as taken by it, and moves ``next_digest_at`` to the next slot. Another daemon finds
the row locked, or no longer due: a digest is built once. The delivery is then sent like any
other (claims, leases, retries), so it is sent once too. A period without items moves the
slot and sends nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mirror.errors import UsageError
from mirror.logging import get_logger
from mirror.notify.messages import Period, VersionSummary, digest_message
from mirror.record import utcnow
from mirror.store import (
    Database,
    DeliveryStatus,
    DigestItem,
    DigestPeriod,
    NotificationDelivery,
    NotificationTarget,
)

log = get_logger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_MINUTE = 8 * 60  # 08:00
_AT = re.compile(r"^(?:(?P<day>[a-z]{3})[a-z]*\s+)?(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)$")
_MARK_BATCH = 5000  # item ids per UPDATE


@dataclass(frozen=True)
class DigestSchedule:
    """When a target's digests are built: daily or weekly, at a local time."""

    period: DigestPeriod
    minute: int = DEFAULT_MINUTE  # after local midnight
    weekday: int | None = None  # weekly: 0 = Monday
    zone: str = "UTC"

    @classmethod
    def parse(cls, digest: str, at: str | None, zone: str) -> DigestSchedule:
        """``--digest off|daily|weekly`` and ``--at HH:MM`` (weekly: ``[DAY] HH:MM``)."""
        try:
            period = DigestPeriod(digest)
        except ValueError:
            raise UsageError(f"--digest {digest!r}: use off, daily or weekly") from None
        if period is DigestPeriod.OFF:
            if at is not None:
                raise UsageError("--at needs --digest daily or --digest weekly")
            return cls(period, zone=zone)
        match = _AT.match((at or "08:00").strip().lower())
        day = match["day"] if match else None
        if match is None or (day is not None and (day not in WEEKDAYS or period.value != "weekly")):
            raise UsageError(
                f"--at {at!r}: give a time as HH:MM (24 hours, {zone}), and for weekly "
                "digests optionally a day first, e.g. 'mon 08:00'"
            )
        weekday = WEEKDAYS.index(day) if day else 0 if period is DigestPeriod.WEEKLY else None
        return cls(period, int(match["hour"]) * 60 + int(match["minute"]), weekday, zone)

    def next_after(self, now: datetime) -> datetime | None:
        """The first digest time after ``now`` (UTC); None for targets without digests."""
        if self.period is DigestPeriod.OFF:
            return None
        local = now.astimezone(ZoneInfo(self.zone))
        slot = local.replace(hour=self.minute // 60, minute=self.minute % 60, second=0,
                             microsecond=0)  # fmt: skip
        step = timedelta(days=7 if self.period is DigestPeriod.WEEKLY else 1)
        if self.weekday is not None:
            slot += timedelta(days=(self.weekday - slot.weekday()) % 7)
        while slot <= local:
            slot += step
        # Wall-clock arithmetic in the zone: 08:00 stays 08:00 across daylight-saving changes.
        return slot.astimezone(now.tzinfo)

    def at_text(self) -> str | None:
        if self.period is DigestPeriod.OFF:
            return None
        time = f"{self.minute // 60:02d}:{self.minute % 60:02d}"
        return f"{WEEKDAYS[self.weekday]} {time}" if self.weekday is not None else time


def build_due_digests(db: Database, base_url: str, zone: str, now: datetime | None = None) -> int:
    """Build the digest of every target whose time has come; the deliveries written."""
    now = now or utcnow()
    is_due = (
        NotificationTarget.digest != DigestPeriod.OFF,
        NotificationTarget.next_digest_at <= now,
    )
    with db.session() as session:  # most polls find nothing: no write transaction for them
        if session.scalar(select(NotificationTarget.id).where(*is_due).limit(1)) is None:
            return 0
    with db.write() as session:
        due = session.scalars(
            select(NotificationTarget)
            .where(*is_due)
            .order_by(NotificationTarget.id)
            # NO KEY UPDATE: the fan-out may still insert items referring to the row.
            .with_for_update(skip_locked=True, key_share=True)
        ).all()
        return sum(_build(session, target, base_url, zone, now) for target in due)


def _build(
    session: Session, target: NotificationTarget, base_url: str, zone: str, now: datetime
) -> int:
    schedule = DigestSchedule(target.digest, target.digest_minute, target.digest_weekday, zone)
    items = session.execute(
        select(DigestItem.id, DigestItem.summary)
        .where(DigestItem.target_id == target.id, DigestItem.delivery_id.is_(None))
        .order_by(DigestItem.id)
    ).all()
    start = target.digest_since or target.created_at
    target.digest_since, target.next_digest_at = now, schedule.next_after(now)
    if not items:
        log.info("notification.digest_empty", target_id=target.id)
        return 0
    period = Period(schedule.period.value, start, now, ZoneInfo(zone))
    message = digest_message([VersionSummary.of_json(s) for _, s in items], period, base_url)
    sent_from = utcnow()  # ``now`` may be a test's clock; the claims read the real one
    delivery = NotificationDelivery(
        target_id=target.id, outbox_id=None, nct_id=None, version=None, changes=len(items),
        message_id=f"msg_{uuid.uuid4().hex}", title=message.title, body_text=message.text,
        body_markdown=message.markdown, status=DeliveryStatus.PENDING, attempts=0,
        created_at=sent_from, next_attempt_at=sent_from,
    )  # fmt: skip
    session.add(delivery)
    session.flush()
    ids = [item_id for item_id, _ in items]
    for at in range(0, len(ids), _MARK_BATCH):
        session.execute(
            update(DigestItem)
            .where(DigestItem.id.in_(ids[at : at + _MARK_BATCH]))
            .values(delivery_id=delivery.id)
        )
    log.info(
        "notification.digest_built", target_id=target.id, delivery_id=delivery.id,
        versions=len(items),
    )  # fmt: skip
    return 1
