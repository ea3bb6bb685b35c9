"""Sending one webhook message: the sender contract, Standard Webhooks signing, and the HTTP
sender that goes through the egress guard (:mod:`mirror.notify.egress`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx
from standardwebhooks import Webhook

from mirror.config import WebhookSettings
from mirror.notify.egress import EgressPolicy, GuardedTransport, Resolver, resolve
from mirror.record import NUL_REPLACEMENT, utcnow

USER_AGENT = "ctmirror-webhooks/0.1"
POOL_SIZE = 4


@dataclass(frozen=True)
class SendResult:
    """What one attempt came to: a receiver's HTTP answer, or a service's yes or no."""

    status_code: int | None
    body: str = ""
    error: str | None = None
    seconds: float = 0.0
    accepted: bool | None = None  # the service's answer, for channels without an HTTP status

    @property
    def ok(self) -> bool:
        if self.accepted is not None:
            return self.accepted
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        """The outcome in words, as stored with the delivery (a receiver's NUL characters
        replaced: the database keeps no NUL)."""
        if self.status_code is None:
            text = self.error or "no response"
        else:
            text = f"HTTP {self.status_code}" + (f": {self.body[:200]}" if self.body else "")
        return text.replace("\x00", NUL_REPLACEMENT)


class WebhookSender(Protocol):
    """Sends one signed webhook message and reports the receiver's answer.

    ``body`` is sent byte for byte; ``message_id`` goes in ``webhook-id``. It never raises for
    a receiver's failure (refused address, timeout, error status): that is a SendResult.
    """

    async def send(self, url: str, secret: str, message_id: str, body: str) -> SendResult: ...


def _signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` signed now (the timestamp is per attempt)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class HttpSender:
    """POSTs over httpx through the egress guard: no redirects, one deadline per attempt, and
    at most ``max_response_bytes`` of the answer read.

    Connections are spread over several small pools (``POOL_SIZE`` each): httpcore checks
    every connection of a pool for every request, so one pool of 16 costs twice the CPU per
    delivery of four pools of four.
    """

    def __init__(self, settings: WebhookSettings, resolver: Resolver = resolve) -> None:
        self.settings = settings
        policy = EgressPolicy.of(settings)
        limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        self._pools = [
            httpx.AsyncClient(
                transport=GuardedTransport(policy, limits=limits, resolver=resolver),
                timeout=settings.timeout_seconds,
                follow_redirects=False,
            )
            for _ in range(-(-settings.concurrency // POOL_SIZE))
        ]
        self._busy = [0] * len(self._pools)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    async def __aenter__(self) -> HttpSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, url: str, secret: str, message_id: str, body: str) -> SendResult:
        started = time.monotonic()
        headers = _signed_headers(secret, message_id, body, utcnow())
        pool = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[pool] += 1
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                code, text = await self._post(self._pools[pool], url, headers, body.encode())
        except TimeoutError:
            error = f"no answer within {self.settings.timeout_seconds:g}s"
            return SendResult(None, error=error, seconds=time.monotonic() - started)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: not an HTTPError
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return SendResult(None, error=error, seconds=time.monotonic() - started)
        finally:
            self._busy[pool] -= 1
        return SendResult(code, text, seconds=time.monotonic() - started)

    async def _post(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str]:
        cap = self.settings.max_response_bytes
        async with client.stream("POST", url, headers=headers, content=body) as response:
            kept = bytearray()
            async for chunk in response.aiter_raw():
                kept += chunk[: cap - len(kept)]
                if len(kept) >= cap:
                    break
            return response.status_code, kept.decode("utf-8", "replace")
