"""``ctmirror export``: the mirror's tables, streamed into Parquet, CSV, NDJSON or SQLite."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mirror.errors import StorageError, UsageError
from mirror.export import parallel
from mirror.export.tables import TABLES, ExportFilter, check_filter, estimate, read_chunks
from mirror.export.writers import (
    FILE_WRITERS,
    FORMATS,
    ParquetTable,
    SqliteFile,
    TableWriter,
    check_writable,
    partial,
)
from mirror.logging import get_logger
from mirror.store import Database

log = get_logger(__name__)

# progress(table, total or None, rows just written)
Progress = Callable[[str, int | None, int], None]


@dataclass
class ExportSummary:
    out: Path
    fmt: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        counts = ", ".join(f"{n:,} {table}" for table, n in self.rows.items())
        return f"ok: exported {counts} to {self.out} ({self.fmt}) in {self.seconds:.1f} s"


def export(
    db: Database,
    out: Path,
    fmt: str,
    flt: ExportFilter,
    tables: Sequence[str] = tuple(TABLES),
    *,
    force: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ExportSummary:
    """Write ``tables`` of the mirror matching ``flt`` to ``out`` (a directory of one file per
    table; for ``sqlite`` one file). Nothing is left at ``out`` when it fails.

    ``workers``: processes reading a Parquet export's ``changes`` (default: one per CPU when
    the feed is large, ``mirror.export.parallel``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise UsageError(f"unknown table {unknown[0]!r} (known: {', '.join(TABLES)})")
    targets = check_writable(out, fmt, tables, force=force)
    check_filter(db, flt)
    report = progress or _silent
    summary = ExportSummary(out, fmt)
    started = time.perf_counter()
    try:
        if fmt == "sqlite":
            _to_sqlite(db, out, flt, tables, summary, report)
        else:
            out.mkdir(exist_ok=True)
            for table, target in zip(tables, targets, strict=True):
                _to_file(db, target, fmt, flt, table, summary, report, workers)
    except OSError as exc:  # what no check beforehand can tell: a full disk, a read-only mount
        raise StorageError(f"cannot write the export to {out}: {exc.strerror or exc}") from None
    summary.seconds = time.perf_counter() - started
    log.info("export.done", out=str(out), format=fmt, seconds=round(summary.seconds, 2),
             **summary.rows)  # fmt: skip
    return summary


def _silent(table: str, total: int | None, done: int) -> None:
    pass


def _to_file(
    db: Database, target: Path, fmt: str, flt: ExportFilter, table: str,
    summary: ExportSummary, report: Progress, workers: int | None,
) -> None:  # fmt: skip
    spec = TABLES[table]
    work = partial(target)
    try:
        writer: TableWriter = FILE_WRITERS[fmt](work, spec)
        try:
            parallel_ok = isinstance(writer, ParquetTable) and table == "changes"
            readers = (workers or parallel.workers_for(db, flt)) if parallel_ok else 1
            if isinstance(writer, ParquetTable) and readers > 1:
                summary.rows[table] = _copy_parallel(db, flt, writer, report, readers)
            else:
                summary.rows[table] = _copy(db, table, flt, writer, report)
        finally:
            writer.close()
        os.replace(work, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            work.unlink()


def _to_sqlite(
    db: Database, out: Path, flt: ExportFilter, tables: Sequence[str],
    summary: ExportSummary, report: Progress,
) -> None:  # fmt: skip
    work = partial(out)
    with contextlib.suppress(FileNotFoundError):
        work.unlink()
    try:
        file = SqliteFile(work)
        try:
            for table in tables:
                summary.rows[table] = _copy(db, table, flt, file.table(TABLES[table]), report)
            file.finish()
        except BaseException:
            file.abandon()
            raise
        os.replace(work, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            work.unlink()


def _copy_parallel(
    db: Database, flt: ExportFilter, writer: ParquetTable, report: Progress, workers: int
) -> int:
    """``changes`` into a Parquet ``writer`` from ``workers`` reading processes."""
    report("changes", estimate(db, "changes", flt), 0)
    count = 0
    for batch in parallel.arrow_batches(db, flt, workers):
        writer.write_arrow(batch)
        count += batch.num_rows
        report("changes", None, batch.num_rows)
    return count


def _copy(
    db: Database, table: str, flt: ExportFilter, writer: TableWriter, report: Progress
) -> int:
    """Every row of ``table`` into ``writer``, a batch of about ``Table.batch`` rows at a
    time; how many there were."""
    report(table, estimate(db, table, flt), 0)
    spec = TABLES[table]
    chunks = read_chunks(db, table, flt)
    count, batch = 0, []
    try:
        for chunk in itertools.chain(chunks, [None]):
            if chunk is not None:
                batch += chunk
            if batch and (chunk is None or len(batch) >= spec.batch):
                writer.write(spec.columnize(batch))
                count += len(batch)
                report(table, None, len(batch))
                batch = []
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return count
