# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Exports for analysts: ``ctmirror export`` rows/s and peak RSS for each format.

    python bench/bench_export.py [--feed-db PATH] [--versions-db PATH] [--runs 3]
                                 [--library-rows 500000]

1. **changes** of the 2-million-event database that ``bench_feed.py`` builds (default
   ``bench/out/feed-sqlite.db``; a copy: the run migrates it to the code's revision) and
   **versions** of a mirror of N studies imported with ``bench_import.py``'s corpus
   (``--versions-db``, e.g. ``ctmirror import bench/out/corpus-100000/day1.zip`` then
   ``day2.zip`` into ``bench/out/export-100k.db``).
2. Each export is ``ctmirror export OUT --table T --format F`` in a **subprocess**, as a user
   runs it: wall time from the outside, peak RSS of the process (``wait4``), the median of
   ``--runs`` runs and their spread (min–max).
3. Baseline **in the same run**: the same rows read in one process and thrown away (a bare
   loop over ``mirror.export.tables.read_chunks``), so each format's cost shows as a ratio
   to reading. For changes also ``ctmirror changes --limit 0 --format ndjson > /dev/null``,
   the whole feed streamed by the CLI.
4. The Parquet library: the same ``--library-rows`` change rows written through pyarrow
   (what ``ctmirror export`` uses) and through DuckDB (rows to a temporary CSV file, then
   DuckDB's ``COPY … TO 'x.parquet'``; DuckDB's ``executemany`` is far slower), seconds and
   rows/s.

Results: a table on stdout and JSON in ``bench/out/bench_export-<time>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import command_env

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
FORMATS = ["parquet", "csv", "ndjson", "sqlite"]


def _env(url: str) -> dict[str, str]:
    return command_env(CTMIRROR_DATABASE__URL=url, CTMIRROR_LOG__LEVEL="warning")


def timed(command: list[str], url: str, stdout: Any = subprocess.PIPE) -> dict[str, Any]:
    """One subprocess: wall seconds, peak RSS (MB), what it printed."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=_env(url), stdout=stdout, stderr=err)
        out = child.stdout.read() if child.stdout is not None else b""
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{err.read().decode()}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out.decode()}


def export_once(url: str, table: str, fmt: str, work: Path) -> dict[str, Any]:
    target = work / ("out.db" if fmt == "sqlite" else "out")
    shutil.rmtree(target, ignore_errors=True)
    target.unlink(missing_ok=True) if fmt == "sqlite" else None
    command = [sys.executable, "-m", "mirror", "export", str(target), "--table", table,
               "--format", fmt]  # fmt: skip
    result = timed(command, url)
    rows = int(result["stdout"].split("exported ")[1].split(" ")[0].replace(",", ""))
    size = sum(p.stat().st_size for p in ([target] if fmt == "sqlite" else target.iterdir()))
    return result | {"rows": rows, "mb": size / 1e6}


def baseline_once(url: str, table: str) -> dict[str, Any]:
    code = (
        "from mirror.export.tables import ExportFilter, read_chunks\n"
        "from mirror.store import Database\nimport os\n"
        "db = Database(os.environ['CTMIRROR_DATABASE__URL'])\n"
        f"print(sum(len(c) for c in read_chunks(db, {table!r}, ExportFilter())))\n"
    )
    result = timed([sys.executable, "-c", code], url)
    return result | {"rows": int(result["stdout"])}


def cli_stream_once(url: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "mirror", "changes", "--limit", "0", "--format", "ndjson"]
    return timed(command, url, stdout=subprocess.DEVNULL) | {"rows": None}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "rows": runs[0]["rows"],
        "mb": runs[0].get("mb"),
    }  # fmt: skip


def measure(url: str, table: str, runs: int, work: Path) -> dict[str, Any]:
    found: dict[str, Any] = {"read only": median_of([baseline_once(url, table)
                                                     for _ in range(runs)])}  # fmt: skip
    print(f"  {table} read only: {_rate(found['read only'])}", file=sys.stderr)
    for fmt in FORMATS:
        found[fmt] = median_of([export_once(url, table, fmt, work) for _ in range(runs)])
        print(f"  {table} {fmt}: {_rate(found[fmt])}", file=sys.stderr)
    if table == "changes":
        cli = median_of([cli_stream_once(url) for _ in range(runs)])
        cli["rows"] = found["read only"]["rows"]
        found["changes --limit 0 (ndjson)"] = cli
    return found


def _rate(r: dict[str, Any]) -> str:
    return f"{r['rows'] / r['seconds']:,.0f} rows/s, {r['peak_rss_mb']:,.0f} MB"


def library_comparison(url: str, rows: int, work: Path) -> dict[str, Any]:
    """pyarrow vs DuckDB writing the same change rows to Parquet (rows already in memory)."""
    import duckdb

    from mirror.export.tables import TABLES, ExportFilter, read_chunks
    from mirror.export.writers import CsvTable, ParquetTable
    from mirror.store import Database

    db = Database(url)
    chunks = read_chunks(db, "changes", ExportFilter())
    sample = list(itertools.islice(itertools.chain.from_iterable(chunks), rows))
    chunks.close()  # type: ignore[attr-defined]
    db.dispose()
    table, batch = TABLES["changes"], TABLES["changes"].batch
    columns = [table.columnize(sample[n : n + batch]) for n in range(0, len(sample), batch)]
    started = time.perf_counter()
    writer = ParquetTable(work / "pyarrow.parquet", table)
    for part in columns:
        writer.write(part)
    writer.close()
    pyarrow_s = time.perf_counter() - started
    started = time.perf_counter()
    csv_writer = CsvTable(work / "rows.csv", table)
    for part in columns:
        csv_writer.write(part)
    csv_writer.close()
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{work / 'rows.csv'}', header=true, all_varchar=true)) "
        f"TO '{work / 'duckdb.parquet'}' (FORMAT parquet, COMPRESSION zstd)"
    )
    duckdb_s = time.perf_counter() - started
    return {"rows": len(sample), "pyarrow_seconds": pyarrow_s, "duckdb_seconds": duckdb_s}


def report(results: dict[str, Any]) -> None:
    for table, found in results.items():
        if table == "library":
            continue
        base = found["read only"]
        print(f"\n{table}: {base['rows']:,} rows")
        print("| format | rows/s | vs read only | peak RSS | output | spread (s) |")
        print("|---|---|---|---|---|---|")
        for fmt, r in found.items():
            rate = r["rows"] / r["seconds"]
            ratio = base["seconds"] / r["seconds"]
            size = f"{r['mb']:,.0f} MB" if r.get("mb") is not None else "–"
            print(f"| {fmt} | {rate:,.0f} | {ratio:.2f} | {r['peak_rss_mb']:,.0f} MB | {size} | "
                  f"{r['min']:.1f}–{r['max']:.1f} |")  # fmt: skip
    lib = results.get("library")
    if lib:
        print(f"\nParquet library, {lib['rows']:,} change rows in memory:")
        for name in ("pyarrow", "duckdb"):
            s = lib[f"{name}_seconds"]
            print(f"| {name} | {s:.1f} s | {lib['rows'] / s:,.0f} rows/s |")


def prepare(path: Path) -> str:
    """The URL of ``path`` at the code's schema revision (``ctmirror db upgrade``)."""
    url = f"sqlite:///{path}"
    timed([sys.executable, "-m", "mirror", "db", "upgrade"], url)
    return url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--feed-db", type=Path, default=OUT / "feed-sqlite.db")
    parser.add_argument("--versions-db", type=Path, default=OUT / "export-100k.db")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--library-rows", type=int, default=500_000)
    parser.add_argument("--tables", default="changes,versions", help="Which benchmarks to run.")
    opts = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ctmirror-export-", dir=OUT) as tmp:
        work = Path(tmp)
        wanted = opts.tables.split(",")
        feed_url = prepare(opts.feed_db) if opts.feed_db.exists() else None
        feed_url = feed_url if "changes" in wanted or opts.library_rows else None
        if feed_url and "changes" in wanted:
            results["changes"] = measure(feed_url, "changes", opts.runs, work)
        if opts.versions_db.exists() and "versions" in wanted:
            results["versions"] = measure(prepare(opts.versions_db), "versions", opts.runs, work)
        # Last: it holds its rows in this process, and a child's peak RSS counts what it
        # inherits at fork, so the exports above would report this process's size.
        if feed_url and opts.library_rows:
            results["library"] = library_comparison(feed_url, opts.library_rows, work)
    report(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
    (OUT / f"bench_export-{stamp}.json").write_text(json.dumps(results | {"meta": meta}, indent=1))


if __name__ == "__main__":
    main()
