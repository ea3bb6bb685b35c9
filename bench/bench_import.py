# ruff: noqa: E402  (imports follow the sys.path set-up)
"""The whole registry on one small machine: ``ctmirror import`` at 10k and 100k studies.

    python bench/bench_import.py [--sizes 10000,100000] [--backend sqlite|postgresql|both]
                                 [--workers 1,2,4] [--baseline-sample 1000]

1. **Corpus** (cached in ``bench/out/corpus-<N>/``): the 1,687 real records of
   ``../shared/data/ctgov/studies`` copied under fresh NCT ids (NCT9…) up to N studies, written
   as the registry's bulk download (``day1.zip``, one ``NCTxxxxxxxx.json`` member per study),
   and a second day (``day2.zip``) as the registry's next refresh: every study's
   ``derivedSection.miscInfoModule.versionHolder`` moved a day on, and 0.5% of the studies
   carrying realistic sponsor edits (status one step on, enrollment, dates turning ACTUAL or
   slipping, a site added or closed, a primary outcome's time frame reworded) with new
   LastUpdate dates.
2. Each run is ``ctmirror import`` in a **subprocess**, exactly as a user runs it (so with its
   default worker processes: one per CPU), into a fresh database; wall time from the outside,
   peak RSS the largest ``ru_maxrss`` of the command and its worker processes:
   - *first sight*: day 1 into an empty database;
   - *unchanged re-import*: day 1 again;
   - *day 2 with edits*: day 2 on top.
3. Baselines **in the same run**: a bare ``orjson.loads`` of every member of day 1 (zip read
   included), and the naive way to find day 2's changes, ``DeepDiff`` of the whole raw JSON of
   each study against its day-1 record, timed on ``--baseline-sample`` studies and scaled to
   N (it would take half an hour at 100k).
4. ``--workers`` 1, 2 and 4 on each backend (first sight of the largest size).
5. ``--rounds N`` repeats 2-3 (baselines included) N times; the table gives the median and the
   spread of each figure.

Results: a table on stdout (studies/s, ratios, peak RSS, bytes per version, the slope from
the smallest to the largest size) and JSON in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov
from _common import DEFAULT_PG_URL, command_env, fresh_database
from bench_feed import EDITS  # the sponsor-style edits of the feed benchmark

from mirror.store import Database, table_stats

OUT = REPO / "bench" / "out"
SEED = 20261122
EDIT_SHARE = 0.005
DAY1, DAY2 = "2026-11-20T06:00:00Z", "2026-11-21T06:00:00Z"


# --------------------------------------------------------------------------- the corpus


def corpus(size: int) -> tuple[Path, Path]:
    """``day1.zip`` and ``day2.zip`` of ``size`` studies (built once, then cached)."""
    folder = OUT / f"corpus-{size}-v2"  # v2: day 2 moves every versionHolder
    day1, day2 = folder / "day1.zip", folder / "day2.zip"
    if day1.exists() and day2.exists():
        return day1, day2
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    edited = set(rng.sample(range(size), max(1, round(EDIT_SHARE * size))))
    write_days(day1, day2, size, edited, rng)  # deflated at zlib's default, as the registry is
    print(f"  corpus {size:,}: {day1.stat().st_size / 1e6:,.0f} MB zipped", file=sys.stderr)
    return day1, day2


def write_days(
    day1: Path,
    day2: Path,
    size: int,
    edited: set[int],
    rng: random.Random,
    *,
    member: Callable[[str], str] = "{}.json".format,
    compresslevel: int | None = None,
    every: int = 0,
) -> int:
    """``size`` studies under fresh ids as two days of the registry's bulk download: day 1 the
    real records, day 2 every versionHolder moved on and the studies ``edited`` (indexes)
    carrying sponsor edits drawn from ``rng``. ``member``: a study's member name from its NCT
    id; ``every``: say on stderr every so many studies. The bytes of day 1, unpacked."""
    real = [p.read_bytes() for p in sorted((fake_ctgov.DATA_DIR / "studies").glob("NCT*.json"))]
    deflated: dict[str, Any] = {"compression": zipfile.ZIP_DEFLATED, "compresslevel": compresslevel}
    unpacked = 0
    with (
        zipfile.ZipFile(day1, "w", **deflated) as one,
        zipfile.ZipFile(day2, "w", **deflated) as two,
    ):
        for n in range(size):
            study = orjson.loads(real[n % len(real)])
            nct_id = f"NCT{90_000_000 + n:08d}"
            study["protocolSection"]["identificationModule"]["nctId"] = nct_id
            raw = orjson.dumps(study)
            unpacked += len(raw)
            one.writestr(member(nct_id), raw)
            study["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-11-21"
            if n in edited:
                _sponsor_edit(study, rng)
            two.writestr(member(nct_id), orjson.dumps(study))
            if every and n and n % every == 0:
                print(f"  generated {n:,} studies", file=sys.stderr, flush=True)
    return unpacked


def _sponsor_edit(study: dict[str, Any], rng: random.Random) -> None:
    functions, weights = zip(*EDITS, strict=True)
    for edit in rng.choices(functions, weights, k=rng.randint(1, 3)):
        edit(study, rng)
    status = study["protocolSection"].setdefault("statusModule", {})
    status["lastUpdateSubmitDate"] = "2026-11-19"
    status["lastUpdatePostDateStruct"] = {"date": "2026-11-20", "type": "ACTUAL"}


# --------------------------------------------------------------------------- runs


# Runs a command and prints its peak RSS (KB) on the last line of stderr. The peak a process
# reports (ru_maxrss) is carried across fork and exec, so a command started straight from this
# bench would report at least the bench's own size; started from this small process, it
# reports its own (and, through wait4, that of its worker processes).
_MEASURED = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def ctmirror_import(
    url: str, path: Path, observed_at: str, workers: int | None = None
) -> dict[str, Any]:
    """One ``ctmirror import`` subprocess (``workers``: its --workers, else its default): wall
    seconds and the peak RSS of the largest of its processes."""
    env = command_env(CTMIRROR_DATABASE__URL=url, CTMIRROR_LOG__LEVEL="warning")
    command = [sys.executable, "-m", "mirror", "import", str(path), "--observed-at", observed_at]
    if workers is not None:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *command], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    *errors, peak = done.stderr.strip().splitlines() or [""]
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{chr(10).join(errors)}")
    return {"seconds": seconds, "peak_rss_mb": int(peak) / 1024, "summary": done.stdout.strip()}


def bare_loads(path: Path) -> float:
    """Seconds to read every member and ``orjson.loads`` it: the floor of any import."""
    started = time.perf_counter()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            orjson.loads(archive.read(name))
    return time.perf_counter() - started


def naive_diff_per_study(day1: Path, day2: Path, sample: int) -> float:
    """Seconds per study to DeepDiff the whole raw JSON of day 2 against day 1."""
    from deepdiff import DeepDiff

    with zipfile.ZipFile(day1) as one, zipfile.ZipFile(day2) as two:
        names = one.namelist()[:sample]
        started = time.perf_counter()
        for name in names:
            DeepDiff(orjson.loads(one.read(name)), orjson.loads(two.read(name)))
        return (time.perf_counter() - started) / len(names)


def bytes_per_version(url: str) -> float:
    db = Database(url)
    try:
        stats = {s.name: s for s in table_stats(db)}
    finally:
        db.dispose()
    total = sum(s.bytes or 0 for s in stats.values())
    return total / max(1, stats["study_versions"].rows)


def measure_size(size: int, backend: str, opts: argparse.Namespace) -> dict[str, Any]:
    day1, day2 = corpus(size)
    row: dict[str, Any] = {"size": size, "backend": backend}
    with fresh_database(backend, opts.pg_url) as url:
        first = ctmirror_import(url, day1, DAY1)
        again = ctmirror_import(url, day1, DAY1)
        edits = ctmirror_import(url, day2, DAY2)
        row["bytes_per_version"] = round(bytes_per_version(url))
    loads = bare_loads(day1)
    naive = naive_diff_per_study(day1, day2, opts.baseline_sample) * size
    row |= {
        "first_per_s": size / first["seconds"],
        "unchanged_per_s": size / again["seconds"],
        "unchanged_vs_loads": loads / again["seconds"],
        "edited_per_s": size / edits["seconds"],
        "edited_vs_naive_deepdiff": naive / edits["seconds"],
        "bare_loads_per_s": size / loads,
        "naive_deepdiff_per_s": size / naive,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in (first, again, edits)),
        "seconds": {
            "first": first["seconds"],
            "unchanged": again["seconds"],
            "edited": edits["seconds"],
            "loads": loads,
            "naive": naive,
        },  # fmt: skip
        "summaries": [first["summary"], again["summary"], edits["summary"]],
    }
    print(_line(row), flush=True)
    return row


def measure_workers(
    size: int, backend: str, workers: list[int], opts: argparse.Namespace
) -> list[dict]:
    day1, _ = corpus(size)
    rows = []
    for n in workers:
        with fresh_database(backend, opts.pg_url) as url:
            run = ctmirror_import(url, day1, DAY1, workers=n)
        rows.append(
            {"backend": backend, "workers": n, "first_per_s": size / run["seconds"],
             "seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"]}
        )  # fmt: skip
        print(f"  {backend}, {n} worker(s): {rows[-1]['first_per_s']:,.0f} studies/s", flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['backend']:>10s} {r['size']:>8,}  first {r['first_per_s']:7,.0f}/s  "
        f"unchanged {r['unchanged_per_s']:7,.0f}/s ({r['unchanged_vs_loads']:.2f}x loads)  "
        f"edited {r['edited_per_s']:7,.0f}/s ({r['edited_vs_naive_deepdiff']:,.0f}x naive)  "
        f"rss {r['peak_rss_mb']:5.0f} MB  {r['bytes_per_version']:,} B/version"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", default="1,2,4", help="Worker counts to compare; '' skips.")
    parser.add_argument("--baseline-sample", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="Repeat each size this often.")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    opts = parser.parse_args(argv)
    sizes = [int(s) for s in opts.sizes.split(",")]
    backends = ["sqlite", "postgresql"] if opts.backend == "both" else [opts.backend]
    rows = [
        measure_size(size, backend, opts)
        for backend in backends
        for size in sizes
        for _ in range(opts.rounds)
    ]
    medians = [_median_row([r for r in rows if (r["backend"], r["size"]) == key])
               for key in dict.fromkeys((r["backend"], r["size"]) for r in rows)]  # fmt: skip
    print("\nmedian (min-max) of", opts.rounds, "round(s):")
    for m in medians:
        print("  " + "  ".join(f"{k} {v}" for k, v in m.items()))
    slopes = {b: _slope([r for r in rows if r["backend"] == b]) for b in backends if len(sizes) > 1}
    workers = [int(w) for w in opts.workers.split(",") if w]
    scaling = [r for b in backends for r in measure_workers(max(sizes), b, workers, opts)]
    print(f"\nslope (first-sight seconds per 1,000 studies, smallest -> largest size): {slopes}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"bench_import-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
    path.write_text(
        json.dumps(
            {"sizes": rows, "medians": medians, "slopes": slopes, "workers": scaling, **meta},
            indent=2,
        )
    )
    print(f"JSON: {path.relative_to(REPO)}")


MEDIAN_KEYS = ("first_per_s", "unchanged_per_s", "unchanged_vs_loads", "edited_per_s",
               "edited_vs_naive_deepdiff", "peak_rss_mb", "bytes_per_version")  # fmt: skip


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure of ``rows`` (rounds of one backend and size) as 'median (min-max)'."""
    out: dict[str, Any] = {"backend": rows[0]["backend"], "size": rows[0]["size"]}
    for key in MEDIAN_KEYS:
        values = sorted(r[key] for r in rows)
        digits = 2 if key.endswith(("_vs_loads",)) else 0
        out[key] = (
            f"{statistics.median(values):,.{digits}f} "
            f"({values[0]:,.{digits}f}-{values[-1]:,.{digits}f})"
        )
    return out


def _slope(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per 1,000 studies of the first-sight import at each size: flat = linear."""
    return {str(r["size"]): round(1000 * r["seconds"]["first"] / r["size"], 3) for r in rows}


if __name__ == "__main__":
    main()
