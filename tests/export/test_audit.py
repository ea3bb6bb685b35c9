"""`ctmirror audit` against the fake registry: missing, extra and stale studies; the stored
result that /healthz reports; the daemon auditing a watch after its full run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from api_client import api_client
from conftest import Cli
from fake_ctgov import FakeCtgov, load_study
from sqlalchemy import select, update

from mirror.app import App
from mirror.export.audit import allowed_gap, schedule_interval
from mirror.record import utcnow
from mirror.store import AuditRun, Study

A, B, C, D = "NCT00000410", "NCT00007696", "NCT00033839", "NCT05305430"
EVERYTHING = "filter.advanced=AREA[LastUpdatePostDate]RANGE[MIN,MAX]"


@pytest.fixture
def watched(fake_api: FakeCtgov, run: Cli) -> Cli:
    """A search watch over what the registry lists (A, B, C), synced in full."""
    for nct_id in (A, B, C):
        fake_api.put(load_study(nct_id))
    run("watch", "add", "all-of-it", "--query", EVERYTHING)
    run("sync", "--watch", "all-of-it", "--full")
    return run


def _audit(run: Cli, expect: int) -> dict[str, Any]:
    result = run("audit", "--watch", "all-of-it", "--format", "json", expect=expect)
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body


def test_a_complete_mirror_audits_ok(watched: Cli) -> None:
    """Every listed study held, none extra, none stale: status ok, exit 0."""
    body = _audit(watched, expect=0)
    assert body["status"] == "ok"
    [audit] = body["watches"]
    assert (audit["registry_total"], audit["mirror_total"], audit["ids_compared"]) == (3, 3, True)
    assert (audit["missing"], audit["extra"], audit["stale"]) == ([], [], [])


def test_missing_extra_and_stale_studies_are_named(
    watched: Cli, fake_api: FakeCtgov, app: App
) -> None:
    """A study new to the registry is missing, one it dropped is extra, one not seen for
    longer than the schedule allows is stale; exit 1; the table names them too."""
    fake_api.put(load_study(D))
    fake_api.remove(C)
    with app.db.write() as session:
        session.execute(
            update(Study)
            .where(Study.nct_id == B)
            .values(last_seen_at=utcnow() - timedelta(days=30))
        )
    body = _audit(watched, expect=1)
    assert body["status"] == "incomplete"
    [audit] = body["watches"]
    assert (audit["missing"], audit["extra"], audit["stale"]) == ([D], [C], [B])
    assert (audit["registry_total"], audit["mirror_total"]) == (3, 3)
    table = watched("audit", "--all", expect=1).stdout
    assert (
        "all-of-it: incomplete: registry lists 3, mirror holds 3; 1 missing, 1 extra, 1 stale"
        in table
    )
    assert f"  missing: {D}" in table and table.rstrip().endswith("partial: audited 1 watch")
    with app.db.session() as session:
        stored = session.scalars(select(AuditRun).order_by(AuditRun.id)).all()
    assert [(r.status, r.missing, r.extra, r.stale) for r in stored] == [
        ("incomplete", 1, 1, 1)
    ] * 2
    assert stored[-1].detail == {"missing": [D], "extra": [C], "stale": [B]}


def test_healthz_reports_the_last_audit(watched: Cli, fake_api: FakeCtgov, app: App) -> None:
    """/healthz carries the newest audit's watch, status and counts."""
    with api_client(app) as client:
        assert client.get("/healthz").json()["last_audit"] is None
        fake_api.put(load_study(D))
        _audit(watched, expect=1)
        last = client.get("/healthz").json()["last_audit"]
    assert {k: last[k] for k in ("watch", "status", "missing", "extra", "stale")} == {
        "watch": "all-of-it", "status": "incomplete", "missing": 1, "extra": 0, "stale": 0,
    }  # fmt: skip


def test_a_registry_failure_fails_the_audit(watched: Cli, fake_api: FakeCtgov) -> None:
    """The registry answering errors: the audit says failed and exits 1."""
    fake_api.fault_next("status", count=50, status=500)
    body = _audit(watched, expect=1)
    assert body["status"] == "failed" and body["watches"][0]["error"]


def test_a_watch_must_be_named_or_all(watched: Cli) -> None:
    """Neither --watch nor --all is a usage error; an unknown watch is not found."""
    assert "--watch NAME" in watched("audit", expect=2).stderr
    assert "no watch named 'nope'" in watched("audit", "--watch", "nope", expect=1).stderr


def test_the_allowed_gap_follows_the_schedule() -> None:
    """Stale means unseen longer than the full re-check interval plus two scheduled runs."""
    assert schedule_interval("every 6h") == timedelta(hours=6)
    assert schedule_interval("30 9 * * *") == timedelta(days=1)
    assert schedule_interval(None) == timedelta(days=1)
    assert allowed_gap("every 12h", 7) == timedelta(days=8)
