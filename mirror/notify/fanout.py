"""The fan-out: each new study version in the outbox becomes one delivery per recipient that
wants it — a webhook subscription, or a notification target (a message, or a digest item).

The write path stays cheap: ingest writes one ``outbox`` row per new version in the version's
own transaction and matches nothing. The dispatchers (:mod:`mirror.notify.dispatch`) call
:func:`fan_out`, which claims outbox rows, matches them against the active recipients of every
channel, and writes, in the same transaction, one ``webhook_deliveries`` row with its exact JSON
body per version a subscription wants, and one ``notification_deliveries`` row with its message
(or one ``notification_digest_items`` row with its summary) per version a target wants.
(recipient, outbox row) is unique, so fanning a row out twice writes nothing new.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from mirror.config import Settings
from mirror.feed import event_dict, glob_regex
from mirror.logging import get_logger
from mirror.notify.messages import summarize, version_message
from mirror.notify.rules import Rule, parse_rules, passes
from mirror.record import STUDY_FIELD, ChangeKind, format_instant, utcnow
from mirror.store import (
    Base,
    Database,
    DeliveryStatus,
    DigestItem,
    DigestPeriod,
    NotificationDelivery,
    NotificationTarget,
    OutboxEntry,
    Study,
    SubscriptionState,
    VersionClassRow,
    Watch,
    WatchStudy,
    WebhookDelivery,
    WebhookSubscription,
    insert_skipping_duplicates,
    version_events,
)

log = get_logger(__name__)

# Versions imported from the registry's record history describe the past: never delivered.
UNDELIVERED_ORIGINS = frozenset({"history"})
# A change event exactly as docs/architecture.md shows it (``ChangeEvent.as_dict``).
Event = dict[str, Any]


@dataclass
class SubscriptionFilter:
    """A subscription's filters, compiled once per fan-out batch."""

    id: int
    after_outbox_id: int
    nct_ids: frozenset[str]
    watches: frozenset[str]
    fields: re.Pattern[str] | None
    kinds: frozenset[str]
    include_initial: bool
    classes: re.Pattern[str] | None

    @classmethod
    def of(cls, sub: WebhookSubscription) -> SubscriptionFilter:
        return cls(
            sub.id, sub.after_outbox_id, frozenset(sub.nct_ids), frozenset(sub.watches),
            glob_regex(sub.fields), frozenset(sub.kinds), sub.include_initial,
            glob_regex(sub.classes),
        )  # fmt: skip

    def wants_classes(self, classes: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the version's change classes are ones the subscription asked for."""
        return self.classes is None or any(self.classes.fullmatch(c["name"]) for c in classes)

    def wants_version(self, entry: OutboxEntry, watches_of_study: frozenset[str]) -> bool:
        """Whether this version may interest the subscription, before looking at its events."""
        return (
            entry.id > self.after_outbox_id
            and entry.origin not in UNDELIVERED_ORIGINS
            and (not self.nct_ids or entry.nct_id in self.nct_ids)
            and (not self.watches or bool(self.watches & watches_of_study))
        )

    def select(self, events: Iterable[Event]) -> list[Event]:
        """The events of a version the subscription asked for (study-level events pass the
        field filter: a study appearing or disappearing concerns every field)."""
        return [
            e for e in events
            if (self.include_initial or not e["initial"])
            and (not self.kinds or e["kind"] in self.kinds)
            and (
                self.fields is None
                or e["field"] == STUDY_FIELD
                or self.fields.fullmatch(e["field"])
            )
        ]  # fmt: skip


@dataclass
class TargetFilter(SubscriptionFilter):
    """A notification target's filters: a subscription's, plus rules; never first sights."""

    rules: list[Rule]
    digest: bool

    @classmethod
    def of_target(cls, target: NotificationTarget) -> TargetFilter:
        return cls(
            target.id, target.after_outbox_id, frozenset(target.nct_ids),
            frozenset(target.watches), glob_regex(target.fields), frozenset(), False,
            glob_regex(target.classes), parse_rules(target.rules),
            target.digest is not DigestPeriod.OFF,
        )  # fmt: skip

    def wants_classes(self, classes: Sequence[Mapping[str, Any]]) -> bool:
        return super().wants_classes(classes) and passes(self.rules, classes)


def event_type(events: Sequence[Event]) -> str:
    """``study.removed`` / ``study.created`` / ``study.changed``, from all of a version's events."""
    study_events = {e["kind"] for e in events if e["field"] == STUDY_FIELD}
    if ChangeKind.REMOVED in study_events:
        return "study.removed"
    if ChangeKind.ADDED in study_events or (events and all(e["initial"] for e in events)):
        return "study.created"
    return "study.changed"


@dataclass(frozen=True)
class Links:
    page_base: str  # pages.canonical_base_url
    api_base: str  # webhooks.api_base_url
    site_base: str  # notifications.base_url

    @classmethod
    def of(cls, settings: Settings) -> Links:
        return cls(
            settings.pages.canonical_base_url.rstrip("/"),
            settings.webhooks.api_base_url.rstrip("/"),
            settings.notifications.base_url.rstrip("/"),
        )

    def of_version(self, nct_id: str, version: int) -> dict[str, str]:
        return {
            "page": f"{self.page_base}/{nct_id}.md",
            "api": f"{self.api_base}/studies/{nct_id}/versions/{version}",
        }


def payload(
    message_id: str,
    entry: OutboxEntry,
    all_events: Sequence[Event],
    chosen: Sequence[Event],
    links: Links,
    classes: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The JSON body of one delivery; stored, so every attempt sends the same bytes."""
    body = {
        "type": event_type(all_events),
        "id": message_id,
        "nct_id": entry.nct_id,
        "version": entry.version,
        "observed_at": format_instant(entry.created_at),
        "changes": list(chosen),
        "classes": list(classes),
        "links": links.of_version(entry.nct_id, entry.version),
    }
    return orjson.dumps(body).decode()


# -- fan-out ------------------------------------------------------------------------------------


@dataclass
class _Batch:
    entries: list[OutboxEntry]
    filters: list[SubscriptionFilter]  # webhook subscriptions' and notification targets'
    watches: dict[int, frozenset[str]] = field(default_factory=dict)
    events: dict[tuple[int, int], list[Event]] = field(default_factory=dict)
    classes: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Choice:
    """A version a recipient wants, with the events it chose."""

    entry: OutboxEntry
    recipient: SubscriptionFilter
    events: list[Event]  # all of the version's
    chosen: list[Event]
    classes: list[dict[str, Any]]


def fan_out(db: Database, links: Links, limit: int = 500) -> tuple[int, int]:
    """Turn up to ``limit`` outbox rows into deliveries: (rows done, deliveries written).

    Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so dispatchers of several daemons
    take different rows; on SQLite the write transaction serializes them.
    """
    with db.write() as session:
        entries = list(
            session.scalars(
                select(OutboxEntry)
                .where(OutboxEntry.fanned_out_at.is_(None))
                .order_by(OutboxEntry.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if not entries:
            return 0, 0
        active = SubscriptionState.ACTIVE
        subscriptions = session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.state == active)
        )
        targets = session.scalars(
            select(NotificationTarget).where(NotificationTarget.state == active)
        )
        filters = [SubscriptionFilter.of(s) for s in subscriptions]
        filters += [TargetFilter.of_target(t) for t in targets]
        batch = _Batch(entries, filters)
        choices = _plan(session, batch) if batch.filters else []
        people = [c for c in choices if isinstance(c.recipient, TargetFilter)]
        webhooks = [c for c in choices if not isinstance(c.recipient, TargetFilter)]
        rows = _webhook_rows(webhooks, links)
        written = _insert(session, WebhookDelivery, "subscription_id", rows)
        written += _notify(session, people, links)
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_([e.id for e in entries]))
            .values(fanned_out_at=utcnow())
        )
    return len(entries), written


def _plan(session: Session, batch: _Batch) -> list[_Choice]:
    if any(f.watches for f in batch.filters):
        batch.watches = _watch_names(session, {e.study_id for e in batch.entries})
    pairs = [
        (entry, [f for f in batch.filters if f.wants_version(entry, _of(batch, entry))])
        for entry in batch.entries
    ]
    pairs = [(entry, filters) for entry, filters in pairs if filters]
    batch.events = _events(session, [entry for entry, _ in pairs], batch.filters)
    batch.classes = _classes(session, [entry for entry, _ in pairs])
    choices = []
    for entry, filters in pairs:
        events = batch.events.get((entry.study_id, entry.version), [])
        classes = batch.classes.get((entry.study_id, entry.version), [])
        for flt in filters:
            chosen = flt.select(events) if flt.wants_classes(classes) else []
            if chosen:
                choices.append(_Choice(entry, flt, events, chosen, classes))
    return choices


def _webhook_rows(choices: Sequence[_Choice], links: Links) -> list[dict[str, Any]]:
    rows = []
    now = utcnow()
    for c in choices:
        message_id = f"msg_{uuid.uuid4().hex}"
        body = payload(message_id, c.entry, c.events, c.chosen, links, c.classes)
        rows.append(_delivery_row(c.recipient.id, c.entry, c.events, message_id, body, now))
    return rows


def _notify(session: Session, choices: Sequence[_Choice], links: Links) -> int:
    """A message per version for immediate targets, a digest item for digest targets."""
    if not choices:
        return 0
    titles = dict(
        session.execute(
            select(Study.id, Study.title).where(Study.id.in_({c.entry.study_id for c in choices}))
        ).all()
    )
    now = utcnow()
    messages, items = [], []
    for c in choices:
        entry = c.entry
        summary = summarize(entry.nct_id, entry.version, titles.get(entry.study_id), c.chosen,
                            c.classes)  # fmt: skip
        row = {"target_id": c.recipient.id, "outbox_id": entry.id, "nct_id": entry.nct_id,
               "version": entry.version}  # fmt: skip
        assert isinstance(c.recipient, TargetFilter)
        if c.recipient.digest:
            items.append(row | {"summary": summary.as_json(), "created_at": now})
            continue
        message = version_message(summary, links.site_base)
        messages.append(row | {
            "message_id": f"msg_{uuid.uuid4().hex}", "changes": 1, "title": message.title,
            "body_text": message.text, "body_markdown": message.markdown,
            "status": DeliveryStatus.PENDING, "attempts": 0, "created_at": now,
            "next_attempt_at": now,
        })  # fmt: skip
    written = _insert(session, NotificationDelivery, "target_id", messages)
    return written + _insert(session, DigestItem, "target_id", items)


def _of(batch: _Batch, entry: OutboxEntry) -> frozenset[str]:
    return batch.watches.get(entry.study_id, frozenset())


def _delivery_row(
    subscription_id: int,
    entry: OutboxEntry,
    events: Sequence[Event],
    message_id: str,
    body: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "subscription_id": subscription_id, "outbox_id": entry.id, "message_id": message_id,
        "event_type": event_type(events), "nct_id": entry.nct_id, "version": entry.version,
        "payload": body, "status": DeliveryStatus.PENDING, "attempts": 0, "created_at": now,
        "next_attempt_at": now,
    }  # fmt: skip


def _watch_names(session: Session, study_ids: set[int]) -> dict[int, frozenset[str]]:
    rows = session.execute(
        select(WatchStudy.study_id, Watch.name)
        .join(Watch, Watch.id == WatchStudy.watch_id)
        .where(WatchStudy.study_id.in_(study_ids))
    )
    names: dict[int, set[str]] = {}
    for study_id, name in rows:
        names.setdefault(study_id, set()).add(name)
    return {k: frozenset(v) for k, v in names.items()}


def _events(
    session: Session, entries: Sequence[OutboxEntry], filters: Sequence[SubscriptionFilter]
) -> dict[tuple[int, int], list[Event]]:
    """The change events of these versions (as docs/architecture.md shows them), leaving out
    first-sight events when no subscription wants them."""
    keys = {(e.study_id, e.version) for e in entries}
    initial = any(f.include_initial for f in filters)
    return {
        key: [event_dict(row) for row in rows]
        for key, rows in version_events(session, keys, initial=initial).items()
    }


def _classes(
    session: Session, entries: Sequence[OutboxEntry]
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """The change classes of these versions, ``{"name": …, **params}`` in order."""
    found: dict[tuple[int, int], list[dict[str, Any]]] = {}
    keys = {(e.study_id, e.version) for e in entries}
    if not keys:
        return found
    c = VersionClassRow
    query = (
        select(c.study_id, c.version, c.name, c.params)
        .where(tuple_(c.study_id, c.version).in_(keys))
        .order_by(c.study_id, c.version, c.position)
    )
    for study_id, version, name, params in session.execute(query):
        found.setdefault((study_id, version), []).append({"name": name, **params})
    return found


def _insert(session: Session, model: type[Base], recipient: str, rows: list[dict[str, Any]]) -> int:
    """Insert delivery (or digest item) rows; one a recipient already has for the same outbox
    row is skipped by the unique key."""
    if not rows:
        return 0
    insert = insert_skipping_duplicates(model, session, index_elements=[recipient, "outbox_id"])
    session.execute(insert, rows)
    return len(rows)  # planned; a row fanned out before is skipped
