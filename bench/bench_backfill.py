# ruff: noqa: E402  (imports follow the sys.path set-up)
"""History backfill throughput: registry versions stored per second, against the fake API.

    python bench/bench_backfill.py [--backend sqlite|postgresql|both] [--studies N]
                                   [--versions V] [--concurrency C]

The fake API (``tests/fake_ctgov.py``, in a child process so that serving does not fight the
client for the GIL) serves the record history of N real records (``../shared/data/ctgov``),
each with V registry versions built by ``tests/history_fixtures.py``: the oldest two in the
HTML-marked-up form of early registry versions, then plain text, with sponsor-style edits
along the way (status steps, enrollment, primary completion slipping, a reworded primary
outcome time frame). ``ctmirror backfill`` (``Backfiller.run`` exactly as the CLI runs it,
rate limit off, ``source.concurrency`` = C) then stores all of them in a fresh database;
a second run over the same studies measures the cost of finding everything already stored.

Reported per backend: versions/s and studies/s of the first run, events and classes written,
the seconds of the re-run, and the share of the first run's time spent fetching (the same
requests with nothing stored). Table on stdout, JSON in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov
import history_fixtures as hf
from _common import DEFAULT_PG_URL, fresh_database
from sqlalchemy import func, select

from mirror.app import build_app
from mirror.config import LogSettings, load_settings
from mirror.logging import configure_logging
from mirror.pipeline import Backfiller, BackfillRequest, BackfillSummary
from mirror.store import StudyVersion, VersionClassRow, event_count

Study = dict[str, Any]
NEXT_STATUS = {"NOT_YET_RECRUITING": "RECRUITING", "RECRUITING": "ACTIVE_NOT_RECRUITING"}


def _status(study: Study) -> Study:
    module = study["protocolSection"]["statusModule"]
    module["overallStatus"] = NEXT_STATUS.get(module.get("overallStatus", ""), "COMPLETED")
    return study


def _enrollment(n: int) -> Callable[[Study], Study]:
    def edit(study: Study) -> Study:
        info = (
            study["protocolSection"].setdefault("designModule", {}).setdefault("enrollmentInfo", {})
        )
        info["count"] = 40 + 25 * n
        return study

    return edit


def _slip(n: int) -> Callable[[Study], Study]:
    def edit(study: Study) -> Study:
        module = study["protocolSection"]["statusModule"]
        module["primaryCompletionDateStruct"] = {"date": f"{2027 + n // 12}-{n % 12 + 1:02d}"}
        return study

    return edit


def _time_frame(n: int) -> Callable[[Study], Study]:
    def edit(study: Study) -> Study:
        outcomes = study["protocolSection"].get("outcomesModule", {}).get("primaryOutcomes", [])
        if outcomes:
            outcomes[0]["timeFrame"] = f"{4 + n} weeks"
        return study

    return edit


def history(study: Study, versions: int) -> list[Study]:
    """``versions`` registry versions of a real record, oldest first, each edited a bit more."""
    edits = []
    for n in range(versions):
        steps = [_enrollment(n), _slip(n // 2)] + ([_time_frame(n)] if n % 3 == 2 else [])
        steps += [_status] if n == versions // 2 else []
        steps.append(hf.marked_up if n < 2 else hf.plain)
        edits.append(hf.compose(*steps))
    return hf.timeline(study, edits, step_days=60)


def _serve(conn: Connection, nct_ids: list[str], versions: int) -> None:
    """Child process: the fake API with the histories installed; stops on any message."""
    fake = fake_ctgov.FakeCtgov(ids=[])
    for nct_id in nct_ids:
        fake.set_history(nct_id, history(fake_ctgov.load_study(nct_id), versions))
    fake.start()
    conn.send((fake.base_url, fake.history_base_url))
    conn.recv()
    conn.send(len(fake.requests))
    fake.stop()


def backfill(url: str, base: str, history_base: str, ids: list[str], concurrency: int) -> Any:
    settings = load_settings(
        None,
        database={"url": url},
        source={
            "base_url": base,
            "history_base_url": history_base,
            "requests_per_minute": 1e9,  # measure ctmirror, not its politeness
            "concurrency": concurrency,
            "timeout_seconds": 120,
        },
        log={"level": "warning", "format": "json"},
    )
    app = build_app(settings)

    async def run() -> BackfillSummary:
        async with app.source() as source:
            return await Backfiller(app.db, source, settings).run(BackfillRequest(nct_ids=ids))

    try:
        started = time.perf_counter()
        summary = asyncio.run(run())
        seconds = time.perf_counter() - started
        with app.db.session() as session:
            stored = {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (StudyVersion, VersionClassRow)
            }
            stored["change_events"] = event_count(session)  # rows and first-sight blocks
    finally:
        app.close()
    if summary.failures:
        raise SystemExit(f"backfill failed: {summary.failures[:3]}")
    return seconds, summary, stored


def fetch_only(base: str, history_base: str, ids: list[str], concurrency: int) -> float:
    """The same requests as a backfill, nothing stored: the source's share."""
    from mirror.config import SourceSettings
    from mirror.source import ApiSource

    settings = SourceSettings(
        base_url=base,
        history_base_url=history_base,
        requests_per_minute=1e9,
        concurrency=concurrency,
        timeout_seconds=120,
    )

    async def run() -> None:
        async with ApiSource(settings) as source:
            for nct_id in ids:
                entries = await source.history(nct_id) or []
                await asyncio.gather(*(source.history_version(nct_id, e.version) for e in entries))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def measure(backend: str, opts: argparse.Namespace, fake: tuple[str, str], ids: list[str]) -> Any:
    with fresh_database(backend, opts.pg_url) as url:
        first, summary, stored = backfill(url, *fake, ids, opts.concurrency)
        again, rerun, _ = backfill(url, *fake, ids, opts.concurrency)
    fetching = fetch_only(*fake, ids, opts.concurrency)
    versions = summary.counts["versions"]
    return {
        "backend": backend,
        "studies": len(ids),
        "versions": versions,
        "seconds": round(first, 2),
        "versions_per_s": round(versions / first, 1),
        "studies_per_s": round(len(ids) / first, 2),
        "events": stored["change_events"],
        "classes": stored["version_classes"],
        "rerun_seconds": round(again, 2),
        "rerun_present": rerun.counts["present"],
        "fetch_only_seconds": round(fetching, 2),
        "fetch_share": round(fetching / first, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--versions", type=int, default=12, help="Registry versions per study.")
    parser.add_argument("--concurrency", type=int, default=4)
    opts = parser.parse_args(argv)
    configure_logging(LogSettings(level="warning", format="json"))
    ids = fake_ctgov.all_study_ids()[: opts.studies]
    conn, child = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_serve, args=(child, ids, opts.versions), daemon=True
    )
    process.start()
    fake = conn.recv()
    backends = ["sqlite", "postgresql"] if opts.backend == "both" else [opts.backend]
    rows = [measure(backend, opts, fake, ids) for backend in backends]
    conn.send("stop")
    requests = conn.recv()
    process.join(10)
    print(
        f"\nbackfill of {len(ids)} studies x {opts.versions} registry versions "
        f"(concurrency {opts.concurrency}, no rate limit; {requests:,} requests served)"
    )
    print(f"{'':24s}" + "".join(f"{r['backend']:>14s}" for r in rows))
    for key in (
        "versions",
        "seconds",
        "versions_per_s",
        "studies_per_s",
        "events",
        "classes",
        "rerun_seconds",
        "fetch_only_seconds",
        "fetch_share",
    ):
        print(f"{key:24s}" + "".join(f"{r[key]:>14,}" for r in rows))
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    path = out / f"bench_backfill-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    meta = {"python": platform.python_version(), "options": vars(opts)}
    path.write_text(json.dumps({"results": rows, **meta}, indent=2))
    print(f"\nJSON: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
