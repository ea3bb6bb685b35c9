"""Prometheus metrics of one API process: request latency, and gauges read from the database.

The database is the shared state of every ctmirror process, so what it holds (studies,
versions, events, sync runs, webhook deliveries…) is computed at scrape time by *database
collectors*: functions ``(Session) -> Iterable[Metric]``. ``Metrics`` takes a list of them;
another part adds its own by listing it in ``mirror.serve.app.METRIC_COLLECTORS`` (or calling
``Metrics.register`` on a running app's ``app.state.metrics``). Each collector runs in its
own session, so one failing (say, its table is not migrated yet) does not hide the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from mirror.store.blocks import event_count
from mirror.store.database import Database
from mirror.store.schema import RunStatus, Study, StudyState, StudyVersion, SyncRun

log = structlog.get_logger(__name__)

DbCollector = Callable[[Session], Iterable[Metric]]
# Request latency buckets, in seconds: the feed aims at milliseconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def mirror_counts(session: Session) -> Iterator[Metric]:
    """Studies by state, stored versions, change events."""
    studies = GaugeMetricFamily("ctmirror_studies", "Studies in the mirror.", labels=["state"])
    by_state = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
    for state in StudyState:
        studies.add_metric([state.value], by_state.get(state, 0))
    yield studies
    versions = session.scalar(select(func.count()).select_from(StudyVersion)) or 0
    yield CounterMetricFamily(
        "ctmirror_study_versions", "Distinct study versions stored.", value=versions
    )
    events = event_count(session)
    yield CounterMetricFamily("ctmirror_change_events", "Change events recorded.", value=events)


def sync_runs(session: Session) -> Iterator[Metric]:
    """Sync runs by status, and when the last successful one finished."""
    runs = GaugeMetricFamily("ctmirror_sync_runs", "Sync runs by status.", labels=["status"])
    by_status = dict(
        session.execute(select(SyncRun.status, func.count()).group_by(SyncRun.status)).all()
    )
    for status in RunStatus:
        runs.add_metric([status.value], by_status.get(status, 0))
    yield runs
    finished = session.scalar(
        select(func.max(SyncRun.finished_at)).where(SyncRun.status == RunStatus.OK)
    )
    yield GaugeMetricFamily(
        "ctmirror_last_successful_sync_timestamp_seconds",
        "When the last successful sync run finished (Unix time; 0 = never).",
        value=finished.timestamp() if finished else 0,
    )


DEFAULT_COLLECTORS: tuple[DbCollector, ...] = (mirror_counts, sync_runs)


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
