"""What every router of the HTTP API shares: the App behind a request, auth, the error body.

A router module (``api_feed``, ``api_studies``, ``api_watches``, ``api_webhooks``…) imports
from here, never from ``mirror.serve.app`` (which imports the routers), and is listed in
``mirror.serve.app.ROUTERS``.

Auth: reads are open unless ``api.read_token`` is set; then they need
``Authorization: Bearer <read_token>`` (the write token also reads). Every write needs
``Authorization: Bearer <api.token>``; with no ``api.token`` configured, writes are refused
(403) rather than open. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_plus

import orjson
from fastapi import Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, model_validator

from mirror.app import App
from mirror.errors import Forbidden, Unauthorized, UsageError
from mirror.record import NCT_ID_PATTERN, parse_nct_id

# The dependencies below do no I/O: ``async def`` keeps them out of the thread pool.


async def _get_app(request: Request) -> App:
    """The App the FastAPI application was created for (``create_app(app)``)."""
    app: App = request.app.state.mirror
    return app


AppDep = Annotated[App, Depends(_get_app)]

NctIdPath = Annotated[
    str,
    Path(
        pattern=NCT_ID_PATTERN,
        description="An NCT id such as NCT03039062 (any letter case).",
        examples=["NCT03039062"],
    ),
]


async def refuse_nul(request: Request) -> None:
    """No path or query value may hold a NUL character: no stored value can hold one."""
    query = unquote_plus(request.scope.get("query_string", b"").decode("latin-1"))
    if "\x00" in request.scope.get("path", "") or "\x00" in query:
        raise UsageError(_NUL)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


class RequestBody(BaseModel):
    """A JSON request body; no text in it may hold a NUL character (a 422 says so)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _holds_nul(data):
            raise ValueError(_NUL)
        return data


_NUL = "a value holds a NUL character (\\u0000), which ctmirror never stores"


def nct_id_of(value: str) -> str:
    """The canonical form of a validated NCT id path or query value."""
    return parse_nct_id(value)


# The largest id a cursor can hold (a signed 64-bit integer, on both backends).
MAX_ID = 2**63 - 1
# Version numbers are 32-bit integers.
MAX_VERSION = 2**31 - 1
_ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\d")


def _iso_only(value: Any) -> Any:
    # pydantic would also read "0.5" as a Unix time; the document promises ISO 8601 only.
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 date or date-time, e.g. 2026-06-01T07:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


def as_utc(value: datetime | None) -> datetime | None:
    """A query datetime in UTC; one without a zone is taken to be UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00, before year 1 in UTC
        raise UsageError(f"{value.isoformat()} is out of range in UTC") from None


# Two names for one scheme, so that the OpenAPI document can say which token an operation
# takes (and, for reads, whether it needs one at all: see api._document_optional_reads).
_read_bearer = HTTPBearer(
    scheme_name="ReadToken",
    auto_error=False,
    description="`Authorization: Bearer <api.read_token>` (or api.token); only needed when "
    "the mirror sets api.read_token.",
)
_write_bearer = HTTPBearer(
    scheme_name="WriteToken",
    auto_error=False,
    description="`Authorization: Bearer <api.token>`.",
)
ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]
WriteCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_write_bearer)]


def _matches(credentials: HTTPAuthorizationCredentials | None, *tokens: str | None) -> bool:
    if credentials is None:
        return False
    given = credentials.credentials.encode()
    # Every configured token is compared, so timing does not tell which one came close.
    results = [hmac.compare_digest(given, t.encode()) for t in tokens if t is not None]
    return any(results)


async def require_read(app: AppDep, credentials: ReadCredentials) -> None:
    """Let a read through: always, or with the read (or write) token when one is set."""
    api = app.settings.api
    if api.read_token is None:
        return
    if not _matches(credentials, api.read_token, api.token):
        raise Unauthorized("this mirror's reads need 'Authorization: Bearer <api.read_token>'")


async def require_write(app: AppDep, credentials: WriteCredentials) -> None:
    """Let a write through only with the write token; refuse all writes when none is set."""
    api = app.settings.api
    if api.token is None:
        raise Forbidden(
            "writes are disabled on this mirror: set api.token in the settings file "
            "(or CTMIRROR_API__TOKEN) to enable them"
        )
    if not _matches(credentials, api.token):
        raise Unauthorized("writes need 'Authorization: Bearer <api.token>'")


def _error_body(code: str, message: str) -> dict[str, Any]:
    """The body of every error answer: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(_error_body(code, message), status_code=status, headers=headers)


class OrjsonResponse(Response):
    """JSON rendered by orjson: for large answers built from plain dicts (the feed)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# Shown in the OpenAPI document of every route that may answer them.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all in the error format."""
    described = {
        400: "The request body is not JSON",
        401: "Missing or wrong bearer token",
        403: "Writes are disabled (no api.token configured)",
        404: "No such study, version or watch",
        409: "It exists already",
        422: "A parameter is invalid (the message names it)",
        503: "The database is unreachable",
    }
    return {
        status: {
            "description": described.get(status, "Error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for status in statuses
    }


READ_ERRORS = error_responses(401, 422, 503)


def content(media_type: str, schema: dict[str, Any] | None = None) -> dict[int | str, Any]:
    """An OpenAPI ``responses`` entry: success is ``media_type`` (not JSON from a model)."""
    return {200: {"content": {media_type: {"schema": schema} if schema else {}}}}
