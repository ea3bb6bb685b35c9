"""The schema: SQLAlchemy models of studies, their versions, change events, watches and runs.

Versions and change events are append-only. Unique constraints, not care, make a
replayed sync idempotent: (study, version) for versions, (study, version, field)
for events. Alembic owns the schema (``alembic/versions``); ``ctmirror db check``
fails when these models and the migrations disagree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from mirror.record import ChangeKind, format_instant


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: ctmirror stores UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class JsonText(TypeDecorator[Any]):
    """JSON: JSONB on PostgreSQL; on SQLite, in a TEXT column, because SQLite gives a column
    declared JSON numeric affinity, which would turn a stored ``"501"`` into the integer 501.

    PostgreSQL's type is found when the engine first compiles a statement, not at import: its
    dialect module brings asyncio with it, which a read command would load for nothing.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":  # JSONB serializes its own
            return value
        return orjson.dumps(value).decode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return orjson.loads(value)


# Surrogate keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonValue = JsonText()
Blob = LargeBinary()  # BYTEA on PostgreSQL, BLOB on SQLite


def stored_enum(cls: type[enum.Enum]) -> Enum:
    return Enum(
        cls,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=16,
        validate_strings=True,
    )


class StudyState(enum.StrEnum):
    ACTIVE = "active"
    GONE = "gone"  # the registry answers 404
    MOVED = "moved"  # the id became an alias of another study (301)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"  # everything asked for was done
    PARTIAL = "partial"  # done, but some studies or records failed (each named in the log)
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def completed(self) -> bool:
        """The run went through, even if some of its studies failed."""
        return self in (RunStatus.OK, RunStatus.PARTIAL)


class WatchKind(enum.StrEnum):
    IDS = "ids"
    QUERY = "query"
    ALL = "all"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JsonValue}


class Study(Base):
    """One NCT id, with its latest version's state denormalized (the fast path reads only this)."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    nct_id: Mapped[str] = mapped_column(String(11), unique=True)
    state: Mapped[StudyState] = mapped_column(stored_enum(StudyState))
    alias_of: Mapped[str | None] = mapped_column(String(11))
    # Version numbers are identifiers in storage order: the highest one given so far.
    latest_version: Mapped[int] = mapped_column(Integer)
    # The version holding the study's current content: its newest record in time (a backfill
    # adds older versions with higher numbers; a tombstone keeps the last record's).
    content_version: Mapped[int | None] = mapped_column(Integer)
    # Hashes of that version.
    content_hash: Mapped[str | None] = mapped_column(String(32))
    part_hashes: Mapped[dict[str, Any] | None]
    source_date: Mapped[str | None] = mapped_column(String(10))
    title: Mapped[str | None] = mapped_column(String(1000))
    overall_status: Mapped[str | None] = mapped_column(String(40), index=True)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class StudyVersion(Base):
    """A distinct version of a study: raw JSON as fetched and its canonical record, zstd-compressed.

    A tombstone (the study is gone or moved) has neither.
    """

    __tablename__ = "study_versions"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        # A registry version is stored once, however often a backfill is run or resumed.
        Index(None, "study_id", "registry_version", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    version: Mapped[int] = mapped_column(Integer)
    observed_at: Mapped[datetime]
    source_date: Mapped[str | None] = mapped_column(String(10))
    origin: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str | None] = mapped_column(String(32))
    part_hashes: Mapped[dict[str, Any] | None]
    raw: Mapped[bytes | None] = mapped_column(Blob)
    canonical: Mapped[bytes | None] = mapped_column(Blob)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))
    # The registry's own version number (0 = first), when known: from a history backfill.
    registry_version: Mapped[int | None] = mapped_column(Integer)

    @property
    def in_time(self) -> tuple[str, datetime, int]:
        """Where the version stands in its study's history. Version numbers are identifiers
        in storage order, not places in time (a backfill stores the past after the present):
        this orders by the registry's date of the version, then when it was observed, then
        its registry number (else its own)."""
        return in_time(self.source_date, self.observed_at, self.registry_version, self.version)


def in_time(
    source_date: str | None, observed_at: datetime, registry_version: int | None, version: int
) -> tuple[str, datetime, int]:
    """:attr:`StudyVersion.in_time` of a version, stored or about to be."""
    day = source_date or observed_at.astimezone(UTC).date().isoformat()
    return day, observed_at, version if registry_version is None else registry_version


class ChangeEvent(Base):
    """One changed field of one study version. ``id`` is the change-feed cursor."""

    __tablename__ = "change_events"
    __table_args__ = (
        UniqueConstraint("study_id", "version", "field"),
        Index(None, "nct_id", "id"),
        Index(None, "field", "id"),
        Index(None, "observed_at"),
        {"sqlite_autoincrement": True},  # ids are never reused, even after the newest row is lost
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(512))
    kind: Mapped[ChangeKind] = mapped_column(stored_enum(ChangeKind))
    old: Mapped[Any | None] = mapped_column(JsonValue)
    new: Mapped[Any | None] = mapped_column(JsonValue)
    observed_at: Mapped[datetime]
    source_date: Mapped[str | None] = mapped_column(String(10))
    initial: Mapped[bool] = mapped_column(Boolean)

    def as_dict(self) -> dict[str, Any]:
        """The event exactly as docs/architecture.md shows it."""
        return {
            "id": self.id,
            "nct_id": self.nct_id,
            "version": self.version,
            "field": self.field,
            "kind": self.kind.value,
            "old": self.old,
            "new": self.new,
            "observed_at": format_instant(self.observed_at),
            "source_date": self.source_date,
            "initial": self.initial,
        }


class EventBlock(Base):
    """The events of a study's first version, held as one row (``mirror.store.blocks``).

    A first version records every field of its canonical record as ``added`` with ``initial:
    true``, about 74 events per study that repeat the record itself. They are not stored one by
    one: the feed ids ``first_id`` … ``last_id`` are reserved for them, one per field in the
    record's key order, and readers expand the block into exactly those events, taking the
    values from the version's canonical record. ``fields`` is the JSON list of the field names
    in that order (kept apart from the record so that filters on fields run in SQL).
    """

    __tablename__ = "event_blocks"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        Index(None, "last_id", unique=True),
        Index(None, "observed_at"),
    )

    first_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(BigInteger)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    observed_at: Mapped[datetime]
    source_date: Mapped[str | None] = mapped_column(String(10))
    fields: Mapped[str] = mapped_column(Text)  # last: long lists spill out of SQLite's page


class Watch(Base):
    """What to mirror: a list of ids, a saved search, or the whole registry."""

    __tablename__ = "watches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[WatchKind] = mapped_column(stored_enum(WatchKind))
    nct_ids: Mapped[list[str]] = mapped_column(JsonValue)
    query: Mapped[dict[str, Any]]
    schedule: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    last_full_run_at: Mapped[datetime | None]
    # The registry's LastUpdatePostDate high-water mark, for incremental runs.
    since_date: Mapped[str | None] = mapped_column(String(10))


class WatchStudy(Base):
    """Which studies a watch covers (ids watches: its ids; searches: what the search returned)."""

    __tablename__ = "watch_studies"

    watch_id: Mapped[int] = mapped_column(
        ForeignKey("watches.id", ondelete="CASCADE"), primary_key=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)


class SyncRun(Base):
    """One pass of the pipeline, with its counts; ``running`` rows of dead processes are marked
    ``interrupted`` by the next run on the same host."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[RunStatus] = mapped_column(stored_enum(RunStatus))
    selection: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    gone: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


# -- the daemon's queues -------------------------------------------------------------------


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class VersionClassRow(Base):
    """One change class of one study version (``mirror.record.classes``), e.g. ``dates.slipped``."""

    __tablename__ = "version_classes"
    __table_args__ = (
        UniqueConstraint("study_id", "version", "position"),
        Index(None, "name", "study_id", "version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    nct_id: Mapped[str] = mapped_column(String(11))
    version: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)  # order within the version
    name: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JsonValue)


class SyncJob(Base):
    """A due run of a watch, queued by the scheduler and claimed by any daemon's worker.

    A full run of a big watch is queued as several *parts* (``mirror.daemon.jobs``): rows of one
    ``group_id`` (the first part's id), each reading a slice of the watch (``part``), claimed
    and run independently, so that daemons on several hosts share the run.
    """

    __tablename__ = "sync_jobs"
    __table_args__ = (
        Index(None, "status", "id"),
        Index(None, "watch_id", "status"),
        Index(None, "group_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    watch_id: Mapped[int] = mapped_column(ForeignKey("watches.id", ondelete="CASCADE"))
    full: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[JobStatus] = mapped_column(stored_enum(JobStatus))
    queued_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))
    error: Mapped[str | None] = mapped_column(Text)
    # A part of a split run: {"ids": [...]} or {"updated": [from, to]} (mirror.pipeline.sync.Part).
    part: Mapped[dict[str, Any] | None]
    group_id: Mapped[int | None] = mapped_column(BigInteger)  # None: a run in one piece
    parts: Mapped[int] = mapped_column(Integer, default=1)  # how many parts its run has


class ImportBatch(Base):
    """A range of an archive's records in one import (``ctmirror import``, docs/import.md).

    An import of an archive is the rows of one (``archive``, ``round``); a worker claims a
    ``queued`` batch (or a ``running`` one whose lease ran out) with ``FOR UPDATE SKIP LOCKED``,
    renews ``lease_until`` while it writes, and stores its counts when it is done.
    """

    __tablename__ = "import_batches"
    __table_args__ = (
        UniqueConstraint("archive", "round", "position"),
        Index(None, "archive", "round", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The archive's identity (mirror.source.archive): the same file gives the same key on any host.
    archive: Mapped[str] = mapped_column(String(64))
    round: Mapped[int] = mapped_column(Integer)  # 1 = its first import, 2 = the next, …
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(1000))  # the path as the planning worker saw it
    first_record: Mapped[int] = mapped_column(Integer)  # zip member / file / line number, from 0
    records: Mapped[int] = mapped_column(Integer)
    # Where the first record starts (zip: its local header; NDJSON: its line); None: a directory.
    byte_offset: Mapped[int | None] = mapped_column(BigInteger)
    observed_at: Mapped[datetime]  # the same for every batch of an import
    status: Mapped[JobStatus] = mapped_column(stored_enum(JobStatus))
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))  # the run that did it
    finished_at: Mapped[datetime | None]
    read: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # {"failures": [[label, error], …] (the first 100), "damage": why the batch ended early}
    errors: Mapped[dict[str, Any] | None]
