"""The HTTP API: ``create_app(app)`` builds the ASGI application that ``ctmirror serve`` runs.

FastAPI, because pydantic is already how ctmirror validates (settings), and FastAPI derives
the OpenAPI document (``/openapi.json``, docs at ``/docs``) from the typed route parameters
themselves, so the document cannot drift from the code, and schemathesis can fuzz the API
against it. Routes are plain ``def``s: the database work is blocking SQLAlchemy, which
FastAPI runs in its thread pool.

Every route lives in a router module (``api_feed``, ``api_studies``, ``api_watches``, …)
listed in ``ROUTERS``; what they share (auth, the App of a request, the error body) is in
``api_common``. Every error answers ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mirror import feed
from mirror.app import App
from mirror.errors import MirrorError
from mirror.export import last_audit
from mirror.logging import get_logger
from mirror.record import format_instant
from mirror.serve import feed as api_feed
from mirror.serve import metrics, pages
from mirror.serve import notifications as api_notifications
from mirror.serve import studies as api_studies
from mirror.serve import watches as api_watches
from mirror.serve import webhooks as api_webhooks
from mirror.serve.common import AppDep, content, error_response, refuse_nul, require_read

log = get_logger(__name__)

# Every router the API serves. A new part of the API adds its router here.
ROUTERS: list[APIRouter] = [
    api_feed.router,
    api_studies.router,
    api_watches.router,
    api_webhooks.router,
    api_notifications.router,
    pages.router,
    pages.assets,
]

DESCRIPTION = """\
A change-tracking mirror of ClinicalTrials.gov: every distinct version of a study, and
field-level change events you can follow through a cursor-paged feed.

Reads are open unless the mirror sets `api.read_token`; writes need
`Authorization: Bearer <api.token>`. Every error is `{"error": {"code", "message"}}`.
"""


def create_app(app: App) -> FastAPI:
    """The ASGI application serving ``app`` (its settings and database)."""
    # /docs with Swagger UI's assets from the fastapi-offline package, served here (no CDN):
    # it works offline and behind a firewall. /redoc is served by pages.assets.
    api = FastAPIOffline(
        title="ctmirror",
        version=version("ctmirror"),
        description=DESCRIPTION,
        dependencies=[Depends(refuse_nul)],
        static_url="/static/docs",
        redoc_url=None,
    )
    api.state.mirror = app
    api.state.metrics = metrics.Metrics(app.db)
    for router in [*ROUTERS, _operations]:
        api.include_router(router)
    api.add_exception_handler(MirrorError, _mirror_error)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(OperationalError, _database_error)
    api.add_exception_handler(Exception, _unexpected_error)
    api.add_middleware(RequestMetrics, metrics=api.state.metrics)
    _document_optional_reads(api, app)
    return api


def _document_optional_reads(api: FastAPI, app: App) -> None:
    """Say in the OpenAPI document that reads need no token unless api.read_token is set."""
    if app.settings.api.read_token is not None:
        return
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if operation.get("security") == [{"ReadToken": []}]:
                        operation["security"] = [{}, {"ReadToken": []}]
        return api.openapi_schema or generate()

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to amend the document


# -- errors ---------------------------------------------------------------------------------


async def _mirror_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MirrorError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return error_response(exc.http_status, exc.code, exc.message, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(err) for err in exc.errors()]
    return error_response(422, "invalid_parameter", "; ".join(problems))


def _problem(err: Any) -> str:
    """``query parameter 'limit': Input should be less than or equal to 1000``."""
    where, *name = [str(part) for part in err.get("loc", ())] or ["request"]
    if where == "body":
        what = "body field " + ".".join(name) if name else "request body"
        return f"{what}: {err.get('msg')}"
    kind = f"{where} parameter" if where in ("query", "path", "header") else where
    return f"{kind} {name[0]!r}: {err.get('msg')}" if name else f"{kind}: {err.get('msg')}"


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
    else:
        message = str(exc.detail)
    code = _CODES.get(exc.status_code, "http_error")
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names only the first route of the path
        allowed = _allowed_methods(request)
        headers = {"Allow": ", ".join(allowed)}
        message = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
    return error_response(exc.status_code, code, message, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route would take at the request's path."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("api.database_error", path=request.url.path, error=str(exc))
    return error_response(503, "database_unavailable", "the database is unavailable; try again")


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("api.unexpected_error", path=request.url.path)
    return error_response(500, "internal_error", "internal error (logged on the server)")


# -- request metrics ------------------------------------------------------------------------


class RequestMetrics:
    """Times every request, labelled by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: metrics.Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "<unmatched>")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(method, route, status, elapsed)


# -- operations -----------------------------------------------------------------------------

_operations = APIRouter(tags=["operations"])


@_operations.get(
    "/healthz",
    summary="Is the database reachable; the last sync run and the last completeness audit",
    responses={503: {"description": "The database is unreachable"}},
)
def healthz(app: AppDep) -> JSONResponse:
    try:
        with app.db.session() as session:
            session.execute(select(1))
        run = feed.last_sync(app.db)
        audit = last_audit(app.db)
    except SQLAlchemyError as exc:
        log.warning("api.health", database="unreachable", error=str(exc))
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "unreachable",
                "error": {"code": "database_unavailable", "message": str(exc).splitlines()[0]},
            },
            status_code=503,
        )
    last = None
    if run is not None:
        finished = format_instant(run.finished_at) if run.finished_at else None
        last = {
            "id": run.id,
            "status": run.status.value,
            "started_at": format_instant(run.started_at),
            "finished_at": finished,
        }
    return JSONResponse({"status": "ok", "database": "ok", "last_sync": last, "last_audit": audit})


@_operations.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    dependencies=[Depends(require_read)],
    responses=content("text/plain"),
)
def prometheus_metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
