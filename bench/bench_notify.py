# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Notification throughput through Apprise, against plain HTTP POSTs, and digest building.

    python bench/bench_notify.py [--backend sqlite|postgresql|both] [--notifications N]
                                 [--digest-versions M]

For each backend, on a fresh database:

1. **throughput**: N real records are ingested (first sight: no message), one ``json://``
   target is added, and the same N records are ingested again with a new overall status (N
   new versions). The fan-out writes N notifications (timed on its own); then
   ``NotificationDispatcher.drain`` (default settings: 4 in flight, Apprise in worker threads,
   the egress guard) sends them to a local receiver. **Baseline, same run, same receiver**: the
   same N messages (their stored title and text as the JSON body Apprise sends) as plain HTTP
   POSTs from one ``httpx.AsyncClient``, 4 in flight. Reported: notifications/s, POSTs/s, and
   their ratio.
2. **digest**: one weekly target with M waiting versions (summaries of real studies, three
   changed fields each, stored as the fan-out stores them); ``build_due_digests`` at the
   target's time builds the one message. Reported: seconds, the studies listed and the size
   of the message.

The receiver is uvicorn in its own process; it answers 200 and logs each arrival. Results: a
table on stdout, JSON in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov  # (for the real records' location)
from _common import DEFAULT_PG_URL, ReceiverProcess, fresh_database
from sqlalchemy import insert, select

from mirror.app import App, build_app
from mirror.config import LogSettings, load_settings
from mirror.logging import configure_logging
from mirror.notify import (
    Links,
    TargetSpec,
    add_target,
    build_due_digests,
    fan_out,
    list_notifications,
)
from mirror.notify.messages import summarize
from mirror.pipeline import Ingestor
from mirror.record import utcnow
from mirror.source import Observation
from mirror.store import DigestItem, OutboxEntry, Study

OUT_DIR = REPO / "bench" / "out"
CONCURRENCY = 4  # notifications.concurrency's default, for both sides

RECEIVER = """
import sys, time, uvicorn
out = open(sys.argv[2], "ab", buffering=0)
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    out.write(b"%f\\n" % time.time())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""


class Receiver(ReceiverProcess):
    """uvicorn in a subprocess, appending one line per arrival to a file."""

    def __init__(self, directory: Path) -> None:
        super().__init__(RECEIVER, directory, REPO)

    def arrivals(self) -> int:
        return len(self.lines())


def records(n: int) -> dict[str, bytes]:
    studies = fake_ctgov.DATA_DIR / "studies"
    return {i: (studies / f"{i}.json").read_bytes() for i in fake_ctgov.all_study_ids()[:n]}


def observation(nct_id: str, raw: bytes, status: str | None = None) -> Observation:
    study = orjson.loads(raw)
    if status is not None:  # a sponsor's update
        study["protocolSection"]["statusModule"]["overallStatus"] = status
        raw = orjson.dumps(study)
    return Observation(nct_id, raw, study, utcnow())


# -- 1. throughput --------------------------------------------------------------------------


def throughput(app: App, receiver: Receiver, data: dict[str, bytes]) -> dict[str, Any]:
    ingestor = Ingestor(app.db, ignore=app.settings.diff.ignore)
    ingestor.ingest([observation(i, raw) for i, raw in data.items()])
    while fan_out(app.db, Links.of(app.settings))[0]:
        pass  # first sights: nothing for the target
    url = f"json://127.0.0.1:{receiver.port}/hook"
    add_target(app.db, TargetSpec(url), app.settings.notifications)
    ingestor.ingest([observation(i, raw, "BENCH_STOPPED") for i, raw in data.items()])
    started = time.perf_counter()
    written = 0
    while (done := fan_out(app.db, Links.of(app.settings)))[0]:
        written += done[1]
    fan_out_s = time.perf_counter() - started
    messages = [(d.title, d.body_text) for d in list_notifications(app.db, limit=len(data))]
    started = time.perf_counter()
    attempts = asyncio.run(_drain(app))
    notify_s = time.perf_counter() - started
    arrived = receiver.arrivals()
    if not (written == attempts == arrived == len(data)):
        raise SystemExit(f"bench: {written} notifications, {attempts} attempts, {arrived} arrived")
    started = time.perf_counter()
    asyncio.run(_plain_posts(f"http://127.0.0.1:{receiver.port}/hook", messages))
    posts_s = time.perf_counter() - started
    if receiver.arrivals() != 2 * len(data):
        raise SystemExit("bench: the plain POSTs did not all arrive")
    return {
        "notifications": written, "fan_out_s": round(fan_out_s, 3),
        "notify_s": round(notify_s, 3), "notifications_per_s": round(written / notify_s),
        "posts_s": round(posts_s, 3), "posts_per_s": round(len(messages) / posts_s),
        "ratio": round(posts_s / notify_s, 3),
    }  # fmt: skip


async def _drain(app: App) -> int:
    return await app.notification_dispatcher(app.notifier(), "bench").drain()


async def _plain_posts(url: str, messages: list[tuple[str, str]]) -> None:
    """The baseline: the same bodies Apprise's json:// sends, POSTed with httpx."""
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient() as client:

        async def post(title: str, text: str) -> None:
            body = {"version": "1.0", "title": title, "message": text, "attachments": [],
                    "type": "info"}  # fmt: skip
            async with slots:
                (await client.post(url, json=body)).raise_for_status()

        await asyncio.gather(*(post(title, text) for title, text in messages))


# -- 2. digest ------------------------------------------------------------------------------


def digest(app: App, versions: int) -> dict[str, Any]:
    target = add_target(
        app.db, TargetSpec("json://127.0.0.1:9/hook", digest="weekly"), app.settings.notifications
    )
    assert target.next_digest_at is not None
    now = utcnow()
    with app.db.write() as session:
        studies = session.execute(select(Study.id, Study.nct_id).order_by(Study.id)).all()
        # Versions as the outbox has them (already fanned out), for the items to refer to.
        outbox = [
            {"study_id": studies[n % len(studies)][0], "nct_id": studies[n % len(studies)][1],
             "version": 1000 + n // len(studies), "origin": "bench", "created_at": now,
             "fanned_out_at": now}
            for n in range(versions)
        ]  # fmt: skip
        ids = session.scalars(insert(OutboxEntry).returning(OutboxEntry.id), outbox).all()
        items = []
        for n, (row, outbox_id) in enumerate(zip(outbox, ids, strict=True)):
            summary = summarize(row["nct_id"], row["version"], f"Study {row['nct_id']}",
                                _events(n), _classes(n))  # fmt: skip
            items.append({"target_id": target.id, "outbox_id": outbox_id,
                          "nct_id": row["nct_id"], "version": row["version"],
                          "summary": summary.as_json(), "created_at": now})  # fmt: skip
        session.execute(insert(DigestItem), items)
    due = target.next_digest_at + timedelta(seconds=1)
    started = time.perf_counter()
    built = build_due_digests(app.db, "http://127.0.0.1:8000", "UTC", due)
    build_s = time.perf_counter() - started
    (message,) = list_notifications(app.db, limit=1)
    if built != 1 or message.changes != versions:
        raise SystemExit(f"bench: {built} digests of {message.changes} versions")
    return {
        "versions": versions, "field_changes": 3 * versions, "build_s": round(build_s, 3),
        "studies": len(studies), "text_chars": len(message.body_text),
        "markdown_chars": len(message.body_markdown),
    }  # fmt: skip


def _events(n: int) -> list[dict[str, Any]]:
    at = "2026-06-01T07:00:35Z"
    return [
        {"field": "status.overallStatus", "kind": "changed", "old": "RECRUITING",
         "new": "ACTIVE_NOT_RECRUITING", "observed_at": at},
        {"field": "design.enrollmentCount", "kind": "changed", "old": 100 + n, "new": 140 + n,
         "observed_at": at},
        {"field": "status.lastUpdatePostDate", "kind": "changed", "old": "2026-05-01",
         "new": "2026-05-29", "observed_at": at},
    ]  # fmt: skip


def _classes(n: int) -> list[dict[str, Any]]:
    return [
        {"name": "status.changed", "from": "RECRUITING", "to": "ACTIVE_NOT_RECRUITING"},
        {"name": "enrollment.changed", "from": 100 + n, "to": 140 + n,
         "percent": round(40 / (100 + n) * 100, 1), "major": True, "type": "ACTUAL"},
    ]  # fmt: skip


# -- main -----------------------------------------------------------------------------------


def run_backend(backend: str, opts: argparse.Namespace) -> dict[str, Any]:
    data = records(opts.notifications)
    with tempfile.TemporaryDirectory() as tmp, fresh_database(backend, opts.pg_url) as url:
        receiver = Receiver(Path(tmp))
        settings = load_settings(None, database={"url": url}, log={"level": "error"})
        app = build_app(settings)
        try:
            result = {"throughput": throughput(app, receiver, data)}
            result["digest"] = digest(app, opts.digest_versions)
        finally:
            app.close()
            receiver.close()
        return result


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "backend     notifications  notifications/s  plain POSTs/s  ratio  "
        "| digest versions  build s  studies  text chars"
    ]
    for backend, r in results.items():
        t, d = r["throughput"], r["digest"]
        lines.append(
            f"{backend:<11} {t['notifications']:>13}  {t['notifications_per_s']:>15}  "
            f"{t['posts_per_s']:>13}  {t['ratio']:>5.2f}  | {d['versions']:>15}  "
            f"{d['build_s']:>7.3f}  {d['studies']:>7}  {d['text_chars']:>10}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pg-url", default=os.environ.get("CTMIRROR_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--notifications", type=int, default=500)
    parser.add_argument("--digest-versions", type=int, default=10_000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    configure_logging(LogSettings(level="error", format="json"))
    backends = ["sqlite", "postgresql"] if opts.backend == "both" else [opts.backend]
    results = {}
    for backend in backends:
        print(f"bench: {backend}", file=sys.stderr)
        results[backend] = run_backend(backend, opts)
    print(report(results))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT_DIR / f"bench_notify-{stamp}.json"
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(), "args": vars(opts)}
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nJSON: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
