"""The one place that wires ctmirror together from its settings."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from mirror.config import Settings
from mirror.pipeline.sync import Syncer
from mirror.source.api import ApiSource
from mirror.store.database import Database, open_database


@dataclass
class App:
    settings: Settings
    db: Database

    def source(self, transport: httpx.AsyncBaseTransport | None = None) -> ApiSource:
        """A new API client; it belongs to the event loop that uses it."""
        return ApiSource(self.settings.source, transport=transport)

    def syncer(self, source: ApiSource) -> Syncer:
        return Syncer(self.db, source, self.settings)

    def close(self) -> None:
        self.db.dispose()


def build_app(settings: Settings, *, migrate: bool = True) -> App:
    return App(
        settings, open_database(settings.database.url, echo=settings.database.echo, migrate=migrate)
    )
