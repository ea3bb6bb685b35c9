"""The completeness audits' results (``mirror.export.audit``): one row per audit of a watch,
so that any process (``/healthz``, ``ctmirror audit``) can tell what the last one found."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mirror.store.schema import Base, BigId, JsonValue


class AuditRun(Base):
    """What one audit of a watch found: how many studies the registry lists for it, how many
    the mirror holds, and which are missing, extra (no longer listed) or stale (not seen for
    longer than the watch's schedule allows). ``detail`` holds the ids (at most 1,000 of each)."""

    __tablename__ = "audit_runs"
    __table_args__ = (Index(None, "watch_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    watch_id: Mapped[int | None] = mapped_column(ForeignKey("watches.id", ondelete="SET NULL"))
    watch_name: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # ok, incomplete, failed
    registry_total: Mapped[int | None] = mapped_column(Integer)
    mirror_total: Mapped[int] = mapped_column(Integer)
    missing: Mapped[int] = mapped_column(Integer)
    extra: Mapped[int] = mapped_column(Integer)
    stale: Mapped[int] = mapped_column(Integer)
    ids_compared: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonValue)
    error: Mapped[str | None] = mapped_column(Text)
