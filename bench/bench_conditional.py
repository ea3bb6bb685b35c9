# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Conditional re-reads: requests and bytes a re-sync by id saves with ETags and 304.

    python bench/bench_conditional.py [--backend sqlite|postgresql] [--rounds 3] [--edited 8]

The fake registry (``tests/fake_ctgov.py``, all 1,687 real records, in this process) answers
strong ETags and ``304 Not Modified`` as RFC 9110 says. Each round, on a new database: a first
sync of every id (17 requests of 100 ids), an unchanged re-sync, the same re-sync with the
stored ETags dropped first (the baseline: no conditional request), then a re-sync after
``--edited`` studies were edited (each edit changes its request's answer). For each sync: the
requests, the 304s, the body bytes the fake sent, and the wall time; the JSON has every round.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov
from _common import DEFAULT_PG_URL, fresh_database, write_results

from mirror.app import App, build_app
from mirror.config import load_settings
from mirror.pipeline import SyncRequest
from mirror.store import ETAG_KEY


def synced(app: App, fake: fake_ctgov.FakeCtgov, ids: list[str]) -> dict[str, Any]:
    """One sync of ``ids``: what went over the wire for it, and its outcome."""

    async def go() -> Any:
        async with app.source() as source:
            return await app.syncer(source).run(SyncRequest(nct_ids=ids))

    before = len(fake.requests)
    started = time.perf_counter()
    summary = asyncio.run(go())
    seconds = time.perf_counter() - started
    answers = fake.requests[before:]
    return {
        "seconds": seconds,
        "requests": len(answers),
        "not_modified": sum(r.status == 304 for r in answers),
        "body_bytes": sum(r.sent for r in answers),
        "counts": dict(summary.counts),
    }


def one_round(backend: str, pg_url: str, edited: int, seed: int) -> dict[str, Any]:
    fake = fake_ctgov.FakeCtgov().start()
    try:
        ids = fake.ids()
        with fresh_database(backend, pg_url) as url:
            settings = load_settings(
                None,
                database={"url": url},
                source={"base_url": fake.base_url, "requests_per_minute": 1e9},
                log={"level": "warning", "format": "json"},
            )
            app = build_app(settings)
            try:
                first = synced(app, fake, ids)
                again = synced(app, fake, ids)
                forget_validators(app)
                plain = synced(app, fake, ids)  # the same re-read, not conditional: the baseline
                for nct_id in random.Random(seed).sample(ids, edited):
                    fake.edit(nct_id, _edit)
                edits = synced(app, fake, ids)
            finally:
                app.close()
    finally:
        fake.stop()
    return {"first": first, "unchanged": again, "unconditional": plain, "edited": edits}


def forget_validators(app: App) -> None:
    """Drop every stored ETag, so that the next re-read asks for everything."""
    sql = {
        "sqlite": f"UPDATE studies SET part_hashes = json_remove(part_hashes, '$.\"{ETAG_KEY}\"')",
        "postgresql": f"UPDATE studies SET part_hashes = part_hashes - '{ETAG_KEY}'",
    }[app.db.engine.dialect.name]
    with app.db.write() as session:
        session.connection().exec_driver_sql(sql)


def _edit(study: dict[str, Any]) -> None:
    status = study["protocolSection"]["statusModule"]
    status["lastUpdateSubmitDate"] = "2026-11-19"
    status["lastUpdatePostDateStruct"] = {"date": "2026-11-20", "type": "ACTUAL"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edited", type=int, default=8, help="Studies edited before sync 3.")
    opts = parser.parse_args(argv)
    rounds = [one_round(opts.backend, opts.pg_url, opts.edited, n) for n in range(opts.rounds)]
    for phase in ("first", "unchanged", "unconditional", "edited"):
        runs = [r[phase] for r in rounds]
        seconds = sorted(r["seconds"] for r in runs)
        print(
            f"{phase:>10s}: {runs[0]['requests']} requests, {runs[0]['not_modified']} answered 304,"
            f" {runs[0]['body_bytes'] / 1e6:.1f} MB of bodies, {statistics.median(seconds):.2f} s"
            f" ({seconds[0]:.2f}-{seconds[-1]:.2f})  counts {runs[0]['counts']}"
        )
    write_results("bench_conditional", {"rounds": rounds, "backend": opts.backend})


if __name__ == "__main__":
    main()
