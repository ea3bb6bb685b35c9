"""What every command shares: the :class:`Context` (settings and the App, built on first use),
``pass_ctx``, the ``--format`` option and time parsing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mirror.config import Settings, load_settings
from mirror.logging import configure_logging

if TYPE_CHECKING:
    from mirror.app import App

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["table", "json", "ndjson", "csv"]


class Context:
    """What every command may need, built on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._app: App | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            configure_logging(self._settings.log)
        return self._settings

    @property
    def app(self) -> App:
        """The mirror, created (and migrated) on first use: for commands that write."""
        if self._app is None:
            from mirror.app import build_app  # what a command needs, when it needs it

            self._app = build_app(self.settings)
        return self._app

    @property
    def reader(self) -> App:
        """The mirror as it is, for commands that only read: never creates a database, and
        says which one it looked at when it is missing (an error) or holds no study (a note)."""
        if self._app is None:
            from mirror.app import build_app

            self._app = build_app(self.settings, create=False)
            if not _holds_a_study(self._app):
                where = self._app.db.url.render_as_string(hide_password=True)
                click.echo(f"note: the mirror at {where} holds no study yet", err=True)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_ctx = click.make_pass_decorator(Context)


def format_option(choices: Sequence[str] = FORMATS, default: str = "table") -> Callable[[F], F]:
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True
    )


def utc(value: datetime | None) -> datetime | None:
    """A time given on the command line, in UTC (without a zone it is UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _holds_a_study(app: App) -> bool:
    from sqlalchemy import select

    from mirror.store import Study

    with app.db.session() as session:
        return session.scalar(select(Study.id).limit(1)) is not None
