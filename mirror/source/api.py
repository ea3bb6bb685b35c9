"""The ClinicalTrials.gov API v2 client: studies by id and by search, and their record history.

The source is polite by construction: every request passes one rate limiter
(``source.requests_per_minute``) and one semaphore (``source.concurrency``), and
only named transient failures (429, 5xx, timeouts, dropped or truncated
responses) are retried, with exponential backoff and jitter, honouring
``Retry-After``. Anything else is a :class:`SourceError` with the server's words.

Re-reads by id are conditional where they can be: an answer's ``ETag`` goes with each of its
observations (the ingest stage keeps it with the study), and a request whose studies all hold
the same one sends it as ``If-None-Match``; a ``304 Not Modified`` (no body) is a
:class:`NotModified` for each of them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Any

import httpx
import orjson
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mirror.config import SourceSettings
from mirror.errors import MalformedRecord, SourceError, TransientSourceError
from mirror.logging import get_logger
from mirror.record import NCT_ID, nct_id_of, utcnow
from mirror.source.base import (
    Disappearance,
    FetchFailure,
    FetchItem,
    HistoryEntry,
    NotModified,
    Observation,
    Page,
)
from mirror.source.search import updated_between

log = get_logger(__name__)


class ApiSource:
    """ClinicalTrials.gov API v2 (``source.base_url``) and record history (``history_base_url``)."""

    def __init__(self, settings: SourceSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            headers={"User-Agent": settings.user_agent, "Accept": "application/json"},
            limits=httpx.Limits(max_connections=settings.concurrency),
            follow_redirects=False,
            transport=transport,
        )
        self._limiter = AsyncLimiter(settings.requests_per_minute, 60)
        self._slots = asyncio.Semaphore(settings.concurrency)
        # base, 2x base, 4x base … each plus up to one base of jitter, capped.
        self._backoff = wait_exponential_jitter(
            multiplier=settings.retry_base_seconds,
            jitter=settings.retry_base_seconds,
            max=settings.retry_max_seconds,
        )

    async def __aenter__(self) -> ApiSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def data_timestamp(self) -> str:
        """When the registry's data was last refreshed (``GET /version``)."""
        _, body = await self._get("version")
        return str(body.get("dataTimestamp", ""))

    # -- by id ---------------------------------------------------------------------------

    async def by_ids(
        self, nct_ids: Sequence[str], validators: Mapping[str, str] | None = None
    ) -> AsyncIterator[Page]:
        ids = list(dict.fromkeys(nct_ids))
        known = validators or {}
        chunks = [
            ids[i : i + self.settings.ids_per_request]
            for i in range(0, len(ids), self.settings.ids_per_request)
        ]
        pending = {
            asyncio.ensure_future(self._chunk(c, known))
            for c in chunks[: self.settings.concurrency]
        }
        queued = iter(chunks[self.settings.concurrency :])
        first = True
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if (nxt := next(queued, None)) is not None:
                        pending.add(asyncio.ensure_future(self._chunk(nxt, known)))
                    yield Page(task.result(), len(ids) if first else None)
                    first = False
        finally:
            for task in pending:
                task.cancel()

    async def _chunk(self, ids: list[str], validators: Mapping[str, str]) -> list[FetchItem]:
        """One ``filter.ids`` request (conditional when every id holds the same validator);
        ids it does not return are asked for one by one."""
        held = {validators.get(i) for i in ids}
        answer = _Answer(held.pop() if len(held) == 1 else None)
        params = {"filter.ids": ",".join(ids)}
        try:
            studies = [s async for s in self._pages(params, len(ids), answer=answer)]
        except SourceError as exc:
            return [FetchFailure(i, exc.message) for i in ids]
        now = utcnow()
        if answer.not_modified and answer.sent is not None:
            return [NotModified(i, now, answer.sent) for i in ids]
        items: list[FetchItem] = []
        found: set[str] = set()
        for study in studies:
            try:
                obs = _observed(study, now, etag=answer.etag)
            except MalformedRecord as exc:
                # Named by its id when it has one; else asked for alone below, and named then.
                if exc.nct_id in ids:
                    found.add(exc.nct_id)
                    items.append(FetchFailure(exc.nct_id, exc.message))
                log.warning("source.malformed_record", error=exc.message)
                continue
            found.add(obs.nct_id)
            items.append(obs)
            for alias in _aliases(study) & set(ids):
                found.add(alias)
                items.append(Disappearance(alias, now, alias_of=obs.nct_id))
        for missing in (i for i in ids if i not in found):
            items.extend(await self.study(missing, validators.get(missing)))
        return items

    async def study(self, nct_id: str, validator: str | None = None) -> list[FetchItem]:
        """``GET /studies/{id}``: the record or why there is none; a merged id brings its target.
        With the ``validator`` of the stored record: a NotModified when it is still that one."""
        conditional = {"If-None-Match": validator} if validator else None
        try:
            response, body = await self._get(
                f"studies/{nct_id}", allow=(301, 304, 404), headers=conditional
            )
        except SourceError as exc:
            return [FetchFailure(nct_id, exc.message)]
        now = utcnow()
        if response.status_code == 304:
            if validator:
                return [NotModified(nct_id, now, validator)]
            return [FetchFailure(nct_id, "304 Not Modified to a request that was not conditional")]
        if response.status_code == 404:
            return [Disappearance(nct_id, now)]
        if response.status_code == 301:
            target = _alias_target(response)
            if target is None or target == nct_id:
                return [
                    FetchFailure(
                        nct_id,
                        f"301 without a usable Location ({response.headers.get('location')!r})",
                    )
                ]
            return [Disappearance(nct_id, now, alias_of=target), *await self.study(target)]
        try:
            obs = _observed(body, now, response.content, response.headers.get("etag"))
        except MalformedRecord as exc:
            return [FetchFailure(nct_id, exc.message)]
        if obs.nct_id != nct_id:
            return [FetchFailure(nct_id, f"GET /studies/{nct_id} answered study {obs.nct_id}")]
        return [obs]

    # -- by search -----------------------------------------------------------------------

    async def search(
        self, params: Mapping[str, str], since: date | None = None
    ) -> AsyncIterator[Page]:
        query = dict(params) if since is None else updated_between(params, since.isoformat(), "MAX")
        total: list[int] = []
        batch: list[FetchItem] = []
        async for number, study in _numbered(self._pages(query, self.settings.page_size, total)):
            try:
                batch.append(_observed(study, utcnow()))
            except MalformedRecord as exc:
                log.warning("source.malformed_record", record=number, error=exc.message)
                batch.append(FetchFailure(exc.nct_id or f"search record {number}", exc.message))
            if len(batch) >= self.settings.page_size:
                yield Page(batch, total[0] if total else None)
                batch = []
        if batch or not total:
            yield Page(batch, total[0] if total else 0)

    async def _pages(
        self,
        params: Mapping[str, str],
        page_size: int,
        total: list[int] | None = None,
        answer: _Answer | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every study of a GET /studies listing, following nextPageToken. With ``answer``: the
        first request is conditional on ``answer.sent``; ``answer`` says whether it was not
        modified, and the ETag of a listing of one page."""
        query: dict[str, Any] = {**params, "pageSize": page_size, "format": "json"}
        if total is not None:
            query["countTotal"] = "true"
        conditional = {"If-None-Match": answer.sent} if answer and answer.sent else None
        while True:
            response, body = await self._get(
                "studies", params=query, allow=(304,) if conditional else (), headers=conditional
            )
            if answer is not None and response.status_code == 304:
                answer.not_modified = True
                return
            if answer is not None and "pageToken" not in query:
                answer.etag = response.headers.get("etag")
            conditional = None
            if not isinstance(body, dict) or not isinstance(body.get("studies"), list):
                raise SourceError(
                    f"GET /studies answered without a 'studies' list: {str(body)[:200]}"
                )
            if total is not None and "totalCount" in body:
                total.append(int(body["totalCount"]))
            for study in body["studies"]:
                yield study
            token = body.get("nextPageToken")
            if not token:
                return
            if answer is not None:
                answer.etag = None  # a listing of several pages has no one validator
            query = {k: v for k, v in query.items() if k != "countTotal"} | {"pageToken": token}

    # -- record history ------------------------------------------------------------------

    async def history(self, nct_id: str) -> list[HistoryEntry] | None:
        """``GET {history}/studies/{id}?history=true``: the versions, oldest first; None on 404."""
        base, path = self.settings.history_base_url, f"studies/{nct_id}"
        response, body = await self._get(path, {"history": "true"}, allow=(404,), base=base)
        if response.status_code == 404:
            return None
        url = _url(base, path)
        history = body.get("history") if isinstance(body, dict) else None
        changes = history.get("changes") if isinstance(history, dict) else None
        if not isinstance(changes, list):
            raise SourceError(f"GET {url}: no history.changes list in {str(body)[:200]}")
        _check_nct_id(url, body, nct_id, required=False)
        return sorted((_history_entry(url, c) for c in changes), key=lambda e: e.version)

    async def history_version(self, nct_id: str, version: int) -> tuple[bytes, dict[str, Any]]:
        """``GET {history}/studies/{id}/history/{v}``: (raw JSON, study object) of that version."""
        base, path = self.settings.history_base_url, f"studies/{nct_id}/history/{version}"
        _, body = await self._get(path, base=base)
        url = _url(base, path)
        if not isinstance(body, dict) or body.get("studyVersion") != version:
            got = body.get("studyVersion") if isinstance(body, dict) else body
            raise SourceError(f"GET {url}: expected studyVersion {version}, got {str(got)[:100]}")
        study = body.get("study")
        if not isinstance(study, dict):
            raise SourceError(f"GET {url}: no study object")
        _check_nct_id(url, study, nct_id)
        return orjson.dumps(study), study

    # -- one request ---------------------------------------------------------------------

    async def _get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        allow: Iterable[int] = (),
        base: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientSourceError),
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=self._wait,
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(path, params, frozenset(allow), base, headers)
        except TransientSourceError as exc:
            raise SourceError(
                f"{exc.message} (gave up after {self.settings.max_retries + 1} attempts)"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get_once(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        allow: frozenset[int],
        base: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, Any]:
        url = _url(base or self.settings.base_url, path)
        deadline = self.settings.timeout_seconds
        async with self._slots, self._limiter:
            try:
                # One deadline for the whole request: connect, headers and the last byte of the
                # body (httpx's own timeouts bound each step, not a body trickling in).
                async with asyncio.timeout(deadline):
                    response = await self._client.get(
                        path if base is None else url, params=params, headers=headers
                    )
            except (TimeoutError, httpx.TimeoutException):
                raise TransientSourceError(
                    f"GET {url}: no complete answer within {deadline:g}s"
                ) from None
            except httpx.TransportError as exc:
                if (reason := _lasting(exc)) is not None:
                    raise SourceError(f"GET {url}: {reason}") from None
                raise TransientSourceError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientSourceError(
                f"GET {url}: HTTP {status}", retry_after=_retry_after(response)
            )
        if status in allow:
            return response, None
        if status != 200:
            raise SourceError(f"GET {url}: HTTP {status}: {response.text[:300]}")
        try:
            return response, orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            try:  # valid JSON orjson refuses (1e400, a lone surrogate): its record fails alone
                return response, json.loads(response.content)
            except ValueError:
                raise TransientSourceError(
                    f"GET {url}: truncated or invalid JSON ({exc})"
                ) from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientSourceError) and exc.retry_after is not None:
            return min(exc.retry_after, self.settings.retry_max_seconds)
        return float(self._backoff(state))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "source.retry",
        attempt=state.attempt_number,
        wait_s=round(state.next_action.sleep, 2) if state.next_action else None,
        error=str(exc),
    )


# Name-resolution answers that will not change by retrying: the name does not exist.
_NO_SUCH_NAME = frozenset(
    {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)}
)


def _lasting(exc: BaseException) -> str | None:
    """Why a failed connection will fail again (a name that does not resolve, a certificate
    that does not verify), or None when retrying may help (refused, reset, a DNS timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno in _NO_SUCH_NAME:
            return f"cannot resolve the host name ({seen.strerror}); check source.base_url"
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's certificate was refused ({seen.verify_message})"
        seen = seen.__cause__ or seen.__context__
    return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(
                0.0, (parsedate_to_datetime(value) - datetime.now().astimezone()).total_seconds()
            )
        except (TypeError, ValueError):
            return None


def _url(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path}"


def _history_entry(url: str, change: Any) -> HistoryEntry:
    if isinstance(change, dict):
        version, day, status = change.get("version"), change.get("date"), change.get("status")
        day = _day(day) if isinstance(day, str) else None
        if (
            type(version) is int
            and version >= 0
            and day is not None
            and (status is None or isinstance(status, str))
        ):
            return HistoryEntry(version, day, status)
    raise SourceError(f"GET {url}: invalid history change {str(change)[:200]}")


def _day(text: str) -> str | None:
    """``YYYY-MM-DD`` of a date, or of a timestamp that starts with one (``…T12:00:00Z``)."""
    head, rest = text[:10], text[10:]
    if rest and rest[0] not in "T ":
        return None
    try:
        return date.fromisoformat(head).isoformat()
    except ValueError:
        return None


@dataclass
class _Answer:
    """A conditional listing: the validator sent, whether the answer was 304, its ETag."""

    sent: str | None
    not_modified: bool = False
    etag: str | None = None


def _observed(
    study: Any, now: datetime, raw: bytes | None = None, etag: str | None = None
) -> Observation:
    """One record of an answer as an Observation; MalformedRecord saying what is wrong with it
    (not a study object, no valid nctId, nested deeper than JSON can be stored)."""
    nct_id = nct_id_of(study)
    if raw is None:
        try:
            raw = orjson.dumps(study)
        except orjson.JSONEncodeError as exc:
            raise MalformedRecord(f"cannot be stored as JSON ({exc})", nct_id) from None
    return Observation(nct_id, raw, study, now, etag=etag)


async def _numbered(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    number = 0
    async for item in items:
        number += 1
        yield number, item


def _aliases(study: Mapping[str, Any]) -> set[str]:
    """The ids merged into this study (``nctIdAliases``), when the record lists them."""
    aliases = study["protocolSection"]["identificationModule"].get("nctIdAliases")
    return {a for a in aliases if isinstance(a, str)} if isinstance(aliases, list) else set()


def _check_nct_id(url: str, study: Any, nct_id: str, required: bool = True) -> None:
    try:
        found = nct_id_of(study)
    except MalformedRecord as exc:
        if not required:
            return
        raise SourceError(f"GET {url}: expected study {nct_id}: {exc.message}") from None
    if found != nct_id:
        raise SourceError(f"GET {url}: expected study {nct_id}, got {found}")


def _alias_target(response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    match = NCT_ID.search(location)
    return match.group() if match else None
