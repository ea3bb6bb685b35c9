"""The one place that builds ctmirror's services from its settings.

The CLI, the HTTP app and the daemon ask an :class:`App` for what they need instead of
constructing it: a source, a syncer, an importer, a backfiller, the webhook sender, its egress
policy, the dispatcher, and for notifications the Apprise notifier and its dispatcher. Nothing
here holds a module-level engine or client; an App owns its database engine and is closed by
whoever built it (docs/architecture.md, "One place builds").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mirror.config import Settings
from mirror.store import Database, open_database

# The services' packages are imported by the factory that needs them, not here: a command
# pays only for what it uses (`ctmirror changes` never loads the notifiers or the HTTP client).
if TYPE_CHECKING:
    import httpx

    from mirror.notify import (
        AppriseNotifier,
        Dispatcher,
        EgressPolicy,
        HttpSender,
        NotificationDispatcher,
        WebhookSender,
    )
    from mirror.pipeline import Backfiller, Importer, Ingestor, Syncer
    from mirror.source import ApiSource, HistorySource, StudySource


@dataclass
class App:
    settings: Settings
    db: Database

    def source(self, transport: httpx.AsyncBaseTransport | None = None) -> ApiSource:
        """A new API client; it belongs to the event loop that uses it (``async with``)."""
        from mirror.source import ApiSource

        return ApiSource(self.settings.source, transport=transport)

    def syncer(self, source: StudySource) -> Syncer:
        from mirror.pipeline import Syncer

        return Syncer(self.db, source, self.settings)

    def ingestor(self, *, run_id: int | None = None, watch_id: int | None = None) -> Ingestor:
        """The write stage on its own (a run's syncer or importer builds its own per run)."""
        from mirror.pipeline import Ingestor

        return Ingestor(self.db, ignore=self.settings.diff.ignore, run_id=run_id, watch_id=watch_id)

    def importer(self) -> Importer:
        """An import worker in this process (``run_workers`` starts processes of their own)."""
        from mirror.pipeline import Importer

        return Importer(self.db, self.settings)

    def backfiller(self, source: HistorySource) -> Backfiller:
        from mirror.pipeline import Backfiller

        return Backfiller(self.db, source, self.settings)

    def egress_policy(self) -> EgressPolicy:
        """What webhook URLs may reach (``webhooks.allow_private``, ``allow_loopback``)."""
        from mirror.notify import EgressPolicy

        return EgressPolicy.of(self.settings.webhooks)

    def sender(self) -> HttpSender:
        """A new webhook sender; close it with ``await sender.aclose()``."""
        from mirror.notify import HttpSender

        return HttpSender(self.settings.webhooks)

    def dispatcher(self, sender: WebhookSender, owner: str) -> Dispatcher:
        from mirror.notify import Dispatcher

        return Dispatcher(self.db, self.settings, sender, owner)

    def notifier(self) -> AppriseNotifier:
        """The notification sender (Apprise under the ``[notifications]`` egress policy)."""
        from mirror.notify import AppriseNotifier

        return AppriseNotifier(self.settings.notifications)

    def notification_dispatcher(
        self, notifier: AppriseNotifier, owner: str, clock: Callable[[], datetime] | None = None
    ) -> NotificationDispatcher:
        from mirror.notify import NotificationDispatcher

        if clock is None:
            return NotificationDispatcher(self.db, self.settings, notifier, owner)
        return NotificationDispatcher(self.db, self.settings, notifier, owner, clock)

    def close(self) -> None:
        self.db.dispose()


def build_app(settings: Settings, *, migrate: bool = True, create: bool = True) -> App:
    """The App of ``settings``; without ``create`` a missing mirror is an error, not a new one."""
    database = settings.database
    return App(
        settings, open_database(database.url, echo=database.echo, migrate=migrate, create=create)
    )
