"""The one path data takes: observations become versions, change events, classes and outbox rows
in one transaction (``ingest``), driven by syncs, imports and backfills; watches; the run record.
"""

from mirror.pipeline.backfill import Backfiller, BackfillRequest, BackfillSummary, reclassify
from mirror.pipeline.importer import Importer, ImportSummary, auto_workers, run_workers
from mirror.pipeline.ingest import Ingestor
from mirror.pipeline.ingest_items import IngestResult, Outcome, Sighting
from mirror.pipeline.runs import relaxed_gc
from mirror.pipeline.sync import Part, RunSummary, Syncer, SyncRequest
from mirror.pipeline.watches import (
    INTERVAL,
    WATCH_NAME,
    add_watch,
    describe,
    get_watch,
    list_watches,
    remove_watch,
    validate_schedule,
)

__all__ = [
    "BackfillRequest",
    "BackfillSummary",
    "Backfiller",
    "INTERVAL",
    "ImportSummary",
    "Importer",
    "IngestResult",
    "Ingestor",
    "Sighting",
    "Outcome",
    "Part",
    "RunSummary",
    "SyncRequest",
    "Syncer",
    "WATCH_NAME",
    "add_watch",
    "auto_workers",
    "describe",
    "get_watch",
    "list_watches",
    "reclassify",
    "relaxed_gc",
    "remove_watch",
    "run_workers",
    "validate_schedule",
]
