"""``/v1/webhooks``: subscriptions and deliveries over HTTP, as ``ctmirror webhooks …`` does.

Every route needs the write token, reads included: subscriptions name receivers' URLs (which
often carry tokens of their own) and deliveries show what was sent where, so even listing
them is the operator's business. A new subscription's secret is in the creation answer only.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from mirror.notify import (
    SubscriptionSpec,
    add_subscription,
    describe_delivery,
    describe_subscription,
    get_subscription,
    list_deliveries,
    list_subscriptions,
    ping,
    remove_subscription,
    replay_delivery,
    resume_subscription,
)
from mirror.record import NCT_ID_PATTERN, ChangeKind
from mirror.serve.common import MAX_ID, AppDep, RequestBody, error_responses, require_write
from mirror.store import DeliveryStatus, SubscriptionState

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_write)])
ERRORS = error_responses(401, 403, 404, 422, 503)
# Ids are 64-bit; larger numbers are a 422, not a database overflow.
SubscriptionId = Annotated[int, Path(ge=1, le=MAX_ID)]


class SubscriptionIn(RequestBody):
    """A new subscription; empty filters match everything, given filters must all match."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="http(s) URL receiving signed POSTs (checked against the egress policy).",
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]+([/?#]\S*)?$",
        max_length=2000,
        examples=["https://example.org/hooks/ctmirror"],
    )
    secret: str | None = Field(
        None,
        description="whsec_… signing secret (default: generated).",
        pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$",
    )
    nct_ids: list[Annotated[str, Field(pattern=NCT_ID_PATTERN)]] = Field(
        default_factory=list, max_length=10_000
    )
    watches: list[str] = Field(default_factory=list, description="Names of watches.")
    fields: list[Annotated[str, Field(pattern=r"^[^\[\]]+$")]] = Field(
        default_factory=list, description="Field globs with * and ?, e.g. 'status.*'."
    )
    kinds: list[ChangeKind] = Field(default_factory=list)
    include_initial: StrictBool = Field(False, description="Also deliver first-sight versions.")
    classes: list[Annotated[str, Field(pattern=r"^[^\[\]]+$")]] = Field(
        default_factory=list,
        description="Change-class globs, e.g. 'outcomes.primary.*': only versions classified so.",
    )


class SubscriptionOut(BaseModel):
    id: int
    url: str
    state: SubscriptionState
    secret_hint: str = Field(description="The secret's last characters, to tell secrets apart.")
    nct_ids: list[str]
    watches: list[str]
    fields: list[str]
    kinds: list[ChangeKind]
    include_initial: bool
    classes: list[str]
    created_at: datetime
    paused_at: datetime | None


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(description="The signing secret: shown in this answer only.")


class SubscriptionList(BaseModel):
    webhooks: list[SubscriptionOut]


class DeliveryOut(BaseModel):
    id: int
    subscription_id: int
    webhook_id: str = Field(description="The webhook-id header and body id, on every attempt.")
    type: str
    nct_id: str
    version: int
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class PingResult(BaseModel):
    webhook_id: str
    ok: bool = Field(description="The receiver answered 2xx.")
    status_code: int | None
    body: str = Field(description="The start of the receiver's answer.")
    error: str | None
    ms: float


@router.get("", response_model=SubscriptionList, responses=ERRORS)
def list_webhooks(app: AppDep) -> dict[str, Any]:
    """Every subscription (never its secret: ``secret_hint`` tells them apart)."""
    return {"webhooks": [describe_subscription(s) for s in list_subscriptions(app.db)]}


@router.post(
    "", status_code=201, response_model=SubscriptionCreated,
    responses=ERRORS | error_responses(400),
)  # fmt: skip
def create_webhook(app: AppDep, body: SubscriptionIn) -> dict[str, Any]:
    """Subscribe a URL; the answer carries the signing secret, this one time."""
    spec = SubscriptionSpec(
        body.url, body.secret, body.nct_ids, body.watches, body.fields,
        [k.value for k in body.kinds], body.include_initial, body.classes,
    )  # fmt: skip
    sub, secret = add_subscription(app.db, spec, app.egress_policy())
    return describe_subscription(sub) | {"secret": secret}


@router.get("/deliveries", response_model=DeliveryList, responses=ERRORS)
def deliveries(
    app: AppDep,
    status: DeliveryStatus | None = None,
    subscription_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Recent deliveries, newest first."""
    found = list_deliveries(app.db, status=status, subscription_id=subscription_id, limit=limit)
    return {"deliveries": [describe_delivery(d) for d in found]}


@router.post(
    "/deliveries/{delivery_id:int}/replay", status_code=202, response_model=DeliveryOut,
    responses=ERRORS,
)  # fmt: skip
def replay(app: AppDep, delivery_id: SubscriptionId) -> dict[str, Any]:
    """Queue a delivery again (same ``webhook-id`` and body, a fresh retry budget); a running
    daemon sends it within its poll interval."""
    return describe_delivery(replay_delivery(app.db, delivery_id))


@router.get("/{subscription_id:int}", response_model=SubscriptionOut, responses=ERRORS)
def show_webhook(app: AppDep, subscription_id: SubscriptionId) -> dict[str, Any]:
    return describe_subscription(get_subscription(app.db, subscription_id))


@router.delete("/{subscription_id:int}", status_code=204, response_class=Response, responses=ERRORS)
def delete_webhook(app: AppDep, subscription_id: SubscriptionId) -> Response:
    """Delete a subscription and its deliveries."""
    remove_subscription(app.db, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{subscription_id:int}/resume", response_model=SubscriptionOut, responses=ERRORS)
def resume_webhook(app: AppDep, subscription_id: SubscriptionId) -> dict[str, Any]:
    """Deliver to a paused subscription again."""
    return describe_subscription(resume_subscription(app.db, subscription_id))


@router.post("/{subscription_id:int}/test", response_model=PingResult, responses=ERRORS)
async def test_webhook(app: AppDep, subscription_id: SubscriptionId) -> dict[str, Any]:
    """Send a signed ``webhook.test`` message now and report the receiver's answer."""
    sub = await asyncio.to_thread(get_subscription, app.db, subscription_id)
    async with app.sender() as sender:
        message_id, result = await ping(sender, sub)
    return {
        "webhook_id": message_id, "ok": result.ok, "status_code": result.status_code,
        "body": result.body, "error": result.error, "ms": round(result.seconds * 1000, 1),
    }  # fmt: skip
