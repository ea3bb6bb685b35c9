"""Reading and replaying webhook deliveries (``webhooks deliveries``, ``/v1/webhooks/…``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select

from mirror.errors import NotFound, UsageError
from mirror.record import format_instant, utcnow
from mirror.store import (
    Database,
    DeliveryStatus,
    SubscriptionState,
    WebhookDelivery,
    WebhookSubscription,
)

log = structlog.get_logger(__name__)


def list_deliveries(
    db: Database,
    *,
    status: DeliveryStatus | None = None,
    subscription_id: int | None = None,
    limit: int = 100,
) -> list[WebhookDelivery]:
    """Newest deliveries first."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if subscription_id is not None:
        query = query.where(WebhookDelivery.subscription_id == subscription_id)
    with db.session() as session:
        return list(session.scalars(query))


def describe_delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    def instant(value: datetime | None) -> str | None:
        return format_instant(value) if value else None

    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "webhook_id": delivery.message_id,
        "type": delivery.event_type,
        "nct_id": delivery.nct_id,
        "version": delivery.version,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "created_at": instant(delivery.created_at),
        "last_attempt_at": instant(delivery.last_attempt_at),
        "next_attempt_at": instant(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": instant(delivery.delivered_at),
    }


def replay_delivery(db: Database, delivery_id: int) -> WebhookDelivery:
    """Queue a delivery again, now, with the same ``webhook-id`` and body and a fresh budget."""
    with db.write() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            raise NotFound(
                f"no webhook delivery {delivery_id} (see `ctmirror webhooks deliveries`)"
            )
        sub = session.get(WebhookSubscription, delivery.subscription_id)
        if sub is not None and sub.state is SubscriptionState.PAUSED:
            raise UsageError(
                f"subscription {sub.id} is paused: `ctmirror webhooks resume {sub.id}` first"
            )
        delivery.status, delivery.attempts = DeliveryStatus.PENDING, 0
        delivery.next_attempt_at, delivery.lease_until, delivery.claimed_by = utcnow(), None, None
    log.info("webhook.replay", delivery_id=delivery_id, webhook_id=delivery.message_id)
    return delivery
