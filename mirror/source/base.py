"""What a source hands over, and the protocols a source implements.

Every source of study records produces the same things: an :class:`Observation` (one study
record as read, raw bytes and parsed object), a :class:`NotModified` (a conditional re-read the
registry answered 304: the record is the one read before, and no body came), a
:class:`Disappearance` (the registry no longer has the study, or it became an alias of another)
or a :class:`FetchFailure`, in :class:`Page` s. The
pipeline (``mirror.pipeline``) consumes them and knows nothing of HTTP or archives.

Three kinds of source implement these contracts:

* :class:`StudySource`: a registry read by id and by saved search (``mirror.source.api``);
* :class:`HistorySource`: a registry that keeps every version of a record (the same client);
* :class:`RecordSource`: an archive of records read in batches, whole or by span
  (``mirror.source.archive``: the bulk zip, a directory, NDJSON).

docs/architecture.md says how to add a source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from mirror.errors import MirrorError


@dataclass(frozen=True, slots=True)
class Observation:
    """One study record as a source returned it."""

    nct_id: str
    raw: bytes  # the JSON exactly as fetched
    study: Mapping[str, Any]
    observed_at: datetime
    origin: str = "api"
    # The registry's date for this version; default: the record's LastUpdatePostDate.
    source_date: str | None = None
    registry_version: int | None = None  # the registry's version number (history backfill)
    # The validator of the answer it came in (HTTP ETag), kept with the study for a conditional
    # re-read (``StudySource.by_ids``'s ``validators``).
    etag: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    """A conditional re-read answered 304: the study's record is still the one read with
    ``etag``."""

    nct_id: str
    observed_at: datetime
    etag: str


@dataclass(frozen=True, slots=True)
class Disappearance:
    """The registry no longer has ``nct_id`` (404), or it became an alias (301) of ``alias_of``."""

    nct_id: str
    observed_at: datetime
    alias_of: str | None = None


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """The source could say nothing about ``nct_id`` (retries ran out, or it answered nonsense)."""

    nct_id: str
    error: str


FetchItem = Observation | NotModified | Disappearance | FetchFailure


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One version of a record in the registry's history."""

    version: int  # the registry's version number (0 = first)
    date: str  # YYYY-MM-DD, the registry's date of that version
    status: str | None  # overall status listed for that version


@dataclass(slots=True)
class Page:
    """What one step of a fetch produced, and how many studies the whole fetch expects."""

    items: list[FetchItem] = field(default_factory=list)
    total: int | None = None


class StudySource(Protocol):
    """A registry that can be read by id and by saved search.

    ``by_ids`` yields, for each requested id, an Observation, a Disappearance (404 or a
    merged id) or a FetchFailure; given ``validators`` (NCT id -> the ``etag`` of the
    observation stored), it may ask conditionally and yield a NotModified instead of an
    Observation whose record is the stored one. ``search`` yields Observations of every study that
    matches ``params``, restricted to those updated on or after ``since`` when given;
    it raises SourceError when the search itself cannot be completed.
    """

    def by_ids(
        self, nct_ids: Sequence[str], validators: Mapping[str, str] | None = None
    ) -> AsyncIterator[Page]: ...

    def search(
        self, params: Mapping[str, str], since: date | None = None
    ) -> AsyncIterator[Page]: ...


class HistorySource(Protocol):
    """A registry that keeps every version of a record.

    ``history`` lists the versions of one study, oldest first, or None when the registry does
    not know the id; ``history_version`` returns one version as (raw JSON, API v2 study object).
    Both raise SourceError when the registry cannot be read or answers nonsense.
    """

    async def history(self, nct_id: str) -> list[HistoryEntry] | None: ...

    async def history_version(self, nct_id: str, version: int) -> tuple[bytes, dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One study record as the archive holds it, and where it is (for messages)."""

    label: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Span:
    """Records ``first`` … ``first + count - 1`` of an archive (members, files or lines).

    ``offset`` is the byte where the first of them starts (zip, NDJSON), so that a worker seeks
    there instead of reading everything before it.
    """

    first: int
    count: int
    offset: int | None = None


class ArchiveDamaged(MirrorError):
    """The archive cannot be read past some point; the records before it were read."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}")


class RecordSource(Protocol):
    """An archive of study records.

    ``batches(size)`` reads it all in order; ``batches(size, span)`` reads one span of it
    (only when ``key`` is not None). Both raise :class:`ArchiveDamaged` where the archive
    cannot be read further, after yielding every record before that point.
    """

    name: str  # for messages and the run's selection
    key: str | None  # identity of the archive; None: it can only be read in order
    total: int | None  # records, when known before reading

    def spans(self, size: int) -> Iterator[Span]:
        """The archive cut into consecutive spans of ``size`` records."""
        ...

    def batches(self, size: int, span: Span | None = None) -> Iterator[list[Record]]:
        """Records in lists of at most ``size``: all of them, or those of ``span``."""
        ...
