"""A real SMTP server for tests: aiosmtpd on loopback, keeping every message it accepts.

It asks for a login (plain AUTH without TLS, as a local relay may) when built with
credentials, and can refuse every message with an SMTP error or be down (stopped) and come
back on the same port.
"""

from __future__ import annotations

import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from helpers import free_port


class Mailbox:
    """``with Mailbox() as box``: an SMTP server on 127.0.0.1; ``box.messages`` as parsed."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.port = free_port()
        self.user, self.password = user, password
        self.messages: list[EmailMessage] = []
        self.logins: list[str] = []
        self.refuse_with: str | None = None  # e.g. "554 mailbox unavailable"
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def url(self, to: str = "person@example.org", **params: str) -> str:
        """An Apprise mailto:// URL delivering here in the clear (no TLS on loopback)."""
        login = f"{self.user}:{self.password}@" if self.user else ""
        query = {"smtp": "127.0.0.1", "from": "ctmirror@example.org", "to": to,
                 "mode": "insecure", **params}  # fmt: skip
        pairs = "&".join(f"{k}={v}" for k, v in query.items())
        return f"mailto://{login}127.0.0.1:{self.port}?{pairs}"

    def start(self) -> Mailbox:
        auth: dict[str, Any] = {}
        if self.user:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False,
                    "auth_required": True}  # fmt: skip
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **auth)
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 20) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.messages) < count:
            time.sleep(0.02)
        return list(self.messages)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.user,
            self.password,
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse_with:
            return self.refuse_with
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.messages.append(parsed)
        return "250 OK"
