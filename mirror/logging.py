"""structlog, configured once per process: pretty on a terminal, JSON lines otherwise.

Logs go to stderr so that stdout carries only a command's output (tables, JSON, pages).
``nct_id`` and ``run_id`` are bound through contextvars by the code that knows them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from mirror.config import LogSettings


def configure_logging(settings: LogSettings, *, force_format: str | None = None) -> None:
    fmt = force_format or settings.format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    level = getattr(logging, settings.level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module: warnings and up, to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    # Apprise's lines are recorded on each notification delivery (``last_error``) instead;
    # at debug level they would print target URLs with their tokens.
    apprise = logging.getLogger("apprise")
    apprise.propagate = False
    if not apprise.handlers:
        apprise.addHandler(logging.NullHandler())
