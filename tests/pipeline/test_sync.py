"""End-to-end syncs of real records through the fake API v2: what each kind of edit records.

Every test syncs real records over loopback HTTP into a real database (SQLite and
PostgreSQL), edits them in the fake the way the registry would, syncs again, and asserts
the exact change events (field, kind, old, new) that the second sync wrote.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from api_client import api_client
from fake_ctgov import FakeCtgov, load_study
from helpers import (
    POSTED,
    STUDY,
    Change,
    changes,
    count,
    date_changes,
    event_total,
    events,
    module,
    put_real,
    runs,
    site_field,
    sponsor_update,
    study_row,
    sync,
    sync_ids,
    today,
    version_numbers,
)
from sqlalchemy import select

from mirror import feed
from mirror.app import App
from mirror.pipeline import Ingestor, Outcome, SyncRequest
from mirror.record import normalize
from mirror.source import Observation
from mirror.store import RunStatus, Study, StudyState, StudyVersion

# Two more real records, for merges and watches.
OTHER = "NCT05305430"  # RECRUITING
THIRD = "NCT00410098"  # UNKNOWN status
EVENT_KEYS = {
    "id", "nct_id", "version", "field", "kind", "old", "new", "observed_at", "source_date",
    "initial",
}  # fmt: skip


@pytest.fixture
def fake(fake_api: FakeCtgov) -> FakeCtgov:
    put_real(fake_api, [STUDY, OTHER, THIRD])
    return fake_api


def edit_and_resync(app: App, fake: FakeCtgov, edit: Any) -> tuple[dict[str, Any], list[Change]]:
    """Sync STUDY, apply a sponsor update, sync again: (the record before, version 2's events)."""
    assert sync_ids(app, STUDY).counts["new"] == 1
    before = fake.get(STUDY)
    sponsor_update(fake, STUDY, edit)
    summary = sync_ids(app, STUDY)
    assert (summary.counts["changed"], summary.counts["failed"]) == (1, 0)
    assert version_numbers(app.db, STUDY) == [1, 2]
    return before, changes(app.db, STUDY, 2)


# -- the first sync -------------------------------------------------------------------------


def test_first_sync_records_every_field_as_an_initial_added_event(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """The first sync of a study stores version 1 with one initial `added` event per field."""
    result = run("sync", STUDY)
    assert result.stdout.startswith(
        "sync ok: 1 fetched, 1 new, 0 changed, 0 unchanged, 0 gone, 0 failed in "
    )
    found = events(app.db, STUDY)
    record = normalize(load_study(STUDY), ["derived.*"])
    assert sorted(e.field for e in found) == sorted(record)
    assert {(e.version, e.kind.value, e.initial, e.source_date) for e in found} == {
        (1, "added", True, "2023-10-23")
    }
    assert all(e.old is None for e in found)
    by_field = {e.field: e.new for e in found}
    assert by_field["status.overallStatus"] == "RECRUITING"
    assert by_field["design.enrollmentCount"] == 60
    assert by_field["status.lastUpdatePostDate"] == "2023-10-23"
    sites = module(load_study(STUDY), "contactsLocationsModule")["locations"]
    assert {f for f in by_field if f.startswith("locations.")} == {site_field(s) for s in sites}
    assert by_field["locations.the alfred hospital|melbourne|victoria|australia"] == sites[2]
    assert not any(f.startswith("derived.") for f in by_field)


# -- sponsor-style edits --------------------------------------------------------------------


def test_status_change_is_one_changed_event(fake: FakeCtgov, app: App) -> None:
    """overallStatus RECRUITING -> ACTIVE_NOT_RECRUITING is one `changed` event."""

    def edit(study: dict[str, Any]) -> None:
        module(study, "statusModule")["overallStatus"] = "ACTIVE_NOT_RECRUITING"

    before, found = edit_and_resync(app, fake, edit)
    assert found == sorted(
        [
            ("status.overallStatus", "changed", "RECRUITING", "ACTIVE_NOT_RECRUITING"),
            *date_changes(before),
        ]
    )


def test_enrollment_change_is_one_changed_event(fake: FakeCtgov, app: App) -> None:
    """enrollmentInfo.count 60 -> 48 is one `changed` event on design.enrollmentCount."""

    def edit(study: dict[str, Any]) -> None:
        module(study, "designModule")["enrollmentInfo"]["count"] = 48

    before, found = edit_and_resync(app, fake, edit)
    assert found == sorted([("design.enrollmentCount", "changed", 60, 48), *date_changes(before)])


NEW_SITE = {
    "facility": "Royal Melbourne Hospital",
    "status": "NOT_YET_RECRUITING",
    "city": "Parkville",
    "state": "Victoria",
    "country": "Australia",
    "contacts": [{"name": "PI", "role": "CONTACT"}],
    "geoPoint": {"lat": -37.7998, "lon": 144.9566},
}


def test_site_added_at_the_top_is_one_added_event(fake: FakeCtgov, app: App) -> None:
    """A site inserted before the others is one `added` event on its own locations path."""

    def edit(study: dict[str, Any]) -> None:
        module(study, "contactsLocationsModule")["locations"].insert(0, NEW_SITE)

    before, found = edit_and_resync(app, fake, edit)
    field = "locations.royal melbourne hospital|parkville|victoria|australia"
    assert found == sorted([(field, "added", None, NEW_SITE), *date_changes(before)])


def test_site_removed_is_one_removed_event(fake: FakeCtgov, app: App) -> None:
    """A site dropped from the list is one `removed` event carrying the old site."""
    gone: dict[str, Any] = {}

    def edit(study: dict[str, Any]) -> None:
        gone.update(module(study, "contactsLocationsModule")["locations"].pop(2))

    before, found = edit_and_resync(app, fake, edit)
    field = "locations.the alfred hospital|melbourne|victoria|australia"
    assert gone["facility"] == "The Alfred Hospital"
    assert found == sorted([(field, "removed", gone, None), *date_changes(before)])


def test_reworded_primary_outcome_is_one_changed_event(fake: FakeCtgov, app: App) -> None:
    """Rewording one primary outcome is one `changed` event on outcomes.primary."""
    old = module(load_study(STUDY), "outcomesModule")["primaryOutcomes"]
    new = [dict(o) for o in old]
    new[1]["measure"] = "Maximum tolerated dose (MTD) of LBS-007"

    def edit(study: dict[str, Any]) -> None:
        module(study, "outcomesModule")["primaryOutcomes"] = new

    before, found = edit_and_resync(app, fake, edit)
    by_measure = lambda items: sorted(items, key=lambda o: o["measure"])  # noqa: E731
    assert found == sorted(
        [("outcomes.primary", "changed", by_measure(old), by_measure(new)), *date_changes(before)]
    )


def test_why_stopped_added_is_one_added_event(fake: FakeCtgov, app: App) -> None:
    """A new whyStopped is one `added` event on status.whyStopped."""

    def edit(study: dict[str, Any]) -> None:
        module(study, "statusModule")["whyStopped"] = "Sponsor decision"

    before, found = edit_and_resync(app, fake, edit)
    assert found == sorted(
        [("status.whyStopped", "added", None, "Sponsor decision"), *date_changes(before)]
    )


def test_reordered_outcomes_write_no_version(fake: FakeCtgov, app: App) -> None:
    """Outcomes listed in another order are the same record: no version, no event."""
    sync_ids(app, STUDY)

    def edit(study: dict[str, Any]) -> None:
        outcomes = module(study, "outcomesModule")
        outcomes["primaryOutcomes"].reverse()
        outcomes["secondaryOutcomes"].reverse()

    fake.edit(STUDY, edit)
    summary = sync_ids(app, STUDY)
    assert (summary.counts["unchanged"], summary.counts["changed"]) == (1, 0)
    assert version_numbers(app.db, STUDY) == [1]
    assert {e.version for e in events(app.db, STUDY)} == {1}


def test_reordered_sites_write_no_version(fake: FakeCtgov, app: App) -> None:
    """Sites listed in another order are the same record: no version, no event."""
    sync_ids(app, STUDY)
    fake.edit(STUDY, lambda s: module(s, "contactsLocationsModule")["locations"].reverse())
    assert sync_ids(app, STUDY).counts["unchanged"] == 1
    assert version_numbers(app.db, STUDY) == [1]


def test_derived_only_edit_writes_nothing(fake: FakeCtgov, app: App) -> None:
    """A new versionHolder and regenerated MeSH data (derivedSection only) write nothing."""
    sync_ids(app, STUDY)
    n_events = event_total(app.db)

    def edit(study: dict[str, Any]) -> None:
        study["derivedSection"]["miscInfoModule"]["versionHolder"] = POSTED
        study["derivedSection"]["conditionBrowseModule"] = {"meshes": [], "ancestors": []}

    fake.edit(STUDY, edit)
    assert sync_ids(app, STUDY).counts["unchanged"] == 1
    assert version_numbers(app.db, STUDY) == [1]
    assert event_total(app.db) == n_events


# -- re-reads -------------------------------------------------------------------------------


def test_unchanged_resync_only_touches_last_seen(fake: FakeCtgov, run: Any, app: App) -> None:
    """Re-reading an unchanged study writes no version and no event but moves last_seen_at."""
    run("sync", STUDY)
    first = study_row(app.db, STUDY)
    n_events = event_total(app.db)
    result = run("sync", STUDY)
    assert result.stdout.startswith(
        "sync ok: 1 fetched, 0 new, 0 changed, 1 unchanged, 0 gone, 0 failed in "
    )
    again = study_row(app.db, STUDY)
    assert (count(app.db, StudyVersion), event_total(app.db)) == (1, n_events)
    assert (again.latest_version, again.content_hash) == (1, first.content_hash)
    assert again.first_seen_at == first.first_seen_at
    assert again.last_seen_at > first.last_seen_at


def test_replayed_ingest_is_idempotent(fake: FakeCtgov, app: App) -> None:
    """Ingesting the same fetched batch again stores nothing new."""
    now = datetime.now(UTC)
    batch = [
        Observation(i, fake.served_bytes(i), orjson.loads(fake.served_bytes(i)), now)
        for i in (STUDY, OTHER, THIRD)
    ]
    ingestor = Ingestor(app.db, ignore=["derived.*"])
    assert [r.outcome for r in ingestor.ingest(batch)] == [Outcome.NEW] * 3
    stored = (count(app.db, StudyVersion), event_total(app.db))
    assert [(r.outcome, r.version) for r in ingestor.ingest(batch)] == [(Outcome.UNCHANGED, 1)] * 3
    assert (count(app.db, StudyVersion), event_total(app.db)) == stored


def test_two_concurrent_replays_store_each_version_once(fake: FakeCtgov, app: App) -> None:
    """Two writers ingesting the same batch at once store every version exactly once."""
    now = datetime.now(UTC)
    batch = [
        Observation(i, fake.served_bytes(i), orjson.loads(fake.served_bytes(i)), now)
        for i in (STUDY, OTHER, THIRD)
    ]
    start = threading.Barrier(2)
    outcomes: list[Outcome] = []

    def write() -> None:
        ingestor = Ingestor(app.db, ignore=["derived.*"])
        start.wait()
        outcomes.extend(r.outcome for r in ingestor.ingest(batch))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == sorted([Outcome.NEW] * 3 + [Outcome.UNCHANGED] * 3)
    assert count(app.db, StudyVersion) == 3
    expected = sum(len(normalize(load_study(i), ["derived.*"])) for i in (STUDY, OTHER, THIRD))
    assert event_total(app.db) == expected


def test_versions_count_up_and_their_events_share_the_version(fake: FakeCtgov, app: App) -> None:
    """Two successive updates make versions 1, 2, 3; each version's events carry its number."""
    sync_ids(app, STUDY)
    v1 = fake.get(STUDY)
    sponsor_update(
        fake, STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED")
    )
    sync_ids(app, STUDY)
    v2 = fake.get(STUDY)
    sponsor_update(
        fake,
        STUDY,
        lambda s: module(s, "designModule")["enrollmentInfo"].update(count=52, type="ACTUAL"),
        posted="2026-07-01",
        submitted="2026-06-30",
    )
    sync_ids(app, STUDY)
    assert version_numbers(app.db, STUDY) == [1, 2, 3]
    assert study_row(app.db, STUDY).latest_version == 3
    assert changes(app.db, STUDY, 2) == sorted(
        [("status.overallStatus", "changed", "RECRUITING", "COMPLETED"), *date_changes(v1)]
    )
    assert changes(app.db, STUDY, 3) == sorted(
        [
            ("design.enrollmentCount", "changed", 60, 52),
            ("design.enrollmentType", "changed", "ESTIMATED", "ACTUAL"),
            *date_changes(v2, posted="2026-07-01", submitted="2026-06-30"),
        ]
    )
    by_id = events(app.db, STUDY)
    fields = len(normalize(load_study(STUDY), ["derived.*"]))
    assert [e.version for e in by_id] == [1] * fields + [2] * 3 + [3] * 4
    assert {(e.version, e.source_date, e.initial) for e in by_id} == {
        (1, "2023-10-23", True),
        (2, POSTED, False),
        (3, "2026-07-01", False),
    }


# -- studies that leave ---------------------------------------------------------------------


def test_gone_study_gets_a_removed_event_and_keeps_its_history(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """A 404 writes a tombstone version with a `removed` study event; history stays."""
    run("sync", STUDY)
    initial = len(events(app.db, STUDY, 1))
    fake.remove(STUDY)
    result = run("sync", STUDY)
    assert result.stdout.startswith(
        "sync ok: 0 fetched, 0 new, 0 changed, 0 unchanged, 1 gone, 0 failed in "
    )
    assert changes(app.db, STUDY, 2) == [("study", "removed", None, None)]
    study = study_row(app.db, STUDY)
    assert (study.state, study.latest_version, study.alias_of) == (StudyState.GONE, 2, None)
    assert len(events(app.db, STUDY, 1)) == initial
    history = orjson.loads(run("history", STUDY, "--format", "json").stdout)
    assert [(v["version"], v["origin"], v["events"]) for v in history] == [
        (1, "api", initial),
        (2, "tombstone", 1),
    ]
    assert history[1]["fields"] == ["study"]


def test_gone_study_synced_again_writes_nothing(fake: FakeCtgov, app: App) -> None:
    """A study already recorded as gone gets no second tombstone."""
    sync_ids(app, STUDY)
    fake.remove(STUDY)
    sync_ids(app, STUDY)
    summary = sync_ids(app, STUDY)
    assert (summary.counts["unchanged"], summary.counts["gone"]) == (1, 0)
    assert version_numbers(app.db, STUDY) == [1, 2]


def test_study_back_after_404_gets_an_added_study_event(fake: FakeCtgov, app: App) -> None:
    """A gone study that reappears with edits is active again: `study` added plus its changes."""
    sync_ids(app, STUDY)
    fake.remove(STUDY)
    sync_ids(app, STUDY)
    back = load_study(STUDY)
    module(back, "statusModule")["overallStatus"] = "SUSPENDED"
    fake.put(back)
    assert sync_ids(app, STUDY).counts["changed"] == 1
    assert changes(app.db, STUDY, 3) == [
        ("status.overallStatus", "changed", "RECRUITING", "SUSPENDED"),
        ("study", "added", None, None),
    ]
    assert study_row(app.db, STUDY).state is StudyState.ACTIVE


def test_merged_id_records_the_alias_and_stores_the_target(fake: FakeCtgov, app: App) -> None:
    """A mirrored id merged into another: a `removed` event naming the target, target stored."""
    sync_ids(app, STUDY)
    fake.alias(STUDY, OTHER)
    summary = sync_ids(app, STUDY)
    assert (summary.counts["gone"], summary.counts["new"]) == (1, 1)
    assert changes(app.db, STUDY, 2) == [("study", "removed", None, {"alias_of": OTHER})]
    merged = study_row(app.db, STUDY)
    assert (merged.state, merged.alias_of, merged.latest_version) == (StudyState.MOVED, OTHER, 2)
    target = study_row(app.db, OTHER)
    assert (target.state, target.latest_version) == (StudyState.ACTIVE, 1)
    assert {(e.kind.value, e.initial) for e in events(app.db, OTHER)} == {("added", True)}


def test_merged_id_answering_301_records_the_alias(fake: FakeCtgov, app: App) -> None:
    """An id the listing does not know but /studies/{id} answers 301: alias kept, target stored."""
    fake.alias(THIRD, OTHER)
    # The target's record does not list the alias, so only GET /studies/{id} can tell.
    fake.edit(OTHER, lambda s: module(s, "identificationModule").pop("nctIdAliases"))
    summary = sync_ids(app, THIRD)
    assert (summary.counts["gone"], summary.counts["new"], summary.counts["failed"]) == (1, 1, 0)
    assert [r.status for r in fake.requests if r.path.endswith(f"/studies/{THIRD}")] == [301]
    alias = study_row(app.db, THIRD)
    assert (alias.state, alias.alias_of, alias.latest_version) == (StudyState.MOVED, OTHER, 0)
    assert version_numbers(app.db, THIRD) == []
    assert version_numbers(app.db, OTHER) == [1]


# -- output ---------------------------------------------------------------------------------


def test_changes_json_objects_have_exactly_the_design_keys(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """`ctmirror changes --format json` prints exactly the event's keys (docs/architecture.md)."""
    run("sync", STUDY)
    fake.edit(STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"))
    run("sync", STUDY)
    printed = orjson.loads(
        run("changes", "--nct", STUDY, "--no-initial", "--format", "json").stdout
    )
    assert [set(e) for e in printed] == [EVENT_KEYS]
    event = printed[0]
    assert {k: event[k] for k in EVENT_KEYS - {"id", "observed_at"}} == {
        "nct_id": STUDY,
        "version": 2,
        "field": "status.overallStatus",
        "kind": "changed",
        "old": "RECRUITING",
        "new": "COMPLETED",
        "source_date": "2023-10-23",
        "initial": False,
    }
    assert event["id"] == event_total(app.db)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["observed_at"])


# -- watches --------------------------------------------------------------------------------


def test_watch_of_ids_syncs_exactly_its_ids(fake: FakeCtgov, run: Any, app: App) -> None:
    """`watch add NAME ids…` then `sync --watch NAME` reads those ids and records membership."""
    run("watch", "add", "pair", STUDY, OTHER)
    result = run("sync", "--watch", "pair")
    assert result.stdout.startswith("sync ok: 2 fetched, 2 new, 0 changed, 0 unchanged")
    assert count(app.db, Study) == 2
    listed = orjson.loads(run("watch", "list", "--format", "json").stdout)
    assert [(w["name"], w["kind"], w["studies"]) for w in listed] == [("pair", "ids", 2)]
    fake.edit(STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"))
    result = run("sync", "--watch", "pair")
    assert result.stdout.startswith("sync ok: 2 fetched, 0 new, 1 changed, 1 unchanged")
    printed = orjson.loads(
        run("changes", "--watch", "pair", "--no-initial", "--format", "json").stdout
    )
    assert [(e["nct_id"], e["field"], e["old"], e["new"]) for e in printed] == [
        (STUDY, "status.overallStatus", "RECRUITING", "COMPLETED")
    ]


def test_watch_of_a_search_syncs_what_the_search_returns(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """A saved-search watch stores the studies the search returns and only those."""
    run("watch", "add", "recruiting", "--query", "filter.overallStatus=RECRUITING")
    result = run("sync", "--watch", "recruiting")
    assert result.stdout.startswith("sync ok: 2 fetched, 2 new, 0 changed, 0 unchanged")
    with app.db.session() as session:
        stored = sorted(session.scalars(select(Study.nct_id)))
    assert stored == sorted([STUDY, OTHER])
    listed = orjson.loads(run("watch", "list", "--format", "json").stdout)
    assert [(w["kind"], w["studies"], w["since_date"]) for w in listed] == [("query", 2, today())]


def test_search_watch_incremental_pass_reads_only_recent_updates(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """After a first full pass, a watch's next pass asks only for studies updated since."""
    run("watch", "add", "recruiting", "--query", "filter.overallStatus=RECRUITING")
    run("sync", "--watch", "recruiting")
    sponsor_update(
        fake,
        OTHER,
        lambda s: module(s, "designModule")["enrollmentInfo"].update(count=7),
        posted=today(),
    )
    result = run("sync", "--watch", "recruiting")
    assert result.stdout.startswith("sync ok: 1 fetched, 0 new, 1 changed, 0 unchanged")
    since = date.fromisoformat(today()) - timedelta(days=1)  # a day of overlap
    assert fake.requests[-1].query == {
        "filter.overallStatus": ["RECRUITING"],
        "filter.advanced": [f"AREA[LastUpdatePostDate]RANGE[{since.isoformat()},MAX]"],
        "pageSize": ["1000"],
        "format": ["json"],
        "countTotal": ["true"],
    }
    assert version_numbers(app.db, OTHER) == [1, 2]
    assert version_numbers(app.db, STUDY) == [1]


def test_search_watch_full_pass_rereads_members_that_left_the_results(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """A member that no longer matches the search is re-read by id on the next full pass."""
    run("watch", "add", "recruiting", "--query", "filter.overallStatus=RECRUITING")
    run("sync", "--watch", "recruiting")
    fake.edit(STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"))
    result = run("sync", "--watch", "recruiting", "--full")
    assert result.stdout.startswith("sync ok: 2 fetched, 0 new, 1 changed, 1 unchanged")
    assert changes(app.db, STUDY, 2) == [
        ("status.overallStatus", "changed", "RECRUITING", "COMPLETED")
    ]
    listed = orjson.loads(run("watch", "list", "--format", "json").stdout)
    assert listed[0]["studies"] == 2


def test_search_watch_marks_a_404_member_gone_on_the_next_full_pass(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """A member that left the results and then 404s is marked gone by the next full pass."""
    run("watch", "add", "recruiting", "--query", "filter.overallStatus=RECRUITING")
    run("sync", "--watch", "recruiting")
    fake.remove(STUDY)
    # An incremental pass cannot tell a study that left from one that did not change.
    result = run("sync", "--watch", "recruiting")
    assert result.stdout.startswith("sync ok: 0 fetched, 0 new, 0 changed, 0 unchanged, 0 gone")
    assert study_row(app.db, STUDY).state is StudyState.ACTIVE
    result = run("sync", "--watch", "recruiting", "--full")
    assert result.stdout.startswith("sync ok: 1 fetched, 0 new, 0 changed, 1 unchanged, 1 gone")
    assert changes(app.db, STUDY, 2) == [("study", "removed", None, None)]
    assert study_row(app.db, STUDY).state is StudyState.GONE
    assert study_row(app.db, OTHER).latest_version == 1
    assert [r.status for r in runs(app.db)] == [RunStatus.OK] * 3


def test_sync_of_a_search_without_a_watch(fake: FakeCtgov, app: App) -> None:
    """`Syncer` with a one-off search stores the matching studies."""
    summary = sync(app, SyncRequest(query={"filter.overallStatus": "UNKNOWN"}))
    assert (summary.counts["fetched"], summary.counts["new"]) == (1, 1)
    assert version_numbers(app.db, THIRD) == [1]
    assert count(app.db, Study) == 1


# -- records no backend stores as they are --------------------------------------------------


def test_nul_characters_are_stored_as_replacement_characters_on_every_backend(
    fake: FakeCtgov, app: App
) -> None:
    """A NUL in a title and a summary: stored (as U+FFFD in the record, the events and the
    title), the raw JSON served back byte for byte; an edit with a NUL is a change like any."""
    fake.edit(STUDY, lambda s: module(s, "identificationModule").update(briefTitle="A\x00B"))
    assert sync_ids(app, STUDY, OTHER).counts["new"] == 2
    fake.edit(STUDY, lambda s: module(s, "descriptionModule").update(briefSummary="x\x00y"))
    assert sync_ids(app, STUDY).counts["changed"] == 1
    with app.db.session() as session:
        title = session.scalar(select(Study.title).where(Study.nct_id == STUDY))
    assert title == "A\ufffdB"
    assert changes(app.db, STUDY, 2) == [
        ("description.briefSummary", "changed", load_study(STUDY)["protocolSection"][
            "descriptionModule"]["briefSummary"], "x\ufffdy"),
    ]  # fmt: skip
    assert orjson.loads(feed.raw_version(app.db, STUDY, 2)) == fake.get(STUDY)


def test_a_page_with_a_bad_record_stores_the_rest_and_says_partial(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """An API page holding one record that is not a study: the others are stored, the summary
    says ``partial`` and names it, the exit code is 1."""
    fake.add_junk(b'{"protocolSection": "oops"}')
    result = run("sync", "--query", f"filter.ids={STUDY},{OTHER}", expect=1)
    assert result.stdout.startswith(
        "sync partial: 2 fetched, 2 new, 0 changed, 0 unchanged, 0 gone, 1 failed"
    )
    assert "  failed search record 1: malformed study record: no protocolSection object" in (
        result.stderr.splitlines()
    )
    assert sorted(study_row(app.db, i).nct_id for i in (STUDY, OTHER)) == sorted([STUDY, OTHER])


def test_a_gone_study_says_so_on_show_its_pages_and_the_api(
    fake: FakeCtgov, run: Any, app: App
) -> None:
    """After its `removed` event a study's page opens with a notice and the date; the API's
    study object carries the state and when it left."""
    run("sync", STUDY)
    fake.remove(STUDY)
    run("sync", STUDY)
    left = study_row(app.db, STUDY).last_seen_at.date().isoformat()
    page = run("show", STUDY).stdout
    assert (
        f"> **No longer in the registry** since {left}: ClinicalTrials.gov no longer has this "
        "study (it answers 404). This page shows the last version the mirror stored (version 1)."
    ) in page.splitlines()
    assert "registry_state: removed" in page.split("---")[1]
    with api_client(app) as api:
        html = api.get(f"/trials/{STUDY}.html").text
        detail = api.json(f"/v1/studies/{STUDY}")
    assert '<p class="notice" role="status"><strong>No longer in the registry</strong>' in html
    assert (detail["state"], detail["alias_of"]) == ("gone", None)
    assert detail["left_registry_at"].startswith(left)


def test_a_merged_study_names_the_study_it_became(fake: FakeCtgov, run: Any, app: App) -> None:
    """A merged id's page names and links the id it was merged into."""
    run("sync", STUDY)
    fake.alias(STUDY, OTHER)
    run("sync", STUDY)
    page = run("show", STUDY).stdout
    assert f"> **Merged into [{OTHER}](https://clinicaltrials.gov/study/{OTHER})** since " in page
    assert f"merged_into: {OTHER}" in page.split("---")[1]
    with api_client(app) as api:
        html = api.get(f"/trials/{STUDY}.html").text
        detail = api.json(f"/v1/studies/{STUDY}")
    assert f'Merged into <a href="{OTHER}.html">{OTHER}</a>' in html
    assert (detail["state"], detail["alias_of"]) == ("moved", OTHER)


def test_values_too_long_for_their_columns_never_break_a_write(fake: FakeCtgov, app: App) -> None:
    """A site named with 600 characters fails alone (its field path would be too long); a status
    of 55 characters and a timestamp for a date are stored, leaving those columns empty."""
    fake.edit(STUDY, lambda s: module(s, "contactsLocationsModule")["locations"][0].update(
        facility="x" * 600))  # fmt: skip
    fake.edit(OTHER, lambda s: module(s, "statusModule").update(
        overallStatus="RECRUITING " * 5,
        lastUpdatePostDateStruct={"date": "2026-06-01T00:00:00Z"}))  # fmt: skip
    summary = sync_ids(app, STUDY, OTHER)
    assert (summary.counts["new"], summary.counts["failed"]) == (1, 1)
    ((nct_id, error),) = summary.failures
    assert nct_id == STUDY
    assert re.fullmatch(
        f"malformed study record {STUDY}: a field path is 6[0-9][0-9] characters long "
        r"\(at most 512\)",
        error,
    )
    row = study_row(app.db, OTHER)
    assert (row.overall_status, row.source_date) == (None, None)
