"""Studies over HTTP: listings, one study, its versions (raw JSON as fetched), diffs, changes,
and the study pages (Markdown in the seed's layout, and HTML)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from mirror import feed
from mirror.record import ChangeKind
from mirror.render import render_html, render_markdown
from mirror.serve.common import (
    MAX_ID,
    MAX_VERSION,
    READ_ERRORS,
    AppDep,
    IsoDateTime,
    NctIdPath,
    as_utc,
    content,
    error_responses,
    nct_id_of,
    require_read,
)
from mirror.serve.feed import CURSOR_DOC, ChangePage, FilterDep, change_page
from mirror.store import Study, StudyState

router = APIRouter(dependencies=[Depends(require_read)], responses=READ_ERRORS)
STUDY_ERRORS = error_responses(404)


class StudySummary(BaseModel):
    nct_id: str
    title: str | None
    overall_status: str | None
    state: StudyState
    latest_version: int = Field(description="Versions are numbered 1..latest_version.")
    first_seen_at: datetime
    last_seen_at: datetime


class StudyPage(BaseModel):
    studies: list[StudySummary]
    next_cursor: int = Field(description="Pass as `after` for the next page.")


class StudyDetail(StudySummary):
    alias_of: str | None = Field(description="For a merged id: the study it became.")
    left_registry_at: datetime | None = Field(
        description="When the mirror saw the study leave the registry (state gone or moved)."
    )
    version: int = Field(description="The version whose record this is (the newest).")
    version_count: int
    observed_at: datetime
    source_date: str | None
    record: dict[str, Any] = Field(description="The canonical record: field path -> value.")


class VersionOut(BaseModel):
    version: int
    observed_at: datetime
    source_date: str | None
    origin: str = Field(description="api, archive, history, or tombstone (the study left).")
    events: int
    fields: list[str]


class VersionList(BaseModel):
    nct_id: str
    versions: list[VersionOut]


class FieldChangeOut(BaseModel):
    field: str
    kind: ChangeKind
    old: Any
    new: Any


class DiffOut(BaseModel):
    nct_id: str
    from_version: int = Field(alias="from")
    to_version: int = Field(alias="to")
    changes: list[FieldChangeOut]


@router.get("/v1/studies", tags=["studies"], response_model=StudyPage, responses=STUDY_ERRORS)
def list_studies(
    app: AppDep,
    status: Annotated[
        str | None, Query(description="Overall status, e.g. RECRUITING.", max_length=40)
    ] = None,
    watch: Annotated[str | None, Query(description="Only studies of this watch.")] = None,
    changed_since: Annotated[
        IsoDateTime | None, Query(description="Only studies with a change observed since.")
    ] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="A `next_cursor` (a study id).")] = 0,
    limit: Annotated[int, Query(ge=1, le=feed.MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    flt = feed.StudyFilter(status, watch, as_utc(changed_since), after, limit)
    found = feed.studies(app.db, flt)
    return {
        "studies": [_summary(s) for s in found],
        "next_cursor": found[-1].id if found else after,
    }


def _summary(study: Study) -> dict[str, Any]:
    return {
        "nct_id": study.nct_id,
        "title": study.title,
        "overall_status": study.overall_status,
        "state": study.state,
        "latest_version": study.latest_version,
        "first_seen_at": study.first_seen_at,
        "last_seen_at": study.last_seen_at,
    }


@router.get(
    "/v1/studies/{nct_id}", tags=["studies"], response_model=StudyDetail, responses=STUDY_ERRORS
)
def get_study(
    app: AppDep,
    nct_id: NctIdPath,
    version: Annotated[
        int | None,
        Query(ge=1, le=MAX_VERSION, description="The record of this version (default: newest)."),
    ] = None,
) -> dict[str, Any]:
    detail = feed.study_detail(app.db, nct_id_of(nct_id), version)
    return detail | {"version_count": detail["latest_version"]}


@router.get(
    "/v1/studies/{nct_id}/versions",
    tags=["studies"],
    response_model=VersionList,
    responses=STUDY_ERRORS,
)
def list_versions(app: AppDep, nct_id: NctIdPath) -> dict[str, Any]:
    study, versions = feed.history(app.db, nct_id_of(nct_id))
    return {"nct_id": study.nct_id, "versions": [v.__dict__ for v in versions]}


@router.get(
    "/v1/studies/{nct_id}/versions/{version}",
    tags=["studies"],
    summary="One version's record, byte for byte as fetched",
    response_class=Response,
    responses=content("application/json", {"type": "object"}) | STUDY_ERRORS,
)
def get_version(
    app: AppDep, nct_id: NctIdPath, version: Annotated[int, Path(ge=1, le=MAX_VERSION)]
) -> Response:
    raw = feed.raw_version(app.db, nct_id_of(nct_id), version)
    return Response(raw, media_type="application/json")


@router.get(
    "/v1/studies/{nct_id}/diff",
    tags=["studies"],
    response_model=DiffOut,
    response_model_by_alias=True,
    summary="Field changes between any two versions, computed now",
    responses=STUDY_ERRORS,
)
def diff(
    app: AppDep,
    nct_id: NctIdPath,
    from_version: Annotated[int, Query(alias="from", ge=1, le=MAX_VERSION)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=MAX_VERSION)],
) -> dict[str, Any]:
    found = feed.diff_versions(app.db, nct_id_of(nct_id), from_version, to_version)
    changes = [{"field": c.field, "kind": c.kind, "old": c.old, "new": c.new} for c in found]
    return {"nct_id": nct_id_of(nct_id), "from": from_version, "to": to_version, "changes": changes}


@router.get(
    "/v1/studies/{nct_id}/changes",
    tags=["studies", "changes"],
    response_model=ChangePage,
    description=CURSOR_DOC,
    responses=STUDY_ERRORS,
)
def study_changes(app: AppDep, nct_id: NctIdPath, flt: FilterDep) -> Response:
    nct_id = nct_id_of(nct_id)
    with app.db.session() as session:
        feed.get_study(session, nct_id)  # 404 for a study this mirror does not hold
    return change_page(feed.change_dicts(app.db, replace(flt, nct_ids=[nct_id])), flt.after or 0)


class TimelineEntry(BaseModel):
    version: int
    source_date: str | None = Field(description="The registry's date of this version.")
    observed_at: str = Field(description="When the mirror saw it (backfill: the registry date).")
    origin: str
    registry_version: int | None = Field(description="The registry's own version number.")
    classes: list[dict[str, Any]] = Field(
        description="Change classes: `name` plus its parameters (see `ctmirror classes`)."
    )
    snapshot: dict[str, Any] | None = Field(
        description="Status, enrollment and primary completion in this version (null: gone)."
    )


@router.get(
    "/v1/studies/{nct_id}/timeline",
    tags=["studies"],
    response_model=list[TimelineEntry],
    summary="One entry per version, oldest first, with its change classes",
    description="The same entries as `ctmirror timeline NCT --format json`.",
    responses=STUDY_ERRORS,
)
def get_timeline(app: AppDep, nct_id: NctIdPath) -> list[dict[str, Any]]:
    return feed.timeline(app.db, nct_id_of(nct_id))


# -- pages ----------------------------------------------------------------------------------

VersionQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="Render this past version (default: the newest)."),
]


@router.get(
    "/trials/{nct_id}.md",
    tags=["pages"],
    summary="The study page in Markdown (the seed page's layout)",
    response_class=Response,
    responses=content("text/markdown") | STUDY_ERRORS,
)
def page_markdown(app: AppDep, nct_id: NctIdPath, version: VersionQuery = None) -> Response:
    page = feed.page_input(app.db, nct_id_of(nct_id), version, app.settings.pages)
    text = render_markdown(page, app.settings.pages)
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.get(
    "/trials/{nct_id}.html",
    tags=["pages"],
    summary="The study page in HTML, changes side by side",
    response_class=HTMLResponse,
    responses=STUDY_ERRORS,
)
def page_html(app: AppDep, nct_id: NctIdPath, version: VersionQuery = None) -> HTMLResponse:
    page = feed.page_input(app.db, nct_id_of(nct_id), version, app.settings.pages)
    return HTMLResponse(render_html(page, app.settings.pages))
