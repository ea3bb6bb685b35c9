"""Where study records come from: what every source hands over (``base``), the ClinicalTrials.gov
API v2 client with record history (``api``), the archive readers (``archive``) and saved
searches (``search``).
"""

from mirror.source.api import ApiSource
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
