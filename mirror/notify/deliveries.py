"""Reading and replaying deliveries of any channel: ``webhooks deliveries`` and
``notify deliveries``, ``/v1/webhooks/deliveries`` and ``/v1/notifications/deliveries``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from mirror.errors import NotFound, UsageError
from mirror.logging import get_logger
from mirror.notify.queues import NOTIFICATIONS, WEBHOOKS, Queue
from mirror.record import format_instant, utcnow
from mirror.store import (
    Database,
    DeliveryAttempts,
    DeliveryStatus,
    NotificationDelivery,
    SubscriptionState,
    WebhookDelivery,
)

log = get_logger(__name__)


def _instant(value: datetime | None) -> str | None:
    return format_instant(value) if value else None


def _list(
    db: Database, queue: Queue, status: DeliveryStatus | None, recipient_id: int | None, limit: int
) -> list[Any]:
    d = queue.delivery
    query = select(d).order_by(d.id.desc()).limit(limit)
    if status is not None:
        query = query.where(d.status == status)
    if recipient_id is not None:
        query = query.where(queue.recipient_id == recipient_id)
    with db.session() as session:
        return list(session.scalars(query))


def _attempts(delivery: DeliveryAttempts) -> dict[str, Any]:
    return {
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "created_at": _instant(delivery.created_at),
        "last_attempt_at": _instant(delivery.last_attempt_at),
        "next_attempt_at": _instant(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": _instant(delivery.delivered_at),
    }


def _replay(db: Database, queue: Queue, delivery_id: int) -> Any:
    """Queue a delivery again, now, with the same message id and body and a fresh budget."""
    with db.write() as session:
        delivery = session.get(queue.delivery, delivery_id)
        if delivery is None:
            raise NotFound(
                f"no {queue.name} delivery {delivery_id} "
                f"(see `ctmirror {queue.command} deliveries`)"
            )
        recipient_id = getattr(delivery, queue.recipient_id.key)
        recipient = session.get(queue.recipient, recipient_id)
        if recipient is not None and recipient.state is SubscriptionState.PAUSED:
            raise UsageError(
                f"{queue.recipient_noun} {recipient_id} is paused: "
                f"`ctmirror {queue.command} resume {recipient_id}` first"
            )
        delivery.status, delivery.attempts = DeliveryStatus.PENDING, 0
        delivery.next_attempt_at, delivery.lease_until, delivery.claimed_by = utcnow(), None, None
    log.info(f"{queue.name}.replay", delivery_id=delivery_id,
             **{queue.message_label: delivery.message_id})  # fmt: skip
    return delivery


# -- webhooks -----------------------------------------------------------------------------------


def list_deliveries(
    db: Database,
    *,
    status: DeliveryStatus | None = None,
    subscription_id: int | None = None,
    limit: int = 100,
) -> list[WebhookDelivery]:
    """Newest webhook deliveries first."""
    return _list(db, WEBHOOKS, status, subscription_id, limit)


def describe_delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "webhook_id": delivery.message_id,
        "type": delivery.event_type,
        "nct_id": delivery.nct_id,
        "version": delivery.version,
        **_attempts(delivery),
    }


def replay_delivery(db: Database, delivery_id: int) -> WebhookDelivery:
    """Queue a webhook delivery again, now, with the same ``webhook-id`` and body."""
    delivery: WebhookDelivery = _replay(db, WEBHOOKS, delivery_id)
    return delivery


# -- notifications ------------------------------------------------------------------------------


def list_notifications(
    db: Database,
    *,
    status: DeliveryStatus | None = None,
    target_id: int | None = None,
    limit: int = 100,
) -> list[NotificationDelivery]:
    """Newest notification deliveries first."""
    return _list(db, NOTIFICATIONS, status, target_id, limit)


def describe_notification(delivery: NotificationDelivery) -> dict[str, Any]:
    """A notification delivery as listings show it: its title, never the target's URL."""
    return {
        "id": delivery.id,
        "target_id": delivery.target_id,
        "message_id": delivery.message_id,
        "kind": "version" if delivery.outbox_id is not None else "digest",
        "nct_id": delivery.nct_id,
        "version": delivery.version,
        "changes": delivery.changes,
        "title": delivery.title,
        **_attempts(delivery),
    }


def replay_notification(db: Database, delivery_id: int) -> NotificationDelivery:
    """Queue a notification again, now, with the same message and a fresh retry budget."""
    delivery: NotificationDelivery = _replay(db, NOTIFICATIONS, delivery_id)
    return delivery
