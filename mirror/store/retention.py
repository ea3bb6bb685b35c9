"""Keeping the database in shape: what each table holds, and the raw-JSON retention.

Raw JSON is what the registry served, kept so that ``/v1/studies/{id}/versions/{n}`` can
return it byte for byte. Canonical records and change events are what the mirror reasons
with, and they are kept forever. With ``database.raw_retention_days`` set, the raw JSON of
superseded versions (a newer version of the study exists) older than that many days is
dropped; the newest version of every study always keeps its raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Table, and_, exists, func, select, text, update
from sqlalchemy.orm import aliased

from mirror.logging import get_logger
from mirror.record import utcnow
from mirror.store.database import Database
from mirror.store.schema import Base, StudyVersion

log = get_logger(__name__)

PRUNE_BATCH = 5_000  # versions per transaction: a long prune never holds the writer lock long


@dataclass(frozen=True)
class TableStats:
    name: str
    rows: int
    bytes: int | None  # table, indexes and (PostgreSQL) TOAST; None when the backend can't say


def table_stats(db: Database) -> list[TableStats]:
    """Rows and bytes of every table of ctmirror's schema, largest first."""
    tables = [t for t in Base.metadata.sorted_tables if isinstance(t, Table)]
    with db.session() as session:
        rows = {t.name: session.scalar(select(func.count()).select_from(t)) or 0 for t in tables}
        if session.get_bind().dialect.name == "postgresql":
            query = text("SELECT pg_total_relation_size(CAST(:name AS regclass))")
            sizes = {t.name: session.scalar(query, {"name": t.name}) for t in tables}
        else:
            sizes = _sqlite_sizes(session.connection(), [t.name for t in tables])
    found = [TableStats(t.name, rows[t.name], sizes.get(t.name)) for t in tables]
    return sorted(found, key=lambda s: (-(s.bytes or 0), -s.rows, s.name))


def _sqlite_sizes(conn: object, names: list[str]) -> dict[str, int | None]:
    """Bytes per table with its indexes, from SQLite's ``dbstat`` (when compiled in)."""
    query = text(
        "SELECT coalesce(m.tbl_name, s.name) AS owner, sum(s.pgsize) FROM dbstat s "
        "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY owner"
    )
    try:
        found = dict(conn.execute(query).all())  # type: ignore[attr-defined]
    except Exception:  # dbstat is an optional SQLite feature
        return dict.fromkeys(names)
    return {name: int(found.get(name, 0)) for name in names}


def prune_raw(db: Database, days: int) -> int:
    """Drop the raw JSON of superseded versions observed more than ``days`` ago.

    Returns how many versions lost it. Runs in batches; safe to interrupt and run again.
    """
    cutoff = utcnow() - timedelta(days=days)
    newer = aliased(StudyVersion)
    superseded = exists().where(
        and_(
            newer.study_id == StudyVersion.study_id,
            newer.version > StudyVersion.version,
            newer.canonical.is_not(None),
        )
    )
    candidates = (
        select(StudyVersion.id)
        .where(StudyVersion.raw.is_not(None), StudyVersion.observed_at < cutoff, superseded)
        .limit(PRUNE_BATCH)
    )
    dropped = 0
    while True:
        with db.write() as session:
            ids = list(session.scalars(candidates))
            if ids:
                session.execute(
                    update(StudyVersion).where(StudyVersion.id.in_(ids)).values(raw=None)
                )
        dropped += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    log.info("db.prune_raw", days=days, versions=dropped)
    return dropped
