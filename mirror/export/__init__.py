"""Data for analysts: the mirror's tables exported to Parquet, CSV, NDJSON or a plain SQLite
file (``run``, ``tables``, ``writers``), and the completeness audit against the registry
(``audit``).
"""

from mirror.export.audit import (
    AuditResult,
    audit_watch,
    last_audit,
    record_audit,
    summary_status,
    watches_to_audit,
)
from mirror.export.run import ExportSummary, export
from mirror.export.tables import TABLES, ExportFilter
from mirror.export.writers import FORMATS

__all__ = [
    "AuditResult",
    "ExportFilter",
    "ExportSummary",
    "FORMATS",
    "TABLES",
    "audit_watch",
    "export",
    "last_audit",
    "record_audit",
    "summary_status",
    "watches_to_audit",
]
