# ruff: noqa: E402  (imports follow the sys.path set-up)
"""Start-up: what a command costs before it does anything, against the bare imports it needs.

    python bench/bench_startup.py [--runs 9]

A mirror of 50 real studies is imported once (``ctmirror import``) into a temporary SQLite
file. Then, interleaved so that the machine's noise hits each alike, ``--runs`` times each:

- the baseline: ``python -c "import sqlalchemy.orm, click"`` (what any ctmirror command needs);
- ``ctmirror changes --limit 1`` (a table: its one-line change text included);
- ``ctmirror changes --limit 1 --format json``;
- ``ctmirror import`` of one already-stored study (the CLI, the workers' start-up excluded: one
  record is imported in-process).

Each as ``python -m mirror …`` in a subprocess, wall time from the outside, with bytecode
cached as an installed package has it (``PYTHONDONTWRITEBYTECODE`` is dropped and every command
runs once before timing: otherwise each run would compile ctmirror's sources again, ~0.1 s,
while the baseline's packages come compiled). Printed: the median and min-max per command, the
ratio of medians to the baseline, and the heavy modules (``python -X importtime``) each command
loads. ``--compare <another checkout>`` times that checkout's ctmirror too, interleaved with
this one (through ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fake_ctgov
from _common import command_env, write_results

HEAVY = ("fastapi", "starlette", "jinja2", "feedgen", "apprise", "alembic", "deepdiff", "httpx",
         "structlog", "rich", "pydantic_settings", "asyncio")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--compare", type=Path, help="another checkout, timed alongside")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctmirror-startup-") as tmp:
        folder = Path(tmp) / "studies"
        folder.mkdir()
        for path in sorted((fake_ctgov.DATA_DIR / "studies").glob("NCT*.json"))[:50]:
            shutil.copy(path, folder)
        one = Path(tmp) / "one"
        one.mkdir()
        shutil.copy(next(folder.glob("*.json")), one)
        env = command_env(CTMIRROR_DATABASE__URL=f"sqlite:///{tmp}/mirror.db")
        env.pop("PYTHONPATH", None)
        mirror = [sys.executable, "-m", "mirror"]
        subprocess.run(
            [*mirror, "import", str(folder)], env=env, check=True, capture_output=True, cwd=tmp
        )
        commands = {
            "baseline: import sqlalchemy.orm, click": [
                sys.executable, "-c", "import sqlalchemy.orm, click"],
            "ctmirror changes --limit 1": [*mirror, "changes", "--limit", "1"],
            "ctmirror changes --limit 1 --format json": [
                *mirror, "changes", "--limit", "1", "--format", "json"],
            "ctmirror import (1 stored study)": [*mirror, "import", str(one)],
        }  # fmt: skip
        envs = dict.fromkeys(commands, env)
        if opts.compare:
            other = env | {"PYTHONPATH": str(opts.compare.resolve())}
            for name in list(commands)[1:]:
                commands[f"{name} [{opts.compare.name}]"] = commands[name]
                envs[f"{name} [{opts.compare.name}]"] = other
        for name, command in commands.items():  # compiles and caches the bytecode
            subprocess.run(command, env=envs[name], check=True, capture_output=True, cwd=tmp)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(opts.runs):
            for name, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, env=envs[name], check=True, capture_output=True, cwd=tmp)
                times[name].append(time.perf_counter() - started)
        heavy = {name: _heavy(command, envs[name], tmp) for name, command in commands.items()}
    base = statistics.median(times[next(iter(commands))])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({"command": name, "median_s": median, "min_s": min(samples),
                     "max_s": max(samples), "vs_baseline": median / base,
                     "heavy_modules": heavy[name]})  # fmt: skip
        print(
            f"{name:44s} {median:6.3f} s ({min(samples):.3f}-{max(samples):.3f})"
            f"  {median / base:4.2f}x  heavy: {' '.join(heavy[name]) or '-'}"
        )
    compare = str(opts.compare) if opts.compare else None
    write_results("bench_startup", {"rows": rows, "runs": opts.runs, "compare": compare})


def _heavy(command: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """The HEAVY packages ``command`` imports (``python -X importtime``)."""
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]],
        env=env, capture_output=True, text=True, cwd=cwd,
    )  # fmt: skip
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return [package for package in HEAVY if package in names]


if __name__ == "__main__":
    main()
