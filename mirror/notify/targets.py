"""Notification targets: a person's Apprise URL, the versions they want (ids, watches, field and
class globs, rules), immediate or as digests, and the commands that add, list, test, pause,
resume and remove them. Which versions reach a target is decided by the fan-out
(:mod:`mirror.notify.fanout`); the URL is checked by :mod:`mirror.notify.notifier`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from mirror.config import NotificationSettings
from mirror.errors import Conflict, NotFound, UsageError
from mirror.logging import get_logger
from mirror.notify.digests import DigestSchedule
from mirror.notify.egress import EgressPolicy
from mirror.notify.messages import Message
from mirror.notify.notifier import AppriseNotifier, check_target_url
from mirror.notify.rules import parse_rules
from mirror.notify.sender import SendResult
from mirror.notify.subscriptions import recipient_columns
from mirror.record import format_instant, utcnow
from mirror.store import (
    Database,
    DigestItem,
    NotificationDelivery,
    NotificationTarget,
    SubscriptionState,
)

log = get_logger(__name__)

NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")


@dataclass(frozen=True)
class TargetSpec:
    """What ``notify add`` / ``POST /v1/notifications`` asks for."""

    url: str
    name: str | None = None
    nct_ids: Sequence[str] = ()
    watches: Sequence[str] = ()
    fields: Sequence[str] = ()
    classes: Sequence[str] = ()  # change-class globs, e.g. "status.*"
    rules: Sequence[str] = ()  # mirror.notify.rules; a version passes when any rule matches
    digest: str = "off"  # off | daily | weekly
    at: str | None = None  # "HH:MM", or "DAY HH:MM" for weekly digests


def add_target(
    db: Database,
    spec: TargetSpec,
    settings: NotificationSettings,
    now: datetime | None = None,
) -> NotificationTarget:
    """Check everything the spec says (URL, rules, schedule, watches) and store the target."""
    target_url = check_target_url(spec.url, EgressPolicy.of(settings))
    rules = [str(rule) for rule in parse_rules(spec.rules)]
    schedule = DigestSchedule.parse(spec.digest, spec.at, settings.timezone)
    name = spec.name.strip() if spec.name is not None else None
    if name is not None and not NAME.match(name):
        raise UsageError("a target name is 1 to 100 characters, without control characters")
    now = now or utcnow()
    first_digest = schedule.next_after(now)
    with db.write() as session:
        if name is not None and session.scalar(
            select(NotificationTarget.id).where(NotificationTarget.name == name)
        ):
            raise Conflict(f"a notification target named {name!r} exists already")
        shared = recipient_columns(session, spec.nct_ids, spec.watches, spec.fields, spec.classes)
        target = NotificationTarget(
            name=name or f"new-{uuid.uuid4().hex}", url=target_url.url,
            shown_url=target_url.shown, service=target_url.service, rules=rules,
            digest=schedule.period, digest_minute=schedule.minute,
            digest_weekday=schedule.weekday, next_digest_at=first_digest,
            digest_since=now if first_digest else None, **shared,
        )  # fmt: skip
        session.add(target)
        session.flush()
        if name is None:  # named after its scheme and id: "mailto-3"
            target.name = f"{target_url.scheme}-{target.id}"
    log.info("notification.target_added", target_id=target.id, url=target.shown_url)
    return target


def list_targets(db: Database) -> list[NotificationTarget]:
    with db.session() as session:
        return list(session.scalars(select(NotificationTarget).order_by(NotificationTarget.id)))


def get_target(db: Database, ref: int | str) -> NotificationTarget:
    """A target by id or by name."""
    key = str(ref)
    with db.session() as session:
        numeric = key.isascii() and key.isdigit() and int(key) < 2**63
        found = session.get(NotificationTarget, int(key)) if numeric else None
        if found is None:
            query = select(NotificationTarget).where(NotificationTarget.name == key)
            found = session.scalars(query).first()
    if found is None:
        raise NotFound(f"no notification target {key!r} (see `ctmirror notify list`)")
    return found


def remove_target(db: Database, ref: int | str) -> NotificationTarget:
    """Delete a target, its digest items and its deliveries (pending ones are never sent)."""
    target = get_target(db, ref)
    with db.write() as session:
        session.execute(delete(DigestItem).where(DigestItem.target_id == target.id))
        session.execute(
            delete(NotificationDelivery).where(NotificationDelivery.target_id == target.id)
        )
        session.execute(delete(NotificationTarget).where(NotificationTarget.id == target.id))
    log.info("notification.target_removed", target_id=target.id)
    return target


def resume_target(db: Database, ref: int | str) -> NotificationTarget:
    """Send to a paused target again (its dead notifications stay dead: replay them)."""
    target = get_target(db, ref)
    with db.write() as session:
        session.execute(
            update(NotificationTarget)
            .where(NotificationTarget.id == target.id)
            .values(state=SubscriptionState.ACTIVE, paused_at=None, consecutive_dead=0)
        )
    log.info("notification.target_resumed", target_id=target.id)
    return get_target(db, target.id)


def describe_target(target: NotificationTarget) -> dict[str, Any]:
    """A target as the CLI and the API show it: its URL with credentials masked."""
    schedule = DigestSchedule(target.digest, target.digest_minute, target.digest_weekday)
    return {
        "id": target.id,
        "name": target.name,
        "url": target.shown_url,
        "service": target.service,
        "state": target.state.value,
        "nct_ids": target.nct_ids,
        "watches": target.watches,
        "fields": target.fields,
        "classes": target.classes,
        "rules": target.rules,
        "digest": target.digest.value,
        "at": schedule.at_text(),
        "next_digest_at": _instant(target.next_digest_at),
        "created_at": _instant(target.created_at),
        "paused_at": _instant(target.paused_at),
    }


def _instant(value: datetime | None) -> str | None:
    return format_instant(value) if value else None


async def send_test(notifier: AppriseNotifier, target: NotificationTarget) -> SendResult:
    """Send a test message to a target now (not queued, not retried)."""
    message = Message(
        "ctmirror: test notification",
        f"This is a test from ctmirror to target {target.id} ({target.name}). "
        "Changes to the studies it follows will arrive like this.",
        f"This is a test from ctmirror to target **{target.id}** ({target.name}). "
        "Changes to the studies it follows will arrive like this.",
    )
    return await notifier.send(target.url, message.title, message.text, message.markdown)
