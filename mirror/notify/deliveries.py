"""Reading and replaying webhook deliveries, and their Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mirror.errors import NotFound, UsageError
from mirror.record.events import format_instant, utcnow
from mirror.store.database import Database
from mirror.store.schema import (
    DeliveryStatus,
    JobStatus,
    OutboxEntry,
    SubscriptionState,
    SyncJob,
    WebhookDelivery,
    WebhookSubscription,
)

log = structlog.get_logger(__name__)
RETRYING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)


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


def webhook_metrics(session: Session) -> Iterator[Metric]:
    """Deliveries by status, the queue (depth, oldest), the outbox backlog, subscriptions."""
    by_status = dict(
        session.execute(
            select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        ).all()
    )
    deliveries = GaugeMetricFamily(
        "ctmirror_webhook_deliveries", "Webhook deliveries by status.", labels=["status"]
    )
    for status in DeliveryStatus:
        deliveries.add_metric([status.value], by_status.get(status, 0))
    yield deliveries
    yield GaugeMetricFamily(
        "ctmirror_webhook_queue_depth", "Deliveries waiting for an attempt (pending or failed).",
        value=sum(by_status.get(s, 0) for s in RETRYING),
    )  # fmt: skip
    oldest = session.scalar(
        select(func.min(WebhookDelivery.created_at)).where(WebhookDelivery.status.in_(RETRYING))
    )
    yield GaugeMetricFamily(
        "ctmirror_webhook_oldest_pending_age_seconds",
        "Age of the oldest delivery not yet delivered nor dead (0 = none).",
        value=(utcnow() - oldest).total_seconds() if oldest else 0.0,
    )
    backlog = session.scalar(select(func.count()).where(OutboxEntry.fanned_out_at.is_(None)))
    yield GaugeMetricFamily(
        "ctmirror_outbox_backlog", "New versions not yet fanned out to subscriptions.",
        value=backlog or 0,
    )  # fmt: skip
    yield from _subscription_and_job_metrics(session)


def _subscription_and_job_metrics(session: Session) -> Iterator[Metric]:
    subs = GaugeMetricFamily(
        "ctmirror_webhook_subscriptions", "Webhook subscriptions by state.", labels=["state"]
    )
    by_state = dict(
        session.execute(
            select(WebhookSubscription.state, func.count()).group_by(WebhookSubscription.state)
        ).all()
    )
    for state in SubscriptionState:
        subs.add_metric([state.value], by_state.get(state, 0))
    yield subs
    jobs = GaugeMetricFamily("ctmirror_sync_jobs", "Daemon sync jobs by status.", labels=["status"])
    by_job = dict(
        session.execute(select(SyncJob.status, func.count()).group_by(SyncJob.status)).all()
    )
    for job_status in JobStatus:
        jobs.add_metric([job_status.value], by_job.get(job_status, 0))
    yield jobs
    yield CounterMetricFamily(
        "ctmirror_outbox_versions", "Study versions written to the webhook outbox.",
        value=session.scalar(select(func.count()).select_from(OutboxEntry)) or 0,
    )  # fmt: skip
