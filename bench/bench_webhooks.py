# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Webhook delivery throughput and sync-commit -> receiver latency.

    python bench/bench_webhooks.py [--backend sqlite|postgresql|both] [--subscriptions K]
                                   [--commits N] [--poll SECONDS]

For each backend, on a fresh database:

1. **throughput**: the 1,687 real records are ingested (one outbox row each) for K
   subscriptions that want every first version, so fan-out writes 1,687 x K deliveries;
   then ``Dispatcher.drain`` (default settings: 16 in flight, real signing, the egress guard,
   httpx) delivers all of them to a local receiver. Reported: fan-out rows/s and
   deliveries/s (target: >= 300/s on a 2-core machine).
2. **latency**: a real ``ctmirror daemon`` process (default ``webhooks.poll_seconds`` = 1 s)
   dispatches while this process commits N study versions, one at a time, 20-120 ms apart,
   through the ingest stage (as a ``ctmirror sync`` cron job would: another process, so the
   daemon is not woken and must find them by polling). Latency = the receiver's arrival
   time - the commit's return, per version. Reported: p50 / p90 / p99 / max (target:
   p50 <= 1 s). A daemon's own syncs wake its dispatcher per batch, which is faster still.

The receiver is uvicorn in its own process (the receiver of a real subscriber is another
machine); it answers 204 and logs each arrival. Results: a table on stdout, JSON in
``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov  # (for the real records' location)
from _common import ReceiverProcess, command_env, free_port, fresh_database

from mirror.app import App, build_app
from mirror.config import LogSettings, load_settings
from mirror.logging import configure_logging
from mirror.notify import (
    Dispatcher,
    EgressPolicy,
    HttpSender,
    Links,
    SubscriptionSpec,
    add_subscription,
    fan_out,
)
from mirror.pipeline import Ingestor
from mirror.record import utcnow
from mirror.source import Observation

OUT_DIR = REPO / "bench" / "out"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

RECEIVER = """
import sys, time, orjson, uvicorn
out = open(sys.argv[2], "ab", buffering=0)
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    at = time.time()
    doc = orjson.loads(body)
    out.write(orjson.dumps({"id": doc["id"], "nct_id": doc["nct_id"],
                            "version": doc["version"], "t": at}) + b"\\n")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""


# -- plumbing -------------------------------------------------------------------------------


class Receiver(ReceiverProcess):
    """uvicorn in a subprocess, appending one JSON line per arrival to a file."""

    def __init__(self, directory: Path) -> None:
        super().__init__(RECEIVER, directory, REPO)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def arrivals(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]


def records() -> dict[str, bytes]:
    studies = fake_ctgov.DATA_DIR / "studies"
    return {i: (studies / f"{i}.json").read_bytes() for i in fake_ctgov.all_study_ids()}


def observation(nct_id: str, raw: bytes) -> Observation:
    return Observation(nct_id, raw, orjson.loads(raw), utcnow())


def edited(nct_id: str, raw: bytes, n: int) -> Observation:
    """The record with a new overall status (a sponsor's update)."""
    study = orjson.loads(raw)
    study["protocolSection"]["statusModule"]["overallStatus"] = f"BENCH_{n}"
    data = orjson.dumps(study)
    return Observation(nct_id, data, study, utcnow())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- 1. throughput --------------------------------------------------------------------------


def throughput(app: App, receiver: Receiver, data: dict[str, bytes], subs: int) -> dict[str, Any]:
    for _ in range(subs):
        spec = SubscriptionSpec(receiver.url, include_initial=True, fields=["status.*"])
        add_subscription(app.db, spec, EgressPolicy())
    ingestor = Ingestor(app.db, ignore=app.settings.diff.ignore)
    items = [observation(i, raw) for i, raw in data.items()]
    started = time.perf_counter()
    for start in range(0, len(items), 200):
        ingestor.ingest(items[start : start + 200])
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = written = 0
    while True:
        done, made = fan_out(app.db, Links.of(app.settings))
        rows, written = rows + done, written + made
        if not done:
            break
    fan_out_s = time.perf_counter() - started
    started = time.perf_counter()
    attempts = asyncio.run(_drain(app))
    deliver_s = time.perf_counter() - started
    arrived = len(receiver.arrivals())
    if arrived != written or attempts != written:
        raise SystemExit(f"bench: {written} deliveries, {attempts} attempts, {arrived} arrived")
    return {
        "versions": rows, "deliveries": written, "ingest_s": round(ingest_s, 3),
        "fan_out_s": round(fan_out_s, 3), "fan_out_rows_per_s": round(rows / fan_out_s),
        "deliver_s": round(deliver_s, 3), "deliveries_per_s": round(written / deliver_s),
    }  # fmt: skip


async def _drain(app: App) -> int:
    sender = HttpSender(app.settings.webhooks)
    try:
        return await Dispatcher(app.db, app.settings, sender, "bench").drain()
    finally:
        await sender.aclose()


# -- 2. latency -----------------------------------------------------------------------------


def latency(
    app: App, receiver: Receiver, data: dict[str, bytes], commits: int, poll: float
) -> dict[str, Any]:
    ids = list(data)[:commits]
    ingestor = Ingestor(app.db, ignore=app.settings.diff.ignore)
    ingestor.ingest([observation(i, data[i]) for i in ids])  # first sight: not delivered
    add_subscription(app.db, SubscriptionSpec(receiver.url), EgressPolicy())
    daemon = spawn_daemon(app.settings.database.url, poll)
    committed: dict[tuple[str, int], float] = {}
    rng = random.Random(1)
    try:
        time.sleep(2)  # the daemon is up and polling
        for n, nct_id in enumerate(ids):
            (result,) = ingestor.ingest([edited(nct_id, data[nct_id], n)])
            committed[(nct_id, result.version or 0)] = time.time()
            time.sleep(rng.uniform(0.02, 0.12))
        deadline = time.monotonic() + 60
        while len(receiver.arrivals()) < commits and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    arrived = {(a["nct_id"], a["version"]): a["t"] for a in receiver.arrivals()}
    waits = [arrived[key] - at for key, at in committed.items() if key in arrived]
    if len(waits) != commits:
        raise SystemExit(f"bench: {commits} commits, {len(waits)} arrived")
    return {
        "commits": commits, "poll_seconds": poll,
        "p50_s": round(statistics.median(waits), 3), "p90_s": round(percentile(waits, 0.9), 3),
        "p99_s": round(percentile(waits, 0.99), 3), "max_s": round(max(waits), 3),
        "mean_s": round(statistics.fmean(waits), 3),
    }  # fmt: skip


def spawn_daemon(db_url: str, poll: float) -> subprocess.Popen[bytes]:
    env = {
        **command_env(),
        "CTMIRROR_DATABASE__URL": db_url,
        "CTMIRROR_WEBHOOKS__POLL_SECONDS": str(poll),
        "CTMIRROR_SOURCE__BASE_URL": f"http://127.0.0.1:{free_port()}/api/v2",
        "CTMIRROR_SOURCE__MAX_RETRIES": "0",
        "CTMIRROR_LOG__LEVEL": "error",
        "CTMIRROR_LOG__FORMAT": "json",
    }
    return subprocess.Popen([sys.executable, "-m", "mirror", "daemon"], env=env, cwd=REPO)


# -- main -----------------------------------------------------------------------------------


def run_backend(backend: str, opts: argparse.Namespace, data: dict[str, bytes]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        result: dict[str, Any] = {}
        for part in ("throughput", "latency"):
            receiver = Receiver(directory)
            try:
                with fresh_database(backend, opts.pg_url) as url:
                    settings = load_settings(None, database={"url": url}, log={"level": "error"})
                    app = build_app(settings)
                    try:
                        if part == "throughput":
                            result[part] = throughput(app, receiver, data, opts.subscriptions)
                        else:
                            result[part] = latency(app, receiver, data, opts.commits, opts.poll)
                    finally:
                        app.close()
            finally:
                receiver.close()
        return result


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = ["backend     deliveries  fan-out rows/s  deliveries/s  latency p50 / p90 / p99 / max"]
    for backend, r in results.items():
        t, lat = r["throughput"], r["latency"]
        lines.append(
            f"{backend:<11} {t['deliveries']:>10}  {t['fan_out_rows_per_s']:>14}  "
            f"{t['deliveries_per_s']:>12}  {lat['p50_s']:.3f} / {lat['p90_s']:.3f} / "
            f"{lat['p99_s']:.3f} / {lat['max_s']:.3f} s"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("CTMIRROR_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--subscriptions", type=int, default=3)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--poll", type=float, default=1.0, help="webhooks.poll_seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    configure_logging(LogSettings(level="error", format="json"))
    backends = ["sqlite", "postgresql"] if opts.backend == "both" else [opts.backend]
    data = records()
    results = {}
    for backend in backends:
        print(f"bench: {backend}", file=sys.stderr)
        results[backend] = run_backend(backend, opts, data)
    print(report(results))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"bench_webhooks-{stamp}.json"
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(), "args": vars(opts)}
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nJSON: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
