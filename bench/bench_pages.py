# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Page latency: the pages for people against the JSON API asking the same, same run.

    python bench/bench_pages.py [--db bench/out/feed-sqlite.db] [--requests N] [--runs N]

On the 2-million-event SQLite database ``bench/bench_feed.py`` builds (``bench/out/``; build
it first), in-process through ``httpx.ASGITransport`` (the app of ``create_app``, what
``ctmirror serve`` runs minus the socket), each page and its JSON twin are requested in turn,
``--requests`` times each after a warm-up, with parameters drawn at random (fixed seed):

  - ``/`` (the change browser, 50 events, first sights folded) from a random cursor
    vs ``/v1/changes?initial=false&limit=50`` from the same cursor;
  - ``/trials`` (50 studies, last change first) vs ``/v1/studies?limit=50``;
  - ``/trials?q=<two title words>`` vs the same ``/v1/studies`` page (the API has no search);
  - ``/trials/{nct}.html`` of a random study vs ``/v1/studies/{nct}``;
  - ``/trials/{nct}/compare`` (its last two versions) vs ``/v1/studies/{nct}/diff``.

Each pair is measured in ``--runs`` rounds; the table gives the median p50/p99 over the rounds,
the spread of p99 (min–max), and the ratio page/API of the medians. JSON in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
SEED = 20261206
WARMUP = 10
P99_TARGET_MS = 100

sys.path.insert(0, str(REPO))

from _common import write_results

from mirror.config import LogSettings, load_settings
from mirror.logging import configure_logging

Pick = Callable[[random.Random], tuple[str, str]]  # -> (page URL, API URL)


def targets(db: Path) -> dict[str, Pick]:
    """The page/API pairs, each drawing its parameters from what the database holds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    top = conn.execute(
        "SELECT max(m) FROM (SELECT max(id) AS m FROM change_events"
        " UNION ALL SELECT max(last_id) FROM event_blocks)"
    ).fetchone()[0]
    edited = [r[0] for r in conn.execute("SELECT nct_id FROM studies WHERE latest_version > 1")]
    titles = [r[0] for r in conn.execute("SELECT title FROM studies WHERE title IS NOT NULL")]
    conn.close()
    words = [w for t in titles for w in t.split() if len(w) > 5 and w.isalpha()]

    def changes(rng: random.Random) -> tuple[str, str]:
        cursor = rng.randint(top // 4, top)
        return f"/?before={cursor}", f"/v1/changes?initial=false&limit=50&after={cursor - 5000}"

    def search(rng: random.Random) -> tuple[str, str]:
        return f"/trials?q={rng.choice(words)}+{rng.choice(words)[:4]}", "/v1/studies?limit=50"

    def study(rng: random.Random) -> tuple[str, str]:
        nct = rng.choice(edited)
        return f"/trials/{nct}.html", f"/v1/studies/{nct}"

    def compare(rng: random.Random) -> tuple[str, str]:
        nct = rng.choice(edited)
        return f"/trials/{nct}/compare", f"/v1/studies/{nct}/diff?from=1&to=2"

    return {
        "/ (change browser)": changes,
        "/trials": lambda rng: ("/trials", "/v1/studies?limit=50"),
        "/trials?q=words": search,
        "/trials/{nct}.html": study,
        "/trials/{nct}/compare": compare,
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def one_round(db: Path, pick: Pick, requests: int, seed: int) -> dict[str, float]:
    import httpx

    from mirror.app import build_app
    from mirror.serve import create_app

    app = build_app(load_settings(None, database={"url": f"sqlite:///{db}"}), migrate=False)
    transport = httpx.ASGITransport(app=create_app(app))
    gc.freeze()  # as `ctmirror serve` does once its app is built
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"page": [], "api": []}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for n in range(requests + WARMUP):
            urls = dict(zip(("page", "api"), pick(rng), strict=True))
            for kind in ("page", "api") if n % 2 else ("api", "page"):
                started = time.perf_counter()
                response = await client.get(urls[kind])
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, (urls[kind], response.text[:300])
                if n >= WARMUP:
                    times[kind].append(elapsed)
    app.close()
    page, api = percentiles(times["page"]), percentiles(times["api"])
    return {"page_p50": page[0], "page_p99": page[1], "api_p50": api[0], "api_p99": api[1]}


def measure(db: Path, requests: int, runs: int) -> list[dict[str, Any]]:
    rows = []
    for name, pick in targets(db).items():
        rounds = [asyncio.run(one_round(db, pick, requests, SEED + r)) for r in range(runs)]
        row: dict[str, Any] = {"page": name, "rounds": rounds}
        for key in ("page_p50", "page_p99", "api_p50", "api_p99"):
            row[key] = statistics.median(r[key] for r in rounds)
        row["page_p99_spread"] = [min(r["page_p99"] for r in rounds),
                                  max(r["page_p99"] for r in rounds)]  # fmt: skip
        row["ratio_p50"] = row["page_p50"] / row["api_p50"]
        row["ratio_p99"] = row["page_p99"] / row["api_p99"]
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    low, high = row["page_p99_spread"]
    ok = "ok" if row["page_p99"] <= P99_TARGET_MS else "OVER"
    return (
        f"| `{row['page']}` | {row['page_p50']:.1f} | {row['page_p99']:.1f} "
        f"({low:.0f}–{high:.0f}) | {row['api_p50']:.1f} | {row['api_p99']:.1f} "
        f"| {row['ratio_p50']:.1f}x | {row['ratio_p99']:.1f}x | {ok} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=OUT_DIR / "feed-sqlite.db")
    parser.add_argument("--requests", type=int, default=200, help="Per page and round.")
    parser.add_argument("--runs", type=int, default=3, help="Rounds per page (median taken).")
    opts = parser.parse_args(argv)
    if not opts.db.exists():
        parser.error(f"{opts.db} does not exist: build it with bench/bench_feed.py --build-only")
    configure_logging(LogSettings(level="warning", format="json"))
    print(f"{opts.requests} requests per page and round, {opts.runs} rounds, ms (median of rounds)")
    print("| page | p50 | p99 (spread) | API p50 | API p99 | p50 ratio | p99 ratio | ≤ 100 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    rows = measure(opts.db, opts.requests, opts.runs)
    print()
    results = {"database": str(opts.db), "requests": opts.requests, "runs": opts.runs}
    write_results("bench_pages", {**results, "sqlite": sqlite3.sqlite_version, "results": rows})


if __name__ == "__main__":
    main()
