# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Change classes: precision/recall on the labelled outcome set, and classify() throughput.

    python bench/bench_classes.py [--seed N] [--rounds N] [--show-errors N]

1. Scores ``mirror.record.classify`` on the labelled set of ``tests/class_cases.py`` (outcome
   edits of real records: rewordings, unrelated replacements, hard negatives, time frame and
   description edits, demotions, promotions, swaps, mixes, no-ops). A class counts as right
   when its name AND the outcome it is about (its measure, or "old => new" for a matched pair)
   are in the case's expected set. Per class: precision, recall, F1; overall (micro); and the
   share of cases whose whole set of outcome classes is exactly right, per kind of case.
2. Times classify() on pairs of real records (all 1,687 of ``../shared/data/ctgov/studies``,
   each against a sponsor-style edit of itself: status one step on, enrollment up, dates
   moved, a site added, a time frame edited), on the labelled pairs, and on the worst case
   (the record with the most outcomes against a copy with every measure reworded).

Results: a table on stdout and JSON in ``bench/out/bench_classes-<time>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from class_cases import SEED, Case, build_cases, load_studies, outcome_labels

from mirror.record import CATALOG, classify, normalize

NEXT_STATUS = {
    "NOT_YET_RECRUITING": "RECRUITING",
    "RECRUITING": "ACTIVE_NOT_RECRUITING",
    "ENROLLING_BY_INVITATION": "ACTIVE_NOT_RECRUITING",
    "ACTIVE_NOT_RECRUITING": "COMPLETED",
}

# --------------------------------------------------------------------------- scoring


def score(cases: Sequence[Case]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Per-class counts and rates, and per-kind exact-set accuracy, with the misses."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    exact: dict[str, Counter[str]] = defaultdict(Counter)
    misses = []
    for case in cases:
        got = outcome_labels(classify(case.old, case.new))
        for name, _ in got & case.expected:
            counts[name]["tp"] += 1
        for name, _ in got - case.expected:
            counts[name]["fp"] += 1
        for name, _ in case.expected - got:
            counts[name]["fn"] += 1
        exact[case.kind]["cases"] += 1
        exact[case.kind]["exact"] += got == case.expected
        if got != case.expected:
            misses.append(
                {
                    "case": case.case_id,
                    "nct_id": case.nct_id,
                    "missed": sorted(case.expected - got),
                    "extra": sorted(got - case.expected),
                }
            )
    table = {name: _rates(counts[name]) for name in _ordered(counts)}
    table["overall (micro)"] = _rates(sum(counts.values(), Counter()))
    return table, {"by_kind": {k: dict(v) for k, v in exact.items()}, "misses": misses}


def _ordered(names: Any) -> list[str]:
    rank = {info.name: i for i, info in enumerate(CATALOG)}
    return sorted(names, key=lambda name: rank.get(name, len(rank)))


def _rates(c: Counter[str]) -> dict[str, float]:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


# --------------------------------------------------------------------------- throughput


def sponsor_edit(study: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The study after a typical sponsor update (what most real new versions look like)."""
    edited = copy.deepcopy(study)
    protocol = edited["protocolSection"]
    status = protocol.setdefault("statusModule", {})
    status["overallStatus"] = NEXT_STATUS.get(status.get("overallStatus", ""), "COMPLETED")
    enrollment = protocol.setdefault("designModule", {}).setdefault("enrollmentInfo", {})
    enrollment["count"] = int(enrollment.get("count", 100) * rng.uniform(0.8, 1.4))
    for key in ("primaryCompletionDateStruct", "completionDateStruct"):
        if key in status:
            status[key] = {
                "date": f"20{rng.randint(26, 30)}-0{rng.randint(1, 9)}",
                "type": "ESTIMATED",
            }
    sites = protocol.setdefault("contactsLocationsModule", {}).setdefault("locations", [])
    sites.append(
        {"facility": f"Bench Site {rng.randrange(10**6)}", "city": "Lyon", "country": "France"}
    )
    outcomes = protocol.get("outcomesModule", {}).get("primaryOutcomes", [])
    if outcomes:
        outcomes[0]["timeFrame"] = "Up to 24 months"
    return edited


def throughput(pairs: Sequence[tuple[Any, Any]], rounds: int) -> dict[str, float]:
    """Best of ``rounds`` passes over ``pairs``: versions/s and µs per version."""
    best = min(_timed(lambda: [classify(old, new) for old, new in pairs]) for _ in range(rounds))
    return {
        "versions": len(pairs),
        "versions_per_s": len(pairs) / best,
        "us_per_version": best / len(pairs) * 1e6,
    }


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def worst_case() -> tuple[dict[str, Any], dict[str, Any]]:
    """The record with the most outcomes, against a copy with every measure reworded."""
    study = max(
        load_studies(),
        key=lambda s: sum(map(len, s["protocolSection"].get("outcomesModule", {}).values())),
    )
    edited = copy.deepcopy(study)
    for items in edited["protocolSection"]["outcomesModule"].values():
        for item in items:
            item["measure"] = "Change from baseline in " + item["measure"] + " (ITT population)"
    return normalize(study, ignore=["derived.*"]), normalize(edited, ignore=["derived.*"])


# --------------------------------------------------------------------------- report


def row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def print_scores(cases: Sequence[Case], table: dict[str, Any], detail: dict[str, Any]) -> None:
    print(f"\nLabelled outcome set: {len(cases)} cases\n")
    print(row("class", "TP", "FP", "FN", "precision", "recall", "F1"))
    print(row("---", "--:", "--:", "--:", "--:", "--:", "--:"))
    for name, r in table.items():
        rates = (f"{r[key]:.3f}" for key in ("precision", "recall", "f1"))
        print(row(name, r["tp"], r["fp"], r["fn"], *rates))
    print("\n" + row("kind of case", "cases", "exactly right") + "\n" + row("---", "--:", "--:"))
    for kind, c in detail["by_kind"].items():
        print(row(kind, c["cases"], f"{c['exact'] / c['cases']:.1%}"))


def print_misses(misses: Sequence[dict[str, Any]]) -> None:
    for miss in misses:
        print(f"\nmiss {miss['case']} ({miss['nct_id']})")
        print(f"  missed: {miss['missed']}\n  extra:  {miss['extra']}")


def time_classify(cases: Sequence[Case], seed: int, rounds: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    real = [
        (normalize(s, ignore=["derived.*"]), normalize(sponsor_edit(s, rng), ignore=["derived.*"]))
        for s in load_studies()
    ]
    timings = {
        "real records vs sponsor edit": throughput(real, rounds),
        "labelled outcome cases": throughput([(c.old, c.new) for c in cases], rounds),
        "worst case (107 outcomes, all reworded)": throughput([worst_case()] * 5, rounds),
    }
    print("\n" + row("classify() on", "versions", "versions/s", "µs per version"))
    print(row("---", "--:", "--:", "--:"))
    for what, t in timings.items():
        print(
            row(what, t["versions"], f"{t['versions_per_s']:,.0f}", f"{t['us_per_version']:,.0f}")
        )
    return timings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help="labelled set seed")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best is kept)")
    parser.add_argument("--show-errors", type=int, default=10, help="misses to print")
    args = parser.parse_args(argv)

    print(f"building the labelled set (seed {args.seed}) ...", file=sys.stderr)
    cases = build_cases(args.seed)
    table, detail = score(cases)
    print_scores(cases, table, detail)
    print_misses(detail["misses"][: args.show_errors])
    print("\ntiming classify() ...", file=sys.stderr)
    timings = time_classify(cases, args.seed, args.rounds)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"bench_classes-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    report = {
        "seed": args.seed,
        "cases": len(cases),
        "classes": table,
        **detail,
        "throughput": timings,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nJSON: {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
