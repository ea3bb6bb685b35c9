"""Reading the registry's record history (ApiSource.history / history_version) from the fake
over real HTTP, and what the versions it returns diff to."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from fake_ctgov import FakeCtgov, load_study
from history_fixtures import (
    BOOKKEEPING,
    MARKUP_ONLY_ID,
    REWORDED_ID,
    REWORDING,
    markup_only_timeline,
    reworded_timeline,
)

from mirror.config import SourceSettings, load_settings
from mirror.errors import ConfigError, SourceError
from mirror.record import diff_records, normalize
from mirror.source import ApiSource, HistoryEntry

STUDY = "NCT05756322"
T = TypeVar("T")


def source_settings(fake: FakeCtgov | None = None, **overrides: Any) -> SourceSettings:
    """Fast, patient settings pointing at ``fake`` (or at an unroutable test host)."""
    base = fake.base_url if fake else "http://registry.test/api/v2"
    history = fake.history_base_url if fake else "http://registry.test/api/int"
    values: dict[str, Any] = {
        "base_url": base,
        "history_base_url": history,
        "requests_per_minute": 100000,
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "timeout_seconds": 2,
        "max_retries": 3,
    }
    return SourceSettings(**(values | overrides))


def call(
    settings: SourceSettings,
    fn: Callable[[ApiSource], Awaitable[T]],
    transport: httpx.AsyncBaseTransport | None = None,
) -> T:
    async def go() -> T:
        async with ApiSource(settings, transport=transport) as source:
            return await fn(source)

    return asyncio.run(go())


def answering(body: Any) -> httpx.MockTransport:
    """A registry that answers every request with ``body`` as JSON."""
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


def with_date(day: str, status: str | None = None) -> Callable[[dict[str, Any]], None]:
    """A fake.edit() posting the record on ``day`` (and setting its overall status)."""

    def edit(study: dict[str, Any]) -> None:
        module = study["protocolSection"]["statusModule"]
        module["lastUpdatePostDateStruct"]["date"] = day
        if status is not None:
            module["overallStatus"] = status

    return edit


@pytest.fixture
def three_versions(fake_api: FakeCtgov) -> FakeCtgov:
    """STUDY put once and edited twice: versions 0, 1, 2."""
    fake_api.put(load_study(STUDY))
    fake_api.edit(STUDY, with_date("2025-01-10"))
    fake_api.edit(STUDY, with_date("2025-03-02", status="COMPLETED"))
    return fake_api


def changed_fields(versions: list[dict[str, Any]]) -> list[list[str]]:
    """The fields each version changes, date bookkeeping left out."""
    records = [normalize(v, ["derived.*"]) for v in versions]
    return [
        [c.field for c in diff_records(old, new) if c.field not in BOOKKEEPING]
        for old, new in zip(records, records[1:], strict=False)
    ]


# -- history ------------------------------------------------------------------------------


def test_history_lists_versions_oldest_first(three_versions: FakeCtgov) -> None:
    """Each put/edit is one version, with its lastUpdatePostDate and overall status."""
    first = load_study(STUDY)["protocolSection"]["statusModule"]
    entries = call(source_settings(three_versions), lambda s: s.history(STUDY))
    assert entries == [
        HistoryEntry(0, first["lastUpdatePostDateStruct"]["date"], first["overallStatus"]),
        HistoryEntry(1, "2025-01-10", first["overallStatus"]),
        HistoryEntry(2, "2025-03-02", "COMPLETED"),
    ]


def test_history_of_unknown_study_is_none(fake_api: FakeCtgov) -> None:
    """A 404 from the registry means no history: None, not an error."""
    assert call(source_settings(fake_api), lambda s: s.history("NCT09999999")) is None


def test_history_version_returns_that_version(three_versions: FakeCtgov) -> None:
    """history_version gives the version's study object and its compact JSON."""
    raw, study = call(source_settings(three_versions), lambda s: s.history_version(STUDY, 1))
    assert study == three_versions.versions(STUDY)[1]
    assert raw == orjson.dumps(study)


def test_history_requests_go_to_the_history_base_url(three_versions: FakeCtgov) -> None:
    """Both calls read /api/int, never the API v2 base."""
    call(source_settings(three_versions), lambda s: s.history_version(STUDY, 0))
    call(source_settings(three_versions), lambda s: s.history(STUDY))
    assert [r.path for r in three_versions.requests] == [
        f"/api/int/studies/{STUDY}/history/0",
        f"/api/int/studies/{STUDY}",
    ]


def test_history_retries_through_injected_faults(three_versions: FakeCtgov) -> None:
    """A 503, a 429 and a truncated body are retried; the fourth answer is used."""
    three_versions.fault_next("status", status=503, path_contains="history=true")
    three_versions.fault_next("status", status=429, retry_after=0.01, path_contains="history=")
    three_versions.fault_next("truncate_json", path_contains="history=true")
    entries = call(source_settings(three_versions), lambda s: s.history(STUDY))
    assert [e.version for e in entries or []] == [0, 1, 2]
    assert three_versions.request_count("history=true") == 4


def test_history_version_retries_a_reset_connection(three_versions: FakeCtgov) -> None:
    """A dropped connection on a version request is retried."""
    three_versions.fault_next("reset", path_contains="/history/2")
    _, study = call(source_settings(three_versions), lambda s: s.history_version(STUDY, 2))
    assert study["protocolSection"]["statusModule"]["overallStatus"] == "COMPLETED"
    assert three_versions.request_count("/history/2") == 2


def test_history_gives_up_after_max_retries(three_versions: FakeCtgov) -> None:
    """Retries run out: a SourceError naming the URL and the attempts."""
    three_versions.fault_next("status", count=10, status=500, path_contains="/history/1")
    with pytest.raises(SourceError) as err:
        call(source_settings(three_versions), lambda s: s.history_version(STUDY, 1))
    assert f"/api/int/studies/{STUDY}/history/1: HTTP 500" in err.value.message
    assert "gave up after 4 attempts" in err.value.message


def test_unknown_version_is_a_source_error(three_versions: FakeCtgov) -> None:
    """A version the registry does not have is an error naming the URL (not retried)."""
    with pytest.raises(SourceError, match=r"/history/7: HTTP 404"):
        call(source_settings(three_versions), lambda s: s.history_version(STUDY, 7))
    assert three_versions.request_count("/history/7") == 1


# -- nonsense answers ---------------------------------------------------------------------


def test_history_without_changes_is_a_source_error() -> None:
    """A study body without history.changes is refused, naming the URL."""
    body = load_study(STUDY)
    with pytest.raises(SourceError, match=rf"studies/{STUDY}: no history.changes"):
        call(source_settings(), lambda s: s.history(STUDY), answering(body))


def test_history_with_a_bad_change_is_a_source_error() -> None:
    """A change without a YYYY-MM-DD date is refused."""
    body = load_study(STUDY) | {"history": {"changes": [{"version": 0, "date": "13/09/2005"}]}}
    with pytest.raises(SourceError, match="invalid history change"):
        call(source_settings(), lambda s: s.history(STUDY), answering(body))


def test_history_tolerates_extra_keys_and_sorts_by_version() -> None:
    """moduleLabels and unknown keys are ignored, a timestamp gives its date; sorted by version."""
    changes = [
        {"version": 1, "date": "2006-01-02", "status": None, "moduleLabels": ["Eligibility"]},
        {"version": 0, "date": "2005-09-13T00:00:00Z", "status": "RECRUITING", "x": 1},
    ]
    body = load_study(STUDY) | {"history": {"changes": changes}}
    entries = call(source_settings(), lambda s: s.history(STUDY), answering(body))
    assert entries == [
        HistoryEntry(0, "2005-09-13", "RECRUITING"),
        HistoryEntry(1, "2006-01-02", None),
    ]


def test_version_number_mismatch_is_a_source_error() -> None:
    """An answer for another version than asked is refused."""
    body = {"studyVersion": 2, "study": load_study(STUDY)}
    with pytest.raises(SourceError, match="expected studyVersion 1, got 2"):
        call(source_settings(), lambda s: s.history_version(STUDY, 1), answering(body))


def test_version_of_another_study_is_a_source_error() -> None:
    """An answer holding another study is refused, naming both ids."""
    body = {"studyVersion": 0, "study": load_study(MARKUP_ONLY_ID)}
    with pytest.raises(SourceError, match=f"expected study {STUDY}, got {MARKUP_ONLY_ID}"):
        call(source_settings(), lambda s: s.history_version(STUDY, 0), answering(body))


# -- what the versions diff to -------------------------------------------------------------


def test_markup_only_versions_read_back_unchanged(fake_api: FakeCtgov) -> None:
    """The HTML versions of a timeline arrive through the source exactly as installed."""
    versions = markup_only_timeline()
    fake_api.set_history(MARKUP_ONLY_ID, versions)

    async def read(source: ApiSource) -> list[dict[str, Any]]:
        entries = await source.history(MARKUP_ONLY_ID) or []
        return [(await source.history_version(MARKUP_ONLY_ID, e.version))[1] for e in entries]

    assert call(source_settings(fake_api), read) == versions


def test_markup_only_timeline_has_no_content_events() -> None:
    """HTML versions, then plain text with the same words: only the dates change."""
    versions = markup_only_timeline()
    assert "<li>" in versions[0]["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    assert changed_fields(versions) == [[], []]


def test_reworded_timeline_has_exactly_the_wording_event() -> None:
    """A real wording change inside HTML is one event; going plain afterwards is none."""
    versions = reworded_timeline()
    assert changed_fields(versions) == [["eligibility.criteria"], []]
    old, new = (normalize(v)["eligibility.criteria"] for v in versions[:2])
    assert (REWORDING[0] in old, REWORDING[1] in new) == (True, True)


def test_fake_history_dates_follow_the_timeline(fake_api: FakeCtgov) -> None:
    """The registry's dates of a timeline are its versions' lastUpdatePostDates."""
    versions = reworded_timeline()
    fake_api.set_history(REWORDED_ID, versions)
    entries = call(source_settings(fake_api), lambda s: s.history(REWORDED_ID)) or []
    dates = [
        v["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] for v in versions
    ]
    assert [e.date for e in entries] == dates
    assert dates == sorted(set(dates))


def test_history_base_url_must_be_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """source.history_base_url that is not an http(s) URL stops start-up, naming the key."""
    monkeypatch.setenv("CTMIRROR_SOURCE__HISTORY_BASE_URL", "clinicaltrials.gov/api/int")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.problems == [
        "source.history_base_url (CTMIRROR_SOURCE__HISTORY_BASE_URL): Value error, must be an "
        "http:// or https:// URL (got 'clinicaltrials.gov/api/int')"
    ]
