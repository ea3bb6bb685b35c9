"""Where study records come from: what every source hands over (``base``), the ClinicalTrials.gov
API v2 client with record history (``api``), the archive readers (``archive``) and saved
searches (``search``).
"""

import importlib
import typing

from mirror.source.archive import (
    DirectoryArchive,
    NdjsonArchive,
    ZipArchive,
    open_archive,
    to_observation,
)
from mirror.source.base import (
    ArchiveDamaged,
    Disappearance,
    FetchFailure,
    FetchItem,
    HistoryEntry,
    HistorySource,
    NotModified,
    Observation,
    Page,
    Record,
    RecordSource,
    Span,
    StudySource,
)
from mirror.source.search import check_search, parse_query, updated_between

if typing.TYPE_CHECKING:
    from mirror.source.api import ApiSource

__all__ = [
    "ApiSource",
    "ArchiveDamaged",
    "DirectoryArchive",
    "Disappearance",
    "FetchFailure",
    "FetchItem",
    "HistoryEntry",
    "HistorySource",
    "NdjsonArchive",
    "NotModified",
    "Observation",
    "Page",
    "Record",
    "RecordSource",
    "Span",
    "StudySource",
    "ZipArchive",
    "check_search",
    "open_archive",
    "parse_query",
    "to_observation",
    "updated_between",
]


def __getattr__(name: str) -> typing.Any:
    # The API client (and httpx) is imported on first use: importing an archive never needs it.
    if name != "ApiSource":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(f"{__name__}.api").ApiSource
    globals()[name] = value
    return value
