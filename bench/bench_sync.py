# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Sync throughput of ctmirror against the fake API v2 serving the 1,687 real records.

    python bench/bench_sync.py [--backend sqlite|postgresql|both] [--rounds N] [--profile]

For each backend and round, on a fresh database built through ``mirror.app.build_app``:

1. first sync of every id (``SyncRequest(nct_ids=...)``);
2. the same sync again with nothing changed (must write 0 versions);
3. the same sync after realistic sponsor edits to 1% of the records in the fake;
4. a first sync of the whole registry as a search (``everything=True``, pageSize 1000),
   on a second fresh database;
5. where the unchanged re-sync's time goes: the source alone (HTTP + JSON parse), and
   ``orjson.loads`` / ``orjson.dumps`` / ``normalize`` / ``part_hashes`` / the ingest stage
   timed in-process over the same records, as shares of the re-sync's per-study cost;
6. database bytes per stored study version after the first sync.

The fake runs in its own process so that serving does not compete with the client for
the GIL (the real API is another machine). Results: a table on stdout and JSON in
``bench/out/``. ``--profile`` adds one cProfile pass of the first and the unchanged sync.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov  # (the test fake: a real HTTP server of API v2)
from _common import fresh_database

import mirror.pipeline.sync
from mirror.app import App, build_app
from mirror.config import LogSettings, Settings, SourceSettings, load_settings
from mirror.logging import configure_logging
from mirror.pipeline import Ingestor, RunSummary, SyncRequest
from mirror.record import content_hash, normalize, part_hashes, utcnow
from mirror.source import ApiSource, Observation
from mirror.store import Base, StudyVersion, event_count

OUT_DIR = REPO / "bench" / "out"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EDIT_DAY = "2026-11-20"
# A sponsor's next step for a study that is still moving; finished studies are rarely edited.
NEXT_STATUS = {
    "NOT_YET_RECRUITING": "RECRUITING",
    "RECRUITING": "ACTIVE_NOT_RECRUITING",
    "ENROLLING_BY_INVITATION": "ACTIVE_NOT_RECRUITING",
    "ACTIVE_NOT_RECRUITING": "COMPLETED",
    "SUSPENDED": "RECRUITING",
}


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class Records:
    """The real records as the fake serves them (bytes), and each one's overall status.

    Parsed records are made where needed and dropped after: a process holding all 1,687
    parsed trees pays for them in every garbage collection, and ctmirror never does.
    """

    raw: dict[str, bytes]
    statuses: dict[str, str | None]

    @classmethod
    def load(cls) -> Records:
        studies = fake_ctgov.DATA_DIR / "studies"
        raw = {i: (studies / f"{i}.json").read_bytes() for i in fake_ctgov.all_study_ids()}
        return cls(raw, {i: _status(orjson.loads(b)) for i, b in raw.items()})

    @property
    def ids(self) -> list[str]:
        return list(self.raw)

    def chunks(self, size: int) -> Iterator[list[bytes]]:
        raws = list(self.raw.values())
        for start in range(0, len(raws), size):
            yield raws[start : start + size]

    def editable(self, fraction: float, seed: int) -> list[str]:
        """``fraction`` of all ids, drawn from studies whose status can still move on."""
        moving = [i for i, status in self.statuses.items() if status in NEXT_STATUS]
        count = max(1, round(fraction * len(self.raw)))
        return sorted(random.Random(seed).sample(moving, min(count, len(moving))))


def _status(study: dict[str, Any]) -> str | None:
    status = study["protocolSection"].get("statusModule", {}).get("overallStatus")
    return str(status) if status is not None else None


def sponsor_edit(study: dict[str, Any], n: int) -> None:
    """What a sponsor's routine update looks like: status step, enrollment, one new site."""
    ps = study["protocolSection"]
    status = ps.setdefault("statusModule", {})
    status["statusVerifiedDate"] = EDIT_DAY[:7]
    status["lastUpdateSubmitDate"] = EDIT_DAY
    status["lastUpdatePostDateStruct"] = {"date": EDIT_DAY, "type": "ACTUAL"}
    new_status = NEXT_STATUS.get(status.get("overallStatus", ""), "RECRUITING")
    status["overallStatus"] = new_status
    enrollment = ps.setdefault("designModule", {}).setdefault("enrollmentInfo", {})
    enrollment["count"] = int(enrollment.get("count") or 0) + 3 + n % 40
    if new_status in ("ACTIVE_NOT_RECRUITING", "COMPLETED"):
        enrollment["type"] = "ACTUAL"
    sites = ps.setdefault("contactsLocationsModule", {}).setdefault("locations", [])
    sites.append(
        {
            "facility": f"Springfield Clinical Research Center {n}",
            "status": "RECRUITING" if new_status == "RECRUITING" else "NOT_YET_RECRUITING",
            "city": "Springfield",
            "state": "Illinois",
            "zip": "62701",
            "country": "United States",
            "geoPoint": {"lat": 39.80172, "lon": -89.64371},
        }
    )


# --------------------------------------------------------------------------- the fake, in a process


def _serve_fake(conn: Connection) -> None:
    """Child process: serve every real record; obey ("edit", ids) / ("reset",) / ("stop",)."""
    fake = fake_ctgov.FakeCtgov().start()
    originals: dict[str, dict[str, Any]] = {}
    conn.send(fake.base_url)
    while True:
        command, *args = conn.recv()
        if command == "edit":
            for n, nct_id in enumerate(args[0]):
                originals.setdefault(nct_id, fake.get(nct_id))
                fake.edit(nct_id, lambda study, n=n: sponsor_edit(study, n))
            conn.send(len(args[0]))
        elif command == "reset":
            for study in originals.values():
                fake.put(study)
            conn.send(len(originals))
            originals.clear()
        elif command == "requests":
            conn.send(len(fake.requests))
        else:
            fake.stop()
            conn.send(None)
            return


class FakeProcess:
    """The fake API v2 with all real records, in a child process, driven over a pipe."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve_fake, args=(child,), daemon=True)
        self._process.start()
        self.base_url: str = self._conn.recv()

    def _ask(self, *command: Any) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def edit(self, nct_ids: list[str]) -> int:
        return int(self._ask("edit", nct_ids))

    def reset(self) -> int:
        return int(self._ask("reset"))

    def request_count(self) -> int:
        return int(self._ask("requests"))

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._ask("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()


# --------------------------------------------------------------------------- databases and the app


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...]
    rounds: int
    pg_url: str
    concurrency: int
    edit_fraction: float
    seed: int
    config: Path | None
    profile: bool


def make_settings(db_url: str, base_url: str, opts: Options) -> Settings:
    return load_settings(
        opts.config,
        database={"url": db_url},
        source={
            "base_url": base_url,
            "requests_per_minute": 1e9,  # measure ctmirror, not its politeness
            "concurrency": opts.concurrency,
            "timeout_seconds": 120,
        },
        log={"level": "warning", "format": "json"},
    )


@contextlib.contextmanager
def open_app(backend: str, base_url: str, opts: Options) -> Iterator[App]:
    with fresh_database(backend, opts.pg_url) as url:
        app = build_app(make_settings(url, base_url, opts))
        try:
            yield app
        finally:
            app.close()


def stored_counts(app: App) -> tuple[int, int]:
    with app.db.session() as session:
        versions = session.scalar(select(func.count()).select_from(StudyVersion)) or 0
        events = event_count(session)  # rows and first-sight blocks
    return versions, events


# --------------------------------------------------------------------------- timed syncs


async def _sync(app: App, request: SyncRequest) -> RunSummary:
    async with app.source() as source:
        return await app.syncer(source).run(request)


def timed_sync(app: App, request: SyncRequest, fake: FakeProcess) -> dict[str, Any]:
    """Run one sync; its wall time, throughput, what it wrote and how many requests it made."""
    versions, events = stored_counts(app)
    requests = fake.request_count()
    gc.collect()
    started = time.perf_counter()
    summary = asyncio.run(_sync(app, request))
    wall = time.perf_counter() - started
    if summary.counts["failed"]:
        raise SystemExit(
            f"bench: {summary.counts['failed']} studies failed: {summary.failures[:3]}"
        )
    after_versions, after_events = stored_counts(app)
    studies = summary.counts["fetched"]
    return {
        "wall_s": wall,
        "studies": studies,
        "studies_per_s": studies / wall,
        "us_per_study": wall / studies * 1e6,
        "new_versions": after_versions - versions,
        "new_events": after_events - events,
        "outcomes": {k: summary.counts[k] for k in ("new", "changed", "unchanged", "gone")},
        "requests": fake.request_count() - requests,
    }


def time_ingest_only(app: App, records: Records) -> float:
    """Seconds for the ingest stage alone (normalize + hash + database) over every record."""
    ingestor = Ingestor(app.db, ignore=app.settings.diff.ignore)

    def prepare(chunk: list[bytes]) -> list[Observation]:
        now = utcnow()
        parsed = [orjson.loads(raw) for raw in chunk]
        return [Observation(_nct_id(s), raw, s, now) for raw, s in zip(chunk, parsed, strict=True)]

    return _chunked(records, app.settings.sync.batch_size, prepare, ingestor.ingest)


def _nct_id(study: dict[str, Any]) -> str:
    return str(study["protocolSection"]["identificationModule"]["nctId"])


def _chunked(
    records: Records,
    size: int,
    prepare: Callable[[list[bytes]], Any],
    stage: Callable[[Any], object],
) -> float:
    """Seconds spent in ``stage`` over every chunk of records; ``prepare`` runs untimed."""
    total = 0.0
    gc.collect()
    for chunk in records.chunks(size):
        arg = prepare(chunk)
        started = time.perf_counter()
        stage(arg)
        total += time.perf_counter() - started
    return total


def storage(app: App) -> dict[str, Any]:
    """Bytes on disk per stored version, with a per-table breakdown (indexes included)."""
    versions, _ = stored_counts(app)
    if app.db.is_sqlite:
        # Move the WAL into the main file (outside any transaction) so its size is the data's.
        raw = app.db.engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
    with app.db.engine.connect() as conn:
        payload = conn.execute(
            select(
                func.sum(func.length(StudyVersion.raw)),
                func.sum(func.length(StudyVersion.canonical)),
            )
        ).one()
        rows: list[tuple[str, int]]
        if app.db.is_sqlite:
            result = conn.exec_driver_sql(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
            )
            rows = [(str(name), int(size)) for name, size in result]
            total = Path(app.db.url.database or "").stat().st_size
        else:
            size_of = text("SELECT pg_total_relation_size(:t)")
            rows = [
                (t.name, int(conn.execute(size_of, {"t": t.name}).scalar_one()))
                for t in Base.metadata.sorted_tables
            ]
            total = sum(size for _, size in rows)
    return {
        "versions": versions,
        "total_bytes": total,
        "bytes_per_version": total / versions,
        "tables": dict(rows),
        "raw_zstd_bytes_per_version": int(payload[0]) / versions,
        "canonical_zstd_bytes_per_version": int(payload[1]) / versions,
    }


def run_round(
    backend: str, fake: FakeProcess, records: Records, opts: Options, n: int
) -> dict[str, Any]:
    """One round on one backend: phases 1-3 and 6 on one database, phase 4 on another."""
    result: dict[str, Any] = {}
    by_ids = SyncRequest(nct_ids=records.ids)
    with open_app(backend, fake.base_url, opts) as app:
        result["first_sync"] = timed_sync(app, by_ids, fake)
        result["storage"] = storage(app)
        result["unchanged_resync"] = timed_sync(app, by_ids, fake)
        result["ingest_only_s"] = time_ingest_only(app, records)
        edited = records.editable(opts.edit_fraction, opts.seed + n)
        fake.edit(edited)
        try:
            result["edited_resync"] = timed_sync(app, by_ids, fake)
        finally:
            fake.reset()
        result["edited_resync"]["edited_studies"] = len(edited)
    with open_app(backend, fake.base_url, opts) as app:
        result["first_sync_search"] = timed_sync(app, SyncRequest(everything=True), fake)
    return result


# --------------------------------------------------------------------------- in-process breakdown


async def _source_only(app_settings: Settings, ids: list[str]) -> int:
    count = 0
    async with ApiSource(app_settings.source) as source:
        async for page in source.by_ids(ids):
            count += len(page.items)
    return count


def cpu_breakdown(records: Records, settings: Settings, repeat: int) -> dict[str, float]:
    """Seconds over all records for the source alone and each CPU stage, best of ``repeat``.

    The CPU stages run a page at a time (``ids_per_request`` records kept alive together),
    as in a sync, with everything else the stage needs prepared outside the timing.
    """
    ignore, page = settings.diff.ignore, settings.source.ids_per_request

    def parse(chunk: list[bytes]) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in chunk]

    def canon(chunk: list[bytes]) -> list[dict[str, Any]]:
        return [normalize(study, ignore) for study in parse(chunk)]

    stages: dict[str, Callable[[], float]] = {
        "orjson_loads_s": lambda: _chunked(records, page, lambda c: c, parse),
        "orjson_dumps_s": lambda: _chunked(
            records, page, parse, lambda studies: [orjson.dumps(s) for s in studies]
        ),
        "normalize_s": lambda: _chunked(
            records, page, parse, lambda studies: [normalize(s, ignore) for s in studies]
        ),
        "hash_s": lambda: _chunked(
            records, page, canon, lambda recs: [content_hash(part_hashes(r)) for r in recs]
        ),
    }

    def source() -> float:
        return _wall(lambda: asyncio.run(_source_only(settings, records.ids)))

    result = {"source_only_s": min(source() for _ in range(repeat))}
    result |= {name: min(fn() for _ in range(repeat)) for name, fn in stages.items()}
    return result


def _wall(fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- profiling


def profile_syncs(backend: str, fake: FakeProcess, records: Records, opts: Options) -> list[Path]:
    """cProfile of the first and the unchanged sync: event-loop thread and ingest thread apart."""
    written = []
    by_ids = SyncRequest(nct_ids=records.ids)
    with open_app(backend, fake.base_url, opts) as app:
        for phase in ("first_sync", "unchanged_resync"):
            loop_prof, ingest_stats = cProfile.Profile(), _IngestProfiles()
            with ingest_stats.installed():
                loop_prof.enable()
                asyncio.run(_sync(app, by_ids))
                loop_prof.disable()
            path = OUT_DIR / f"profile-{backend}-{phase}.txt"
            path.write_text(
                _top("event-loop thread (source: HTTP, JSON, batching)", loop_prof)
                + _top(
                    "ingest worker thread (normalize, hash, diff, database)", ingest_stats.merged()
                )
            )
            loop_prof.dump_stats(path.with_suffix(".loop.prof"))
            ingest_stats.merged().dump_stats(str(path.with_suffix(".ingest.prof")))
            written.append(path)
    return written


class _IngestProfiles:
    """Profiles each ``mirror.pipeline.sync._ingest_items`` call on the worker thread it runs on."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = mirror.pipeline.sync._ingest_items

        def profiled(*args: Any) -> Any:
            prof = cProfile.Profile()
            self.profiles.append(prof)
            return prof.runcall(original, *args)

        mirror.pipeline.sync._ingest_items = profiled  # type: ignore[assignment]
        try:
            yield
        finally:
            mirror.pipeline.sync._ingest_items = original

    def merged(self) -> pstats.Stats:
        stats = pstats.Stats(self.profiles[0])
        for prof in self.profiles[1:]:
            stats.add(prof)
        return stats


def _top(title: str, prof: cProfile.Profile | pstats.Stats) -> str:
    buf = io.StringIO()
    stats = prof if isinstance(prof, pstats.Stats) else pstats.Stats(prof)
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(25)
    return f"==== {title}\n{buf.getvalue()}\n"


# --------------------------------------------------------------------------- summary and report


def summarize(
    rounds: list[dict[str, Any]], cpu: dict[str, float], n_studies: int
) -> dict[str, Any]:
    """Medians over rounds, and the unchanged re-sync broken down per study."""

    def med(path: tuple[str, ...]) -> float:
        return float(statistics.median(_dig(r, path) for r in rounds))

    phases = ("first_sync", "unchanged_resync", "edited_resync", "first_sync_search")
    out: dict[str, Any] = {
        p: {k: med((p, k)) for k in ("wall_s", "studies_per_s", "us_per_study")} for p in phases
    }
    for p in phases:
        walls = [r[p]["wall_s"] for r in rounds]
        out[p]["wall_s_range"] = [min(walls), max(walls)]
        last = rounds[-1][p]
        out[p] |= {k: last[k] for k in ("studies", "new_versions", "new_events", "requests")}
        out[p]["outcomes"] = last["outcomes"]
    out["edited_resync"]["edited_studies"] = rounds[-1]["edited_resync"]["edited_studies"]
    out["unchanged_resync"]["new_versions_each_round"] = [
        r["unchanged_resync"]["new_versions"] for r in rounds
    ]
    out["storage"] = rounds[-1]["storage"]
    per = out["unchanged_resync"]["us_per_study"]
    us = {k.removesuffix("_s"): v / n_studies * 1e6 for k, v in cpu.items()}
    us["ingest_only"] = med(("ingest_only_s",)) / n_studies * 1e6
    us["database"] = us["ingest_only"] - us["normalize"] - us["hash"]
    out["breakdown"] = {k: {"us_per_study": v, "share_of_resync": v / per} for k, v in us.items()}
    return out


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


Cell = Callable[[dict[str, Any]], str]


def _num(*path: str, fmt: str = "{:,.0f}") -> Cell:
    return lambda s: fmt.format(_dig(s, path))


def report(summary: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """The summary as a fixed-width table, one column per backend."""
    secs = "{:.2f}"
    rows: list[tuple[str, Cell]] = [
        ("1 first sync by id: wall s", _num("first_sync", "wall_s", fmt=secs)),
        ("  studies/s", _num("first_sync", "studies_per_s")),
        ("  versions / events written", lambda s: _pair(s["first_sync"])),
        ("2 unchanged re-sync: wall s", _num("unchanged_resync", "wall_s", fmt=secs)),
        ("  studies/s", _num("unchanged_resync", "studies_per_s")),
        ("  new versions (must be 0)", _num("unchanged_resync", "new_versions")),
        ("  speed-up over first sync", lambda s: f"{_ratio(s, 'unchanged_resync'):.1f}x"),
        ("3 re-sync, 1% edited: wall s", _num("edited_resync", "wall_s", fmt=secs)),
        ("  studies/s", _num("edited_resync", "studies_per_s")),
        ("  edited / versions / events", lambda s: _edited(s["edited_resync"])),
        ("4 first sync as search: wall s", _num("first_sync_search", "wall_s", fmt=secs)),
        ("  studies/s", _num("first_sync_search", "studies_per_s")),
        ("  requests (search / by id)", _requests),
        ("5 unchanged re-sync, us/study", _num("unchanged_resync", "us_per_study")),
    ]
    rows += [(label, _share(key)) for key, label in _BREAKDOWN_ROWS]
    rows += [
        ("6 database bytes / version", _num("storage", "bytes_per_version")),
        ("  change_events (+indexes)", _table("change_events")),
        ("  event_blocks (+indexes)", _table("event_blocks")),
        ("  study_versions (+indexes)", _table("study_versions")),
        ("  raw JSON, zstd", _num("storage", "raw_zstd_bytes_per_version")),
        ("  canonical record, zstd", _num("storage", "canonical_zstd_bytes_per_version")),
    ]
    width, backends = 34, list(summary)
    lines = [_header(meta) + " " * width + "".join(f"{b:>22}" for b in backends)]
    lines += [
        f"{label:{width}}" + "".join(f"{cell(summary[b]):>22}" for b in backends)
        for label, cell in rows
    ]
    return "\n".join(lines)


_BREAKDOWN_ROWS = (
    ("source_only", "  source alone (HTTP+parse+dump)"),
    ("orjson_loads", "    of which orjson.loads"),
    ("orjson_dumps", "    of which orjson.dumps (raw)"),
    ("ingest_only", "  ingest stage alone"),
    ("normalize", "    of which normalize"),
    ("hash", "    of which part_hashes+content_hash"),
    ("database", "    of which database (the rest)"),
)


def _header(meta: dict[str, Any]) -> str:
    rpm, ids, page = meta["default_requests_per_minute"], meta["ids_per_request"], meta["page_size"]
    return (
        f"ctmirror sync benchmark: {meta['studies']:,} real studies, {meta['cpus']} cores, "
        f"median of {meta['rounds']} round(s), {meta['date']}\n"
        f"raw JSON {meta['raw_bytes_per_study']:,.0f} bytes/study; concurrency "
        f"{meta['concurrency']}, {ids} ids/request, batch {meta['batch_size']}\n"
        f"the default {rpm:g} requests/min would allow {rpm * ids / 60:.0f} studies/s by id, "
        f"{rpm * page / 60:.0f} by search\n"
    )


def _pair(phase: dict[str, Any]) -> str:
    return f"{phase['new_versions']} / {phase['new_events']}"


def _edited(phase: dict[str, Any]) -> str:
    return f"{phase['edited_studies']} / {phase['new_versions']} / {phase['new_events']}"


def _ratio(s: dict[str, Any], phase: str) -> float:
    return float(s[phase]["studies_per_s"] / s["first_sync"]["studies_per_s"])


def _requests(s: dict[str, Any]) -> str:
    return f"{s['first_sync_search']['requests']} / {s['first_sync']['requests']}"


def _table(name: str) -> Cell:
    return lambda s: f"{s['storage']['tables'][name] / s['storage']['versions']:,.0f}"


def _share(key: str) -> Cell:
    def cell(s: dict[str, Any]) -> str:
        part = s["breakdown"][key]
        return f"{part['us_per_study']:,.0f} ({part['share_of_resync']:.0%})"

    return cell


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per backend (median)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CTMIRROR_BENCH_POSTGRES_URL", DEFAULT_PG_URL),
        help="server where scratch databases are created and dropped "
        "(default $CTMIRROR_BENCH_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="source.concurrency")
    parser.add_argument("--edit-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "config" / "ctmirror.toml",
        help="settings file the overrides apply to (default: the repo's)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile two syncs")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    both = ("sqlite", "postgresql")
    return Options(
        backends=both if args.backend == "both" else (args.backend,),
        rounds=args.rounds,
        pg_url=args.postgres_url,
        concurrency=args.concurrency,
        edit_fraction=args.edit_fraction,
        seed=args.seed,
        config=args.config if args.config.is_file() else None,
        profile=args.profile,
    )


def _scrub_environment() -> None:
    # Settings from the environment beat load_settings' overrides: keep the bench's own.
    for name in [n for n in os.environ if n.startswith("CTMIRROR_") and "__" in n]:
        print(f"bench: ignoring {name} from the environment", file=sys.stderr)
        del os.environ[name]


def machine(opts: Options, records: Records, settings: Settings) -> dict[str, Any]:
    import sqlite3

    info = {
        "date": datetime.now(UTC).date().isoformat(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "mirror_modified": bool(_git("status", "--porcelain", "--", "mirror")),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "studies": len(records.ids),
        "raw_bytes_per_study": sum(map(len, records.raw.values())) / len(records.ids),
        "rounds": opts.rounds,
        "concurrency": settings.source.concurrency,
        "ids_per_request": settings.source.ids_per_request,
        "batch_size": settings.sync.batch_size,
        "page_size": settings.source.page_size,
        "edit_fraction": opts.edit_fraction,
        # What the shipped request rate allows, for comparison with the measured throughput.
        "default_requests_per_minute": SourceSettings().requests_per_minute,
    }
    if "postgresql" in opts.backends:
        engine = create_engine(opts.pg_url)
        with engine.connect() as conn:
            info["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    return info


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    _scrub_environment()
    configure_logging(LogSettings(level="warning", format="json"))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    records = Records.load()
    fake = FakeProcess()
    try:
        settings = make_settings("sqlite://", fake.base_url, opts)
        meta = machine(opts, records, settings)
        cpu = cpu_breakdown(records, settings, repeat=opts.rounds)
        results: dict[str, list[dict[str, Any]]] = {}
        summary: dict[str, dict[str, Any]] = {}
        for backend in opts.backends:
            results[backend] = []
            for n in range(opts.rounds):
                print(f"bench: {backend} round {n + 1}/{opts.rounds}", file=sys.stderr)
                results[backend].append(run_round(backend, fake, records, opts, n))
            summary[backend] = summarize(results[backend], cpu, len(records.ids))
        profiles = [
            str(p.relative_to(REPO))
            for b in (opts.backends if opts.profile else ())
            for p in profile_syncs(b, fake, records, opts)
        ]  # fmt: skip
    finally:
        fake.close()
    print(report(summary, meta))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"bench_sync-{stamp}.json"
    document = {
        "meta": meta,
        "cpu_s": cpu,
        "summary": summary,
        "rounds": results,
        "profiles": profiles,
    }
    path.write_text(json.dumps(document, indent=2))
    print(f"\nJSON: {path.relative_to(REPO)}" + "".join(f"\nprofile: {p}" for p in profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
