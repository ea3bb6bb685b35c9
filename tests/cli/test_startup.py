"""Each command imports only what it uses: syncing, reading the feed or importing an archive
loads neither the HTTP app, nor the pages, nor the notification channels (docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import conftest
from fake_ctgov import DATA_DIR, FakeCtgov, load_study

HEAVY = ("fastapi", "starlette", "uvicorn", "jinja2", "feedgen", "apprise", "mirror.serve",
         "mirror.notify", "mirror.daemon", "mirror.render.pages", "mirror.render.atom")  # fmt: skip

# Runs one command, then names the modules of $HEAVY it loaded.
SCRIPT = """
import os, sys
from mirror.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = os.environ["HEAVY"].split()
print(" ".join(m for m in heavy if m in sys.modules) or "none", file=sys.stderr)
"""


def loaded(
    tmp_path: Path, *args: str, base_url: str = "http://127.0.0.1:9", heavy: tuple[str, ...] = HEAVY
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTMIRROR_")}
    env |= conftest.test_env(f"sqlite:///{tmp_path / 'mirror.db'}", base_url)
    env["HEAVY"] = " ".join(heavy)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_sync_import_and_changes_load_no_http_app_pages_or_channels(
    tmp_path: Path, fake_api: FakeCtgov
) -> None:
    """`ctmirror sync`, `import` and `changes` (as a table too) load none of the heavy modules."""
    fake_api.put(load_study("NCT05756322"))
    assert loaded(tmp_path, "sync", "NCT05756322", base_url=fake_api.base_url) == "none"
    archive = tmp_path / "archive"
    archive.mkdir()
    for path in sorted((DATA_DIR / "studies").glob("NCT*.json"))[:3]:
        (archive / path.name).write_bytes(path.read_bytes())
    assert loaded(tmp_path, "import", str(archive)) == "none"
    assert loaded(tmp_path, "changes", "--limit", "1") == "none"
    assert loaded(tmp_path, "changes", "--limit", "1", "--format", "json") == "none"


def test_a_read_that_logs_nothing_loads_no_logging_library(tmp_path: Path) -> None:
    """structlog (and rich with it) is imported on the first line logged; `changes` logs none."""
    archive = tmp_path / "archive"
    archive.mkdir()
    path = next((DATA_DIR / "studies").glob("NCT*.json"))
    (archive / path.name).write_bytes(path.read_bytes())
    assert loaded(tmp_path, "import", str(archive), heavy=("structlog",)) == "structlog"
    assert loaded(tmp_path, "changes", "--limit", "1", heavy=("structlog", "rich")) == "none"
