"""Webhook subscriptions: what a subscriber asks for (ids, watches, field and class globs,
kinds), its signing secret, and the commands that add, list, pause, resume and remove them.
Which versions reach a subscription is decided by the fan-out (:mod:`mirror.notify.fanout`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mirror.errors import NotFound, UsageError
from mirror.logging import get_logger
from mirror.notify.egress import EgressPolicy
from mirror.record import ChangeKind, format_instant, parse_nct_id, utcnow
from mirror.store import (
    Database,
    OutboxEntry,
    SubscriptionState,
    Watch,
    WebhookDelivery,
    WebhookSubscription,
)

log = get_logger(__name__)

SECRET_PREFIX = "whsec_"
FIELD_GLOB = re.compile(r"^[^\[\]]+$")


@dataclass(frozen=True)
class SubscriptionSpec:
    """What ``webhooks add`` / ``POST /v1/webhooks`` asks for."""

    url: str
    secret: str | None = None
    nct_ids: Sequence[str] = ()
    watches: Sequence[str] = ()
    fields: Sequence[str] = ()
    kinds: Sequence[str] = ()
    include_initial: bool = False
    classes: Sequence[str] = ()  # change-class globs, e.g. "outcomes.primary.*"


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_secret(secret: str) -> str:
    """A ``whsec_<base64>`` secret of 24 to 64 bytes, or UsageError (never echoing it)."""
    body = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not secret.strip().startswith(SECRET_PREFIX) or not 24 <= len(raw) <= 64:
        raise UsageError("the secret must be 'whsec_' followed by 24 to 64 base64-encoded bytes")
    return secret.strip()


def secret_hint(secret: str) -> str:
    """Enough of a secret to tell two apart, not enough to use: ``whsec_…Xy9=``."""
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def add_subscription(
    db: Database, spec: SubscriptionSpec, policy: EgressPolicy
) -> tuple[WebhookSubscription, str]:
    """Create a subscription; returns it and its secret (the only time the secret is shown)."""
    secret = _check_secret(spec.secret) if spec.secret else _new_secret()
    kinds = [ChangeKind(k).value for k in _valid_kinds(spec.kinds)]
    url = policy.check_url(spec.url)
    with db.write() as session:
        shared = recipient_columns(session, spec.nct_ids, spec.watches, spec.fields, spec.classes)
        sub = WebhookSubscription(url=url, secret=secret, kinds=kinds,
                                  include_initial=spec.include_initial, **shared)  # fmt: skip
        session.add(sub)
        session.flush()
    log.info("webhook.subscribed", subscription_id=sub.id, url=sub.url)
    return sub, secret


def recipient_columns(
    session: Session,
    nct_ids: Sequence[str],
    watches: Sequence[str],
    fields: Sequence[str],
    classes: Sequence[str],
) -> dict[str, Any]:
    """The columns of a new recipient (subscription, target), its filters checked: active,
    and receiving the versions recorded from now on."""
    _check_watches(session, watches)
    return {
        "state": SubscriptionState.ACTIVE,
        "nct_ids": list(dict.fromkeys(parse_nct_id(n) for n in nct_ids)),
        "watches": list(dict.fromkeys(watches)),
        "fields": _valid_globs(fields),
        "classes": _valid_globs(classes, "class"),
        "created_at": utcnow(),
        "after_outbox_id": session.scalar(select(func.max(OutboxEntry.id))) or 0,
        "consecutive_dead": 0,
    }


def _valid_kinds(kinds: Iterable[str]) -> list[str]:
    known = [k.value for k in ChangeKind]
    bad = [k for k in kinds if k not in known]
    if bad:
        raise UsageError(f"unknown change kind {bad[0]!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(kinds))


def _valid_globs(patterns: Iterable[str], what: str = "field") -> list[str]:
    for pattern in patterns:
        if not pattern or not FIELD_GLOB.match(pattern):
            raise UsageError(f"{what} pattern {pattern!r}: use * and ? only (e.g. 'status.*')")
    return list(dict.fromkeys(patterns))


def _check_watches(session: Session, names: Sequence[str]) -> None:
    known = set(session.scalars(select(Watch.name).where(Watch.name.in_(names))))
    missing = [n for n in names if n not in known]
    if missing:
        raise NotFound(f"no watch named {missing[0]!r} (see `ctmirror watch list`)")


def list_subscriptions(db: Database) -> list[WebhookSubscription]:
    with db.session() as session:
        return list(session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)))


def get_subscription(db: Database, subscription_id: int) -> WebhookSubscription:
    with db.session() as session:
        sub = session.get(WebhookSubscription, subscription_id)
    if sub is None:
        raise NotFound(f"no webhook subscription {subscription_id} (see `ctmirror webhooks list`)")
    return sub


def remove_subscription(db: Database, subscription_id: int) -> None:
    """Delete a subscription and its deliveries (pending ones are never sent)."""
    get_subscription(db, subscription_id)
    with db.write() as session:
        session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
        )
        session.execute(
            delete(WebhookSubscription).where(WebhookSubscription.id == subscription_id)
        )
    log.info("webhook.unsubscribed", subscription_id=subscription_id)


def resume_subscription(db: Database, subscription_id: int) -> WebhookSubscription:
    """Deliver to a paused subscription again (its dead deliveries stay dead: replay them)."""
    get_subscription(db, subscription_id)
    with db.write() as session:
        session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription_id)
            .values(state=SubscriptionState.ACTIVE, paused_at=None, consecutive_dead=0)
        )
    log.info("webhook.resumed", subscription_id=subscription_id)
    return get_subscription(db, subscription_id)


def describe_subscription(sub: WebhookSubscription) -> dict[str, Any]:
    """A subscription as the CLI and the API show it: never with its secret."""
    return {
        "id": sub.id,
        "url": sub.url,
        "state": sub.state.value,
        "secret_hint": secret_hint(sub.secret),
        "nct_ids": sub.nct_ids,
        "watches": sub.watches,
        "fields": sub.fields,
        "kinds": sub.kinds,
        "include_initial": sub.include_initial,
        "classes": sub.classes,
        "created_at": format_instant(sub.created_at),
        "paused_at": format_instant(sub.paused_at) if sub.paused_at else None,
    }


# -- matching -----------------------------------------------------------------------------------
