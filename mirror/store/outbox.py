"""The outbox and what reads it: webhook subscriptions and notification targets, their
deliveries and digest items (``mirror.notify``). The outbox row of a new study version is written
in the version's own transaction; the fan-out turns it into deliveries later."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mirror.store.schema import Base, BigId, JsonValue, stored_enum


class SubscriptionState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # its endpoint kept failing; `ctmirror webhooks resume ID` restarts it


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not attempted yet (or queued again by a replay)
    FAILED = "failed"  # the last attempt failed; the next one is scheduled
    DELIVERED = "delivered"
    DEAD = "dead"  # the retry budget is spent


class OutboxEntry(Base):
    """One new study version waiting to be fanned out to webhook subscriptions.

    Written in the transaction that writes the version, so a committed version always has
    its outbox row; the dispatcher turns each row into deliveries and stamps ``fanned_out_at``.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        Index(None, "fanned_out_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    fanned_out_at: Mapped[datetime | None]


class Recipient:
    """What a webhook subscription and a notification target share: which versions they may
    receive, and whether deliveries to them are paused (columns of both tables)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, sort_order=-1)
    state: Mapped[SubscriptionState] = mapped_column(stored_enum(SubscriptionState))
    nct_ids: Mapped[list[str]] = mapped_column(JsonValue)
    watches: Mapped[list[str]] = mapped_column(JsonValue)
    fields: Mapped[list[str]] = mapped_column(JsonValue)
    classes: Mapped[list[str]] = mapped_column(JsonValue, default=list)  # change-class globs
    created_at: Mapped[datetime]
    # Versions whose outbox id is at most this were recorded before the recipient existed.
    after_outbox_id: Mapped[int] = mapped_column(BigInteger)
    consecutive_dead: Mapped[int] = mapped_column(Integer, default=0)
    paused_at: Mapped[datetime | None]


class DeliveryAttempts:
    """What every delivery row holds about its attempts (``mirror.notify.dispatch``).

    ``message_id`` is the same on every attempt and replay, so receivers can de-duplicate.
    """

    id: Mapped[int] = mapped_column(BigId, primary_key=True, sort_order=-1)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[DeliveryStatus] = mapped_column(stored_enum(DeliveryStatus))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime | None]
    # A dispatcher that claimed the delivery owns it until then (a crashed one loses it).
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)  # HTTP, when known
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]


class WebhookSubscription(Recipient, Base):
    """A receiver URL, its signing secret and which study versions it wants.

    Empty filter lists match everything; given filters must all match. The secret is shown
    once at creation and never returned again.
    """

    __tablename__ = "webhook_subscriptions"

    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    kinds: Mapped[list[str]] = mapped_column(JsonValue)
    include_initial: Mapped[bool] = mapped_column(Boolean)


class WebhookDelivery(DeliveryAttempts, Base):
    """One study version for one subscription: the exact signed body and its attempts.

    ``message_id`` is the ``webhook-id`` header and the body's ``id``.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("subscription_id", "outbox_id"),
        Index(None, "status", "next_attempt_at"),
    )

    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)


class DigestPeriod(enum.StrEnum):
    OFF = "off"  # a message per version, as soon as it is recorded
    DAILY = "daily"
    WEEKLY = "weekly"


class NotificationTarget(Recipient, Base):
    """A person's way of being told (an Apprise URL) and which study versions they want.

    ``url`` holds the service's credentials: only ``shown_url`` (credentials masked) is ever
    listed or logged. Rules (``mirror.notify.rules``) keep versions whose change classes pass
    a threshold. A digest target gets one message per period at ``next_digest_at``.
    """

    __tablename__ = "notification_targets"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(Text)
    shown_url: Mapped[str] = mapped_column(String(2000))
    service: Mapped[str] = mapped_column(String(100))  # Apprise's name of it: "Email", "Slack"
    rules: Mapped[list[str]] = mapped_column(JsonValue)
    digest: Mapped[DigestPeriod] = mapped_column(stored_enum(DigestPeriod))
    # Local time of the digest (minutes after midnight) and, weekly, its day (0 = Monday).
    digest_minute: Mapped[int] = mapped_column(Integer, default=0)
    digest_weekday: Mapped[int | None] = mapped_column(Integer)
    next_digest_at: Mapped[datetime | None]
    digest_since: Mapped[datetime | None]  # the start of the period being collected


class NotificationDelivery(DeliveryAttempts, Base):
    """One message for one target: a study version's (``outbox_id``) or a digest's, rendered
    once (title, plain text, Markdown) so that every attempt sends the same message."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("target_id", "outbox_id"),
        Index(None, "status", "next_attempt_at"),
    )

    target_id: Mapped[int] = mapped_column(
        ForeignKey("notification_targets.id", ondelete="CASCADE")
    )
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))  # None: a digest
    nct_id: Mapped[str | None] = mapped_column(String(11))
    version: Mapped[int | None] = mapped_column(Integer)
    changes: Mapped[int] = mapped_column(Integer)  # versions a digest holds; 1 otherwise
    title: Mapped[str] = mapped_column(String(500))
    body_text: Mapped[str] = mapped_column(Text)
    body_markdown: Mapped[str] = mapped_column(Text)


class DigestItem(Base):
    """A study version waiting for its target's next digest (``mirror.notify.digests``): its
    summary in words, and the digest delivery that took it once the digest is built."""

    __tablename__ = "notification_digest_items"
    __table_args__ = (
        UniqueConstraint("target_id", "outbox_id"),
        Index(None, "target_id", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    target_id: Mapped[int] = mapped_column(
        ForeignKey("notification_targets.id", ondelete="CASCADE")
    )
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonValue)
    created_at: Mapped[datetime]
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE")
    )
