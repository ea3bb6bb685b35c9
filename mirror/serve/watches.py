"""Watches over HTTP: list (a read), add and remove (writes, bearer token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from mirror.pipeline import WATCH_NAME, add_watch, describe, list_watches, remove_watch
from mirror.serve.common import (
    READ_ERRORS,
    AppDep,
    RequestBody,
    error_responses,
    require_read,
    require_write,
)
from mirror.source import parse_query
from mirror.store import WatchKind

router = APIRouter(tags=["watches"])
WRITE_ERRORS = error_responses(401, 403, 422, 503)


class WatchIn(RequestBody):
    """A new watch: exactly one of ``nct_ids``, ``query`` or ``all``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=WATCH_NAME.pattern, examples=["oncology-phase3"])
    nct_ids: list[str] = Field(default_factory=list, max_length=10_000)
    query: dict[str, str] | str | None = Field(
        default=None,
        description="A saved search: API v2 search parameters ({'query.cond': 'asthma'}), or "
        "text as the CLI's --query takes it ('query.cond=asthma'; bare text is query.term).",
    )
    all: bool = Field(default=False, description="Watch the whole registry.")
    schedule: str | None = Field(
        default=None, description="'every 12h' or a crontab line; default: daily."
    )


class WatchOut(BaseModel):
    name: str
    kind: WatchKind
    nct_ids: list[str]
    query: dict[str, str]
    schedule: str | None
    created_at: datetime
    last_run_at: datetime | None
    since_date: str | None
    studies: int = Field(description="How many studies the watch covers now.")


class WatchList(BaseModel):
    watches: list[WatchOut]


@router.get(
    "/v1/watches",
    response_model=WatchList,
    dependencies=[Depends(require_read)],
    responses=READ_ERRORS,
)
def get_watches(app: AppDep) -> dict[str, Any]:
    return {"watches": [describe(w) | {"studies": n} for w, n in list_watches(app.db)]}


@router.post(
    "/v1/watches",
    status_code=status.HTTP_201_CREATED,
    response_model=WatchOut,
    dependencies=[Depends(require_write)],
    responses=WRITE_ERRORS | error_responses(400, 409),
)
def post_watch(app: AppDep, body: WatchIn) -> dict[str, Any]:
    created = add_watch(
        app.db,
        body.name,
        nct_ids=body.nct_ids,
        query=parse_query([body.query]) if isinstance(body.query, str) else body.query,
        everything=body.all,
        schedule=body.schedule,
    )
    return describe(created) | {"studies": 0}


# Both ways of removing a watch answer alike.
_DELETE: dict[str, Any] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
    "dependencies": [Depends(require_write)],
    "responses": WRITE_ERRORS | error_responses(404),
}


@router.delete("/v1/watches/{name}", **_DELETE)
def delete_watch(app: AppDep, name: Annotated[str, Path(max_length=100)]) -> Response:
    remove_watch(app.db, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/v1/watches",
    **_DELETE,
    description="The same as `DELETE /v1/watches/{name}`, for clients that pass the name as "
    "a query parameter.",
)
def delete_watch_by_query(
    app: AppDep, name: Annotated[str, Query(min_length=1, max_length=100)]
) -> Response:
    return delete_watch(app, name)
