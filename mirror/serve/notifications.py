"""``/v1/notifications``: notification targets and their deliveries over HTTP, as
``ctmirror notify …`` does (docs/notifications.md).

Every route needs the write token, reads included: a target names a person's address and a
service's credentials (shown masked, but still the operator's business), and deliveries show
what was sent to whom.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from mirror.notify import (
    TargetSpec,
    add_target,
    describe_notification,
    describe_target,
    get_target,
    list_notifications,
    list_targets,
    remove_target,
    replay_notification,
    resume_target,
    send_test,
)
from mirror.record import NCT_ID_PATTERN
from mirror.serve.common import AppDep, error_responses, require_write
from mirror.store import DeliveryStatus, DigestPeriod, SubscriptionState

router = APIRouter(
    prefix="/v1/notifications", tags=["notifications"], dependencies=[Depends(require_write)]
)
ERRORS = error_responses(401, 403, 404, 422, 503)
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
# Text without control characters (they belong in no URL, name, glob or rule).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Glob = Annotated[str, Field(pattern=r"^[^\[\]\x00-\x1f\x7f]+$", max_length=200)]


class TargetIn(BaseModel):
    """A new target; empty filters match everything, given filters must all match, and a
    version passes the rules when any one rule matches it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="An Apprise URL of a network service: mailto://, slack://, workflows:// "
        "(Teams), discord://, ntfy://, json://… (docs/notifications.md lists them).",
        pattern=PRINTABLE,
        max_length=2000,
        examples=["mailto://user:app-password@gmail.com"],
    )
    name: str | None = Field(None, pattern=PRINTABLE, max_length=100)
    nct_ids: list[Annotated[str, Field(pattern=NCT_ID_PATTERN)]] = Field(
        default_factory=list, max_length=10_000
    )
    watches: list[Annotated[str, Field(pattern=PRINTABLE, max_length=100)]] = Field(
        default_factory=list, description="Names of watches."
    )
    fields: list[Glob] = Field(default_factory=list, description="Field globs, e.g. 'status.*'.")
    classes: list[Glob] = Field(
        default_factory=list, description="Change-class globs, e.g. 'dates.*'."
    )
    rules: list[Annotated[str, Field(pattern=PRINTABLE, max_length=500)]] = Field(
        default_factory=list,
        max_length=50,
        description="Rules on change-class parameters, e.g. 'enrollment.* |percent| >= 20'.",
    )
    digest: DigestPeriod = Field(DigestPeriod.OFF, description="off: a message per version.")
    at: str | None = Field(
        None,
        description="Digest time HH:MM in notifications.timezone; weekly: '[DAY] HH:MM'.",
        pattern=r"^(?:[A-Za-z]{3,9}\s+)?\d{1,2}:\d{2}$",
        examples=["08:00", "mon 08:00"],
    )


class TargetOut(BaseModel):
    id: int
    name: str
    url: str = Field(description="The target's URL with its credentials masked.")
    service: str
    state: SubscriptionState
    nct_ids: list[str]
    watches: list[str]
    fields: list[str]
    classes: list[str]
    rules: list[str]
    digest: DigestPeriod
    at: str | None
    next_digest_at: datetime | None
    created_at: datetime
    paused_at: datetime | None


class TargetList(BaseModel):
    targets: list[TargetOut]


class NotificationOut(BaseModel):
    id: int
    target_id: int
    message_id: str = Field(description="The same on every attempt (json/xml/form: a header).")
    kind: str = Field(description="version (one study version) or digest.")
    nct_id: str | None
    version: int | None
    changes: int = Field(description="Study versions the message is about.")
    title: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None = Field(description="Why the last attempt failed, as the service said.")
    delivered_at: datetime | None


class NotificationList(BaseModel):
    deliveries: list[NotificationOut]


class TestResult(BaseModel):
    ok: bool = Field(description="The service accepted the test message.")
    error: str | None
    ms: float


@router.get("", response_model=TargetList, responses=ERRORS)
def list_notification_targets(app: AppDep) -> dict[str, Any]:
    """Every target, its URL's credentials masked."""
    return {"targets": [describe_target(t) for t in list_targets(app.db)]}


@router.post(
    "", status_code=201, response_model=TargetOut, responses=ERRORS | error_responses(400, 409)
)
def create_notification_target(app: AppDep, body: TargetIn) -> dict[str, Any]:
    """Add a target; a URL, rule or time that cannot be used is a 422 naming the problem."""
    spec = TargetSpec(
        body.url, body.name, body.nct_ids, body.watches, body.fields, body.classes,
        body.rules, body.digest.value, body.at,
    )  # fmt: skip
    return describe_target(add_target(app.db, spec, app.settings.notifications))


@router.get("/deliveries", response_model=NotificationList, responses=ERRORS)
def notification_deliveries(
    app: AppDep,
    status: DeliveryStatus | None = None,
    target_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Recent notifications, newest first, with why the last attempt failed."""
    found = list_notifications(app.db, status=status, target_id=target_id, limit=limit)
    return {"deliveries": [describe_notification(d) for d in found]}


@router.post(
    "/deliveries/{delivery_id:int}/replay", status_code=202, response_model=NotificationOut,
    responses=ERRORS,
)  # fmt: skip
def replay_notification_delivery(app: AppDep, delivery_id: Id) -> dict[str, Any]:
    """Queue a notification again (same message, a fresh retry budget); a running daemon
    sends it within its poll interval."""
    return describe_notification(replay_notification(app.db, delivery_id))


@router.get("/{target_id:int}", response_model=TargetOut, responses=ERRORS)
def show_notification_target(app: AppDep, target_id: Id) -> dict[str, Any]:
    return describe_target(get_target(app.db, target_id))


@router.delete("/{target_id:int}", status_code=204, response_class=Response, responses=ERRORS)
def delete_notification_target(app: AppDep, target_id: Id) -> Response:
    """Delete a target, its pending notifications and digest items."""
    remove_target(app.db, target_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{target_id:int}/resume", response_model=TargetOut, responses=ERRORS)
def resume_notification_target(app: AppDep, target_id: Id) -> dict[str, Any]:
    """Send to a paused target again."""
    return describe_target(resume_target(app.db, target_id))


@router.post("/{target_id:int}/test", response_model=TestResult, responses=ERRORS)
async def test_notification_target(app: AppDep, target_id: Id) -> dict[str, Any]:
    """Send a test message to the target now and report how it went."""
    target = await asyncio.to_thread(get_target, app.db, target_id)
    result = await send_test(app.notifier(), target)
    return {"ok": result.ok, "error": result.error, "ms": round(result.seconds * 1000, 1)}
