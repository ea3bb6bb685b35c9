"""Prometheus metrics of one API process: request latency, and gauges read from the database.

The database is the shared state of every ctmirror process, so what it holds (studies,
versions, events, sync runs, webhook deliveries…) is computed at scrape time by *database
collectors*: functions ``(Session) -> Iterable[Metric]``. ``Metrics`` takes a list of them;
a new part adds its own to ``DEFAULT_COLLECTORS`` here (or calls ``Metrics.register`` on a
running app's ``app.state.metrics``). Each collector runs in its
own session, so one failing (say, its table is not migrated yet) does not hide the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mirror.logging import get_logger
from mirror.record import utcnow
from mirror.store import (
    Database,
    DeliveryStatus,
    DigestItem,
    JobStatus,
    NotificationDelivery,
    NotificationTarget,
    OutboxEntry,
    RunStatus,
    Study,
    StudyState,
    StudyVersion,
    SubscriptionState,
    SyncJob,
    SyncRun,
    WebhookDelivery,
    WebhookSubscription,
    event_count,
)

log = get_logger(__name__)

DbCollector = Callable[[Session], Iterable[Metric]]
# Deliveries still to be attempted.
RETRYING = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
# Request latency buckets, in seconds: the feed aims at milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def _by_value(
    session: Session, column: Any, values: type[enum.Enum], name: str, doc: str, label: str
) -> tuple[GaugeMetricFamily, dict[Any, int]]:
    """A gauge of the rows per value of an enum ``column`` (every value, 0 when none), and the
    counts it was made from."""
    rows = session.execute(select(column, func.count()).group_by(column))
    counts: dict[Any, int] = {value: count for value, count in rows}
    gauge = GaugeMetricFamily(name, doc, labels=[label])
    for value in values:
        gauge.add_metric([value.value], counts.get(value, 0))
    return gauge, counts


def mirror_counts(session: Session) -> Iterator[Metric]:
    """Studies by state, stored versions, change events."""
    yield _by_value(
        session, Study.state, StudyState, "ctmirror_studies", "Studies in the mirror.", "state"
    )[0]
    versions = session.scalar(select(func.count()).select_from(StudyVersion)) or 0
    yield CounterMetricFamily(
        "ctmirror_study_versions", "Distinct study versions stored.", value=versions
    )
    events = event_count(session)
    yield CounterMetricFamily("ctmirror_change_events", "Change events recorded.", value=events)


def sync_runs(session: Session) -> Iterator[Metric]:
    """Sync runs by status, and when the last successful one finished."""
    yield _by_value(
        session, SyncRun.status, RunStatus, "ctmirror_sync_runs", "Sync runs by status.", "status"
    )[0]
    finished = session.scalar(
        select(func.max(SyncRun.finished_at)).where(
            SyncRun.status.in_([s for s in RunStatus if s.completed])
        )
    )
    yield GaugeMetricFamily(
        "ctmirror_last_successful_sync_timestamp_seconds",
        "When the last completed sync run (ok or partial) finished (Unix time; 0 = never).",
        value=finished.timestamp() if finished else 0,
    )


def webhook_metrics(session: Session) -> Iterator[Metric]:
    """Deliveries by status, the queue (depth, oldest), the outbox backlog, subscriptions."""
    deliveries, by_status = _by_value(
        session, WebhookDelivery.status, DeliveryStatus,
        "ctmirror_webhook_deliveries", "Webhook deliveries by status.", "status",
    )  # fmt: skip
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
    yield _by_value(
        session, WebhookSubscription.state, SubscriptionState,
        "ctmirror_webhook_subscriptions", "Webhook subscriptions by state.", "state",
    )[0]  # fmt: skip
    yield _by_value(
        session, SyncJob.status, JobStatus,
        "ctmirror_sync_jobs", "Daemon sync jobs by status.", "status",
    )[0]  # fmt: skip
    yield CounterMetricFamily(
        "ctmirror_outbox_versions", "Study versions written to the webhook outbox.",
        value=session.scalar(select(func.count()).select_from(OutboxEntry)) or 0,
    )  # fmt: skip


def notification_metrics(session: Session) -> Iterator[Metric]:
    """Notifications by status, the queue depth, targets, versions waiting for a digest."""
    deliveries, by_status = _by_value(
        session, NotificationDelivery.status, DeliveryStatus,
        "ctmirror_notification_deliveries", "Notifications for people by status.", "status",
    )  # fmt: skip
    yield deliveries
    yield GaugeMetricFamily(
        "ctmirror_notification_queue_depth",
        "Notifications waiting for an attempt (pending or failed).",
        value=sum(by_status.get(s, 0) for s in RETRYING),
    )
    yield _by_value(
        session, NotificationTarget.state, SubscriptionState,
        "ctmirror_notification_targets", "Notification targets by state.", "state",
    )[0]  # fmt: skip
    waiting = select(func.count()).where(DigestItem.delivery_id.is_(None))
    yield GaugeMetricFamily(
        "ctmirror_notification_digest_backlog", "Study versions waiting for their digest.",
        value=session.scalar(waiting) or 0,
    )  # fmt: skip


DEFAULT_COLLECTORS: tuple[DbCollector, ...] = (
    mirror_counts, sync_runs, webhook_metrics, notification_metrics,
)  # fmt: skip


class _DatabaseCollector(Collector):
    def __init__(self, db: Database, collectors: list[DbCollector]) -> None:
        self.db = db
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        up = 1
        for collect in self.collectors:
            try:
                with self.db.session() as session:
                    metrics = list(collect(session))
            except SQLAlchemyError as exc:
                log.warning("metrics.collector_failed", collector=collect.__name__, error=str(exc))
                up = 0
                continue
            yield from metrics
        yield GaugeMetricFamily(
            "ctmirror_database_up", "1 if every database collector could read.", value=up
        )


class Metrics:
    """The registry of one API app: its request histogram plus the database collectors."""

    def __init__(self, db: Database, collectors: Sequence[DbCollector] = DEFAULT_COLLECTORS):
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "ctmirror_http_request_duration_seconds",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._database = _DatabaseCollector(db, list(collectors))
        self.registry.register(self._database)

    def register(self, collector: DbCollector) -> None:
        """Add a database collector (computed at every scrape)."""
        self._database.collectors.append(collector)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
