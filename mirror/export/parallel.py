"""The ``changes`` table of a Parquet export read by several processes at once.

Reading the feed is CPython work (expanding first-sight blocks, encoding values), so one
process keeps one core busy. The id range of the feed is cut into slices of ``SLICE_IDS``
ids; worker ``w`` of ``n`` reads slices ``w``, ``w + n``, … (each slice is the feed's own
query with the cursor bounds ``after``/``before``) and hands each as Arrow record batches,
then an end marker, through a queue of its own holding at most ``QUEUE_DEPTH`` items. The
parent takes the slices in order, from worker 0, 1, …, 0, 1, …, and writes them: the file is
in id order, and memory is bounded by the queues. A worker whose parent is gone stops.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select

from mirror.errors import StorageError
from mirror.export.tables import TABLES, ExportFilter
from mirror.export.writers import ArrowBatches
from mirror.feed import ChangeFilter, stream_change_chunks
from mirror.store import ChangeEvent, Database, EventBlock

SLICE_IDS = 200_000  # feed ids per slice
PARALLEL_MIN_IDS = 1_000_000  # fewer ids than this: one process (starting workers costs ~2 s)
QUEUE_DEPTH = 2  # batches a worker may have waiting
_END = "end"


@dataclass(frozen=True)
class _Job:
    url: str
    flt: ChangeFilter
    slices: list[tuple[int, int]]  # [after, before) bounds, in order
    parent: int


def id_range(db: Database, flt: ExportFilter) -> tuple[int, int]:
    """The lowest and highest event id the feed holds now (0, 0 when it holds none)."""
    with db.session() as session:
        rows = session.execute(select(func.min(ChangeEvent.id), func.max(ChangeEvent.id))).one()
        blocks = session.execute(
            select(func.min(EventBlock.first_id), func.max(EventBlock.last_id))
        ).one()
    lows = [v for v in (rows[0], blocks[0]) if v is not None]
    highs = [v for v in (rows[1], blocks[1]) if v is not None]
    return (min(lows), max(highs)) if lows else (0, 0)


def workers_for(db: Database, flt: ExportFilter) -> int:
    """How many processes should read ``changes``: one per CPU for a large feed, else 1."""
    low, high = id_range(db, flt)
    cpus = os.cpu_count() or 1
    return cpus if cpus > 1 and high - low >= PARALLEL_MIN_IDS else 1


def arrow_batches(
    db: Database, flt: ExportFilter, workers: int, slice_ids: int = SLICE_IDS
) -> Iterator[Any]:
    """The ``changes`` of ``flt`` as Arrow record batches in id order, read by ``workers``
    processes in slices of ``slice_ids`` ids."""
    low, high = id_range(db, flt)
    start = max(low - 1, flt.change_filter().after or 0)
    bounds = [(a, min(a + slice_ids, high) + 1) for a in range(start, high, slice_ids)]
    url = db.url.render_as_string(hide_password=False)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited engine
    queues = [spawn.Queue(QUEUE_DEPTH) for _ in range(workers)]
    processes = [
        spawn.Process(
            target=_work,
            args=(_Job(url, flt.change_filter(), bounds[n::workers], os.getpid()), queues[n]),
            name=f"export-worker-{n + 1}",
            daemon=True,
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for n in range(len(bounds)):
            yield from _slice(queues[n % workers], processes[n % workers])
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()


def _slice(source: Any, process: Any) -> Iterator[Any]:
    """The batches of one slice from a worker's queue, up to its end marker."""
    while True:
        try:
            item = source.get(timeout=1)
        except queue.Empty:
            if not process.is_alive():
                raise StorageError(f"{process.name} exited with code {process.exitcode}") from None
            continue
        if item == _END:
            return
        if isinstance(item, tuple):  # ("error", message)
            raise StorageError(f"{process.name}: {item[1]}")
        yield item


def _work(job: _Job, out: Any) -> None:
    """A worker: its slices of the feed, as Arrow batches, into ``out``."""
    db = Database(job.url)
    table = TABLES["changes"]
    arrow = ArrowBatches(table)
    try:
        for after, before in job.slices:
            flt = replace(job.flt, after=max(after, job.flt.after or 0), before=before)
            batch: list[Any] = []
            for chunk in stream_change_chunks(db, flt):
                batch += chunk
                if len(batch) >= table.batch:
                    _put(out, arrow.batch(table.columnize(batch)), job.parent)
                    batch = []
            if batch:
                _put(out, arrow.batch(table.columnize(batch)), job.parent)
            _put(out, _END, job.parent)
    except Exception as exc:
        _put(out, ("error", str(exc) or type(exc).__name__), job.parent)
    except KeyboardInterrupt:
        pass
    finally:
        db.dispose()


def _put(out: Any, item: Any, parent: int) -> None:
    """Hand ``item`` to the parent, waiting for room; give up when the parent is gone."""
    while os.getppid() == parent:
        try:
            out.put(item, timeout=1)
            return
        except queue.Full:
            continue
    raise SystemExit(0)
