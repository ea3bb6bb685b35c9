"""structlog, configured once per process: pretty on a terminal, JSON lines otherwise.

Logs go to stderr so that stdout carries only a command's output (tables, JSON, pages).
``nct_id`` and ``run_id`` are bound through contextvars (``bind_context``) by the code that
knows them.

structlog is imported on the first line logged, not before: it brings rich with it (about a
tenth of a second), and a read command such as ``ctmirror changes`` usually logs nothing. So
modules take their logger from ``get_logger`` here, never from structlog, and
``configure_logging`` only records what the first line will set up.

Every line is written whole, in one call, under one lock: the daemon logs from its event
loop and from worker threads at once, and a line split by another thread's line would not
parse. Records of libraries that use the standard ``logging`` module (warnings and up) go
through the same renderer, so that a JSON log holds nothing but JSON lines.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from mirror.config import LogSettings

__all__ = ["bind_context", "configure_logging", "get_logger", "unbind_context"]

_lock = threading.Lock()
_wanted: tuple[LogSettings, str | None] | None = None  # what configure_logging asked for
_renderer: Any = None  # set up from _wanted on the first line; None until then


def _new_lock() -> None:
    """A forked child (an import worker) gets a lock of its own: another thread of the parent
    may have held this one at the fork, and in the child nobody would release it."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


def configure_logging(settings: LogSettings, *, force_format: str | None = None) -> None:
    """Log as ``settings`` say from now on (structlog itself is set up on the first line)."""
    global _wanted, _renderer
    with _lock:
        _wanted, _renderer = (settings, force_format), None
    _route_standard_logging()


def get_logger(name: str | None = None) -> Any:
    """A structlog logger, imported and configured when it logs its first line."""
    return _Logger(name)


def bind_context(**values: Any) -> None:
    """Add ``values`` to every line this thread or task logs from now on."""
    _structlog().contextvars.bind_contextvars(**values)


def unbind_context(*keys: str) -> None:
    _structlog().contextvars.unbind_contextvars(*keys)


class _Logger:
    """structlog's logger for ``name``, made on first use."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str | None) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, method)


def _structlog() -> Any:
    """structlog, configured as configure_logging last asked."""
    import structlog

    if _renderer is None and _wanted is not None:
        with _lock:
            if _renderer is None:
                _configure(structlog, *_wanted)
    return structlog


def _configure(structlog: Any, settings: LogSettings, force_format: str | None) -> None:
    global _renderer
    fmt = force_format or settings.format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*_shared(structlog), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, settings.level.upper())
        ),
        # WriteLogger writes message and newline in one call (PrintLogger does two).
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _renderer = renderer


def _shared(structlog: Any) -> list[Any]:
    """The processors structlog's lines and the standard library's records both go through."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _route_standard_logging() -> None:
    """Standard-library records, warnings and up, rendered as structlog's own lines."""
    root = logging.getLogger()
    # Configured again (a second command in one process): the earlier handler gives way.
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(_Handler(sys.stderr))
    root.setLevel(logging.WARNING)
    # Apprise's lines are recorded on each notification delivery (``last_error``) instead;
    # at debug level they would print target URLs with their tokens.
    apprise = logging.getLogger("apprise")
    apprise.propagate = False
    if not apprise.handlers:
        apprise.addHandler(logging.NullHandler())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler configure_logging installs; it renders with structlog's renderer."""

    def format(self, record: logging.LogRecord) -> str:
        if self.formatter is None:
            structlog = _structlog()
            self.setFormatter(
                structlog.stdlib.ProcessorFormatter(
                    foreign_pre_chain=[*_shared(structlog), structlog.stdlib.add_logger_name],
                    processors=[
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        _renderer,
                    ],
                )
            )
        return super().format(record)
