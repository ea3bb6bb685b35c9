"""A real webhook receiver for tests: an HTTP server on loopback that records what it gets.

Behaviour is set per test: answer a status, fail a fraction of requests with 500, hang past
the sender's timeout now and then, or be down (stopped) and come back on the same port.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request was read

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return orjson.loads(self.body)

    def verify(self, secret: str) -> Any:
        """The body, if its signature verifies with the standardwebhooks library's own code."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Behaviour:
    status: int = 200
    fail_rate: float = 0.0  # this fraction answers 500
    hang_rate: float = 0.0  # this fraction waits ``hang_seconds`` before answering
    hang_seconds: float = 0.0
    # After this many failed answers to one webhook-id, answer it 200 (None: no limit).
    max_failures_per_id: int | None = None
    redirect_to: str | None = None
    body: bytes = b'{"ok": true}'
    rng: random.Random = field(default_factory=lambda: random.Random(7))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Receiver:
    """Records every request (including those it then failed); ``delivered`` only 2xx ones."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.answered: list[tuple[Received, int]] = []
        self._failures: Counter[str] = Counter()
        self.hung = 0  # requests answered only after ``hang_seconds``
        self.failed = 0  # requests answered 500 by ``fail_rate``
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._server = _Server(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start`` again (same port)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r, status in self.answered if 200 <= status < 300]

    def delivered_ids(self) -> Counter[str]:
        return Counter(r.webhook_id for r in self.delivered())

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """Block until ``count`` requests were answered 2xx (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.delivered()) < count:
            time.sleep(0.02)
        return self.delivered()

    def _answer(self, received: Received) -> tuple[int, dict[str, str], bytes]:
        b = self.behaviour
        with self._lock:
            self.received.append(received)
            fail = b.rng.random() < b.fail_rate
            hang = b.rng.random() < b.hang_rate
            key = received.headers.get("webhook-id", "")
            if b.max_failures_per_id is not None and self._failures[key] >= b.max_failures_per_id:
                fail = hang = False
            if fail or hang:
                self._failures[key] += 1
            self.hung += hang
            self.failed += fail
        if hang:
            time.sleep(b.hang_seconds)
        if b.redirect_to:
            return 307, {"Location": b.redirect_to}, b""
        return (500 if fail else b.status), {}, b.body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = Received(self.path, headers, body, time.time())
                status, extra, answer = receiver._answer(received)
                # Recorded before the answer goes out, so a sender that has read it finds it
                # here; taken back if the sender is gone (it timed out: not delivered).
                with receiver._lock:
                    receiver.answered.append((received, status))
                try:
                    self.send_response(status)
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except OSError:
                    with receiver._lock:
                        receiver.answered.remove((received, status))

        return Handler
