"""The delivery queues: each channel's delivery table, its recipients' table, and what a send
needs of them. The loop (:mod:`mirror.notify.dispatch`) and the listings and replays
(:mod:`mirror.notify.deliveries`) work on any of them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import InstrumentedAttribute

from mirror.store import (
    DeliveryAttempts,
    NotificationDelivery,
    NotificationTarget,
    Recipient,
    WebhookDelivery,
    WebhookSubscription,
)


@dataclass(frozen=True)
class Queue:
    """One channel's deliveries and recipients."""

    name: str  # "webhook", "notification": log events are "<name>.delivery", "<name>.paused"
    delivery: type[DeliveryAttempts]
    recipient: type[Recipient]
    recipient_id: InstrumentedAttribute[int]  # the delivery's column naming its recipient
    send_columns: tuple[InstrumentedAttribute[Any], ...]  # selected with each claim, by name
    message_label: str  # how logs and listings name the message id
    command: str  # the CLI group, for messages: "webhooks", "notify"
    recipient_noun: str  # "subscription", "target"


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with what its send needs."""

    id: int
    recipient_id: int
    message_id: str
    attempts: int
    data: Mapping[str, Any]  # the queue's send columns, by name


WEBHOOKS = Queue(
    "webhook",
    WebhookDelivery,
    WebhookSubscription,
    WebhookDelivery.subscription_id,
    (WebhookDelivery.payload, WebhookSubscription.url, WebhookSubscription.secret),
    message_label="webhook_id",
    command="webhooks",
    recipient_noun="subscription",
)

NOTIFICATIONS = Queue(
    "notification",
    NotificationDelivery,
    NotificationTarget,
    NotificationDelivery.target_id,
    (
        NotificationDelivery.title,
        NotificationDelivery.body_text,
        NotificationDelivery.body_markdown,
        NotificationTarget.url,
        NotificationTarget.shown_url,
    ),
    message_label="message_id",
    command="notify",
    recipient_noun="target",
)
