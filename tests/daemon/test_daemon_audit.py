"""The daemon audits a watch after each full run: the result is logged and stored."""

from __future__ import annotations

import orjson
import pytest
from conftest import Cli
from fake_ctgov import FakeCtgov
from helpers import STUDY, put_real
from sqlalchemy import select

from mirror.app import App
from mirror.store import AuditRun, Watch

OTHER = "NCT05305430"

pytestmark = pytest.mark.usefixtures("fast_daemon")


def test_a_full_run_is_followed_by_an_audit(fake_api: FakeCtgov, app: App, run: Cli) -> None:
    """`daemon --once` runs the watch in full, then audits it: logged as daemon.audit, stored."""
    put_real(fake_api, [STUDY, OTHER])
    run("watch", "add", "ids", STUDY, OTHER)
    run.env["CTMIRROR_LOG__LEVEL"] = "info"
    result = run("daemon", "--once")
    logged = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    audits = [e for e in logged if e.get("event") == "daemon.audit"]
    assert [(e["watch"], e["status"], e["missing"], e["registry_total"]) for e in audits] == [
        ("ids", "ok", 0, 2)
    ]
    with app.db.session() as session:
        stored = session.scalars(select(AuditRun)).all()
    assert [(r.watch_name, r.status, r.registry_total, r.mirror_total) for r in stored] == [
        ("ids", "ok", 2, 2)
    ]
    run("daemon", "--once")  # nothing due: no run, no audit
    with app.db.session() as session:
        assert len(session.scalars(select(AuditRun)).all()) == 1


def test_the_audit_after_a_full_run_can_be_turned_off(
    fake_api: FakeCtgov, app: App, run: Cli
) -> None:
    """daemon.audit_after_full_run = false: the full run, and no audit."""
    put_real(fake_api, [STUDY])
    run("watch", "add", "ids", STUDY)
    run.env["CTMIRROR_DAEMON__AUDIT_AFTER_FULL_RUN"] = "false"
    run("daemon", "--once")
    with app.db.session() as session:
        assert session.scalars(select(AuditRun)).all() == []
        assert session.scalar(select(Watch.last_full_run_at)) is not None
