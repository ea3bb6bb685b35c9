"""``ctmirror db stats`` and the raw-JSON retention, on a real database (both backends)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from api_client import api_client
from fake_ctgov import FakeCtgov
from helpers import STUDY, all_events, module, put_real, sponsor_update, sync_ids
from sqlalchemy import select, update

from mirror.app import App
from mirror.record import utcnow
from mirror.store import ChangeEvent, EventBlock, Study, StudyVersion, prune_raw, table_stats

OTHER = "NCT05305430"


def two_versions(app: App, fake: FakeCtgov, *, age_days: int) -> None:
    """STUDY with versions 1 and 2, version 1 observed ``age_days`` ago; OTHER with one, as old."""
    put_real(fake, [STUDY, OTHER])
    sync_ids(app, STUDY, OTHER)
    sponsor_update(
        fake, STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED")
    )
    sync_ids(app, STUDY)
    with app.db.write() as session:
        session.execute(
            update(StudyVersion)
            .where(StudyVersion.version == 1)
            .values(observed_at=utcnow() - timedelta(days=age_days))
        )


def raw_present(app: App) -> dict[tuple[str, int], bool]:
    with app.db.session() as session:
        rows = session.execute(
            select(Study.nct_id, StudyVersion.version, StudyVersion.raw.is_not(None)).join(
                Study, Study.id == StudyVersion.study_id
            )
        )
        return {(nct, v): present for nct, v, present in rows}


def test_stats_count_the_rows_of_every_table(app: App, fake_api: FakeCtgov) -> None:
    """Every table is listed; versions and events counted exactly, sizes in bytes."""
    two_versions(app, fake_api, age_days=0)
    stats = {s.name: s for s in table_stats(app.db)}
    assert {"studies", "study_versions", "change_events", "version_classes"} <= set(stats)
    assert (stats["studies"].rows, stats["study_versions"].rows) == (2, 3)
    with app.db.session() as session:
        rows = len(session.scalars(select(ChangeEvent.id)).all())
        blocks = len(session.scalars(select(EventBlock.first_id)).all())
    assert (stats["change_events"].rows, stats["event_blocks"].rows) == (rows, blocks)
    assert (rows, blocks) == (3, 2)  # the edit (status, two dates) as rows; first sights as blocks
    assert stats["study_versions"].bytes is not None and stats["study_versions"].bytes > 0


def test_cli_stats_as_json(app: App, fake_api: FakeCtgov, run: Any) -> None:
    """``db stats --format json``: one object per table with rows and bytes."""
    two_versions(app, fake_api, age_days=0)
    rows = {r["table"]: r for r in orjson.loads(run("db", "stats", "--format", "json").output)}
    assert rows["study_versions"]["rows"] == 3 and rows["study_versions"]["bytes"] > 0


def test_prune_drops_only_old_superseded_raw_json(app: App, fake_api: FakeCtgov) -> None:
    """Old version 1 of STUDY loses its raw JSON; the newest versions keep theirs."""
    two_versions(app, fake_api, age_days=400)
    assert prune_raw(app.db, 365) == 1
    assert raw_present(app) == {(STUDY, 1): False, (STUDY, 2): True, (OTHER, 1): True}
    assert prune_raw(app.db, 365) == 0


def test_recent_superseded_versions_are_kept(app: App, fake_api: FakeCtgov) -> None:
    """A superseded version younger than the retention keeps its raw JSON."""
    two_versions(app, fake_api, age_days=10)
    assert prune_raw(app.db, 365) == 0
    assert all(raw_present(app).values())


def test_pruned_versions_keep_record_and_events_and_say_why(app: App, fake_api: FakeCtgov) -> None:
    """The canonical record and events stay; the raw endpoint names the retention setting."""
    two_versions(app, fake_api, age_days=400)
    before = [e.as_dict() for e in all_events(app.db)]
    prune_raw(app.db, 365)
    with api_client(app) as api:
        raw = api.get(f"/v1/studies/{STUDY}/versions/1")
        record = api.json(f"/v1/studies/{STUDY}", params={"version": 1})["record"]
        diff = api.json(f"/v1/studies/{STUDY}/diff", params={"from": 1, "to": 2})
    assert raw.status_code == 404 and "raw_retention_days" in raw.json()["error"]["message"]
    assert record["status.overallStatus"] == "RECRUITING"
    assert ("status.overallStatus", "COMPLETED") in [
        (c["field"], c["new"]) for c in diff["changes"]
    ]
    assert [e.as_dict() for e in all_events(app.db)] == before


def test_cli_prune_needs_a_retention(app: App, fake_api: FakeCtgov, run: Any) -> None:
    """Without the setting or --days, ``db prune`` is a usage error; --days prunes."""
    two_versions(app, fake_api, age_days=400)
    assert "raw_retention_days" in run("db", "prune", expect=2).output
    assert "raw JSON of 1 superseded" in run("db", "prune", "--days", "30").output


def test_the_daemon_applies_the_retention(
    app: App, fake_api: FakeCtgov, run: Any, monkeypatch: Any
) -> None:
    """``daemon --once`` with database.raw_retention_days set prunes as the scheduler."""
    two_versions(app, fake_api, age_days=400)
    monkeypatch.setenv("CTMIRROR_DATABASE__RAW_RETENTION_DAYS", "365")
    run.env["CTMIRROR_DATABASE__RAW_RETENTION_DAYS"] = "365"
    run("daemon", "--once")
    assert raw_present(app)[(STUDY, 1)] is False
