"""structlog, configured once per process: pretty on a terminal, JSON lines otherwise.

Logs go to stderr so that stdout carries only a command's output (tables, JSON, pages).
``nct_id`` and ``run_id`` are bound through contextvars by the code that knows them.

Every line is written whole, in one call, under one lock: the daemon logs from its event
loop and from worker threads at once, and a line split by another thread's line would not
parse. Records of libraries that use the standard ``logging`` module (warnings and up) go
through the same renderer, so that a JSON log holds nothing but JSON lines.
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
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    level = getattr(logging, settings.level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # WriteLogger writes message and newline in one call (PrintLogger does two).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(shared, renderer)


def _route_standard_logging(shared: list[Any], renderer: Any) -> None:
    """Standard-library records, warnings and up, rendered as structlog's own lines."""
    handler = _Handler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    # Configured again (a second command in one process): the earlier handler gives way.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Apprise's lines are recorded on each notification delivery (``last_error``) instead;
    # at debug level they would print target URLs with their tokens.
    apprise = logging.getLogger("apprise")
    apprise.propagate = False
    if not apprise.handlers:
        apprise.addHandler(logging.NullHandler())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs, told apart from handlers others install."""
