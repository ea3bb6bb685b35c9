"""Helpers for the daemon and webhook tests: fast settings, a daemon running in a thread or as a
subprocess, and small readers of what the database holds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from mirror.app import App, build_app
from mirror.config import load_settings
from mirror.daemon import Daemon
from mirror.store import Database, NotificationDelivery, SyncJob, WebhookDelivery

ROOT = Path(__file__).resolve().parents[1]

# Retries in milliseconds, a quick dispatcher poll, no jitter: the tests run in seconds.
FAST = {
    "CTMIRROR_WEBHOOKS__RETRY_BASE_SECONDS": "0.02",
    "CTMIRROR_WEBHOOKS__POLL_SECONDS": "0.05",
    "CTMIRROR_WEBHOOKS__TIMEOUT_SECONDS": "2",
    "CTMIRROR_NOTIFICATIONS__RETRY_BASE_SECONDS": "0.02",
    "CTMIRROR_NOTIFICATIONS__POLL_SECONDS": "0.05",
    "CTMIRROR_NOTIFICATIONS__TIMEOUT_SECONDS": "5",
    "CTMIRROR_DAEMON__JITTER_SECONDS": "0",
    "CTMIRROR_DAEMON__CHECK_SECONDS": "0.2",
    "CTMIRROR_LOG__LEVEL": "info",
}


class RunningDaemon:
    """``Daemon.run()`` on its own event loop in a thread, stopped as a signal would stop it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.daemon: Daemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self.daemon = Daemon(self.app)
            self._ready.set()
            await self.daemon.run()

        try:
            asyncio.run(go())
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    def __enter__(self) -> RunningDaemon:
        self._thread.start()
        assert self._ready.wait(10), "the daemon did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 15) -> float:
        """Ask the daemon to stop; seconds it took to finish."""
        started = time.monotonic()
        if self._loop is not None and self.daemon is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.daemon.request_stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the daemon did not stop"
        assert self.error is None, f"the daemon failed: {self.error!r}"
        return time.monotonic() - started


def spawn_daemon(
    env: dict[str, str], *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``ctmirror daemon`` as a real process, its JSON log lines going to ``log``."""
    stderr = log.open("wb") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "mirror", "daemon", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def terminate(daemons: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """SIGTERM each daemon still running; their exit codes (None: killed after 10 s)."""
    for daemon in daemons:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
    codes = []
    for daemon in daemons:
        try:
            codes.append(daemon.wait(timeout=10))
        except subprocess.TimeoutExpired:
            daemon.kill()
            codes.append(None)
    return codes


def log_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [orjson.loads(line) for line in lines if line.startswith(b"{")]


def app_with(monkeypatch: pytest.MonkeyPatch, section: str, **values: Any) -> App:
    """An App whose ``[section]`` settings differ (set in the environment, which wins)."""
    for key, value in values.items():
        monkeypatch.setenv(f"CTMIRROR_{section.upper()}__{key.upper()}", str(value).lower())
    return build_app(load_settings())


def wait_until(check: Callable[[], Any], timeout: float = 20, every: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; that value (or the last one)."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(every)
        value = check()
    return value


def deliveries(db: Database) -> list[WebhookDelivery]:
    with db.session() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def jobs(db: Database) -> list[SyncJob]:
    with db.session() as session:
        return list(session.scalars(select(SyncJob).order_by(SyncJob.id)))


def notifications(db: Database) -> list[NotificationDelivery]:
    with db.session() as session:
        query = select(NotificationDelivery).order_by(NotificationDelivery.id)
        return list(session.scalars(query))
