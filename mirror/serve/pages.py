"""The pages for people: ``/`` (the change browser), ``/trials`` (the study list),
``/trials/{nct_id}/compare`` (two versions side by side), ``/watches``, and their stylesheet.

Server-rendered HTML, readable without JavaScript (there is none), nothing loaded from another
host. Filters are query parameters with the names and meaning of ``/v1/changes``; a value the
form cannot take (a bad date, an unknown watch) answers the page with the problem said at the
top and the HTTP status the API would give. Pages only read: watches are added and removed
with the write token through the API or the CLI (docs/pages.md says why).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, Response

from mirror import feed, render
from mirror.errors import MirrorError, UsageError
from mirror.pipeline import describe, list_watches
from mirror.record import ChangeKind, parse_nct_id
from mirror.serve.common import (
    MAX_ID,
    MAX_VERSION,
    READ_ERRORS,
    AppDep,
    NctIdPath,
    error_responses,
    nct_id_of,
    require_read,
)

router = APIRouter(tags=["pages"], dependencies=[Depends(require_read)], responses=READ_ERRORS)


def _page_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A page says a problem with its filters (422) or an unknown study or watch (404) on the
    page itself, as HTML; a parameter FastAPI refuses is the API's JSON error."""
    found = error_responses(*statuses)
    for entry in found.values():
        entry["content"]["text/html"] = {"schema": {"type": "string"}}
    return found


PAGE: dict[str, Any] = {"response_class": HTMLResponse, "responses": _page_errors(404, 422)}
CHANGES_PER_PAGE = 50  # events (a folded first sight counts as one)
STUDIES_PER_PAGE = 50
WATCH_RECENT = 5  # changes listed under each watch

Words = Annotated[list[str] | None, Query(max_length=50)]
Text = Annotated[str, Query(max_length=500)]


def _split(values: Sequence[str] | None) -> list[str]:
    """Repeated parameters, each also split on commas and spaces (what one form field sends)."""
    return [w for v in values or () for w in re.split(r"[\s,]+", v) if w]


def _instant(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):  # not a date; before year 1 in UTC
        raise UsageError(
            f"{name}: {value!r} is not a date (2026-06-01 or 2026-06-01T07:00)"
        ) from None


@router.get("/", summary="The change browser (HTML)", **PAGE)
def changes(
    app: AppDep,
    nct_id: Words = None,
    field: Words = None,
    classes: Annotated[list[str] | None, Query(alias="class", max_length=50)] = None,
    kind: Text = "",
    watch: Text = "",
    since: Text = "",
    until: Text = "",
    initial: Annotated[
        str,
        Query(
            description="false (default): leave first sights out; true: only them; any: both.",
            pattern="^(|false|true|any)$",
        ),
    ] = "",
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="The page's cursor.")] = None,
) -> HTMLResponse:
    form = {
        "nct_id": " ".join(_split(nct_id)), "field": " ".join(_split(field)),
        "class": " ".join(_split(classes)), "kind": kind, "watch": watch,
        "since": since, "until": until, "initial": initial or "false",
    }  # fmt: skip
    query = {k: v for k, v in form.items() if v and not (k == "initial" and v == "false")}
    atom = {**query, "initial": {"any": "", "true": "true"}.get(initial, "false")}
    links = {"atom": "/v1/changes.atom?" + urlencode({k: v for k, v in atom.items() if v})}
    watches = [w.name for w, _ in list_watches(app.db)]
    try:
        flt = feed.ChangeFilter(
            nct_ids=[parse_nct_id(n) for n in _split(nct_id)],
            fields=_split(field),
            kinds=[_kind(kind)] if kind else (),
            since=_instant(since, "since"),
            until=_instant(until, "until"),
            initial={"": False, "false": False, "true": True}.get(initial),
            watch=watch or None,
            classes=_split(classes),
            limit=CHANGES_PER_PAGE,
            newest_first=True,
            before=before,
        )
        versions = feed.version_changes(app.db, flt)
    except MirrorError as exc:
        page = render.changes_page(
            [], feed.Labels(), form=form, links=links, watches=watches, error=exc.message
        )
        return HTMLResponse(page, status_code=exc.http_status)
    size = sum(len(v.events) or 1 for v in versions)
    if versions and size >= CHANGES_PER_PAGE:
        links["older"] = "/?" + urlencode({**query, "before": versions[-1].first_id})
    if before is not None:
        links["newest"] = "/?" + urlencode(query) if query else "/"
    labels = feed.labels(app.db, versions)
    page = render.changes_page(versions, labels, form=form, links=links, watches=watches)
    return HTMLResponse(page)


def _kind(value: str) -> ChangeKind:
    try:
        return ChangeKind(value)
    except ValueError:
        raise UsageError(f"kind must be added, changed or removed, got {value!r}") from None


@router.get("/trials", summary="The study list (HTML)", **PAGE)
def studies(
    app: AppDep,
    q: Annotated[str, Query(max_length=200, description="An NCT id, or words of the title.")] = "",
    status: Text = "",
    watch: Text = "",
    sort: Annotated[str, Query(pattern="^(changed|id)$")] = "changed",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    form = {"q": q, "status": status, "watch": watch, "sort": sort}
    query = {k: v for k, v in form.items() if v and not (k == "sort" and v == "changed")}
    watches = [w.name for w, _ in list_watches(app.db)]
    statuses = feed.statuses(app.db)
    offset = (page - 1) * STUDIES_PER_PAGE
    shown: dict[str, Any] = {"form": form, "statuses": statuses, "watches": watches}
    try:
        flt = feed.StudyQuery(q, status or None, watch or None, sort, offset, STUDIES_PER_PAGE)
        rows, total = feed.study_rows(app.db, flt)
    except MirrorError as exc:
        html = render.studies_page([], 0, 0, links={}, error=exc.message, **shown)
        return HTMLResponse(html, status_code=exc.http_status)
    links = {}
    if page > 1:
        links["previous"] = "/trials?" + urlencode({**query, "page": page - 1})
    if offset + len(rows) < total:
        links["next"] = "/trials?" + urlencode({**query, "page": page + 1})
    return HTMLResponse(render.studies_page(rows, total, offset, links=links, **shown))


@router.get("/trials/{nct_id}/compare", summary="Two versions side by side (HTML)", **PAGE)
def compare(
    app: AppDep,
    nct_id: NctIdPath,
    from_version: Annotated[int | None, Query(alias="from", ge=1, le=MAX_VERSION)] = None,
    to_version: Annotated[int | None, Query(alias="to", ge=1, le=MAX_VERSION)] = None,
) -> HTMLResponse:
    try:
        c = feed.compare_input(app.db, nct_id_of(nct_id), from_version, to_version)
    except MirrorError as exc:
        return HTMLResponse(render.error_page("Compare", exc.message), exc.http_status)
    changes = feed.diff_versions(app.db, c.nct_id, c.old, c.new) if c.old != c.new else []
    base = f"/trials/{c.nct_id}/compare?"
    numbers = [m.version for m in c.versions if m.has_record]
    links = {"swap": base + urlencode({"from": c.new, "to": c.old})}
    step = _steps(numbers, c.old, c.new)
    for name, pair in step.items():
        links[name] = base + urlencode({"from": pair[0], "to": pair[1]})
    return HTMLResponse(render.compare_page(c, changes, links))


def _steps(numbers: list[int], old: int, new: int) -> dict[str, tuple[int, int]]:
    """Both versions one step back or forward in time, when both can move."""
    if old not in numbers or new not in numbers:
        return {}
    i, j = numbers.index(old), numbers.index(new)
    found = {}
    if min(i, j) > 0:
        found["back"] = (numbers[i - 1], numbers[j - 1])
    if max(i, j) + 1 < len(numbers):
        found["forward"] = (numbers[i + 1], numbers[j + 1])
    return found


@router.get("/watches", summary="Every watch, its last run and recent changes (HTML)", **PAGE)
def watches(app: AppDep) -> HTMLResponse:
    found = list_watches(app.db)
    runs = feed.last_watch_runs(app.db, [w for w, _ in found])
    views = []
    for watch, count in found:
        recent = feed.changes(
            app.db,
            feed.ChangeFilter(watch=watch.name, initial=False, newest_first=True,
                              limit=WATCH_RECENT),
        )  # fmt: skip
        views.append(render.watch_view(describe(watch), count, runs.get(watch.name), recent))
    return HTMLResponse(render.watches_page(views))


# -- assets: no data, so no token ----------------------------------------------------------

assets = APIRouter(include_in_schema=False)
_CACHED = {"Cache-Control": "public, max-age=3600"}


@assets.get("/static/ctmirror.css")
def stylesheet() -> Response:
    return Response(render.stylesheet(), media_type="text/css; charset=utf-8", headers=_CACHED)


@assets.get("/redoc")
def redoc() -> HTMLResponse:
    """ReDoc from this server's copy of its script (fastapi-offline's, see ``_redoc_script``)."""
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="ctmirror - ReDoc",
        redoc_js_url="/static/redoc.standalone.js",
        redoc_favicon_url="/static/docs/favicon.png",
        with_google_fonts=False,
    )


# ReDoc's side menu shows a logo it fetches from cdn.redoc.ly, whatever its options: here it
# is an empty image, so the page asks no other host for anything.
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_EMPTY_SVG = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@functools.cache
def _redoc_script() -> bytes:
    script = resources.files("fastapi_offline") / "static" / "redoc.standalone.js"
    return script.read_bytes().replace(_REDOC_LOGO, _EMPTY_SVG)


@assets.get("/static/redoc.standalone.js")
def redoc_script() -> Response:
    return Response(_redoc_script(), media_type="text/javascript", headers=_CACHED)
