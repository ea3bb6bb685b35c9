"""History backfill end to end: registry versions served by the fake over loopback HTTP, stored
in a real database (SQLite and PostgreSQL), merged with what live syncs observed."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from api_client import api_client
from fake_ctgov import FakeCtgov, load_study
from helpers import STUDY, changes, module, study_row, sync_ids, version_numbers
from sqlalchemy import delete, select

from mirror.app import App
from mirror.feed import MAX_LIMIT, change_dicts, history, page_input, raw_version, timeline
from mirror.feed.reads import ChangeFilter
from mirror.pipeline import Backfiller, BackfillRequest, BackfillSummary
from mirror.pipeline import backfill as backfill_module
from mirror.store import Study, StudyVersion, VersionClassRow

Study_ = dict[str, Any]
Edit = Callable[[Study_], None]


def dated(study: Study_, day: str) -> Study_:
    """A copy of ``study`` posted on ``day`` (what every registry version carries)."""
    version = copy.deepcopy(study)
    status = module(version, "statusModule")
    status["lastUpdateSubmitDate"] = day
    status["lastUpdatePostDateStruct"] = {"date": day, "type": "ACTUAL"}
    return version


def versions_of(base: Study_, steps: list[tuple[str, Edit]]) -> list[Study_]:
    """Registry versions: each step's edit applied on top of the version before."""
    out, current = [], base
    for day, edit in steps:
        current = copy.deepcopy(current)
        edit(current)
        out.append(dated(current, day))
    return out


def enrollment(count: int, kind: str) -> Edit:
    def edit(study: Study_) -> None:
        module(study, "designModule")["enrollmentInfo"] = {"count": count, "type": kind}

    return edit


def status(value: str) -> Edit:
    def edit(study: Study_) -> None:
        module(study, "statusModule")["overallStatus"] = value

    return edit


def nothing(study: Study_) -> None:
    return None


ENROLLMENT_STEPS = [
    ("2019-03-01", enrollment(394, "ESTIMATED")),
    ("2020-01-15", enrollment(1063, "ESTIMATED")),
    ("2021-06-30", enrollment(1062, "ACTUAL")),
]


def run_backfill(app: App, request: BackfillRequest) -> BackfillSummary:
    async def go() -> BackfillSummary:
        async with app.source() as source:
            return await Backfiller(app.db, source, app.settings).run(request)

    return asyncio.run(go())


def backfill_ids(app: App, *nct_ids: str, **options: Any) -> BackfillSummary:
    return run_backfill(app, BackfillRequest(nct_ids=list(nct_ids), **options))


def stored(app: App, nct_id: str) -> list[tuple[int, int | None, str | None, str]]:
    """(version, registry version, source date, origin) of each stored version."""
    with app.db.session() as session:
        rows = session.execute(
            select(
                StudyVersion.version,
                StudyVersion.registry_version,
                StudyVersion.source_date,
                StudyVersion.origin,
            )
            .join(Study, Study.id == StudyVersion.study_id)
            .where(Study.nct_id == nct_id)
            .order_by(StudyVersion.version)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
def base() -> Study_:
    return load_study(STUDY)


def test_every_registry_version_is_stored_with_the_registrys_date(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """Three registry versions become versions 1-3, dated by the registry, with their events."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    summary = backfill_ids(app, STUDY)
    assert (summary.counts["versions"], summary.counts["failed"]) == (3, 0)
    assert stored(app, STUDY) == [
        (1, 0, "2019-03-01", "history"),
        (2, 1, "2020-01-15", "history"),
        (3, 2, "2021-06-30", "history"),
    ]
    assert changes(app.db, STUDY, 2) == [
        ("design.enrollmentCount", "changed", 394, 1063),
        ("status.lastUpdatePostDate", "changed", "2019-03-01", "2020-01-15"),
        ("status.lastUpdateSubmitDate", "changed", "2019-03-01", "2020-01-15"),
    ]
    first = [e for e in change_dicts(app.db, ChangeFilter(nct_ids=[STUDY], limit=1000))]
    assert {e["initial"] for e in first if e["version"] == 1} == {True}
    assert {e["observed_at"] for e in first if e["version"] == 3} == {"2021-06-30T00:00:00Z"}


def test_enrollment_classes_across_versions(app: App, fake_api: FakeCtgov, base: Study_) -> None:
    """394 -> 1063 (ESTIMATED) -> 1062 (ACTUAL): enrollment.changed major, then actualized."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    entries = timeline(app.db, STUDY)
    names = [[c["name"] for c in e["classes"]] for e in entries]
    assert names == [[], ["enrollment.changed"], ["enrollment.actualized"]]
    changed = entries[1]["classes"][0]
    assert (changed["from"], changed["to"], changed["major"]) == (394, 1063, True)
    assert entries[2]["snapshot"]["enrollment_type"] == "ACTUAL"


def test_a_rerun_stores_nothing_twice(app: App, fake_api: FakeCtgov, base: Study_) -> None:
    """Backfilling again finds every registry version stored and writes nothing."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    again = backfill_ids(app, STUDY)
    assert (again.counts["versions"], again.counts["present"]) == (0, 3)
    assert version_numbers(app.db, STUDY) == [1, 2, 3]


def test_an_interrupted_backfill_resumes_without_duplicates(
    app: App, fake_api: FakeCtgov, base: Study_, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that dies at version 4 of 6 keeps versions 0-3; the re-run adds 4-5 once."""
    monkeypatch.setattr(backfill_module, "CHUNK", 2)
    days = ["2019-01-01", "2019-02-01", "2019-03-01", "2019-04-01", "2019-05-01", "2019-06-01"]
    steps = [(day, enrollment(100 + n, "ESTIMATED")) for n, day in enumerate(days)]
    fake_api.set_history(STUDY, versions_of(base, steps))
    fake_api.fault_next("status", count=50, status=503, path_contains="/history/4")
    broken = backfill_ids(app, STUDY)
    assert broken.counts["failed"] == 1
    assert [rv for _, rv, _, _ in stored(app, STUDY)] == [0, 1, 2, 3]
    fake_api.clear_faults()
    resumed = backfill_ids(app, STUDY)
    assert (resumed.counts["present"], resumed.counts["versions"]) == (4, 2)
    assert [rv for _, rv, _, _ in stored(app, STUDY)] == [0, 1, 2, 3, 4, 5]
    assert fake_api.request_count("/history/1") == 1  # stored versions are not fetched again


def test_a_live_sync_after_a_backfill_continues_the_numbering(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """The live record equals the newest registry version: no new version; an edit is v4."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    assert sync_ids(app, STUDY).counts["unchanged"] == 1
    fake_api.edit(STUDY, status("COMPLETED"))
    assert sync_ids(app, STUDY).counts["changed"] == 1
    assert [v for v, *_ in stored(app, STUDY)] == [1, 2, 3, 4]
    assert study_row(app.db, STUDY).latest_version == 4
    assert ("status.overallStatus", "changed", "RECRUITING", "COMPLETED") in changes(
        app.db, STUDY, 4
    )


def test_a_backfill_after_live_syncs_merges_the_observed_version(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """The version a live sync stored is the newest registry version: it keeps its number, the
    past gets the next ones, and what changed into it arrives as new events of it."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    sync_ids(app, STUDY)
    summary = backfill_ids(app, STUDY)
    assert (summary.counts["versions"], summary.counts["merged"]) == (2, 1)
    assert stored(app, STUDY) == [
        (1, 2, "2021-06-30", "api"),
        (2, 0, "2019-03-01", "history"),
        (3, 1, "2020-01-15", "history"),
    ]
    assert ("design.enrollmentCount", "changed", 1063, 1062) in changes(app.db, STUDY, 1)
    initial = change_dicts(app.db, ChangeFilter(nct_ids=[STUDY], initial=True, limit=1000))
    assert {e["version"] for e in initial} == {1, 2}
    assert [v.version for v in history(app.db, STUDY)[1]] == [2, 3, 1]  # in time
    assert sync_ids(app, STUDY).counts["unchanged"] == 1


def test_what_was_shown_before_a_backfill_keeps_its_meaning(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """Two live versions, then the registry's past: every version number, event id and value
    read before is read the same after; the past and what it explains arrive as new entries
    after the old cursor; a page of version 2 is still version 2; the next sync goes on."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS[:2]))
    sync_ids(app, STUDY)
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    sync_ids(app, STUDY)
    every = ChangeFilter(nct_ids=[STUDY], limit=MAX_LIMIT)
    before = change_dicts(app.db, every)
    cursor = before[-1]["id"]
    versions = {v: orjson.loads(raw_version(app.db, STUDY, v)) for v in (1, 2)}
    page = page_input(app.db, STUDY, 2, app.settings.pages)
    backfill_ids(app, STUDY)
    after = change_dicts(app.db, every)
    assert after[: len(before)] == before
    assert {e["version"] for e in after[len(before) :]} == {1, 3}  # the past, what it explains
    assert all(e["id"] > cursor for e in after[len(before) :])
    assert {v: orjson.loads(raw_version(app.db, STUDY, v)) for v in (1, 2)} == versions
    assert page_input(app.db, STUDY, 2, app.settings.pages).study == page.study
    assert page_input(app.db, STUDY, None, app.settings.pages).version == 2
    assert [(v, rv) for v, rv, *_ in stored(app, STUDY)] == [(1, 1), (2, 2), (3, 0)]
    fake_api.edit(STUDY, lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"))
    sync_ids(app, STUDY)
    assert changes(app.db, STUDY, 4) == [
        ("status.overallStatus", "changed", "RECRUITING", "COMPLETED")
    ]


def test_markup_only_versions_record_no_field_change(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """An HTML-marked-up early version and its plain-text successor differ in no field."""
    criteria = module(base, "eligibilityModule")["eligibilityCriteria"]
    html = "<p>" + criteria.replace("\n\n", "</p><p>").replace(">", "&gt;") + "</p>"

    def marked_up(study: Study_) -> None:
        module(study, "eligibilityModule")["eligibilityCriteria"] = html

    fake_api.set_history(
        STUDY, versions_of(base, [("2019-03-01", marked_up), ("2019-04-01", nothing)])
    )
    backfill_ids(app, STUDY)
    assert [f for f, *_ in changes(app.db, STUDY, 2)] == [
        "status.lastUpdatePostDate",
        "status.lastUpdateSubmitDate",
    ]


def test_class_filter_selects_the_events_of_classified_versions(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """``class=enrollment.actualized`` returns exactly the events of version 3."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    found = change_dicts(app.db, ChangeFilter(classes=["enrollment.actual*"], limit=1000))
    assert {e["version"] for e in found} == {3}
    assert len(found) == len(changes(app.db, STUDY, 3))
    assert change_dicts(app.db, ChangeFilter(classes=["status.stopped"], limit=10)) == []


def test_unknown_study_is_reported_and_the_rest_backfilled(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """A 404 history is a named failure; the other study is stored."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    summary = backfill_ids(app, "NCT00000000", STUDY)
    assert summary.failures[0][0] == "NCT00000000"
    assert summary.counts["versions"] == 3


def test_max_versions_keeps_the_newest(app: App, fake_api: FakeCtgov, base: Study_) -> None:
    """``--max-versions 2``: the two newest registry versions, the first of them initial."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY, max_versions=2)
    assert [rv for _, rv, _, _ in stored(app, STUDY)] == [1, 2]


def test_cli_backfill_and_timeline(run: Any, fake_api: FakeCtgov, base: Study_) -> None:
    """``ctmirror backfill`` then ``timeline --format json``: one entry per version."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    result = run("backfill", STUDY)
    assert "3 versions stored" in result.output
    entries = orjson.loads(run("timeline", STUDY, "--format", "json").output)
    assert [(e["version"], e["source_date"]) for e in entries] == [
        (1, "2019-03-01"),
        (2, "2020-01-15"),
        (3, "2021-06-30"),
    ]
    assert [c["name"] for c in entries[2]["classes"]] == ["enrollment.actualized"]
    table = run("timeline", STUDY).output
    assert "enrollment.changed (major)" in table
    listed = run("classes", "--format", "json").output
    assert "outcomes.primary.demoted" in {c["name"] for c in orjson.loads(listed)}


def test_recompute_derives_the_same_classes_again(
    app: App, fake_api: FakeCtgov, base: Study_, run: Any
) -> None:
    """``classes --recompute`` after the classes were lost writes the same classes back."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    before = timeline(app.db, STUDY)
    with app.db.write() as session:
        session.execute(delete(VersionClassRow))
    assert [e["classes"] for e in timeline(app.db, STUDY)] == [[], [], []]
    assert "2 classes written" in run("classes", "--recompute").output
    assert timeline(app.db, STUDY) == before


def test_the_api_serves_timeline_class_filter_and_chart(
    app: App, fake_api: FakeCtgov, base: Study_
) -> None:
    """Over HTTP: the timeline, ``class=`` on the feed, and the HTML page's version chart."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    with api_client(app) as api:
        entries = api.json(f"/v1/studies/{STUDY}/timeline")
        page = api.json("/v1/changes", params={"class": "enrollment.changed", "limit": 1000})
        html = api.get(f"/trials/{STUDY}.html").text
        missing = api.get("/v1/studies/NCT00000000/timeline")
    assert entries == timeline(app.db, STUDY)
    assert [e["classes"][0]["name"] for e in entries[1:]] == [
        "enrollment.changed",
        "enrollment.actualized",
    ]
    assert {e["version"] for e in page["changes"]} == {2}
    assert html.count("<svg") == 1 and "enrollment" in html
    assert missing.status_code == 404


def test_the_markdown_page_lists_the_versions_with_their_classes(
    app: App, fake_api: FakeCtgov, base: Study_, run: Any
) -> None:
    """``show --format md`` of a backfilled study ends with its version timeline."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    backfill_ids(app, STUDY)
    page = run("show", STUDY, "--format", "md").output
    timeline_section = page.split("## Version Timeline\n\n")[1].split("\n\n")[0]
    assert timeline_section.splitlines() == [
        "- **v3** 2021-06-30 — `enrollment.actualized`",
        "- **v2** 2020-01-15 — `enrollment.changed` (major)",
        "- **v1** 2019-03-01 — first version",
    ]


def test_cli_backfill_of_a_study_without_history_fails_with_exit_1(run: Any) -> None:
    """No history (404): the summary says failed, the study is named, the exit code is 1."""
    result = run("backfill", "NCT09999999", expect=1)
    assert result.stdout.startswith("backfill failed: 0 studies, 0 versions stored")
    assert (
        "  failed NCT09999999: NCT09999999 has no record history in the registry (404)"
        in result.stderr.splitlines()
    )


def test_cli_backfill_summary_is_partial_when_some_studies_fail(
    run: Any, fake_api: FakeCtgov, base: Study_
) -> None:
    """One study stored, one without history: ``backfill partial``, exit 1."""
    fake_api.set_history(STUDY, versions_of(base, ENROLLMENT_STEPS))
    result = run("backfill", STUDY, "NCT09999999", expect=1)
    assert result.stdout.startswith("backfill partial: 1 studies, 3 versions stored")
