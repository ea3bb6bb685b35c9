"""A local fake of the ClinicalTrials.gov API v2 for tests: a real HTTP server on loopback.

It serves the real study records in ``../shared/data/ctgov/studies/`` (or any records a
test puts in) and follows the official spec ``../shared/data/ctgov/spec/ctg-oas-v2_2.0.5.yaml``
for the three endpoints ctmirror uses. Faults (error statuses, 429 with Retry-After, slow
answers, truncated bodies, connection resets) are injected here, never by patching internals.

Faithful to the spec:

* ``GET /api/v2/version`` -> ``{"apiVersion": "2.0.5", "dataTimestamp": ...}``.
* ``GET /api/v2/studies/{nctId}`` -> the study as compact JSON (``orjson.dumps``, byte-identical
  to the data files); 301 with ``Location`` when the id is an alias of a merged study; 404 for
  an unknown id; 400 for an id not matching the spec's pattern ``^[Nn][Cc][Tt]0*[1-9]\\d{0,7}$``
  (a matching id such as ``nct123`` is normalised to ``NCT00000123``).
* ``GET /api/v2/studies`` -> ``{"totalCount"?, "studies": [...], "nextPageToken"?}``.
  ``pageSize``: default 10, 0 means the default, above 1,000 is *coerced down to 1,000* (the
  spec says so: it is not an error), negative or not an integer -> 400. ``countTotal=true`` adds
  ``totalCount`` to the first page only (ignored with a ``pageToken``). The last page has no
  ``nextPageToken``. A ``pageToken`` is only valid with the same parameters as the first page,
  except ``countTotal``, ``pageSize`` and ``pageToken`` (otherwise 400). ``filter.ids`` and
  ``filter.overallStatus`` are comma- or pipe-separated; ids match ``nctId`` and
  ``nctIdAliases``. If a ``query.*`` parameter holds only NCT ids, the filters are ignored.
  ``postFilter.*`` behave like ``filter.*``.
* Errors (400, 404) are ``text/plain`` messages, as the spec's ``errorMessage`` says.
* Conditional requests (RFC 9110): every 200 of ``/studies`` and ``/studies/{nctId}`` carries a
  strong ``ETag`` of its body; a request whose ``If-None-Match`` names the ETag the answer would
  carry (or ``*``) gets ``304 Not Modified`` with that ETag and no body. ``RequestRecord.sent``
  counts the body bytes of each answer.

The record history (not in the spec; ``/api/int``, as ClinicalTrials.gov serves it): every record
keeps its versions, oldest first, the last being the live record. ``put()`` starts a history,
``edit()`` appends a version, ``set_history()`` installs a whole timeline.

* ``GET /api/int/studies/{nctId}?history=true`` -> the live study plus ``"history": {"changes":
  [{"version", "date", "status", "moduleLabels"}, ...]}``: ``date`` is that version's
  lastUpdatePostDate, ``status`` its overallStatus, ``moduleLabels`` the protocolSection modules
  that differ from the version before (module keys, where the registry has display labels).
* ``GET /api/int/studies/{nctId}/history/{v}`` -> ``{"studyVersion": v, "study": {...}}``.
* 404 for an unknown id (aliases are not followed) or version; 400 for an invalid id.

Simplified:

* Studies are always ordered by ``nctId`` ascending (the real API does not sort by default);
  ``sort`` is accepted and ignored. ``fields``, ``format=csv`` (and other non-JSON formats),
  ``markupFormat=legacy``, ``filter.geo``, ``filter.synonyms``, ``aggFilters``, ``geoDecay``
  and ``query.patient`` answer 400 "not supported by the fake"; so do parameters the spec
  does not list.
* A page token encodes an offset into the current result list (plus a fingerprint of the
  parameters), so records added or removed between two pages shift later pages.
* Essie expressions: words are matched case-insensitively as whole words (no stemming,
  synonyms or diacritics folding; ``word*`` is a prefix match); quoted phrases; ``AND`` (or
  juxtaposition), ``OR``, ``NOT`` and parentheses; ``AREA[Name]`` for the search areas below
  and for a few fields; ``RANGE[from,to]`` (inclusive, ``YYYY-MM-DD`` or ``MIN``/``MAX``) on
  date fields. Anything else (other operators, unknown areas) is a 400 with a message.
  Search areas: BasicSearch (``query.term``, ``filter.advanced``) = every string in the record;
  ConditionSearch (``query.cond``) = conditions, keywords, condition MeSH terms;
  SponsorSearch (``query.spons``) = lead sponsor and collaborator names; LeadSponsorName
  (``query.lead``); InterventionSearch (``query.intr``) = intervention names, other names and
  types; TitleSearch (``query.titles``) = brief/official title and acronym; LocationSearch
  (``query.locn``) = location facility/city/state/country; OutcomeSearch (``query.outc``) =
  outcome measures and descriptions; IdSearch (``query.id``) = NCT id, aliases, org/secondary ids.
* Injected ``status`` faults answer a small JSON body ``{"message": ...}`` (the spec does not
  describe 429/5xx). ``Retry-After`` is normally whole seconds (or an HTTP date); the fake may
  send a fractional value such as ``0.05`` to keep tests fast, so a client should parse it as a
  float.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import functools
import hashlib
import os
import random
import re
import socket
import struct
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

DATA_DIR: Path = Path(
    os.environ.get("CTMIRROR_CTGOV_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ctgov"
)
API_VERSION = "2.0.5"
API_PREFIX = "/api/v2"
HISTORY_PREFIX = "/api/int"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 10
STATUSES = frozenset(
    {
        "ACTIVE_NOT_RECRUITING",
        "COMPLETED",
        "ENROLLING_BY_INVITATION",
        "NOT_YET_RECRUITING",
        "RECRUITING",
        "SUSPENDED",
        "TERMINATED",
        "WITHDRAWN",
        "AVAILABLE",
        "NO_LONGER_AVAILABLE",
        "TEMPORARILY_NOT_AVAILABLE",
        "APPROVED_FOR_MARKETING",
        "WITHHELD",
        "UNKNOWN",
    }
)  # components.schemas.Status
FAULT_KINDS = frozenset({"status", "slow", "trickle", "truncate_body", "truncate_json", "reset"})

Study = dict[str, Any]
Query = dict[str, list[str]]


# --------------------------------------------------------------------------- data files


def load_study(nct_id: str) -> Study:
    """The real record ``DATA_DIR/studies/<nct_id>.json``, freshly parsed (safe to mutate)."""
    return orjson.loads(_study_path(nct_id).read_bytes())  # type: ignore[no-any-return]


def all_study_ids() -> list[str]:
    """Sorted NCT ids of the real records in ``DATA_DIR/studies``."""
    return sorted(p.stem for p in (DATA_DIR / "studies").glob("NCT*.json"))


def _study_path(nct_id: str) -> Path:
    return DATA_DIR / "studies" / f"{nct_id}.json"


@functools.cache
def _shared_study(nct_id: str) -> Study:
    """Parsed record shared by all fakes: never mutated (the fake copies before editing)."""
    return load_study(nct_id)


def _deep_copy(study: Study) -> Study:
    return orjson.loads(orjson.dumps(study))  # type: ignore[no-any-return]


def _nct_id_of(study: Study) -> str:
    try:
        nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    except (KeyError, TypeError) as exc:
        raise ValueError("study has no protocolSection.identificationModule.nctId") from exc
    return str(nct_id)


_NCT_PATTERN = re.compile(r"[Nn][Cc][Tt]0*([1-9]\d{0,7})")  # the spec's nctId pattern


def normalize_nct_id(text: str) -> str | None:
    """``NCT`` + 8 digits for an id matching the spec's pattern, else None."""
    match = _NCT_PATTERN.fullmatch(text.strip())
    return f"NCT{int(match.group(1)):08d}" if match else None


# --------------------------------------------------------------------------- search text


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _items(obj: Any, *path: str) -> list[Any]:
    value = _get(obj, *path)
    return value if isinstance(value, list) else []


def _strings(obj: Any) -> list[str]:
    """Every string value in a JSON tree (order does not matter for searching)."""
    out: list[str] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


def _ps(study: Study, module: str) -> Any:
    return _get(study, "protocolSection", module)


def _condition_texts(s: Study) -> list[Any]:
    cond = _ps(s, "conditionsModule")
    meshes = _items(s, "derivedSection", "conditionBrowseModule", "meshes")
    return [
        *_items(cond, "conditions"),
        *_items(cond, "keywords"),
        *(m.get("term") for m in meshes),
    ]


def _sponsor_texts(s: Study) -> list[Any]:
    mod = _ps(s, "sponsorCollaboratorsModule")
    return [
        _get(mod, "leadSponsor", "name"),
        *(c.get("name") for c in _items(mod, "collaborators")),
    ]


def _intervention_texts(s: Study) -> list[Any]:
    out: list[Any] = []
    for item in _items(_ps(s, "armsInterventionsModule"), "interventions"):
        out += [item.get("name"), item.get("type"), *item.get("otherNames", [])]
    return out


def _title_texts(s: Study) -> list[Any]:
    ident = _ps(s, "identificationModule")
    return [_get(ident, "briefTitle"), _get(ident, "officialTitle"), _get(ident, "acronym")]


def _location_texts(s: Study) -> list[Any]:
    keys = ("facility", "city", "state", "country")
    locations = _items(_ps(s, "contactsLocationsModule"), "locations")
    return [loc.get(key) for loc in locations for key in keys]


def _outcome_texts(s: Study) -> list[Any]:
    mod = _ps(s, "outcomesModule")
    kinds = ("primaryOutcomes", "secondaryOutcomes", "otherOutcomes")
    return [
        o.get(k) for kind in kinds for o in _items(mod, kind) for k in ("measure", "description")
    ]


def _id_texts(s: Study) -> list[Any]:
    ident = _ps(s, "identificationModule")
    secondary = [i.get("id") for i in _items(ident, "secondaryIdInfos")]
    return [*_ids_of(s), _get(ident, "orgStudyIdInfo", "id"), *secondary]


def _ids_of(s: Study) -> list[str]:
    ident = _ps(s, "identificationModule")
    return [_get(ident, "nctId"), *_items(ident, "nctIdAliases")]


TEXT_AREAS: dict[str, Callable[[Study], Iterable[Any]]] = {
    "basicsearch": _strings,
    "conditionsearch": _condition_texts,
    "sponsorsearch": _sponsor_texts,
    "leadsponsorname": lambda s: [
        _get(_ps(s, "sponsorCollaboratorsModule"), "leadSponsor", "name")
    ],
    "interventionsearch": _intervention_texts,
    "titlesearch": _title_texts,
    "locationsearch": _location_texts,
    "outcomesearch": _outcome_texts,
    "idsearch": _id_texts,
}


def _status_field(name: str) -> Callable[[Study], list[Any]]:
    return lambda s: [_get(_ps(s, "statusModule"), *name.split("."))]


# Field areas: (kind, values). "date" supports RANGE and prefix match ("2023", "2023-01");
# "keyword" is a case-insensitive equality.
FIELD_AREAS: dict[str, tuple[str, Callable[[Study], list[Any]]]] = {
    "lastupdatepostdate": ("date", _status_field("lastUpdatePostDateStruct.date")),
    "lastupdatesubmitdate": ("date", _status_field("lastUpdateSubmitDate")),
    "studyfirstpostdate": ("date", _status_field("studyFirstPostDateStruct.date")),
    "studyfirstsubmitdate": ("date", _status_field("studyFirstSubmitDate")),
    "resultsfirstpostdate": ("date", _status_field("resultsFirstPostDateStruct.date")),
    "overallstatus": ("keyword", _status_field("overallStatus")),
    "studytype": ("keyword", lambda s: [_get(_ps(s, "designModule"), "studyType")]),
    "phase": ("keyword", lambda s: _items(_ps(s, "designModule"), "phases")),
    "nctid": ("keyword", lambda s: [_get(_ps(s, "identificationModule"), "nctId")]),
    "nctidalias": ("keyword", lambda s: _items(_ps(s, "identificationModule"), "nctIdAliases")),
    "hasresults": ("keyword", lambda s: [str(s.get("hasResults")).lower()]),
}

QUERY_AREAS = {
    "query.term": "basicsearch",
    "query.cond": "conditionsearch",
    "query.spons": "sponsorsearch",
    "query.lead": "leadsponsorname",
    "query.intr": "interventionsearch",
    "query.titles": "titlesearch",
    "query.locn": "locationsearch",
    "query.outc": "outcomesearch",
    "query.id": "idsearch",
}

_WORD = re.compile(r"[^\W_]+")  # letters and digits
_BETWEEN_WORDS = r"(?:_|[^\w\n])+"  # a phrase does not span two fields (joined by newlines)


def _search_text(texts: Iterable[Any]) -> str:
    """The lower-cased strings of an area, one per line."""
    return "\n".join(t for t in texts if isinstance(t, str)).lower()


class _Doc:
    """One record while a search runs, with its per-area search text computed lazily."""

    def __init__(self, study: Study, text_cache: dict[str, str]) -> None:
        self.study = study
        self._text = text_cache

    def text(self, area: str) -> str:
        if area not in self._text:
            self._text[area] = _search_text(TEXT_AREAS[area](self.study))
        return self._text[area]

    def values(self, area: str) -> list[str]:
        return [v for v in FIELD_AREAS[area][1](self.study) if isinstance(v, str)]


# --------------------------------------------------------------------------- Essie subset

Predicate = Callable[[_Doc], bool]


class QueryError(ValueError):
    """An expression the fake cannot parse: answered with 400."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) |
        "(?P<phrase>[^"]*)" |
        (?P<op>[A-Za-z_]+)\[(?P<arg>[^\]]*)\] |
        (?P<word>[^\s()"\[\]]+)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if not match:
            raise QueryError(f"cannot parse expression at {text[pos : pos + 20]!r}")
        tokens.append(_token(match))
        pos = match.end()
    return tokens


def _token(match: re.Match[str]) -> tuple[str, str]:
    """(kind, value): kind is lp, rp, phrase, word, AND, OR, NOT, AREA or RANGE."""
    if (op := match.group("op")) is not None:
        if op.upper() not in ("AREA", "RANGE"):
            raise QueryError(f"operator {op}[...] is not supported by the fake")
        return op.upper(), match.group("arg")
    if (word := match.group("word")) is not None:
        return (word, "") if word in ("AND", "OR", "NOT") else ("word", word)
    if (phrase := match.group("phrase")) is not None:
        return "phrase", phrase
    return ("lp", "") if match.group("lp") else ("rp", "")


class _Parser:
    """Recursive descent: or := and (OR and)*; and := not (AND? not)*; not := NOT not | atom."""

    def __init__(self, text: str, area: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.area = area

    def parse(self) -> Predicate:
        if not self.tokens:
            return lambda doc: True
        pred = self._or(self.area)
        if self.pos != len(self.tokens):
            raise QueryError(f"unexpected {self.tokens[self.pos][0]!r} in expression")
        return pred

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise QueryError("expression ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _or(self, area: str) -> Predicate:
        preds = [self._and(area)]
        while self._peek() == "OR":
            self.pos += 1
            preds.append(self._and(area))
        return preds[0] if len(preds) == 1 else lambda doc: any(p(doc) for p in preds)

    def _and(self, area: str) -> Predicate:
        preds = [self._not(area)]
        while self._peek() not in (None, "OR", "rp"):
            if self._peek() == "AND":
                self.pos += 1
            preds.append(self._not(area))
        return preds[0] if len(preds) == 1 else lambda doc: all(p(doc) for p in preds)

    def _not(self, area: str) -> Predicate:
        if self._peek() == "NOT":
            self.pos += 1
            inner = self._not(area)
            return lambda doc: not inner(doc)
        return self._atom(area)

    def _atom(self, area: str) -> Predicate:
        kind, value = self._next()
        if kind == "lp":
            pred = self._or(area)
            if self._next()[0] != "rp":
                raise QueryError("missing ')'")
            return pred
        if kind == "AREA":
            return self._not(_area_name(value))
        if kind == "RANGE":
            return _range_predicate(area, value)
        if kind in ("word", "phrase"):
            return _term_predicate(area, value)
        raise QueryError(f"unexpected {kind!r} in expression")


def _area_name(value: str) -> str:
    area = value.strip().lower()
    if area not in TEXT_AREAS and area not in FIELD_AREAS:
        raise QueryError(f"AREA[{value}] is not supported by the fake")
    return area


def _term_predicate(area: str, term: str) -> Predicate:
    if area in FIELD_AREAS:
        return _field_predicate(area, term)
    words = _WORD.findall(term.lower())
    if not words:
        return lambda doc: True
    end = "" if term.endswith("*") else r"(?![^\W_])"  # word* is a prefix match
    regex = re.compile(r"(?<![^\W_])" + _BETWEEN_WORDS.join(map(re.escape, words)) + end)
    longest = max(words, key=len)

    def matches(doc: _Doc) -> bool:
        text = doc.text(area)
        return longest in text and regex.search(text) is not None  # `in` is a fast pre-check

    return matches


def _field_predicate(area: str, term: str) -> Predicate:
    wanted = term.strip().lower()
    if FIELD_AREAS[area][0] == "date":
        return lambda doc: any(v.startswith(wanted) for v in doc.values(area))
    return lambda doc: any(v.lower() == wanted for v in doc.values(area))


def _range_bound(text: str, open_value: str) -> str:
    bound = text.strip()
    if bound.upper() in ("MIN", "MAX"):
        return open_value
    try:
        return dt.date.fromisoformat(bound).isoformat()
    except ValueError:
        raise QueryError(f"RANGE bound {bound!r}: the fake supports YYYY-MM-DD, MIN, MAX") from None


def _range_predicate(area: str, value: str) -> Predicate:
    if FIELD_AREAS.get(area, ("", None))[0] != "date":
        raise QueryError(f"RANGE[...] needs a date AREA, not {area!r}")
    parts = value.split(",")
    if len(parts) != 2:
        raise QueryError(f"RANGE[{value}] needs two bounds")
    low, high = _range_bound(parts[0], ""), _range_bound(parts[1], "9999-12-31")
    return lambda doc: any(low <= v[:10] <= high for v in doc.values(area) if len(v) >= 10)


def _only_nct_ids(text: str) -> list[str] | None:
    """The ids if ``text`` holds only NCT ids (comma- and/or space-separated), else None."""
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    ids = [normalize_nct_id(p) for p in parts]
    return [i for i in ids if i] if parts and all(ids) else None


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake received. ``status`` is None when no response was sent (reset)."""

    method: str
    path: str
    query: Query
    status: int | None
    fault: str | None = None
    target: str = ""  # the raw request target: path and query string as sent
    sent: int = 0  # bytes of the answer's body


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Fault:
    kind: str
    remaining: int
    opts: dict[str, Any]


def _format_retry_after(seconds: float) -> str:
    """Whole seconds as an integer string, else a float string (e.g. "0.05")."""
    value = float(seconds)
    return str(int(value)) if value.is_integer() else repr(value)


def _error(status: int, message: str) -> _Response:
    return _Response(status, message.encode(), "text/plain; charset=utf-8")


def _fault_response(status: int, retry_after: float | None) -> _Response:
    body = orjson.dumps({"message": f"injected fault: HTTP {status}"})
    headers = {} if retry_after is None else {"Retry-After": _format_retry_after(retry_after)}
    return _Response(status, body, "application/json", headers)


def _conditional(response: _Response, path: str, if_none_match: str | None) -> _Response:
    """A study answer with its ETag, or 304 when ``If-None-Match`` names it (RFC 9110 13.1.2)."""
    if response.status != 200 or not path.startswith(f"{API_PREFIX}/studies"):
        return response
    etag = '"' + hashlib.sha256(response.body).hexdigest()[:32] + '"'
    named = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    if etag in named or "*" in named:
        return _Response(304, b"", None, {"ETag": etag})
    return _Response(response.status, response.body, response.content_type,
                     {**response.headers, "ETag": etag})  # fmt: skip


def _single(query: Query, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _HttpError(400, f"parameter {name} given more than once")
    return values[0]


def _split_list(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,|]", text) if p.strip()]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes live connections itself

    def __init__(self, fake: FakeCtgov) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection errors (client went away, reset) are normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # delayed ACKs add about 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Silent: requests are recorded in ``FakeCtgov.requests``."""

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.close_connection = True  # the request body is never read
        self.server.fake._serve(self)  # answers 405

    do_PUT = do_PATCH = do_DELETE = do_POST

    # Writing responses, with or without a fault.

    def send(
        self,
        response: _Response,
        fault: str | None = None,
        opts: dict[str, Any] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        body = response.body
        if fault == "truncate_json":
            body = _cut_utf8(body, len(body) // 2)
        self.send_response(response.status)
        if response.content_type and response.body:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if fault == "truncate_body":
            self.send_header("Connection", "close")
            self.close_connection = True
            body = body[: len(body) // 2]
        self.end_headers()
        if self.command == "HEAD":
            pass
        elif fault == "trickle":
            self._trickle(body, float((opts or {})["bytes_per_second"]), stopping)
        else:
            self.wfile.write(body)
        self.wfile.flush()

    def _trickle(self, body: bytes, rate: float, stopping: threading.Event | None) -> None:
        """Send ``body`` at ``rate`` bytes a second, a tenth of a second's worth at a time."""
        step = max(1, int(rate / 10))
        for start in range(0, len(body), step):
            if stopping is not None and stopping.wait(step / rate):
                self.close_connection = True
                return
            self.wfile.write(body[start : start + step])
            self.wfile.flush()

    def reset(self) -> None:
        """Abort the connection with a TCP RST, sending nothing."""
        self.close_connection = True
        try:
            linger = struct.pack("ii", 1, 0)  # on, 0 seconds: close() sends RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()  # the fd closes when rfile (a makefile) is closed too
            self.rfile.close()
        except OSError:
            pass


def _cut_utf8(body: bytes, size: int) -> bytes:
    """The first ``size`` bytes of body, moved back so no UTF-8 character is split."""
    while 0 < size < len(body) and body[size] & 0xC0 == 0x80:
        size -= 1
    return body[:size]


# --------------------------------------------------------------------------- the fake


class FakeCtgov:
    """The fake API server. Use as a context manager, or call ``start()`` / ``stop()``.

    ``studies``: explicit records; ``ids``: real records loaded from ``DATA_DIR``; neither:
    all real records. Record and fault methods are thread-safe and apply to the next request.
    """

    def __init__(
        self,
        studies: Iterable[Study] | None = None,
        *,
        ids: Iterable[str] | None = None,
        data_timestamp: str = "2026-11-21T09:00:00",
    ) -> None:
        self.data_timestamp = data_timestamp
        self.requests: list[RequestRecord] = []
        self.base_url = ""
        self.history_base_url = ""
        self._lock = threading.RLock()
        self._studies: dict[str, Study] = {}
        self._past: dict[str, list[Study]] = {}  # earlier versions; never mutated
        self._bytes: dict[str, bytes] = {}
        self._texts: dict[str, dict[str, str]] = {}
        self._aliases: dict[str, str] = {}
        self._sorted_ids: list[str] | None = None
        self._faults: list[_Fault] = []
        self._junk: list[bytes] = []
        self._random: tuple[float, tuple[int, ...], float, random.Random] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        if studies is not None:
            for study in studies:
                self.put(study)
        else:
            for nct_id in all_study_ids() if ids is None else ids:
                self._store(_shared_study(nct_id))

    # Lifecycle.

    def start(self) -> FakeCtgov:
        """Start serving on 127.0.0.1 at a free port; sets ``base_url``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}{API_PREFIX}"
        self.history_base_url = f"http://127.0.0.1:{port}{HISTORY_PREFIX}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ctgov",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop live connections (slow faults are cut short)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeCtgov:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Records.

    def put(self, study: Study) -> None:
        """Add or replace a record (by its nctId); a copy is stored, as version 0 of its history."""
        with self._lock:
            self._past.pop(_nct_id_of(study), None)
            self._store(_deep_copy(study))

    def edit(self, nct_id: str, fn: Callable[[Study], None]) -> Study:
        """Apply ``fn`` to a deep copy of the record, store it as a new version, return a copy."""
        with self._lock:
            study = self.get(nct_id)
            fn(study)
            if _nct_id_of(study) != nct_id:
                self.remove(nct_id)
            else:
                self._past.setdefault(nct_id, []).append(self._studies[nct_id])
            self._store(_deep_copy(study))
            return study

    def set_history(self, nct_id: str, versions: Sequence[Study]) -> None:
        """Install a timeline of ``nct_id``, oldest first (copies); the last is the live record."""
        if not versions or any(_nct_id_of(v) != nct_id for v in versions):
            raise ValueError(f"set_history needs one or more versions of {nct_id}")
        with self._lock:
            self._past[nct_id] = [_deep_copy(v) for v in versions[:-1]]
            self._store(_deep_copy(versions[-1]))

    def versions(self, nct_id: str) -> list[Study]:
        """Copies of every version of the record, oldest first (KeyError if absent)."""
        with self._lock:
            return [_deep_copy(v) for v in self._versions(nct_id)]

    def _versions(self, nct_id: str) -> list[Study]:
        return [*self._past.get(nct_id, ()), self._studies[nct_id]]

    def get(self, nct_id: str) -> Study:
        """A deep copy of the current record (KeyError if absent)."""
        with self._lock:
            return _deep_copy(self._studies[nct_id])

    def remove(self, nct_id: str) -> None:
        """Remove a record: /studies/{id} answers 404 and lists leave it out."""
        with self._lock:
            del self._studies[nct_id]
            self._past.pop(nct_id, None)
            self._forget(nct_id)

    def alias(self, old_id: str, new_id: str) -> None:
        """Merge ``old_id`` into ``new_id``, as the registry does with duplicate registrations.

        /studies/{old_id} then answers 301 to /studies/{new_id}; the new record lists old_id in
        ``nctIdAliases`` (so ``filter.ids=old_id`` finds it); the old record, if any, is gone.
        """
        with self._lock:
            new = self.get(new_id)
            aliases = new["protocolSection"]["identificationModule"].setdefault("nctIdAliases", [])
            if old_id not in aliases:
                aliases.append(old_id)
            if old_id in self._studies:
                self.remove(old_id)
            self._store(new)
            self._aliases[old_id] = new_id

    def served_bytes(self, nct_id: str) -> bytes:
        """The exact body /studies/{nct_id} serves now (KeyError if absent)."""
        with self._lock:
            if nct_id not in self._bytes:
                self._bytes[nct_id] = orjson.dumps(self._studies[nct_id])
            return self._bytes[nct_id]

    def add_junk(self, raw: bytes) -> None:
        """Serve ``raw`` (any JSON text, valid or not as a study) first in the first page of
        every /studies listing, as a registry answering with one bad record would."""
        with self._lock:
            self._junk.append(raw)

    def clear_junk(self) -> None:
        with self._lock:
            self._junk.clear()

    def ids(self) -> list[str]:
        """NCT ids currently served, ascending."""
        with self._lock:
            if self._sorted_ids is None:
                self._sorted_ids = sorted(self._studies)
            return list(self._sorted_ids)

    def _store(self, study: Study) -> None:
        nct_id = _nct_id_of(study)
        with self._lock:
            self._studies[nct_id] = study
            self._aliases.pop(nct_id, None)
            self._forget(nct_id)

    def _forget(self, nct_id: str) -> None:
        self._bytes.pop(nct_id, None)
        self._texts.pop(nct_id, None)
        self._sorted_ids = None

    # Faults.

    def fail_randomly(
        self,
        rate: float,
        statuses: Sequence[int] = (500, 429),
        retry_after: float = 0.05,
        seed: int = 0,
    ) -> None:
        """Answer that fraction of later requests with one of ``statuses`` (0 turns it off).

        A 429 carries ``Retry-After: <retry_after>`` (seconds; may be fractional, see above).
        """
        with self._lock:
            self._random = (
                (rate, tuple(statuses), retry_after, random.Random(seed)) if rate else None
            )

    def fault_next(self, kind: str, count: int = 1, **opts: Any) -> None:
        """Queue a fault for the next ``count`` requests whose target contains ``path_contains``.

        kinds: ``status`` (opts ``status``, optional ``retry_after``), ``slow`` (opts
        ``seconds``: wait before answering), ``trickle`` (opts ``bytes_per_second``: the
        headers at once, the body slowly), ``truncate_body``, ``truncate_json``, ``reset``.
        ``path_contains`` is matched against the raw request target (path and query string);
        default: any request.
        """
        _check_fault(kind, opts)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self._lock:
            self._faults.append(_Fault(kind, count, dict(opts)))

    def clear_faults(self) -> None:
        """Drop queued faults and stop random failures."""
        with self._lock:
            self._faults.clear()
            self._random = None

    def request_count(self, path_contains: str = "") -> int:
        """How many requests had ``path_contains`` in their target (path and query string)."""
        return sum(path_contains in r.target for r in list(self.requests))

    def _take_fault(self, target: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            for fault in self._faults:
                if fault.opts.get("path_contains", "") in target:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault.kind, fault.opts
            if self._random is not None:
                rate, statuses, retry_after, rng = self._random
                if rng.random() < rate:
                    status = rng.choice(statuses)
                    return "status", {"status": status, "retry_after": retry_after}
        return None

    # Serving.

    def _serve(self, handler: _Handler) -> None:
        """Answer one request on a handler thread; never lets an exception escape."""
        split = urlsplit(handler.path)
        query = parse_qs(split.query, keep_blank_values=True)
        fault = self._take_fault(handler.path)
        kind, opts = fault if fault else (None, {})

        def record(status: int | None, sent: int = 0) -> None:
            rec = RequestRecord(
                handler.command, split.path, query, status, kind, handler.path, sent
            )
            self.requests.append(rec)

        try:
            if kind == "reset":
                record(None)
                handler.reset()
                return
            if kind == "slow":
                self._stopping.wait(float(opts["seconds"]))
            if kind == "status":
                response = _fault_response(int(opts["status"]), opts.get("retry_after"))
            else:
                response = self._respond(handler.command, split.path, query, split.query)
                response = _conditional(response, split.path, handler.headers.get("If-None-Match"))
        except Exception:  # a bug in the fake: report it, keep serving
            response = _error(500, "fake_ctgov error:\n" + traceback.format_exc())
        record(response.status, len(response.body))
        try:
            handler.send(response, kind, opts, self._stopping)
        except OSError:
            handler.close_connection = True

    def _respond(self, method: str, path: str, query: Query, raw_query: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _error(405, f"method {method} not allowed")
        try:
            if path == f"{API_PREFIX}/version":
                return self._version()
            if path == f"{API_PREFIX}/studies":
                return self._list_studies(query)
            prefix = f"{API_PREFIX}/studies/"
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                return self._one_study(path[len(prefix) :], query, raw_query)
            if path.startswith(history := f"{HISTORY_PREFIX}/studies/"):
                return self._history(path[len(history) :].split("/"), query)
        except _HttpError as exc:
            return _error(exc.status, exc.message)
        return _error(404, f"no such endpoint: {path}")

    def _version(self) -> _Response:
        body = {"apiVersion": API_VERSION, "dataTimestamp": self.data_timestamp}
        return _Response(200, orjson.dumps(body))

    def _one_study(self, raw_id: str, query: Query, raw_query: str) -> _Response:
        _check_params(query, {"format", "markupFormat"})
        _check_format(query)
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None:
            raise _HttpError(400, f"invalid NCT number: {raw_id!r}")
        with self._lock:
            if nct_id in self._studies:
                return _Response(200, self.served_bytes(nct_id))
            target = self._resolve_alias(nct_id)
        if target is None:
            raise _HttpError(404, f"study {nct_id} not found")
        location = f"{self.base_url}/studies/{target}" + (f"?{raw_query}" if raw_query else "")
        return _Response(301, b"", None, {"Location": location})

    def _history(self, parts: list[str], query: Query) -> _Response:
        """Record history: ``studies/{id}[?history=true]`` or ``studies/{id}/history/{v}``."""
        if len(parts) not in (1, 3) or (len(parts) == 3 and parts[1] != "history"):
            raise _HttpError(404, f"no such endpoint: {HISTORY_PREFIX}/studies/{'/'.join(parts)}")
        _check_params(query, {"history"} if len(parts) == 1 else ())
        nct_id = normalize_nct_id(parts[0])
        if nct_id is None:
            raise _HttpError(400, f"invalid NCT number: {parts[0]!r}")
        with self._lock:
            if nct_id not in self._studies:
                raise _HttpError(404, f"study {nct_id} not found")
            versions = self._versions(nct_id)
        if len(parts) == 3:
            number = int(parts[2]) if parts[2].isdigit() else -1
            if not 0 <= number < len(versions):
                raise _HttpError(404, f"study {nct_id} has no version {parts[2]!r}")
            return _Response(200, orjson.dumps({"studyVersion": number, "study": versions[number]}))
        body = dict(versions[-1])
        if _boolean(_single(query, "history"), "history"):
            changes = [
                _history_change(v, versions[v - 1] if v else {}, versions[v])
                for v in range(len(versions))
            ]
            body["history"] = {"changes": changes}
        return _Response(200, orjson.dumps(body))

    def _resolve_alias(self, nct_id: str) -> str | None:
        seen: set[str] = set()
        while nct_id in self._aliases and nct_id not in seen:
            seen.add(nct_id)
            nct_id = self._aliases[nct_id]
        return nct_id if seen else None

    def _list_studies(self, query: Query) -> _Response:
        _check_params(query, STUDIES_PARAMS)
        _check_format(query)
        size = _page_size(_single(query, "pageSize"))
        count_total = _boolean(_single(query, "countTotal"), "countTotal")
        token = _single(query, "pageToken")
        fingerprint = _fingerprint(query)
        offset = 0 if token is None else _decode_token(token, fingerprint)
        predicate = _search_predicate(query)
        with self._lock:
            matched = [i for i in self.ids() if predicate(self._doc(i))]
            page = [self.served_bytes(i) for i in matched[offset : offset + size]]
            if token is None:
                page = [*self._junk, *page]
        parts = []
        if count_total and token is None:
            parts.append(b'"totalCount":%d' % len(matched))
        parts.append(b'"studies":[' + b",".join(page) + b"]")
        if offset + size < len(matched):
            parts.append(
                b'"nextPageToken":' + orjson.dumps(_encode_token(offset + size, fingerprint))
            )
        return _Response(200, b"{" + b",".join(parts) + b"}")

    def _doc(self, nct_id: str) -> _Doc:
        return _Doc(self._studies[nct_id], self._texts.setdefault(nct_id, {}))


# --------------------------------------------------------------------------- /studies params

STUDIES_PARAMS = frozenset(
    {"format", "markupFormat", "sort", "countTotal", "pageSize", "pageToken", *QUERY_AREAS}
    | {f"{p}.{f}" for p in ("filter", "postFilter") for f in ("ids", "overallStatus", "advanced")}
)
_UNSUPPORTED = frozenset(
    {"fields", "query.patient", "aggFilters", "geoDecay"}
    | {f"{p}.{f}" for p in ("filter", "postFilter") for f in ("geo", "synonyms")}
)
_PAGING = ("pageToken", "pageSize", "countTotal")


def _check_params(query: Query, allowed: Iterable[str]) -> None:
    for name in query:
        if name in _UNSUPPORTED:
            raise _HttpError(400, f"parameter {name} is not supported by the fake")
        if name not in allowed:
            raise _HttpError(400, f"unknown parameter {name}")


def _check_format(query: Query) -> None:
    # Only JSON: format=csv (and json.zip, fhir.json, ris) are valid in the spec but not faked.
    fmt = _single(query, "format")
    if fmt not in (None, "json"):
        raise _HttpError(400, f"format={fmt} is not supported by the fake (only json)")
    markup = _single(query, "markupFormat")
    if markup not in (None, "markdown"):
        raise _HttpError(400, f"markupFormat={markup} is not supported by the fake")


def _page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(text)
    except ValueError:
        raise _HttpError(400, f"pageSize must be an integer, got {text!r}") from None
    if size < 0:
        raise _HttpError(400, f"pageSize must be >= 0, got {size}")
    return min(size, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE


def _boolean(text: str | None, name: str) -> bool:
    if text is None or text.lower() == "false":
        return False
    if text.lower() == "true":
        return True
    raise _HttpError(400, f"{name} must be true or false, got {text!r}")


def _fingerprint(query: Query) -> str:
    kept = sorted((k, v) for k, v in query.items() if k not in _PAGING)
    return hashlib.sha256(orjson.dumps(kept)).hexdigest()[:16]


def _encode_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{fingerprint}".encode()).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        offset_text, token_fingerprint = raw.split(":")
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _HttpError(400, f"invalid pageToken {token!r}") from None
    if token_fingerprint != fingerprint or offset < 0:
        raise _HttpError(400, "pageToken does not match the query parameters of the first page")
    return offset


def _search_predicate(query: Query) -> Predicate:
    """All query.* and filter.* parameters combined (filters dropped if a query is only ids)."""
    preds: list[Predicate] = []
    ids_only = False
    for name, area in QUERY_AREAS.items():
        text = _single(query, name)
        if text is None:
            continue
        ids = _only_nct_ids(text)
        ids_only = ids_only or ids is not None
        preds.append(_ids_predicate(ids) if ids is not None else _parse(text, area, name))
    if not ids_only:
        preds += _filter_predicates(query)
    return lambda doc: all(p(doc) for p in preds)


def _filter_predicates(query: Query) -> list[Predicate]:
    preds: list[Predicate] = []
    for prefix in ("filter", "postFilter"):
        if (ids := _single(query, f"{prefix}.ids")) is not None:
            preds.append(_ids_predicate(_parse_ids(ids)))
        if (statuses := _single(query, f"{prefix}.overallStatus")) is not None:
            preds.append(_status_predicate(statuses))
        if (advanced := _single(query, f"{prefix}.advanced")) is not None:
            preds.append(_parse(advanced, "basicsearch", f"{prefix}.advanced"))
    return preds


def _parse(text: str, area: str, name: str) -> Predicate:
    try:
        return _Parser(text, area).parse()
    except QueryError as exc:
        raise _HttpError(400, f"{name}: {exc}") from None


def _parse_ids(text: str) -> list[str]:
    ids = []
    for part in _split_list(text):
        nct_id = normalize_nct_id(part)
        if nct_id is None:
            raise _HttpError(400, f"invalid NCT number in filter.ids: {part!r}")
        ids.append(nct_id)
    return ids


def _ids_predicate(ids: list[str]) -> Predicate:
    wanted = set(ids)
    return lambda doc: not wanted.isdisjoint(_ids_of(doc.study))


def _status_predicate(text: str) -> Predicate:
    wanted = set(_split_list(text))
    if unknown := wanted - STATUSES:
        raise _HttpError(400, f"invalid overallStatus value(s): {', '.join(sorted(unknown))}")
    return lambda doc: _get(_ps(doc.study, "statusModule"), "overallStatus") in wanted


def _history_change(version: int, before: Study, study: Study) -> dict[str, Any]:
    status = _ps(study, "statusModule")
    modules, earlier = study.get("protocolSection") or {}, before.get("protocolSection") or {}
    return {
        "version": version,
        "date": _get(status, "lastUpdatePostDateStruct", "date"),
        "status": _get(status, "overallStatus"),
        "moduleLabels": sorted(k for k in modules | earlier if modules.get(k) != earlier.get(k)),
    }


def _check_fault(kind: str, opts: dict[str, Any]) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
    allowed = {"path_contains"} | {
        "status": {"status", "retry_after"},
        "slow": {"seconds"},
        "trickle": {"bytes_per_second"},
    }.get(kind, set())
    if unknown := set(opts) - allowed:
        raise TypeError(f"fault {kind!r} takes no option(s) {sorted(unknown)}")
    required = {"status": "status", "slow": "seconds", "trickle": "bytes_per_second"}.get(kind)
    if required and required not in opts:
        raise TypeError(f"fault {kind!r} needs the option {required!r}")


__all__ = [
    "DATA_DIR",
    "FakeCtgov",
    "QueryError",
    "RequestRecord",
    "all_study_ids",
    "load_study",
    "normalize_nct_id",
]
