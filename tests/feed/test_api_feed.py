"""The change feed over HTTP: complete, duplicate-free paging under every filter (also while a
sync writes), and the Atom feed of the same events. Real syncs against the fake API v2 on
SQLite and PostgreSQL; the expected events come from reading the whole table back."""

from __future__ import annotations

import fnmatch
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from api_client import ApiClient, api_client, error_of
from fake_ctgov import FakeCtgov
from helpers import STUDY, all_events, module, put_real, sponsor_update, sync, sync_ids
from sqlalchemy import select

from mirror import feed
from mirror.app import App
from mirror.feed import query as feed_query
from mirror.pipeline import SyncRequest, add_watch, get_watch
from mirror.store import ChangeEvent, WatchStudy

OTHER = "NCT05305430"
THIRD = "NCT00410098"
FOURTH = "NCT00205894"  # COMPLETED, two sites
ATOM = "{http://www.w3.org/2005/Atom}"


def _edit_status(study: dict[str, Any]) -> None:
    module(study, "statusModule")["overallStatus"] = "ACTIVE_NOT_RECRUITING"


def _add_site(study: dict[str, Any]) -> None:
    site = {"facility": "Lyon Research Unit", "city": "Lyon", "country": "France"}
    module(study, "contactsLocationsModule")["locations"].append(site)


def _drop_site(study: dict[str, Any]) -> None:
    module(study, "contactsLocationsModule")["locations"].pop(0)


def _enrollment(count: int) -> Any:
    def edit(study: dict[str, Any]) -> None:
        module(study, "designModule").setdefault("enrollmentInfo", {})["count"] = count

    return edit


@pytest.fixture
def mirrored(fake_api: FakeCtgov, app: App) -> App:
    """Four real studies over four syncs: first sight, edits of every kind, one study gone."""
    put_real(fake_api, [STUDY, OTHER, THIRD, FOURTH])
    add_watch(app.db, "pair", nct_ids=[STUDY, OTHER])
    sync(app, SyncRequest(watch=get_watch(app.db, "pair")))
    sync_ids(app, THIRD, FOURTH)
    sponsor_update(fake_api, STUDY, lambda s: (_edit_status(s), _add_site(s)))
    sponsor_update(fake_api, OTHER, _enrollment(7), posted="2026-06-02")
    sync_ids(app, STUDY, OTHER, THIRD, FOURTH)
    sponsor_update(fake_api, STUDY, _drop_site, posted="2026-06-03")
    fake_api.remove(THIRD)
    sync_ids(app, STUDY, OTHER, THIRD, FOURTH)
    return app


@pytest.fixture
def api(mirrored: App) -> Iterator[ApiClient]:
    with api_client(mirrored) as client:
        yield client


def watch_study_ids(app: App, name: str) -> set[int]:
    watch = get_watch(app.db, name)
    with app.db.session() as session:
        query = select(WatchStudy.study_id).where(WatchStudy.watch_id == watch.id)
        return set(session.scalars(query))


def matches(event: ChangeEvent, params: dict[str, Any], members: set[int]) -> bool:
    """Whether ``event`` passes the feed filters ``params``, decided here without mirror.feed."""
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    observed = event.observed_at
    return (
        ("nct_id" not in params or event.nct_id in [n.upper() for n in as_list(params["nct_id"])])
        and (
            "field" not in params
            or any(fnmatch.fnmatchcase(event.field, p) for p in as_list(params["field"]))
        )
        and ("kind" not in params or event.kind.value in as_list(params["kind"]))
        and ("since" not in params or observed >= datetime.fromisoformat(params["since"]))
        and ("until" not in params or observed < datetime.fromisoformat(params["until"]))
        and ("initial" not in params or event.initial == (params["initial"] == "true"))
        and ("watch" not in params or event.study_id in members)
    )


def page_through(api: ApiClient, params: dict[str, Any], limit: int = 7) -> list[int]:
    """Every event id of the feed under ``params``, paging ``limit`` at a time."""
    seen: list[int] = []
    cursor = 0
    while True:
        page = api.json("/v1/changes", params={**params, "after": cursor, "limit": limit})
        ids = [e["id"] for e in page["changes"]]
        assert len(ids) <= limit
        assert page["next_cursor"] == (ids[-1] if ids else cursor)
        seen += ids
        if not ids:
            return seen
        cursor = page["next_cursor"]


def filter_combinations(events: list[ChangeEvent]) -> dict[str, dict[str, Any]]:
    """Filter combinations worth paging through, with real time boundaries of the data."""
    times = sorted({e.observed_at for e in events})
    since, until = times[len(times) // 3].isoformat(), times[2 * len(times) // 3].isoformat()
    return {
        "none": {},
        "one study": {"nct_id": STUDY},
        "two studies": {"nct_id": [STUDY, FOURTH]},
        "lower-case id": {"nct_id": OTHER.lower()},
        "glob": {"field": "status.*"},
        "exact field": {"field": "status.overallStatus"},
        "sites": {"field": "locations.*"},
        "two globs": {"field": ["design.*", "study"]},
        "glob without prefix": {"field": "*Date"},
        "glob with ?": {"field": "status.?verallStatus"},
        "glob matching nothing": {"field": "nothing.*"},
        "case matters": {"field": "STATUS.*"},
        "changed": {"kind": "changed"},
        "added or removed": {"kind": ["added", "removed"]},
        "not initial": {"initial": "false"},
        "only initial": {"initial": "true"},
        "since": {"since": since},
        "until": {"until": until},
        "window": {"since": since, "until": until},
        "watch": {"watch": "pair"},
        "watch and glob": {"watch": "pair", "field": "status.*"},
        "study, kind, glob": {"nct_id": STUDY, "kind": "changed", "field": "status.*"},
        "glob, not initial": {"field": "locations.*", "initial": "false"},
    }


@pytest.mark.parametrize("strategy", ["planned", "index streams", "primary-key walk"])
def test_paging_returns_every_matching_event_once_in_order(
    mirrored: App, api: ApiClient, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging 7 at a time under each filter yields exactly the matching events, in id order."""
    if strategy == "index streams":  # globs never try a short walk first
        monkeypatch.setattr(feed_query, "WALK_FIRST", 0)
    if strategy == "primary-key walk":  # no index streams, no `since` shortcut
        monkeypatch.setattr(feed_query, "MERGE_MAX", 0)
        monkeypatch.setattr(feed_query, "SINCE_SCAN_MAX", 0)
    events = all_events(mirrored.db)
    members = watch_study_ids(mirrored, "pair")
    assert len(members) == 2
    failures = {}
    for name, params in filter_combinations(events).items():
        expected = [e.id for e in events if matches(e, params, members)]
        got = page_through(api, params)
        if got != expected:
            failures[name] = (len(got), len(expected))
    assert failures == {}
    assert {e.kind.value for e in events} == {"added", "changed", "removed"}


def test_filters_select_what_they_say(mirrored: App, api: ApiClient) -> None:
    """Spot checks of the oracle itself: a few filters return the events they name."""
    gone = api.json("/v1/changes", params={"field": "study"})["changes"]
    assert [(e["nct_id"], e["kind"], e["initial"]) for e in gone] == [(THIRD, "removed", False)]
    status = api.json("/v1/changes", params={"field": "status.overallStatus", "initial": "false"})
    assert [(e["nct_id"], e["old"], e["new"]) for e in status["changes"]] == [
        (STUDY, "RECRUITING", "ACTIVE_NOT_RECRUITING")
    ]
    sites = api.json("/v1/changes", params={"field": "locations.lyon*"})["changes"]
    assert [(e["version"], e["kind"]) for e in sites] == [(2, "added")]


def test_empty_page_returns_the_cursor_it_was_given(api: ApiClient) -> None:
    """Past the end of the feed: no events and next_cursor equal to `after`."""
    page = api.json("/v1/changes", params={"after": 10**9})
    assert page == {"changes": [], "next_cursor": 10**9}
    assert api.json("/v1/changes", params={"nct_id": "NCT99999999"})["next_cursor"] == 0


def test_feed_events_have_exactly_the_design_keys(api: ApiClient) -> None:
    """Each event of /v1/changes has the event's keys and formats (docs/architecture.md)."""
    page = api.json("/v1/changes", params={"limit": 1, "nct_id": STUDY})
    (event,) = page["changes"]
    assert set(event) == {
        "id", "nct_id", "version", "field", "kind", "old", "new", "observed_at",
        "source_date", "initial",
    }  # fmt: skip
    assert (event["nct_id"], event["version"], event["kind"], event["initial"]) == (
        STUDY, 1, "added", True,
    )  # fmt: skip
    assert event["observed_at"].endswith("Z") and len(event["observed_at"]) == 20
    assert page["next_cursor"] == event["id"]


def test_unknown_watch_is_404(api: ApiClient) -> None:
    """Filtering by a watch that does not exist is a 404 naming it."""
    assert error_of(api.get("/v1/changes", params={"watch": "nope"})) == (
        404, "not_found", "no watch named 'nope'",
    )  # fmt: skip


def test_bad_filters_are_422_naming_the_parameter(api: ApiClient) -> None:
    """Malformed filters answer 422 with the parameter named in the message."""
    cases = {
        "limit": {"limit": 1001},
        "after": {"after": -1},
        "kind": {"kind": "renamed"},
        "since": {"since": "yesterday"},
        "nct_id": {"nct_id": "NCT123"},
        "initial": {"initial": "maybe"},
        "field": {"field": "status.[a]*"},
    }
    for name, params in cases.items():
        status, code, message = error_of(api.get("/v1/changes", params=params))
        assert (status, code) == (422, "invalid_parameter"), name
        assert f"query parameter '{name}'" in message, message
    later, earlier = "2026-06-02T00:00:00Z", "2026-06-01T00:00:00Z"
    status, _, message = error_of(api.get("/v1/changes", params={"since": later, "until": earlier}))
    assert (status, message) == (422, "since is after until")
    too_early = "0001-01-01T00:30:00+01:00"  # before year 1 once in UTC
    status, _, message = error_of(api.get("/v1/changes", params={"since": too_early}))
    assert (status, message) == (422, "0001-01-01T00:30:00+01:00 is out of range in UTC")


# -- a sync writing while a reader pages ---------------------------------------------------


def test_paging_during_a_sync_misses_and_repeats_nothing(
    mirrored: App, api: ApiClient, fake_api: FakeCtgov
) -> None:
    """Pages read while syncs insert new versions add up to the final table: no gap, no repeat."""
    done = threading.Event()

    def writer() -> None:
        try:
            for n in range(8):
                for nct_id in (STUDY, OTHER, FOURTH):
                    fake_api.edit(nct_id, _enrollment(100 + n))
                sync_ids(mirrored, STUDY, OTHER, FOURTH)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    readers: dict[str, dict[str, Any]] = {"all": {}, "glob": {"field": "design.*"}}
    seen: dict[str, list[int]] = {name: [] for name in readers}
    cursors = dict.fromkeys(readers, 0)
    thread.start()
    while not done.is_set() or any(_more(api, p, cursors[n]) for n, p in readers.items()):
        for name, params in readers.items():
            page = api.json("/v1/changes", params={**params, "after": cursors[name], "limit": 5})
            seen[name] += [e["id"] for e in page["changes"]]
            cursors[name] = page["next_cursor"]
    thread.join()
    events = all_events(mirrored.db)
    assert seen["all"] == [e.id for e in events]
    assert seen["glob"] == [e.id for e in events if e.field.startswith("design.")]
    assert len([e for e in events if e.field == "design.enrollmentCount"]) >= 3 * 8


def _more(api: ApiClient, params: dict[str, Any], cursor: int) -> bool:
    page = api.json("/v1/changes", params={**params, "after": cursor, "limit": 1})
    return bool(page["changes"])


# -- Atom -------------------------------------------------------------------------------------


def test_atom_feed_has_one_entry_per_study_version(api: ApiClient, mirrored: App) -> None:
    """/v1/changes.atom is Atom XML with one entry per study version of the events."""
    response = api.get("/v1/changes.atom", params={"initial": "false", "limit": 1000})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(response.content)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    versions = {(e.nct_id, e.version) for e in all_events(mirrored.db) if not e.initial}
    expected = {f"http://mirror.test/v1/studies/{n}/versions/{v}" for n, v in versions}
    assert {e.findtext(f"{ATOM}id") for e in entries} == expected
    assert len(entries) == len(versions) == 4


def test_atom_feed_never_cuts_a_version_in_two(api: ApiClient, mirrored: App) -> None:
    """With limit=1 the newest version's entry still carries all of its changes."""
    flt = feed.ChangeFilter(nct_ids=[STUDY], initial=False, limit=1, newest_first=True)
    events = feed.changes_by_version(mirrored.db, flt)
    v3 = [e for e in all_events(mirrored.db) if (e.nct_id, e.version) == (STUDY, 3)]
    assert len(v3) == 2  # a site removed, a new LastUpdatePostDate
    assert [e.id for e in events] == sorted((e.id for e in v3), reverse=True)
    params = {"nct_id": STUDY, "initial": "false", "limit": 1}
    (entry,) = ET.fromstring(api.get("/v1/changes.atom", params=params).content).iter(
        f"{ATOM}entry"
    )
    assert entry.findtext(f"{ATOM}id") == f"http://mirror.test/v1/studies/{STUDY}/versions/3"
    content = entry.findtext(f"{ATOM}content") or ""
    assert all(e.field in content for e in v3), content


def test_cli_changes_takes_the_same_filters(mirrored: App, api: ApiClient, run: Any) -> None:
    """`ctmirror changes` with the API's filters prints the same events."""
    args = ["--field", "status.*", "--kind", "changed", "--no-initial", "--watch", "pair"]
    printed = orjson.loads(run("changes", *args, "--format", "json").stdout)
    params = {"field": "status.*", "kind": "changed", "initial": "false", "watch": "pair"}
    served = api.json("/v1/changes", params=params)["changes"]
    assert printed == served
    assert {e["nct_id"] for e in printed} == {STUDY, OTHER}
    first_sight = orjson.loads(
        run("changes", "--initial", "--nct", THIRD, "--format", "json").stdout
    )
    assert {(e["initial"], e["version"]) for e in first_sight} == {(True, 1)}
