# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Change-feed latency: ``GET /v1/changes`` through the ASGI app against plain SQL, same run.

    python bench/bench_feed.py [--backend sqlite|postgresql] [--events N] [--rebuild]
                               [--requests N] [--limit N]

1. Builds (once; cached under ``bench/out/``) a database of at least ``--events`` change
   events through the real write path, ``mirror.pipeline.ingest.Ingestor.ingest``: the 1,687 real
   records in ``../shared/data/ctgov/studies`` copied under fresh NCT ids (NCT9…), seeded as
   first versions in random order, then rounds of sponsor-style edits on a random fifth of
   the studies (status steps, enrollment, dates turning ACTUAL, sites added and closed,
   reworded outcomes and criteria, results posted, new collaborators), each round a few
   days after the last, every edit with new LastUpdate dates.
2. Measures p50/p99 latency of ``GET /v1/changes`` in-process (``httpx.ASGITransport``,
   the app from ``mirror.serve.app.create_app``) for each query shape below, and of the same
   query as plain SQL on a bare DB-API connection (``sqlite3`` / ``psycopg``), printing
   the ratio API/SQL. Cursors are drawn at random per request (fixed seed) so that the
   numbers are not those of one cached page.

Results: a table on stdout and JSON in ``bench/out/bench_feed-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "ctgov" / "studies"
OUT_DIR = REPO / "bench" / "out"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "ctmirror_bench_feed"
SEED = 20261122
FIRST_DAY = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
DAYS_PER_ROUND = 3
EDIT_SHARE = 0.2  # of the studies get a new version each round
BATCH = 400

sys.path.insert(0, str(REPO))

from _common import write_results

from mirror.config import LogSettings, load_settings
from mirror.logging import configure_logging
from mirror.pipeline import Ingestor
from mirror.source import Observation
from mirror.store import Database, blocks

# --------------------------------------------------------------------------- building


NEXT_STATUS = {
    "NOT_YET_RECRUITING": "RECRUITING",
    "RECRUITING": "ACTIVE_NOT_RECRUITING",
    "ENROLLING_BY_INVITATION": "ACTIVE_NOT_RECRUITING",
    "ACTIVE_NOT_RECRUITING": "COMPLETED",
    "SUSPENDED": "RECRUITING",
}
CITIES = [
    ("Springfield", "Illinois", "United States"),
    ("Lyon", None, "France"),
    ("Osaka", None, "Japan"),
    ("Porto Alegre", "Rio Grande do Sul", "Brazil"),
    ("Leeds", "England", "United Kingdom"),
]

Study = dict[str, Any]


def _module(study: Study, name: str) -> dict[str, Any]:
    result: dict[str, Any] = study["protocolSection"].setdefault(name, {})
    return result


def edit_status(study: Study, rng: random.Random) -> None:
    status = _module(study, "statusModule")
    status["overallStatus"] = NEXT_STATUS.get(status.get("overallStatus", ""), "RECRUITING")
    if status["overallStatus"] == "COMPLETED" and "completionDateStruct" in status:
        status["completionDateStruct"]["type"] = "ACTUAL"


def edit_enrollment(study: Study, rng: random.Random) -> None:
    info = _module(study, "designModule").setdefault("enrollmentInfo", {})
    info["count"] = max(1, int(info.get("count") or 0) + rng.randint(-20, 60))
    if rng.random() < 0.3:
        info["type"] = "ACTUAL"


def edit_dates(study: Study, rng: random.Random) -> None:
    status = _module(study, "statusModule")
    struct = status.setdefault("primaryCompletionDateStruct", {"date": "2027-01"})
    year, _, rest = str(struct.get("date", "2027-01")).partition("-")
    struct["date"] = f"{int(year or 2027) + rng.randint(0, 2)}-{rest or '06'}"
    struct["type"] = rng.choice(["ESTIMATED", "ACTUAL"])


def add_site(study: Study, rng: random.Random) -> None:
    city, state, country = rng.choice(CITIES)
    site = {
        "facility": f"{city} Clinical Research Unit {rng.randint(1, 999)}",
        "status": "RECRUITING",
        "city": city,
        "country": country,
    }
    if state:
        site["state"] = state
    _module(study, "contactsLocationsModule").setdefault("locations", []).append(site)


def close_site(study: Study, rng: random.Random) -> None:
    sites = _module(study, "contactsLocationsModule").get("locations") or []
    if sites:
        site = rng.choice(sites)
        if rng.random() < 0.5:
            sites.remove(site)
        else:
            site["status"] = "COMPLETED"


def reword_outcome(study: Study, rng: random.Random) -> None:
    outcomes = _module(study, "outcomesModule").get("primaryOutcomes") or []
    if outcomes:
        outcome = rng.choice(outcomes)
        outcome["timeFrame"] = f"{rng.randint(2, 104)} weeks"


def edit_criteria(study: Study, rng: random.Random) -> None:
    eligibility = _module(study, "eligibilityModule")
    criteria = eligibility.get("eligibilityCriteria", "")
    eligibility["eligibilityCriteria"] = criteria + f"\n* Amendment {rng.randint(1, 99)} applies"


def post_results(study: Study, rng: random.Random) -> None:
    study["hasResults"] = True


def add_collaborator(study: Study, rng: random.Random) -> None:
    sponsors = _module(study, "sponsorCollaboratorsModule")
    sponsors.setdefault("collaborators", []).append(
        {"name": f"Research Network {rng.randint(1, 500)}", "class": "OTHER"}
    )


EDITS: list[tuple[Callable[[Study, random.Random], None], int]] = [
    (edit_status, 3),
    (edit_enrollment, 3),
    (edit_dates, 3),
    (add_site, 3),
    (close_site, 2),
    (reword_outcome, 2),
    (edit_criteria, 1),
    (post_results, 1),
    (add_collaborator, 1),
]


def sponsor_update(study: Study, rng: random.Random, day: date) -> None:
    """One to three edits plus the new LastUpdate dates every registry update carries."""
    functions, weights = zip(*EDITS, strict=True)
    for edit in rng.choices(functions, weights, k=rng.randint(1, 3)):
        edit(study, rng)
    status = _module(study, "statusModule")
    status["lastUpdateSubmitDate"] = (day - timedelta(days=2)).isoformat()
    status["lastUpdatePostDateStruct"] = {"date": day.isoformat(), "type": "ACTUAL"}


@dataclass
class Corpus:
    """The current raw bytes of every synthetic study (parsed only while edited)."""

    records: dict[str, bytes]

    @classmethod
    def copies(cls, n_copies: int, rng: random.Random) -> Corpus:
        paths = sorted(DATA.glob("NCT*.json"))
        records: dict[str, bytes] = {}
        for copy in range(n_copies):
            for index, path in enumerate(paths):
                study = orjson.loads(path.read_bytes())
                nct_id = f"NCT{90_000_000 + copy * 10_000 + index:08d}"
                study["protocolSection"]["identificationModule"]["nctId"] = nct_id
                records[nct_id] = orjson.dumps(study)
        ids = list(records)
        rng.shuffle(ids)  # first sight in random order, as a registry-wide seed sees them
        return cls({i: records[i] for i in ids})


def observations(items: Sequence[tuple[str, bytes]], at: datetime) -> list[Observation]:
    return [Observation(i, raw, orjson.loads(raw), at) for i, raw in items]


def _batches(items: list[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def event_count(db: Database) -> int:
    """Events as the feed serves them: rows and the events of first-sight blocks."""
    with db.session() as session:
        return blocks.event_count(session)


def build(db: Database, target_events: int) -> dict[str, Any]:
    """Seed first versions, then edit rounds until ``target_events`` events are stored."""
    rng = random.Random(SEED)
    per_copy = 125_000  # events of first sight of the 1,687 records (74 fields each)
    corpus = Corpus.copies(max(1, math.ceil(0.75 * target_events / per_copy)), rng)
    ingestor = Ingestor(db, ignore=["derived.*"])
    started = time.monotonic()
    items = list(corpus.records.items())
    for n, batch in enumerate(_batches(items)):
        ingestor.ingest(observations(batch, FIRST_DAY + timedelta(seconds=n)))
    rounds = 0
    while (events := event_count(db)) < target_events:
        rounds += 1
        day = (FIRST_DAY + timedelta(days=DAYS_PER_ROUND * rounds)).date()
        chosen = rng.sample(list(corpus.records), round(EDIT_SHARE * len(corpus.records)))
        edited = []
        for nct_id in chosen:
            study = orjson.loads(corpus.records[nct_id])
            sponsor_update(study, rng, day)
            corpus.records[nct_id] = orjson.dumps(study)
            edited.append((nct_id, corpus.records[nct_id]))
        at = datetime.combine(day, FIRST_DAY.timetz())
        for n, batch in enumerate(_batches(edited)):
            ingestor.ingest(observations(batch, at + timedelta(seconds=n)))
        print(f"  round {rounds}: {events:,} events so far", file=sys.stderr, flush=True)
    return {
        "studies": len(corpus.records),
        "rounds": rounds,
        "events": event_count(db),
        "build_seconds": round(time.monotonic() - started, 1),
    }


def prepare(
    backend: str, pg_url: str, target_events: int, rebuild: bool, pg_database: str = PG_BENCH_DB
) -> tuple[str, dict]:
    """The URL of the cached benchmark database (built first when missing) and its metadata."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # One metadata file per database: PostgreSQL may hold several (--pg-database).
    meta_path = OUT_DIR / (
        "feed-sqlite.meta.json"
        if backend == "sqlite"
        else f"feed-postgresql-{pg_database}.meta.json"
    )
    if backend == "sqlite":
        path = OUT_DIR / "feed-sqlite.db"
        url = f"sqlite:///{path}"
        if rebuild or not meta_path.exists():
            meta_path.unlink(missing_ok=True)
            for stale in OUT_DIR.glob("feed-sqlite.db*"):
                stale.unlink()
    else:
        url = make_url(pg_url).set(database=pg_database).render_as_string(hide_password=False)
        if rebuild or not meta_path.exists():
            meta_path.unlink(missing_ok=True)
            _recreate_pg(pg_url, pg_database)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["events"] >= target_events:
            return url, meta
    db = Database(url)
    db.upgrade()
    print(f"building {backend} benchmark database ({target_events:,} events)…", file=sys.stderr)
    meta = build(db, target_events)
    if backend == "sqlite":
        with db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        meta["db_bytes"] = path.stat().st_size
    else:
        # What autovacuum would have done by the time anyone reads the feed.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        with db.engine.connect() as conn:
            meta["db_bytes"] = conn.execute(
                text("SELECT pg_database_size(current_database())")
            ).scalar_one()
    db.dispose()
    meta_path.write_text(json.dumps(meta, indent=2))
    return url, meta


def _recreate_pg(pg_url: str, name: str) -> None:
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Shape:
    """One kind of feed request: its query parameters and the same query as plain SQL."""

    name: str
    params: Callable[[random.Random], dict[str, Any]]
    sql: str | None  # placeholders: :after, :limit, :nct_id
    target: bool = False  # one of the four shapes the p99 target is about


def shapes(bounds: dict[str, Any], limit: int) -> list[Shape]:
    top, ids = bounds["max_id"], bounds["nct_ids"]
    deep = lambda r: r.randint(top // 4, 3 * top // 4)  # noqa: E731
    anywhere = lambda r: r.randint(0, top)  # noqa: E731
    base = "SELECT * FROM change_events WHERE id > :after"
    order = " ORDER BY id LIMIT :limit"
    return [
        Shape("head (after=0)", lambda r: {"after": 0}, base + order, True),
        Shape("deep cursor", lambda r: {"after": deep(r)}, base + order, True),
        Shape("tip (newest page)", lambda r: {"after": top - limit}, base + order),
        Shape(
            "field=status.*",
            lambda r: {"after": anywhere(r), "field": "status.*"},
            base + " AND field LIKE 'status.%'" + order,
            True,
        ),
        Shape(
            "single nct_id",
            lambda r: {"after": 0, "nct_id": r.choice(ids)},
            base + " AND nct_id = :nct_id" + order,
            True,
        ),
        Shape(
            "field=status.overallStatus",
            lambda r: {"after": anywhere(r), "field": "status.overallStatus"},
            base + " AND field = 'status.overallStatus'" + order,
        ),
        Shape("field=locations.*", lambda r: {"after": deep(r), "field": "locations.*"}, None),
        Shape("5 nct_ids", lambda r: {"after": 0, "nct_id": r.sample(ids, 5)}, None),
        Shape("kind=removed (deep)", lambda r: {"after": deep(r), "kind": "removed"}, None),
        Shape("initial=false (deep)", lambda r: {"after": deep(r), "initial": "false"}, None),
        Shape("since=last round", lambda r: {"since": bounds["last_day"]}, None),
    ]


def feed_bounds(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        # Events are rows and first-sight blocks (mirror/blocks.py): the feed spans both.
        top = conn.execute(
            text(
                "SELECT max(m) FROM (SELECT max(id) AS m FROM change_events"
                " UNION ALL SELECT max(last_id) FROM event_blocks) AS ids"
            )
        ).scalar_one()
        ids = list(conn.execute(text("SELECT nct_id FROM studies ORDER BY id")).scalars())
        last = conn.execute(
            text(
                "SELECT max(m) FROM (SELECT max(observed_at) AS m FROM change_events"
                " UNION ALL SELECT max(observed_at) FROM event_blocks) AS seen"
            )
        ).scalar_one()
    engine.dispose()
    last_day = str(last)[:10] + "T00:00:00Z"
    return {"max_id": top, "nct_ids": ids, "last_day": last_day}


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "n": len(samples)}


async def time_api(url: str, shape: Shape, cursors: list[dict[str, Any]], limit: int) -> Any:
    import httpx

    from mirror.app import build_app
    from mirror.serve import create_app

    app = build_app(load_settings(None, database={"url": url}), migrate=False)
    transport = httpx.ASGITransport(app=create_app(app))
    gc.freeze()  # as `ctmirror serve` does once its app is built
    samples, sizes = [], []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for n, params in enumerate(cursors):
            started = time.perf_counter()
            response = await client.get("/v1/changes", params={**params, "limit": limit})
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text
            if n >= WARMUP:
                samples.append(elapsed)
                sizes.append(len(response.json()["changes"]))
    app.close()
    return percentiles(samples), statistics.mean(sizes)


def time_sql(url: str, shape: Shape, cursors: list[dict[str, Any]], limit: int) -> Any:
    assert shape.sql is not None
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(make_url(url).database)
        sql = shape.sql
    else:
        import psycopg

        conn = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        sql = shape.sql.replace(":after", "%(after)s")
        sql = sql.replace(":limit", "%(limit)s").replace(":nct_id", "%(nct_id)s")
        sql = sql.replace("'status.%'", "'status.%%'")
    samples = []
    for n, params in enumerate(cursors):
        args = {"after": params.get("after", 0), "limit": limit, "nct_id": params.get("nct_id")}
        started = time.perf_counter()
        conn.execute(sql, args).fetchall()
        if n >= WARMUP:
            samples.append(time.perf_counter() - started)
    conn.close()
    return percentiles(samples)


WARMUP = 20


def measure(url: str, requests: int, limit: int) -> list[dict[str, Any]]:
    bounds = feed_bounds(url)
    rows = []
    for shape in shapes(bounds, limit):
        rng = random.Random(SEED)
        cursors = [shape.params(rng) for _ in range(requests + WARMUP)]
        api, mean_size = asyncio.run(time_api(url, shape, cursors, limit))
        row = {"shape": shape.name, "target": shape.target, "events_per_page": mean_size}
        row |= {f"api_{k}": v for k, v in api.items() if k != "n"}
        if shape.sql is not None:
            sql = time_sql(url, shape, cursors, limit)
            row |= {f"sql_{k}": v for k, v in sql.items() if k != "n"}
            row["ratio_p50"] = row["api_p50_ms"] / row["sql_p50_ms"]
            row["ratio_p99"] = row["api_p99_ms"] / row["sql_p99_ms"]
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    api = f"{row['api_p50_ms']:7.2f} {row['api_p99_ms']:7.2f}"
    if "sql_p50_ms" in row:
        sql = f"{row['sql_p50_ms']:7.3f} {row['sql_p99_ms']:7.3f}"
        ratio = f"{row['ratio_p50']:6.1f}x {row['ratio_p99']:6.1f}x"
    else:
        sql, ratio = f"{'-':>7} {'-':>7}", ""
    mark = "*" if row["target"] else " "
    return f"{mark} {row['shape']:28s} {row['events_per_page']:6.1f}  {api}   {sql}   {ratio}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument(
        "--pg-database", default=PG_BENCH_DB, help="Name of the PostgreSQL benchmark database."
    )
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--requests", type=int, default=300, help="Per query shape.")
    parser.add_argument("--limit", type=int, default=100, help="Page size of every request.")
    opts = parser.parse_args(argv)
    configure_logging(LogSettings(level="warning", format="json"))
    url, meta = prepare(opts.backend, opts.pg_url, opts.events, opts.rebuild, opts.pg_database)
    print(f"database: {json.dumps(meta)}")
    if opts.build_only:
        return
    print(f"\nGET /v1/changes, limit={opts.limit}, {opts.requests} requests per shape (ms)")
    print(f"  {'shape':28s} {'events':>6}  {'API p50':>7} {'p99':>7}   {'SQL p50':>7} {'p99':>7}")
    rows = measure(url, opts.requests, opts.limit)
    print()
    result = {"backend": opts.backend, "database": meta, "limit": opts.limit}
    result |= {"requests": opts.requests, "sqlite": sqlite3.sqlite_version, "results": rows}
    write_results(f"bench_feed-{opts.backend}", result)
    print("(* = the four shapes of the p99 <= 20 ms target)")


if __name__ == "__main__":
    main()
