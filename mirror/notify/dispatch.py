"""The delivery loop every channel shares: it runs the fan-out (:mod:`mirror.notify.fanout`), then
claims due deliveries, sends them through the channel (signed webhooks, Apprise notifications),
and records each attempt.

Delivery is at-least-once. A dispatcher *claims* a delivery before sending it: in one short
transaction it selects due rows ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serializes
writers instead) and stamps them with its name and a lease. No other dispatcher takes a leased
row, so several daemons never send the same delivery at once; a dispatcher that dies mid-send
loses its lease and another one sends the delivery again, with the same message id.

A success is delivered; anything else (an error answer, a timeout, a refused address) is a
failed attempt, retried after ``retry_base_seconds * 2**(n-1)`` (+ up to 25% jitter) until
``max_attempts``, then ``dead``. ``pause_after_dead`` dead deliveries in a row pause the
recipient (the subscription, the target). Each channel has these settings in its own section.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import Table, Update, bindparam, inspect, or_, select, update
from sqlalchemy.orm import Session

from mirror.config import NotificationSettings, Settings, WebhookSettings
from mirror.logging import get_logger
from mirror.notify.digests import build_due_digests
from mirror.notify.fanout import Links, fan_out
from mirror.notify.notifier import AppriseNotifier, NotificationChannel
from mirror.notify.queues import WEBHOOKS, Claimed, Queue
from mirror.notify.sender import SendResult, WebhookSender
from mirror.record import format_instant, utcnow
from mirror.store import (
    Database,
    DeliveryAttempts,
    DeliveryStatus,
    SubscriptionState,
    WebhookSubscription,
)

log = get_logger(__name__)

# A claim outlives the request timeout by this much before another dispatcher may take over.
LEASE_MARGIN = timedelta(seconds=60)
# Deliveries claimed per transaction (between two and four times the concurrency), and
# attempts recorded per transaction while others are still in flight.
CLAIM_BATCH = 64
RECORD_BATCH = 16
FAN_OUT_BATCH = 500
ChannelSettings = WebhookSettings | NotificationSettings


# -- claims and results -----------------------------------------------------------------


def claim(
    db: Database,
    queue: Queue,
    owner: str,
    limit: int,
    lease: timedelta,
    ids: Sequence[int] | None = None,
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of active recipients (of ``ids``) for ``owner``."""
    now = utcnow()
    d, r = queue.delivery, queue.recipient
    only = [d.id.in_(ids)] if ids is not None else []
    with db.write() as session:
        rows = session.execute(
            select(d.id, queue.recipient_id, d.message_id, d.attempts, *queue.send_columns)
            .join(r, r.id == queue.recipient_id)
            .where(
                d.status.in_([DeliveryStatus.PENDING, DeliveryStatus.FAILED]),
                d.next_attempt_at <= now,
                or_(d.lease_until.is_(None), d.lease_until < now),
                r.state == SubscriptionState.ACTIVE,
                *only,
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=d)
        ).all()
        if rows:
            session.execute(
                update(d)
                .where(d.id.in_([row[0] for row in rows]))
                .values(lease_until=now + lease, claimed_by=owner)
            )
    names = [column.key for column in queue.send_columns]
    return [
        Claimed(row[0], row[1], row[2], row[3], dict(zip(names, row[4:], strict=True)))
        for row in rows
    ]


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_attempts: int
    pause_after_dead: int

    @classmethod
    def of(cls, settings: ChannelSettings) -> RetryPolicy:
        return cls(settings.retry_base_seconds, settings.max_attempts, settings.pause_after_dead)

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based): exponential, with jitter."""
        seconds = self.base_seconds * 2 ** (attempt - 1)
        return timedelta(seconds=seconds * (1 + random.uniform(0, 0.25)))


_OUTCOME = (
    "status", "attempts", "last_attempt_at", "last_status_code", "last_error", "next_attempt_at",
    "delivered_at", "lease_until", "claimed_by",
)  # fmt: skip


def _record_statement(delivery: type[DeliveryAttempts]) -> Update:
    """One UPDATE executed with a parameter set per attempt ("b_id" avoids the SET columns)."""
    table = inspect(delivery).local_table
    assert isinstance(table, Table)
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(**{column: bindparam(column) for column in _OUTCOME})
    )


def record(
    db: Database,
    queue: Queue,
    owner: str,
    results: Sequence[tuple[Claimed, SendResult]],
    policy: RetryPolicy,
) -> None:
    """Write the outcome of each attempt in one transaction; only the lease holder's count."""
    if not results:
        return
    now = utcnow()
    d = queue.delivery
    planned = [(c, r, _outcome(r, c.attempts + 1, now, policy)) for c, r in results]
    with db.write() as session:
        owned = set(
            session.scalars(
                select(d.id)
                .where(d.id.in_([c.id for c, _, _ in planned]))
                .where(d.claimed_by == owner)
                .with_for_update()
            )
        )
        mine = [(c, v) for c, _, v in planned if c.id in owned]
        if mine:
            statement = _record_statement(d)
            session.connection().execute(statement, [{"b_id": c.id, **v} for c, v in mine])
            outcomes = [(c.recipient_id, v["status"]) for c, v in mine]
            _count_streaks(session, queue, outcomes, policy)
    for claimed, result, values in planned:
        status = values["status"] if claimed.id in owned else "superseded"
        _log_attempt(queue, claimed, result, claimed.attempts + 1, status)


def _outcome(
    result: SendResult, attempt: int, now: datetime, policy: RetryPolicy
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "attempts": attempt, "last_attempt_at": now, "last_status_code": result.status_code,
        "lease_until": None, "claimed_by": None, "delivered_at": None, "next_attempt_at": None,
        "last_error": None if result.ok else result.describe()[:2000],
    }  # fmt: skip
    if result.ok:
        return values | {"status": DeliveryStatus.DELIVERED, "delivered_at": now}
    if attempt >= policy.max_attempts:
        return values | {"status": DeliveryStatus.DEAD}
    return values | {
        "status": DeliveryStatus.FAILED,
        "next_attempt_at": now + policy.delay(attempt),
    }


def _count_streaks(
    session: Session,
    queue: Queue,
    outcomes: Sequence[tuple[int, DeliveryStatus]],
    policy: RetryPolicy,
) -> None:
    """Dead deliveries in a row pause a recipient; a delivered one resets the count.

    ``outcomes`` are (recipient, status) in the order the attempts ended.
    """
    streaks: dict[int, tuple[bool, int]] = {}  # recipient -> (reset, dead since)
    for recipient_id, status in outcomes:
        reset, dead = streaks.get(recipient_id, (False, 0))
        if status is DeliveryStatus.DELIVERED:
            streaks[recipient_id] = (True, 0)
        elif status is DeliveryStatus.DEAD:
            streaks[recipient_id] = (reset, dead + 1)
    r = queue.recipient
    for recipient_id, (reset, dead) in sorted(streaks.items()):  # one lock order
        if not dead:
            if reset:
                session.execute(
                    update(r).where(r.id == recipient_id, r.consecutive_dead != 0)
                    .values(consecutive_dead=0)
                )  # fmt: skip
            continue
        count = dead if reset else r.consecutive_dead + dead
        session.execute(update(r).where(r.id == recipient_id).values(consecutive_dead=count))
        _pause_if_due(session, queue, recipient_id, policy)


def _pause_if_due(session: Session, queue: Queue, recipient_id: int, policy: RetryPolicy) -> None:
    r = queue.recipient
    paused = session.connection().execute(
        update(r)
        .where(r.id == recipient_id, r.state == SubscriptionState.ACTIVE,
               r.consecutive_dead >= policy.pause_after_dead)
        .values(state=SubscriptionState.PAUSED, paused_at=utcnow())
    )  # fmt: skip
    if paused.rowcount:
        log.warning(
            f"{queue.name}.paused", **{queue.recipient_id.key: recipient_id},
            dead_in_a_row=policy.pause_after_dead,
        )  # fmt: skip


def _log_attempt(
    queue: Queue, claimed: Claimed, result: SendResult, attempt: int, status: object
) -> None:
    log.info(
        f"{queue.name}.delivery", delivery_id=claimed.id,
        **{queue.recipient_id.key: claimed.recipient_id, queue.message_label: claimed.message_id},
        attempt=attempt, status=str(status), status_code=result.status_code, error=result.error,
        ms=round(result.seconds * 1000, 1),
    )  # fmt: skip


def release(db: Database, queue: Queue, owner: str, ids: Sequence[int]) -> None:
    """Give back claims that were never attempted (shutdown): due again at once, anywhere."""
    if ids:
        d = queue.delivery
        with db.write() as session:
            session.execute(
                update(d)
                .where(d.id.in_(ids), d.claimed_by == owner)
                .values(lease_until=None, claimed_by=None)
            )


# -- the loop -----------------------------------------------------------------------------------


class Channel(Protocol):
    """One way of telling others: its queue, and how one claimed delivery is sent. ``send``
    never raises for a recipient's failure: that is a failed SendResult."""

    queue: Queue

    async def send(self, item: Claimed) -> SendResult: ...


class DeliveryLoop:
    """Fans the outbox out and keeps up to ``concurrency`` deliveries of a channel in flight.

    ``run`` polls every ``poll_seconds`` (sooner when ``wake`` is called, e.g. after this
    daemon's own sync committed a batch); ``drain`` sends everything due now and returns.
    Subclasses add work done at each poll (``_chores``, e.g. building digests).
    """

    def __init__(
        self, db: Database, channel: Channel, settings: ChannelSettings, links: Links, owner: str
    ) -> None:
        self.db, self.channel, self.owner, self.links = db, channel, owner, links
        self.queue = channel.queue
        self.settings = settings
        self.policy = RetryPolicy.of(settings)
        slots = settings.concurrency
        # Claimed ahead: at most four rounds of sends, so every claim is sent within its lease.
        self.batch = min(max(CLAIM_BATCH, 2 * slots), 4 * slots)
        rounds = -(-self.batch // slots)
        self.lease = timedelta(seconds=settings.timeout_seconds * rounds) + LEASE_MARGIN
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[SendResult], Claimed] = {}
        self._ready: deque[Claimed] = deque()  # claimed, waiting for a free slot
        self._done: list[tuple[Claimed, SendResult]] = []
        self._more = True  # the last claim was full: more may be due
        self.attempts = 0  # attempts finished, over the loop's life

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        next_poll = 0.0
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + self.settings.poll_seconds
                        self._more = True
                        await self._fan_out()
                        await self._chores()
                    await self._fill()
                    await self._flush(force=False)
                except Exception as exc:  # the database went away: log, keep polling
                    log.error(
                        f"{self.queue.name}.dispatcher_error", error=str(exc),
                        exc_type=type(exc).__name__,
                    )  # fmt: skip
                await self._sleep(next_poll - time.monotonic(), stop)
        finally:
            await self._shutdown(grace)

    async def drain(self) -> int:
        """Attempt what is due until nothing is due now; failed attempts whose retry time is
        later are left for it (a later run, or ``run``). The number of attempts made."""
        started = self.attempts
        await self._fan_out()
        await self._chores()
        while True:
            self._more = True
            await self._fill()
            if not self._in_flight and not self._done:
                await self._fan_out()  # versions committed meanwhile
                await self._fill()
                if not self._in_flight:
                    return self.attempts - started
            if self._in_flight:
                await asyncio.wait(list(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
            await self._flush(force=False)

    async def _chores(self) -> None:
        """Work of the channel's own at each poll (none for webhooks)."""

    async def _fan_out(self) -> None:
        while True:
            rows, written = await asyncio.to_thread(fan_out, self.db, self.links, FAN_OUT_BATCH)
            self._more = self._more or written > 0
            if rows < FAN_OUT_BATCH:
                return

    async def _fill(self) -> None:
        """Start sends in free slots; claim ahead, in batches, so claims stay few and large."""
        slots = self.settings.concurrency
        if self._more and len(self._ready) <= slots // 2:
            want = self.batch - len(self._ready)
            claimed = await asyncio.to_thread(
                claim, self.db, self.queue, self.owner, want, self.lease
            )
            self._more = len(claimed) == want
            self._ready.extend(claimed)
        while self._ready and len(self._in_flight) < slots:
            self._start(self._ready.popleft())

    def _start(self, item: Claimed) -> None:
        task = asyncio.create_task(self._send(item))
        self._in_flight[task] = item
        task.add_done_callback(self._finished)

    async def _send(self, item: Claimed) -> SendResult:
        try:
            return await self.channel.send(item)
        except Exception as exc:  # a sender bug must not lose the delivery: it is retried
            return SendResult(None, error=f"{type(exc).__name__}: {exc}")

    def _finished(self, task: asyncio.Task[SendResult]) -> None:
        item = self._in_flight.pop(task)
        if not task.cancelled():
            self._done.append((item, task.result()))
            self.attempts += 1
        self._wake.set()

    async def _flush(self, *, force: bool = True) -> None:
        """Record finished attempts; while sends are in flight, in batches (fewer commits)."""
        if not force and self._in_flight and len(self._done) < RECORD_BATCH:
            return
        results, self._done = self._done, []
        if results:
            await asyncio.to_thread(record, self.db, self.queue, self.owner, results, self.policy)

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        if stop.is_set():
            return
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(seconds, 0.0))
        self._wake.clear()

    async def _shutdown(self, grace: float) -> None:
        """Let sends in flight finish for up to ``grace`` seconds; give the rest back."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace)
        unsent = [item.id for item in [*self._in_flight.values(), *self._ready]]
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1)
        with contextlib.suppress(Exception):
            await self._flush()
            await asyncio.to_thread(release, self.db, self.queue, self.owner, unsent)


async def deliver_now(
    db: Database,
    channel: Channel,
    settings: ChannelSettings,
    delivery_id: int,
    owner: str,
) -> SendResult | None:
    """One attempt at one due delivery, recorded like the loop's (None: not claimable)."""
    lease = timedelta(seconds=settings.timeout_seconds) + LEASE_MARGIN
    claimed = claim(db, channel.queue, owner, 1, lease, [delivery_id])
    if not claimed:
        return None
    result = await channel.send(claimed[0])
    record(db, channel.queue, owner, [(claimed[0], result)], RetryPolicy.of(settings))
    return result


def owner_name() -> str:
    """This process, as named in claims: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


# -- webhooks -----------------------------------------------------------------------------------


@dataclass
class WebhookChannel:
    """Signed webhook messages, sent by a :class:`WebhookSender`."""

    sender: WebhookSender
    queue: Queue = WEBHOOKS

    async def send(self, item: Claimed) -> SendResult:
        data = item.data
        return await self.sender.send(data["url"], data["secret"], item.message_id,
                                      data["payload"])  # fmt: skip


class Dispatcher(DeliveryLoop):
    """The webhook dispatcher: ``webhooks.concurrency`` signed deliveries in flight."""

    def __init__(self, db: Database, settings: Settings, sender: WebhookSender, owner: str) -> None:
        super().__init__(db, WebhookChannel(sender), settings.webhooks, Links.of(settings), owner)


async def ping(sender: WebhookSender, subscription: WebhookSubscription) -> tuple[str, SendResult]:
    """Send a signed ``webhook.test`` message to a subscription: (its webhook-id, the answer)."""
    message_id = f"msg_test_{uuid.uuid4().hex}"
    body = {
        "type": "webhook.test",
        "id": message_id,
        "subscription_id": subscription.id,
        "sent_at": format_instant(utcnow()),
        "changes": [],
    }
    result = await sender.send(subscription.url, subscription.secret, message_id,
                               orjson.dumps(body).decode())  # fmt: skip
    return message_id, result


# -- notifications ------------------------------------------------------------------------------


class NotificationDispatcher(DeliveryLoop):
    """The notification dispatcher: ``notifications.concurrency`` messages in flight, and at
    each poll the digests whose time has come (``clock`` decides when that is)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        notifier: AppriseNotifier,
        owner: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        channel = NotificationChannel(notifier)
        super().__init__(db, channel, settings.notifications, Links.of(settings), owner)
        self.zone, self.clock = settings.notifications.timezone, clock

    async def _chores(self) -> None:
        built = await asyncio.to_thread(
            build_due_digests, self.db, self.links.site_base, self.zone, self.clock()
        )
        self._more = self._more or built > 0
