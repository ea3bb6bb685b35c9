"""What the ingest stage holds between reading a batch and writing it: the outcome of each
record, a record normalized (:class:`Prepared`), left unnormalized (:class:`Pending`) or not
parsed yet (:class:`Sighting`), and the rows a batch will write (:class:`Writes`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mirror.record import Canonical
from mirror.source import NotModified, Observation, Record, to_observation
from mirror.store import compress


class Outcome(enum.StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class IngestResult:
    nct_id: str
    outcome: Outcome
    version: int | None = None
    events: int = 0
    error: str | None = None


@dataclass(slots=True)
class Prepared:
    """An observation normalized and hashed."""

    obs: Observation
    record: Canonical
    encoded: bytes  # the record as JSON (mirror.record.normalize.encode), as stored
    parts: dict[str, str]
    hash: str
    source_date: str | None
    fingerprint: str | None = None
    # raw and record zstd-compressed, when made before the write transaction (see _item)
    blobs: tuple[bytes, bytes] | None = None

    def compressed(self) -> tuple[bytes, bytes]:
        """The raw JSON and the record as stored: zstd-compressed."""
        if self.blobs is None:
            self.blobs = (compress(self.obs.raw), compress(self.encoded))
        return self.blobs


@dataclass(frozen=True, slots=True)
class Sighting:
    """A record an archive holds, not parsed yet: ``nct_id`` is a guess from its bytes (its
    raw fingerprint can only match the stored one of that study if the guess is right)."""

    nct_id: str
    raw: bytes
    observed_at: datetime
    label: str

    def parsed(self) -> Observation:
        """The record as an observation (MalformedRecord when it is none)."""
        return to_observation(Record(self.label, self.raw), self.observed_at)


@dataclass(slots=True)
class Pending:
    """A record left unnormalized: its fingerprints matched the stored ones (``stored``) when
    read, or the registry said it is the stored one (NotModified). ``renewed``: the
    fingerprints to store instead (its bytes moved, not its content)."""

    obs: Observation | Sighting | NotModified
    stored: str | None
    renewed: str | None = None


Item = Prepared | Pending


@dataclass(slots=True)
class Writes:
    """Rows one batch will write, accumulated before touching the database.

    ``events`` are tuples in ``EVENT_COLUMNS`` order made by :meth:`Ingestor.event_rows`.
    """

    new_studies: list[dict[str, Any]] = field(default_factory=list)
    study_updates: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[int, datetime]] = field(default_factory=list)  # (study id, last seen)
    fingerprints: list[dict[str, Any]] = field(default_factory=list)  # b_id, parts
    renewed: list[dict[str, Any]] = field(default_factory=list)  # b_id, fingerprint
    versions: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # mirror.store.blocks.block_row
    classes: list[dict[str, Any]] = field(default_factory=list)
    members: list[int] = field(default_factory=list)  # studies inserted ahead of the flush
    results: list[IngestResult] = field(default_factory=list)

    def clear_rows(self) -> None:
        """Forget the rows (once written); the results stay."""
        self.new_studies, self.study_updates, self.seen, self.fingerprints = [], [], [], []
        self.renewed = []
        self.versions, self.events, self.classes, self.members = [], [], [], []
        self.blocks = []
