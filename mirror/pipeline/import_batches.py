"""The ``import_batches`` table: an archive's import cut into batches that workers claim.

The first worker of an import plans it: one row per span of the archive (``batch_size``
records), all with the same ``observed_at``. Any worker then claims the first ``queued`` row
(or a ``running`` one whose lease ran out) with ``FOR UPDATE SKIP LOCKED`` (on SQLite write
transactions are serialized), renews the leases of what it holds while it writes, and marks a
batch ``done`` (or ``failed``: the archive is damaged inside it) with its counts once its write
has committed, only if it still holds it. A worker that stops gives its batches back; one that
died loses them when their lease runs out. An import is finished when no row is open; the next
import of the same archive is a new ``round``.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update

from mirror.errors import UsageError
from mirror.logging import get_logger
from mirror.pipeline.runs import process_alive
from mirror.record import utcnow
from mirror.source import RecordSource, Span
from mirror.store import Database, ImportBatch, JobStatus, insert_skipping_duplicates

log = get_logger(__name__)

COUNTS = ("read", "new", "changed", "unchanged", "failed")
KEPT_FAILURES = 100  # per batch row
OPEN = (JobStatus.QUEUED, JobStatus.RUNNING)
ENDED = (JobStatus.DONE, JobStatus.FAILED)


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (record label, error)
    damage: list[str] = field(default_factory=list)  # why the archive could not be read further

    def fail(self, label: str, error: str) -> None:
        self.counts["failed"] += 1
        self.failures.append((label, error))
        log.warning("import.record_failed", record=label, error=error)

    def add(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.failures += other.failures
        self.damage += other.damage


@dataclass(frozen=True)
class ImportRound:
    """One import of one archive: the rows of ``import_batches`` with this archive and round."""

    archive: str
    round: int
    observed_at: datetime
    total: int  # records in all its batches
    done: int  # records in its batches finished so far


@dataclass(frozen=True)
class ClaimedBatch:
    id: int
    position: int
    first: int
    count: int
    offset: int | None

    @property
    def span(self) -> Span:
        return Span(self.first, self.count, self.offset)


def open_round(
    db: Database, source: RecordSource, size: int, observed_at: datetime | None = None
) -> ImportRound:
    """Join the unfinished import of ``source``'s archive, or plan a new one."""
    assert source.key is not None, "only an archive that can be split has batches"
    with db.session() as session:
        latest = session.execute(
            select(ImportBatch.round, func.count().filter(ImportBatch.status.in_(OPEN)))
            .where(ImportBatch.archive == source.key)
            .group_by(ImportBatch.round)
            .order_by(ImportBatch.round.desc())
            .limit(1)
        ).first()
    number = latest[0] if latest is not None else 0
    if latest is None or not latest[1]:
        number += 1
        _plan(db, source, number, size, observed_at or utcnow())
    found = _describe_round(db, source.key, number)
    if observed_at is not None and found is not None and found.observed_at != observed_at:
        raise UsageError(
            f"an unfinished import of {source.name} (observed at {found.observed_at.isoformat()}) "
            "is under way or was interrupted: this process joins it; leave out --observed-at "
            "or give the same time"
        )
    return found or ImportRound(source.key, number, observed_at or utcnow(), 0, 0)


def _plan(db: Database, source: RecordSource, number: int, size: int, when: datetime) -> None:
    spans = list(source.spans(size))  # before the transaction: an NDJSON file is read once here
    rows = [
        {
            "archive": source.key, "round": number, "position": position,
            "name": source.name[:1000], "first_record": span.first, "records": span.count,
            "byte_offset": span.offset, "observed_at": when, "status": JobStatus.QUEUED,
            "attempts": 0, **dict.fromkeys(COUNTS, 0),
        }
        for position, span in enumerate(spans)
    ]  # fmt: skip
    with db.write() as session:
        # Workers planning the same round at once: the first one's rows win, the others add none.
        insert = insert_skipping_duplicates(ImportBatch, session)
        for start in range(0, len(rows), 1000):
            session.execute(insert, rows[start : start + 1000])
    log.info("import.planned", archive=source.name, round=number, batches=len(rows))


def _describe_round(db: Database, archive: str, number: int) -> ImportRound | None:
    with db.session() as session:
        when, total, done = session.execute(
            select(
                func.min(ImportBatch.observed_at),
                func.sum(ImportBatch.records),
                func.sum(ImportBatch.records).filter(ImportBatch.status.in_(ENDED)),
            ).where(ImportBatch.archive == archive, ImportBatch.round == number)
        ).one()
    if when is None:
        return None
    return ImportRound(archive, number, when, int(total or 0), int(done or 0))


def claim_batch(
    db: Database, rnd: ImportRound, owner: str, lease: timedelta
) -> ClaimedBatch | None:
    """The first queued batch of ``rnd`` (or a running one whose lease ran out), now ``owner``'s."""
    now = utcnow()
    with db.write() as session:
        batch = session.scalars(
            select(ImportBatch)
            .where(
                ImportBatch.archive == rnd.archive,
                ImportBatch.round == rnd.round,
                or_(
                    ImportBatch.status == JobStatus.QUEUED,
                    and_(ImportBatch.status == JobStatus.RUNNING, ImportBatch.lease_until < now),
                ),
            )
            .order_by(ImportBatch.position)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if batch is None:
            return None
        if batch.status is JobStatus.RUNNING:
            log.warning("import.batch_taken_over", position=batch.position, was=batch.claimed_by)
        batch.status, batch.claimed_by, batch.lease_until = JobStatus.RUNNING, owner, now + lease
        batch.attempts += 1
        return ClaimedBatch(
            batch.id, batch.position, batch.first_record, batch.records, batch.byte_offset
        )


def wait_time(db: Database, rnd: ImportRound, owner: str) -> float | None:
    """Seconds to wait before claiming again, until the next lease of another worker runs out;
    None when nothing is left for ``owner`` to take."""
    with db.session() as session:
        rows = session.execute(
            select(ImportBatch.status, func.min(ImportBatch.lease_until))
            .where(
                ImportBatch.archive == rnd.archive,
                ImportBatch.round == rnd.round,
                ImportBatch.status.in_(OPEN),
                or_(ImportBatch.claimed_by.is_(None), ImportBatch.claimed_by != owner),
            )
            .group_by(ImportBatch.status)
        ).all()
    leases = {status: until for status, until in rows}
    if JobStatus.QUEUED in leases:
        return 0.05  # another worker holds a row lock on it for a moment
    if JobStatus.RUNNING not in leases:
        return None
    until = leases[JobStatus.RUNNING] or utcnow()
    return min(max((until - utcnow()).total_seconds(), 0.05), 1.0)


def renew_leases(db: Database, owner: str, lease: timedelta) -> None:
    """Extend the leases of every batch ``owner`` is working on."""
    with db.write() as session:
        session.execute(
            update(ImportBatch)
            .where(ImportBatch.claimed_by == owner, ImportBatch.status == JobStatus.RUNNING)
            .values(lease_until=utcnow() + lease)
        )


def finish_batch(db: Database, batch: ClaimedBatch, owner: str, tally: Tally, run_id: int) -> bool:
    """Mark a written batch done with its counts; False when another worker took it over."""
    errors = {"failures": tally.failures[:KEPT_FAILURES], "damage": "; ".join(tally.damage)}
    with db.write() as session:
        result = session.connection().execute(
            update(ImportBatch)
            .where(
                ImportBatch.id == batch.id,
                ImportBatch.claimed_by == owner,
                ImportBatch.status == JobStatus.RUNNING,
            )
            .values(
                status=JobStatus.FAILED if tally.damage else JobStatus.DONE,
                finished_at=utcnow(),
                lease_until=None,
                run_id=run_id,
                errors=errors if tally.failures or tally.damage else None,
                **{k: tally.counts[k] for k in COUNTS},
            )  # fmt: skip
        )
    if not result.rowcount:
        log.warning("import.batch_lost", position=batch.position, reason="lease ran out")
    return bool(result.rowcount)


def release_batches(db: Database, owner: str) -> None:
    """Give back the batches of a worker that is stopping, for others to take at once."""
    with db.write() as session:
        session.execute(
            update(ImportBatch)
            .where(ImportBatch.claimed_by == owner, ImportBatch.status == JobStatus.RUNNING)
            .values(status=JobStatus.QUEUED, claimed_by=None, lease_until=None)
        )


def release_orphans(db: Database, rnd: ImportRound) -> int:
    """Give back the batches of this host's workers whose process is gone (killed, crashed),
    so that an import started again here need not wait for their leases to run out."""
    host = socket.gethostname()
    with db.session() as session:
        owners = set(
            session.scalars(
                select(ImportBatch.claimed_by).where(
                    ImportBatch.archive == rnd.archive,
                    ImportBatch.round == rnd.round,
                    ImportBatch.status == JobStatus.RUNNING,
                    ImportBatch.claimed_by.startswith(f"{host}:"),
                )
            )
        )
    dead = [owner for owner in owners if owner and not process_alive(_pid(owner))]
    for owner in dead:
        release_batches(db, owner)
        log.info("import.orphans_released", owner=owner)
    return len(dead)


def _pid(owner: str) -> int:
    """The process id in a worker name ``host:pid:id`` (0, never dead, if there is none)."""
    parts = owner.split(":")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def round_tally(db: Database, rnd: ImportRound, run_id: int) -> Tally:
    """The counts and failures of the batches of ``rnd`` that run ``run_id`` finished."""
    tally = Tally()
    with db.session() as session:
        for batch in session.scalars(
            select(ImportBatch)
            .where(
                ImportBatch.archive == rnd.archive,
                ImportBatch.round == rnd.round,
                ImportBatch.run_id == run_id,
            )
            .order_by(ImportBatch.position)
        ):
            tally.counts.update({k: getattr(batch, k) for k in COUNTS})
            errors = batch.errors or {}
            tally.failures += [(label, error) for label, error in errors.get("failures", [])]
            tally.damage += [errors["damage"]] if errors.get("damage") else []
    return tally


def records_done(db: Database, rnd: ImportRound) -> int:
    with db.session() as session:
        done = session.scalar(
            select(func.sum(ImportBatch.records)).where(
                ImportBatch.archive == rnd.archive,
                ImportBatch.round == rnd.round,
                ImportBatch.status.in_(ENDED),
            )
        )
    return int(done or 0)
