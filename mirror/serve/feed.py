"""The change feed over HTTP: ``GET /v1/changes`` (JSON, cursor-paged) and its Atom twin."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from mirror import feed
from mirror.record import NCT_ID_PATTERN, ChangeKind
from mirror.render import atom_feed
from mirror.serve.common import (
    MAX_ID,
    READ_ERRORS,
    AppDep,
    IsoDateTime,
    OrjsonResponse,
    as_utc,
    content,
    error_responses,
    require_read,
)

CURSOR_DOC = """\
**Cursor paging.** Every event has an `id` that increases in the order events are committed;
pass the `next_cursor` of a page as `after` to get the next one. `next_cursor` is the id of
the last event of the page, or your `after` when the page is empty: store it and poll again
later. Paging from any cursor with any filters returns every matching event exactly once, in
id order, even while a sync is writing (a commit never makes an id appear below one already
visible). A page shorter than `limit` means you are at the end of the feed for now.
"""


class ChangeEventOut(BaseModel):
    """One changed field of one study version (the change event of docs/architecture.md)."""

    id: int = Field(description="The feed cursor: increases in commit order.")
    nct_id: str
    version: int = Field(description="The study version this change produced.")
    field: str = Field(description="Canonical field path, e.g. status.overallStatus.")
    kind: ChangeKind
    old: Any = Field(description="The value before (null for added).")
    new: Any = Field(description="The value after (null for removed).")
    observed_at: str = Field(description="When the mirror saw it, UTC (2026-06-01T07:00:35Z).")
    source_date: str | None = Field(description="The registry's date of this version.")
    initial: bool = Field(description="True for the events of a study's first sight.")


class ChangePage(BaseModel):
    changes: list[ChangeEventOut]
    next_cursor: int = Field(description="Pass as `after` for the next page.")


async def _change_filter(
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Only events with a greater id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=feed.MAX_LIMIT, description="Page size.")] = 100,
    field: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\[\]]+$")]] | None,
        Query(description="Field glob (`*` any run, `?` one char), e.g. `status.*`; repeatable."),
    ] = None,
    kind: Annotated[list[ChangeKind] | None, Query(description="Repeatable.")] = None,
    since: Annotated[
        IsoDateTime | None, Query(description="Observed at or after (ISO 8601; no zone = UTC).")
    ] = None,
    until: Annotated[IsoDateTime | None, Query(description="Observed before.")] = None,
    initial: Annotated[
        bool | None, Query(description="false: drop the events of first sight; true: only them.")
    ] = None,
    watch: Annotated[str | None, Query(description="Only studies of this watch.")] = None,
    classes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\[\]]+$")]] | None,
        Query(
            alias="class",
            description="Only events of study versions with a change class matching this glob, "
            "e.g. `outcomes.primary.*` (see `ctmirror classes`); repeatable.",
        ),
    ] = None,
) -> feed.ChangeFilter:
    """The filters shared by every change listing (the NCT ids come from the route)."""
    return feed.ChangeFilter(
        fields=field or (),
        kinds=kind or (),
        since=as_utc(since),
        until=as_utc(until),
        after=after,
        initial=initial,
        watch=watch,
        classes=classes or (),
        limit=limit,
    )


FilterDep = Annotated[feed.ChangeFilter, Depends(_change_filter)]
NctIdsQuery = Annotated[
    list[Annotated[str, Field(pattern=NCT_ID_PATTERN)]] | None,
    Query(description="Only these studies; repeatable.", max_length=1000),
]

router = APIRouter(tags=["changes"], dependencies=[Depends(require_read)])
# With its charset: a browser shown the feed otherwise guesses one (and garbles "→").
ATOM_TYPE = "application/atom+xml; charset=utf-8"


def change_page(events: list[dict[str, Any]], after: int) -> OrjsonResponse:
    """A page of the feed; ``next_cursor`` as documented in CURSOR_DOC."""
    next_cursor = events[-1]["id"] if events else after
    return OrjsonResponse({"changes": events, "next_cursor": next_cursor})


@router.get(
    "/v1/changes",
    response_model=ChangePage,
    summary="The change feed",
    description=CURSOR_DOC,
    responses=READ_ERRORS | error_responses(404),
)
def list_changes(app: AppDep, flt: FilterDep, nct_id: NctIdsQuery = None) -> Response:
    flt = replace(flt, nct_ids=nct_id or ())
    return change_page(feed.change_dicts(app.db, flt), flt.after or 0)


@router.get(
    "/v1/changes.atom",
    summary="The change feed as Atom",
    description="The same filters as `/v1/changes`; one entry per study version. Without "
    "`after`: the newest `limit` events, newest first (what feed readers want); with "
    "`after`: the events after that cursor. A study version is never cut in two; a study's "
    "first version is one entry that counts its fields (and counts as one event).",
    response_class=Response,
    responses=content("application/atom+xml") | READ_ERRORS | error_responses(404),
)
def atom_changes(
    request: Request, app: AppDep, flt: FilterDep, nct_id: NctIdsQuery = None
) -> Response:
    newest = "after" not in request.query_params
    flt = replace(flt, nct_ids=nct_id or (), newest_first=newest)
    document = atom_feed(
        feed.version_changes(app.db, flt),
        self_url=str(request.url),
        site_url=str(request.base_url),
        settings=app.settings.pages,
    )
    return Response(document, media_type=ATOM_TYPE)
