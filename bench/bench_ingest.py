# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Ingest-stage throughput: ``Ingestor.ingest`` alone over a registry-sized corpus.

    python bench/bench_ingest.py [--backend sqlite|postgresql|both] [--studies 10000] [--profile]

The corpus is the 1,687 real records of ``../shared/data/ctgov/studies`` copied under fresh
NCT ids (``NCT9xxxxxxx``, every occurrence of the original id replaced) up to ``--studies``.
For each backend, on a fresh migrated database, three days are ingested in batches of
``--batch`` (the sync's batch size), each record parsed outside the timing:

1. first sight: every study is new;
2. unchanged: the same records again (must write no version);
3. edited: ``--edit-fraction`` of the studies carry a sponsor's edit (bench_sync's edit).

In the same run, over the same bytes: a bare ``orjson.loads`` (what any reader of the records
pays), and the naive way to find what changed: DeepDiff of the whole raw JSON of each study
against its previous record (timed on a sample, per study). Results: a table on stdout and
JSON in ``bench/out/``; ``--baseline FILE`` adds the numbers of an earlier run beside each
column; ``--profile`` writes each phase's cProfile to ``bench/out/profile-ingest-*.txt``.

Timings are of ``Ingestor.ingest`` alone (parsing is outside them) under the GC thresholds a
sync uses (``mirror.pipeline.sync.relaxed_gc``; ``--default-gc`` keeps Python's, which makes bare
``orjson.loads`` ~3x slower and the ingest ~1.5x). Peak RSS is the whole bench process,
corpus included. 10,000 studies on both backends take about 2.5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from _common import DEFAULT_PG_URL, fresh_database
from bench_sync import NEXT_STATUS, sponsor_edit
from deepdiff import DeepDiff

from mirror.pipeline import Ingestor, relaxed_gc
from mirror.record import DEFAULT_IGNORE
from mirror.source import Observation
from mirror.store import Database, StudyVersion, event_count

OUT_DIR = REPO / "bench" / "out"
DATA_DIR = REPO.parent / "shared" / "data" / "ctgov" / "studies"
DAY_ONE = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
PHASES = ("first_sight", "unchanged", "edited")


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Corpus:
    """``size`` studies: real record ``n % 1687`` under the id ``NCT9`` + ``n`` (7 digits)."""

    base: list[tuple[bytes, bytes]]  # (original id, compact raw JSON)
    statuses: list[str | None]
    size: int

    @classmethod
    def load(cls, size: int) -> Corpus:
        base, statuses = [], []
        for path in sorted(DATA_DIR.glob("NCT*.json")):
            study = orjson.loads(path.read_bytes())
            base.append((path.stem.encode(), orjson.dumps(study)))
            statuses.append(study["protocolSection"].get("statusModule", {}).get("overallStatus"))
        return cls(base, statuses, size)

    def nct_id(self, n: int) -> str:
        return f"NCT9{n:07d}"

    def raw(self, n: int) -> bytes:
        original, raw = self.base[n % len(self.base)]
        return raw.replace(original, self.nct_id(n).encode())

    def edited(self, fraction: float, seed: int) -> dict[int, int]:
        """Study number -> edit number, for ``fraction`` of the studies whose status can move."""
        moving = [
            n for n in range(self.size) if self.statuses[n % len(self.base)] in NEXT_STATUS
        ]  # fmt: skip
        count = min(len(moving), max(1, round(fraction * self.size)))
        chosen = sorted(random.Random(seed).sample(moving, count))
        return {n: k for k, n in enumerate(chosen)}

    def day(self, edits: dict[int, int], batch: int) -> Iterator[list[tuple[str, bytes]]]:
        """The records of one day, ``batch`` at a time: (NCT id, raw bytes)."""
        for start in range(0, self.size, batch):
            stop = min(start + batch, self.size)
            yield [(self.nct_id(n), self.record(n, edits)) for n in range(start, stop)]

    def record(self, n: int, edits: dict[int, int]) -> bytes:
        """Study ``n`` as observed on a day with ``edits``."""
        if n not in edits:
            return self.raw(n)
        study = orjson.loads(self.raw(n))
        sponsor_edit(study, edits[n])
        return orjson.dumps(study)

    @property
    def bytes_per_study(self) -> float:
        return sum(len(raw) for _, raw in self.base) / len(self.base)


# --------------------------------------------------------------------------- timed phases


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...]
    studies: int
    batch: int
    edit_fraction: float
    seed: int
    pg_url: str
    profile: bool
    naive_sample: int
    baseline: Path | None
    label: str
    default_gc: bool


def observations(batch: list[tuple[str, bytes]], observed_at: datetime) -> list[Observation]:
    return [Observation(nct, raw, orjson.loads(raw), observed_at) for nct, raw in batch]


def ingest_day(
    db: Database, corpus: Corpus, edits: dict[int, int], day: int, opts: Options
) -> dict[str, Any]:
    """Seconds in ``Ingestor.ingest`` over one day's records, what it wrote, and its outcomes."""
    ingestor = Ingestor(db, ignore=DEFAULT_IGNORE)
    observed_at = DAY_ONE + timedelta(days=day)
    before = stored_counts(db)
    outcomes: Counter[str] = Counter()
    seconds = 0.0
    profiler = cProfile.Profile() if opts.profile else None
    gc.collect()
    for batch in corpus.day(edits, opts.batch):
        items = observations(batch, observed_at)
        started = time.perf_counter()
        with profiler or contextlib.nullcontext():
            results = ingestor.ingest(items)
        seconds += time.perf_counter() - started
        outcomes.update(r.outcome.value for r in results)
        del items, results
    after = stored_counts(db)
    result = _rates(seconds, corpus.size)
    result |= {
        "outcomes": dict(outcomes),
        "new_versions": after[0] - before[0],
        "new_events": after[1] - before[1],
        "peak_rss_mb": peak_rss_mb(),
    }
    if profiler is not None:
        result["profile"] = profiler
    return result


def _rates(seconds: float, studies: int) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "studies_per_s": studies / seconds,
        "us_per_study": seconds / studies * 1e6,
    }


def stored_counts(db: Database) -> tuple[int, int]:
    with db.session() as session:
        versions = session.scalar(select(func.count()).select_from(StudyVersion)) or 0
        events = event_count(session)  # rows and first-sight blocks
    return versions, events


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gc(opts: Options) -> contextlib.AbstractContextManager[None]:
    """The GC thresholds of a sync (``mirror.pipeline.relaxed_gc``), unless --default-gc."""
    return contextlib.nullcontext() if opts.default_gc else relaxed_gc()


def run_backend(backend: str, corpus: Corpus, opts: Options) -> dict[str, Any]:
    """The three days on a fresh database of ``backend``."""
    edits = corpus.edited(opts.edit_fraction, opts.seed)
    days = {"first_sight": {}, "unchanged": {}, "edited": edits}
    result: dict[str, Any] = {}
    with fresh_database(backend, opts.pg_url) as url:
        db = Database(url)
        try:
            for n, (phase, day_edits) in enumerate(days.items()):
                print(f"bench: {backend} {phase}", file=sys.stderr)
                with _gc(opts):
                    result[phase] = ingest_day(db, corpus, day_edits, n, opts)
        finally:
            db.dispose()
    result["edited"]["edited_studies"] = len(edits)
    _check(result, corpus.size, len(edits))
    return result


def _check(result: dict[str, Any], size: int, edited: int) -> None:
    expected = {
        "first_sight": {"new": size},
        "unchanged": {"unchanged": size},
        "edited": {"unchanged": size - edited, "changed": edited} if edited < size else {},
    }
    for phase, outcomes in expected.items():
        if result[phase]["outcomes"] != outcomes:
            raise SystemExit(f"bench: {phase} gave {result[phase]['outcomes']}, not {outcomes}")


# --------------------------------------------------------------------------- reference points


def time_loads(corpus: Corpus, batch: int, repeat: int = 3) -> dict[str, Any]:
    """A bare ``orjson.loads`` over the same bytes, a batch at a time (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        seconds = 0.0
        for records in corpus.day({}, batch):
            raws = [raw for _, raw in records]
            started = time.perf_counter()
            parsed = [orjson.loads(raw) for raw in raws]
            seconds += time.perf_counter() - started
            del parsed
        best = min(best, seconds)
    return _rates(best, corpus.size)


def time_naive_diff(corpus: Corpus, edits: dict[int, int], sample: int) -> dict[str, Any]:
    """DeepDiff of each study's whole raw JSON against the day before, per study of the edited day.

    Timed on ``sample`` unchanged and up to ``sample`` edited studies, weighted by the day's mix.
    """
    rng = random.Random(7)
    unchanged = rng.sample([n for n in range(corpus.size) if n not in edits], sample)
    edited = list(edits)[:sample]

    def mean_us(numbers: list[int]) -> float:
        total = 0.0
        for n in numbers:
            old, new = orjson.loads(corpus.raw(n)), orjson.loads(corpus.record(n, edits))
            started = time.perf_counter()
            DeepDiff(old, new, verbose_level=0, cache_size=0)
            total += time.perf_counter() - started
        return total / len(numbers) * 1e6

    share = len(edits) / corpus.size
    us = (1 - share) * mean_us(unchanged) + share * (mean_us(edited) if edited else 0.0)
    return {"us_per_study": us, "studies_per_s": 1e6 / us, "sample": len(unchanged) + len(edited)}


# --------------------------------------------------------------------------- report


def summarize(results: dict[str, Any], loads: dict[str, Any], naive: dict[str, Any]) -> None:
    """Add the target ratios to each backend's results, in place."""
    for res in results.values():
        unchanged_us = res["unchanged"]["us_per_study"]
        res["unchanged"]["vs_loads"] = loads["us_per_study"] / unchanged_us
        # An import parses then ingests: its speed against parsing alone.
        res["unchanged"]["with_parse_vs_loads"] = loads["us_per_study"] / (
            unchanged_us + loads["us_per_study"]
        )
        res["edited"]["vs_naive_deepdiff"] = naive["us_per_study"] / res["edited"]["us_per_study"]
        res["peak_rss_mb"] = max(res[p]["peak_rss_mb"] for p in PHASES)


Cell = Callable[[dict[str, Any]], str]


def _get(*path: str, fmt: str = "{:,.0f}") -> Cell:
    def cell(res: dict[str, Any]) -> str:
        value: Any = res
        for key in path:
            value = value[key]
        return fmt.format(value)

    return cell


ROWS: list[tuple[str, Cell]] = [
    ("1 first sight: studies/s", _get("first_sight", "studies_per_s")),
    ("  us/study", _get("first_sight", "us_per_study")),
    ("  versions / events written", lambda r: _pair(r["first_sight"])),
    ("2 unchanged: studies/s", _get("unchanged", "studies_per_s")),
    ("  us/study", _get("unchanged", "us_per_study")),
    ("  new versions (must be 0)", _get("unchanged", "new_versions")),
    ("  speed vs orjson.loads", _get("unchanged", "vs_loads", fmt="{:.2f}x")),
    ("  parse+ingest vs orjson.loads", _get("unchanged", "with_parse_vs_loads", fmt="{:.2f}x")),
    ("3 edited: studies/s", _get("edited", "studies_per_s")),
    ("  us/study", _get("edited", "us_per_study")),
    ("  versions / events written", lambda r: _pair(r["edited"])),
    ("  speed vs naive DeepDiff", _get("edited", "vs_naive_deepdiff", fmt="{:,.0f}x")),
    ("peak RSS, MB (whole bench process)", _get("peak_rss_mb")),
]


def _pair(phase: dict[str, Any]) -> str:
    return f"{phase['new_versions']:,} / {phase['new_events']:,}"


def report(doc: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    meta, results = doc["meta"], doc["results"]
    columns = [(b, results[b]) for b in results]
    if baseline is not None:
        old = baseline["results"]
        columns = [c for b in results for c in ((f"{b} before", old.get(b)), (b, results[b]))]
    width = 36
    lines = [
        f"ctmirror ingest benchmark: {meta['studies']:,} studies ({meta['base_records']:,} real "
        f"records under fresh ids), batch {meta['batch']}, {meta['cpus']} cores, {meta['date']}",
        f"orjson.loads: {doc['loads']['us_per_study']:,.0f} us/study "
        f"({doc['loads']['studies_per_s']:,.0f}/s); naive DeepDiff of raw JSON: "
        f"{doc['naive']['us_per_study']:,.0f} us/study (sample {doc['naive']['sample']})",
        "",
        " " * width + "".join(f"{name:>18}" for name, _ in columns),
    ]
    for label, cell in ROWS:
        cells = [cell(res) if res else "-" for _, res in columns]
        lines.append(f"{label:{width}}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def write_profiles(results: dict[str, Any], stamp: str) -> list[str]:
    paths = []
    for backend, res in results.items():
        for phase in PHASES:
            profiler = res[phase].pop("profile", None)
            if profiler is None:
                continue
            path = OUT_DIR / f"profile-ingest-{backend}-{phase}.txt"
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(30)
            stream.write("\n\n")
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
            path.write_text(stream.getvalue())
            paths.append(str(path.relative_to(REPO)))
    return paths


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200, help="studies per Ingestor.ingest call")
    parser.add_argument("--edit-fraction", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CTMIRROR_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="server where scratch databases are created and dropped",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile each phase")
    parser.add_argument("--naive-sample", type=int, default=30, help="studies DeepDiffed")
    parser.add_argument("--baseline", type=Path, help="an earlier run's JSON, shown beside")
    parser.add_argument("--label", default="", help="a word kept in the JSON")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep Python's GC thresholds (else: the sync's)"
    )
    args = parser.parse_args(argv)
    both = ("sqlite", "postgresql")
    return Options(
        backends=both if args.backend == "both" else (args.backend,),
        studies=args.studies,
        batch=args.batch,
        edit_fraction=args.edit_fraction,
        seed=args.seed,
        pg_url=args.postgres_url,
        profile=args.profile,
        naive_sample=args.naive_sample,
        baseline=args.baseline,
        label=args.label,
        default_gc=args.default_gc,
    )


def machine(opts: Options, corpus: Corpus) -> dict[str, Any]:
    import sqlite3

    return {
        "date": datetime.now(UTC).date().isoformat(),
        "label": opts.label,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "studies": corpus.size,
        "base_records": len(corpus.base),
        "raw_bytes_per_study": corpus.bytes_per_study,
        "batch": opts.batch,
        "edit_fraction": opts.edit_fraction,
        "gc": "default" if opts.default_gc else "relaxed (mirror.pipeline.sync.relaxed_gc)",
    }


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    corpus = Corpus.load(opts.studies)
    with _gc(opts):  # as the ingest phases run
        loads = time_loads(corpus, opts.batch)
    naive = time_naive_diff(corpus, corpus.edited(opts.edit_fraction, opts.seed), opts.naive_sample)
    results = {b: run_backend(b, corpus, opts) for b in opts.backends}
    summarize(results, loads, naive)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    profiles = write_profiles(results, stamp)
    doc = {"meta": machine(opts, corpus), "loads": loads, "naive": naive, "results": results}
    baseline = json.loads(opts.baseline.read_text()) if opts.baseline else None
    print(report(doc, baseline))
    path = OUT_DIR / f"bench_ingest-{stamp}.json"
    path.write_text(json.dumps(doc | {"profiles": profiles}, indent=2))
    print(f"\nJSON: {path.relative_to(REPO)}" + "".join(f"\nprofile: {p}" for p in profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
