"""The rows the ingest stage writes, and the fast way they reach the database.

Change events are most of what a sync writes (a first version has one per field), so they
skip the ORM and SQLAlchemy's per-row type processing: :class:`RowWriter` turns values into
what the driver stores (JSON text, SQLite's datetime text) once, and hands whole batches to
the driver's ``executemany`` (SQLite) or ``COPY`` (PostgreSQL). The stored values are exactly
those the ORM would store, so every reader sees the same rows.

Also here: what the fast path reads (:class:`StudyHead`, one row per study with its hashes),
the previous canonical records of changed studies, and zstd with reused contexts.
"""

from __future__ import annotations

import importlib
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import zstandard
from sqlalchemy import (
    Dialect,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mirror.record import Canonical, ChangeKind, VersionClass
from mirror.store.schema import (
    Base,
    Study,
    StudyState,
    StudyVersion,
    UTCDateTime,
    VersionClassRow,
    WatchStudy,
)

EVENT_COLUMNS = (
    "study_id", "nct_id", "version", "field", "kind", "old", "new", "observed_at", "source_date",
    "initial",
)  # fmt: skip
VERSION_COLUMNS = (
    "study_id", "version", "observed_at", "source_date", "origin", "content_hash", "part_hashes",
    "raw", "canonical", "run_id", "registry_version",
)  # fmt: skip
OUTBOX_COLUMNS = ("study_id", "nct_id", "version", "origin", "created_at")
BLOCK_COLUMNS = ("first_id", "last_id", "study_id", "nct_id", "version", "observed_at",
                 "source_date", "fields")  # fmt: skip
# studies.part_hashes also keeps the fingerprints of the raw record it was computed from
# (mirror.record.fingerprints), under a key no area can have.
FINGERPRINT_KEY = "~raw"
# ... and the validator (HTTP ETag) of the answer it came in, for a conditional re-read.
ETAG_KEY = "~etag"


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


STUDIES = _table(Study)
_version_classes = _table(VersionClassRow)


class StudyHead(NamedTuple):
    """What deciding about a re-read needs of a stored study: read for every study of a batch."""

    id: int
    nct_id: str
    state: StudyState
    latest_version: int
    content_hash: str | None
    fingerprint: str | None
    etag: str | None


class StudyRow(NamedTuple):
    """The rest of a stored study's row: read only for studies that get a new version."""

    id: int
    nct_id: str
    state: StudyState
    alias_of: str | None
    latest_version: int
    content_version: int | None
    content_hash: str | None
    part_hashes: dict[str, Any] | None
    source_date: str | None
    title: str | None
    overall_status: str | None
    last_seen_at: datetime

    @property
    def area_hashes(self) -> dict[str, str] | None:
        """``part_hashes`` without the fingerprint: what ``diff_records`` compares."""
        if self.part_hashes is None:
            return None
        return {k: v for k, v in self.part_hashes.items() if not k.startswith("~")}


# Statements made once: SQLAlchemy then only expands the IN list of each call.
_NCT_IDS_IN = STUDIES.c.nct_id.in_(bindparam("nct_ids", expanding=True))
_ROWS_QUERY = select(*[STUDIES.c[name] for name in StudyRow._fields]).where(_NCT_IDS_IN)


# The fast path's one query per batch, at the driver: a constant statement with the batch's ids
# as one parameter (SQLAlchemy would render an IN list of 200 parameters for every batch).
_HEADS_SQL = {
    "sqlite": "SELECT id, nct_id, state, latest_version, content_hash,"
    f" json_extract(part_hashes, '$.\"{FINGERPRINT_KEY}\"'),"
    f" json_extract(part_hashes, '$.\"{ETAG_KEY}\"') FROM studies"
    " WHERE nct_id IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT id, nct_id, state, latest_version, content_hash,"
    f" part_hashes ->> '{FINGERPRINT_KEY}', part_hashes ->> '{ETAG_KEY}' FROM studies"
    " WHERE nct_id = ANY(%s)",
}


def load_heads(session: Session, nct_ids: Iterable[str]) -> dict[str, StudyHead]:
    """The stored studies among ``nct_ids``, by NCT id: one query."""
    wanted = list(set(nct_ids))
    if not wanted:
        return {}
    dialect = session.get_bind().dialect.name
    param = wanted if dialect == "postgresql" else orjson.dumps(wanted).decode()
    rows = session.connection().exec_driver_sql(_HEADS_SQL[dialect], (param,))
    return {
        nct_id: StudyHead(id_, nct_id, StudyState(state), latest, content, print_, etag)
        for id_, nct_id, state, latest, content, print_, etag in rows
    }


def load_rows(session: Session, nct_ids: Iterable[str]) -> dict[str, StudyRow]:
    """The whole rows of the stored studies among ``nct_ids``, by NCT id: one query."""
    wanted = list(set(nct_ids))
    if not wanted:
        return {}
    rows = session.execute(_ROWS_QUERY, {"nct_ids": wanted})
    return {row.nct_id: StudyRow._make(row) for row in rows}


def load_canonicals(session: Session, study_ids: Sequence[int]) -> dict[int, Canonical]:
    """The current canonical record of each study (its ``content_version``): one query."""
    if not study_ids:
        return {}
    rows = session.execute(
        select(StudyVersion.study_id, StudyVersion.canonical)
        .join(Study, Study.id == StudyVersion.study_id)
        .where(Study.id.in_(study_ids), StudyVersion.version == Study.content_version)
    )
    return {study_id: orjson.loads(decompress(blob)) for study_id, blob in rows if blob}


class RowWriter:
    """Driver-level inserts for one dialect, with values in the form the ORM would store."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.postgres = dialect.name == "postgresql"
        self._bind_instant = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._instants: dict[datetime, Any] = {}

    def instant(self, value: datetime) -> Any:
        """A UTC datetime as the driver gets it (SQLite: SQLAlchemy's text form)."""
        stored = self._instants.get(value)
        if stored is None:
            if len(self._instants) > 10_000:
                self._instants.clear()
            stored = self._bind_instant(value) if self._bind_instant else value
            self._instants[value] = stored
        return stored

    @staticmethod
    def json(value: Any) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def insert(self, session: Session, table: str, columns: Sequence[str], rows: list[Any]) -> None:
        """Insert ``rows`` (tuples in ``columns`` order, values already in stored form)."""
        if not rows:
            return
        if self.postgres:
            self._copy(session, table, columns, rows)
            return
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        session.connection().exec_driver_sql(sql, rows)

    def _copy(self, session: Session, table: str, columns: Sequence[str], rows: list[Any]) -> None:
        import psycopg

        driver = session.connection().connection.driver_connection
        assert driver is not None
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.IntegrityError as exc:
            # As SQLAlchemy reports it, so callers handle one kind of conflict.
            raise IntegrityError(sql, None, exc) from exc

    def version(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """A planned version row (``Ingestor.version_row``) as stored."""
        stored = dict(row)
        stored["observed_at"] = self.instant(row["observed_at"])
        stored["part_hashes"] = self.json(row["part_hashes"])
        return tuple(stored[column] for column in VERSION_COLUMNS)

    def block(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """A planned event block (``mirror.store.blocks.block_row``, ids assigned) as stored."""
        stored = dict(row)
        stored["observed_at"] = self.instant(row["observed_at"])
        return tuple(stored[column] for column in BLOCK_COLUMNS)

    def study(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """A new ``studies`` row (``STUDY_COLUMNS``) as stored."""
        stored = dict(row)
        stored["state"] = row["state"].value
        for column in ("first_seen_at", "last_seen_at"):
            stored[column] = self.instant(row[column])
        stored["part_hashes"] = self.json(row["part_hashes"])
        return tuple(stored[column] for column in STUDY_COLUMNS)

    def outbox(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The outbox row of a planned version row."""
        at = self.instant(row["observed_at"])
        return (row["study_id"], row["nct_id"], row["version"], row["origin"], at)


def _event_values(
    study_id: int,
    nct_id: str,
    version: int,
    kind: ChangeKind,
    observed_at: Any,
    source_date: str | None,
    initial: bool,
    changes: Iterable[tuple[str, Any, Any]],
) -> list[tuple[Any, ...]]:
    """Event rows (``EVENT_COLUMNS``) of one version; ``changes``: (field, old JSON, new JSON)."""
    kind_value = kind.value
    return [
        (study_id, nct_id, version, field, kind_value, old, new, observed_at, source_date, initial)
        for field, old, new in changes
    ]


def class_rows(
    study_id: int | None, nct_id: str, version: int, classes: Iterable[VersionClass]
) -> list[dict[str, Any]]:
    """Rows of ``version_classes`` for the classes of one version, in order."""
    return [
        {
            "study_id": study_id,
            "nct_id": nct_id,
            "version": version,
            "position": position,
            "name": c.name,
            "params": dict(c.params),
        }
        for position, c in enumerate(classes)
    ]


# Event ids are the feed cursor: a reader that has seen id N must never later find an id below N.
# PostgreSQL hands out sequence values at insert time, not commit time, so writers take this
# lock before their events get ids and hold it until commit. (SQLite writers are serialized by
# BEGIN IMMEDIATE already.)
FEED_LOCK_KEY = 0x63746D6972726F72  # "ctmirror"


def lock_feed(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FEED_LOCK_KEY})


def add_watch_members(session: Session, watch_id: int, study_ids: Iterable[int]) -> None:
    rows = [{"watch_id": watch_id, "study_id": sid} for sid in set(study_ids)]
    if not rows:
        return
    session.execute(insert_skipping_duplicates(WatchStudy, session), rows)


def insert_skipping_duplicates(model: Any, session: Session, **conflict: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` into ``model``'s table, in the session's dialect.

    ``conflict``: ``on_conflict_do_nothing``'s arguments (which unique key). The dialect is
    imported here, not at start-up: PostgreSQL's brings asyncio with it.
    """
    dialect = importlib.import_module(f"sqlalchemy.dialects.{session.get_bind().dialect.name}")
    return dialect.insert(model).on_conflict_do_nothing(**conflict)


CONTENT_COLUMNS = ("content_hash", "part_hashes", "source_date", "title", "overall_status")
# Executed with many parameter sets at once; "b_id" avoids clashing with the SET columns.
_STUDY_UPDATE = (
    update(STUDIES)
    .where(STUDIES.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        alias_of=bindparam("alias_of"),
        latest_version=bindparam("latest_version"),
        content_version=bindparam("content_version"),
        last_seen_at=bindparam("last_seen_at"),
        **{column: bindparam(column) for column in CONTENT_COLUMNS},
    )
)
_FINGERPRINT_UPDATE = (
    update(STUDIES).where(STUDIES.c.id == bindparam("b_id")).values(part_hashes=bindparam("parts"))
)


# The batch's ids as one parameter, as in _HEADS_SQL.
_SEEN_SQL = {
    "sqlite": "UPDATE studies SET last_seen_at = ? WHERE id IN (SELECT value FROM json_each(?))"
    " AND last_seen_at < ?",
    "postgresql": "UPDATE studies SET last_seen_at = %s WHERE id = ANY(%s) AND last_seen_at < %s",
}
# Only the fingerprint and the validator inside part_hashes (the part hashes stay as they are).
_RENEW_SQL = {
    "sqlite": "UPDATE studies SET part_hashes = json_set(part_hashes,"
    f" '$.\"{FINGERPRINT_KEY}\"', ?, '$.\"{ETAG_KEY}\"', ?) WHERE id = ?",
    "postgresql": "UPDATE studies SET part_hashes = part_hashes || jsonb_build_object("
    f"'{FINGERPRINT_KEY}', %s::text, '{ETAG_KEY}', %s::text) WHERE id = %s",
}


STUDY_COLUMNS = (
    "nct_id", "state", "alias_of", "latest_version", "content_version", "first_seen_at",
    "last_seen_at",
    *CONTENT_COLUMNS,
)  # fmt: skip


def insert_studies(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert ``studies`` rows (``STUDY_COLUMNS``); their ids by NCT id."""
    if not rows:
        return {}
    writer = RowWriter(session.get_bind().dialect)
    writer.insert(session, "studies", STUDY_COLUMNS, [writer.study(row) for row in rows])
    heads = load_heads(session, [row["nct_id"] for row in rows])
    return {nct_id: head.id for nct_id, head in heads.items()}


def update_studies(
    session: Session,
    updates: list[dict[str, Any]],
    fingerprints: list[dict[str, Any]],
    seen: list[tuple[int, datetime]],
    renewed: Sequence[dict[str, Any]] = (),
) -> None:
    """Apply whole-row ``updates`` (``b_id``: the study), new part hashes with their
    fingerprint (``b_id``, ``parts``), ``last_seen_at`` times (study id, time) and new
    fingerprints and validators alone (``b_id``, ``fingerprint``, ``etag``)."""
    conn = session.connection()
    if updates:
        conn.execute(_STUDY_UPDATE, updates)
    if fingerprints:
        conn.execute(_FINGERPRINT_UPDATE, fingerprints)
    if renewed:
        rows = [(r["fingerprint"], r["etag"], r["b_id"]) for r in renewed]
        conn.exec_driver_sql(_RENEW_SQL[conn.dialect.name], rows)
    by_time: defaultdict[datetime, list[int]] = defaultdict(list)
    for study_id, seen_at in seen:
        by_time[seen_at].append(study_id)
    dialect = conn.dialect.name
    instant = RowWriter(conn.dialect).instant
    for seen_at, study_ids in by_time.items():
        # One statement per distinct time (a batch usually has one), not one per study; an
        # older observation (an archive of last week imported today) never moves it back.
        ids = study_ids if dialect == "postgresql" else orjson.dumps(study_ids).decode()
        at = instant(seen_at)
        conn.exec_driver_sql(_SEEN_SQL[dialect], (at, ids, at))


def insert_classes(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(_version_classes), rows)


# zstd contexts are costly to make and not thread-safe: one of each per thread.
_zstd = threading.local()


def compress(data: bytes) -> bytes:
    compressor = getattr(_zstd, "compressor", None)
    if compressor is None:
        compressor = _zstd.compressor = zstandard.ZstdCompressor(level=1)
    return bytes(compressor.compress(data))


def decompress(data: bytes) -> bytes:
    decompressor = getattr(_zstd, "decompressor", None)
    if decompressor is None:
        decompressor = _zstd.decompressor = zstandard.ZstdDecompressor()
    return bytes(decompressor.decompress(data))
