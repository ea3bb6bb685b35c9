# ruff: noqa: E402  (imports follow the sys.path set-up)
"""The registry end to end: a synthetic full registry imported on SQLite and PostgreSQL.

    python bench/bench_registry.py [--studies 600000] [--backend sqlite|postgresql|both]
                                   [--edited 1000] [--keep]

1. **The registry** (``bench/out/registry-<N>/``, generated streaming, deleted afterwards unless
   ``--keep``): the 1,687 real records of ``../shared/data/ctgov/studies`` under fresh NCT ids
   (NCT9…) up to N studies, as the registry's bulk download: a deflated zip with one
   ``NN/NCTxxxxxxxx.json`` member per study (``day1.zip``, about 19 KB of JSON per study:
   11.5 GB unpacked at 600,000). ``day2.zip`` is the next day: every ``versionHolder`` moved on,
   and ``--edited`` studies carrying sponsor edits (those of ``bench_import.py``).
2. On each backend, into a new database, ``ctmirror import`` as a user runs it (a subprocess,
   its default worker processes): day 1 (wall, studies/s, peak RSS, database size), then day 2
   on top (wall).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _common import DEFAULT_PG_URL, OUT, fresh_database, write_results
from bench_import import DAY1, DAY2, SEED, ctmirror_import, write_days
from sqlalchemy import create_engine, text


def generate(folder: Path, size: int, edited: int) -> tuple[Path, Path]:
    """``day1.zip`` and ``day2.zip`` of ``size`` studies, written member by member."""
    folder.mkdir(parents=True, exist_ok=True)
    day1, day2 = folder / "day1.zip", folder / "day2.zip"
    rng = random.Random(SEED)
    edits = set(rng.sample(range(size), min(size, edited)))
    started = time.perf_counter()
    unpacked = write_days(
        day1, day2, size, edits, rng, member=_member, compresslevel=1, every=50_000
    )
    seconds = time.perf_counter() - started
    print(
        f"  registry of {size:,}: {unpacked / 1e9:.1f} GB unpacked, {day1.stat().st_size / 1e9:.2f}"
        f" GB zipped, generated in {seconds:.0f} s",
        file=sys.stderr,
    )
    return day1, day2


def _member(nct_id: str) -> str:
    return f"{nct_id[-2:]}/{nct_id}.json"  # NN/NCT….json, as the registry's download


def database_bytes(url: str) -> int:
    """The database's size on disk: the SQLite file (WAL checkpointed), or pg_database_size."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                return Path(str(engine.url.database)).stat().st_size
            return int(
                conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            )
    finally:
        engine.dispose()


def measure(backend: str, size: int, day1: Path, day2: Path, pg_url: str) -> dict[str, Any]:
    with fresh_database(backend, pg_url) as url:
        first = ctmirror_import(url, day1, DAY1)
        size_bytes = database_bytes(url)
        second = ctmirror_import(url, day2, DAY2)
    row = {
        "backend": backend,
        "studies": size,
        "first_seconds": first["seconds"],
        "first_per_s": size / first["seconds"],
        "peak_rss_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
        "database_gb": size_bytes / 1e9,
        "day2_seconds": second["seconds"],
        "day2_per_s": size / second["seconds"],
        "summaries": [first["summary"], second["summary"]],
    }
    print(
        f"{backend:>10s} {size:>8,}  first {row['first_seconds']:7.1f} s"
        f" ({row['first_per_s']:,.0f}/s)"
        f"  rss {row['peak_rss_mb']:.0f} MB  db {row['database_gb']:.2f} GB"
        f"  day 2 {row['day2_seconds']:.1f} s ({row['day2_per_s']:,.0f}/s)",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=600_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--edited", type=int, default=1000)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--keep", action="store_true", help="Keep the generated zips.")
    opts = parser.parse_args(argv)
    backends = ["sqlite", "postgresql"] if opts.backend == "both" else [opts.backend]
    folder = OUT / f"registry-{opts.studies}"
    try:
        # In a process of its own: the zip writers keep an entry per member (about 1 KB each,
        # 700 MB at 600,000), which this process would otherwise hold through every import.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            day1, day2 = pool.submit(generate, folder, opts.studies, opts.edited).result()
        rows = [measure(b, opts.studies, day1, day2, opts.pg_url) for b in backends]
    finally:
        if not opts.keep:
            shutil.rmtree(folder, ignore_errors=True)
    write_results("bench_registry", {"rows": rows, "edited": opts.edited})


if __name__ == "__main__":
    main()
