"""The vocabulary of change events, shared by every stage: kinds, the study field, the clock
and the timestamp format (docs/architecture.md, "Change events")."""

from __future__ import annotations

import enum
from datetime import UTC, datetime


class ChangeKind(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


# The field of the events that say a whole study appeared or disappeared.
STUDY_FIELD = "study"


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the clock of observations, runs and deliveries."""
    return datetime.now(UTC)


def format_instant(value: datetime) -> str:
    """``2026-06-01T07:00:35Z``: the event timestamp format."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
