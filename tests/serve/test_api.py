"""The HTTP API in-process (httpx.ASGITransport) on a real migrated database: studies, versions
byte for byte, diffs, pages, watches, auth, the error format, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_client import ApiClient, api_client, error_of
from fake_ctgov import FakeCtgov
from helpers import STUDY, event_total, events, module, put_real, sponsor_update, sync_ids

from mirror import feed
from mirror.app import App
from mirror.config import Settings, load_settings
from mirror.serve import create_app
from mirror.store import Database, StudyVersion

OTHER = "NCT05305430"  # RECRUITING
GONE = "NCT00410098"


@pytest.fixture
def served(fake_api: FakeCtgov, app: App) -> dict[str, bytes]:
    """STUDY at three versions (status twice, enrollment once), OTHER once, GONE gone.

    Returns the exact bytes the fake served for each stored version of STUDY.
    """
    put_real(fake_api, [STUDY, OTHER, GONE])
    sync_ids(app, STUDY, OTHER, GONE)
    served = {"v1": fake_api.served_bytes(STUDY)}

    def to_active(study: dict[str, Any]) -> None:
        module(study, "statusModule")["overallStatus"] = "ACTIVE_NOT_RECRUITING"
        module(study, "designModule")["enrollmentInfo"]["count"] = 48

    sponsor_update(fake_api, STUDY, to_active)
    fake_api.remove(GONE)
    sync_ids(app, STUDY, GONE)
    served["v2"] = fake_api.served_bytes(STUDY)
    sponsor_update(
        fake_api,
        STUDY,
        lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"),
        posted="2026-07-01",
    )
    sync_ids(app, STUDY)
    served["v3"] = fake_api.served_bytes(STUDY)
    return served


@pytest.fixture
def api(app: App, served: dict[str, bytes]) -> Iterator[ApiClient]:
    with api_client(app) as client:
        yield client


def with_api_settings(settings: Settings, **api: str) -> Settings:
    return load_settings(None, api=api, database={"url": settings.database.url})


@pytest.fixture
def secured(app: App, served: dict[str, bytes]) -> Iterator[ApiClient]:
    """The API of a mirror with a write token and a read token."""
    settings = with_api_settings(app.settings, token="write-secret", read_token="read-secret")
    with api_client(App(settings, app.db)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- studies ----------------------------------------------------------------------------------


def test_studies_listing_pages_by_cursor(api: ApiClient) -> None:
    """/v1/studies lists every study once across pages of one, with their current state."""
    seen, cursor = [], 0
    while page := api.json("/v1/studies", params={"limit": 1, "after": cursor}):
        if not page["studies"]:
            assert page["next_cursor"] == cursor
            break
        seen += page["studies"]
        cursor = page["next_cursor"]
    rows = sorted((s["nct_id"], s["overall_status"], s["state"], s["latest_version"]) for s in seen)
    assert rows == [
        (GONE, "UNKNOWN", "gone", 2),
        (OTHER, "RECRUITING", "active", 1),
        (STUDY, "COMPLETED", "active", 3),
    ]
    seen.sort(key=lambda s: s["nct_id"], reverse=True)
    assert seen[0]["title"].startswith("The Safety and Tolerability of LBS-007")


def test_studies_filters(api: ApiClient, app: App) -> None:
    """status, changed_since and watch narrow the listing to the studies they describe."""
    by_status = api.json("/v1/studies", params={"status": "recruiting"})["studies"]
    assert [s["nct_id"] for s in by_status] == [OTHER]
    with app.db.session() as session:
        versions = session.query(StudyVersion).order_by(StudyVersion.id).all()
    since = versions[-1].observed_at.isoformat()  # the third version of STUDY
    changed = api.json("/v1/studies", params={"changed_since": since})["studies"]
    assert [s["nct_id"] for s in changed] == [STUDY]
    assert error_of(api.get("/v1/studies", params={"watch": "nope"}))[:2] == (404, "not_found")


def test_study_detail_has_the_record_and_its_dates(api: ApiClient) -> None:
    """/v1/studies/{id}: canonical record of the newest version, first/last seen, versions."""
    detail = api.json(f"/v1/studies/{STUDY.lower()}")
    assert (detail["nct_id"], detail["version"], detail["version_count"]) == (STUDY, 3, 3)
    assert detail["record"]["status.overallStatus"] == "COMPLETED"
    assert detail["record"]["design.enrollmentCount"] == 48
    assert detail["first_seen_at"] < detail["last_seen_at"]
    assert (detail["state"], detail["alias_of"], detail["source_date"]) == (
        "active",
        None,
        "2026-07-01",
    )


def test_versions_list_each_version_with_its_fields(api: ApiClient) -> None:
    """/v1/studies/{id}/versions lists versions 1..3 with the fields each changed."""
    versions = api.json(f"/v1/studies/{STUDY}/versions")["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert "status.overallStatus" in versions[2]["fields"]
    assert versions[1]["fields"] == [
        "design.enrollmentCount", "status.lastUpdatePostDate", "status.lastUpdateSubmitDate",
        "status.overallStatus",
    ]  # fmt: skip
    gone = api.json(f"/v1/studies/{GONE}/versions")["versions"]
    assert [(v["version"], v["origin"], v["fields"]) for v in gone][1] == (
        2,
        "tombstone",
        ["study"],
    )


def test_raw_versions_are_the_bytes_the_source_served(
    api: ApiClient, served: dict[str, bytes]
) -> None:
    """/v1/studies/{id}/versions/{n} returns each version's JSON byte for byte."""
    for n in (1, 2, 3):
        response = api.get(f"/v1/studies/{STUDY}/versions/{n}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == served[f"v{n}"]
    assert served["v1"] != served["v2"] != served["v3"]


def test_missing_versions_and_studies_are_404(api: ApiClient) -> None:
    """A tombstone, a version past the last, and an unknown study: 404 in the error format."""
    status, code, message = error_of(api.get(f"/v1/studies/{GONE}/versions/2"))
    assert (status, code) == (404, "not_found") and "left the registry" in message
    status, code, message = error_of(api.get(f"/v1/studies/{STUDY}/versions/4"))
    assert (status, code) == (404, "not_found") and "(it has 1..3)" in message
    for path in ("", "/versions", "/changes", "/diff?from=1&to=2"):
        status, code, message = error_of(api.get(f"/v1/studies/NCT99999999{path}"))
        assert (status, code) == (404, "not_found") and "NCT99999999" in message, path
    assert error_of(api.get("/trials/NCT99999999.md"))[:2] == (404, "not_found")


def test_malformed_nct_id_in_the_path_is_422(api: ApiClient) -> None:
    """A path NCT id that is not 'NCT' + 8 digits is a 422 naming the nct_id parameter."""
    for path in ("/v1/studies/NCT123", "/v1/studies/12345678/versions", "/trials/NCTx.md"):
        status, code, message = error_of(api.get(path))
        assert (status, code) == (422, "invalid_parameter"), path
        assert "path parameter 'nct_id'" in message


def test_diff_between_non_adjacent_versions(api: ApiClient) -> None:
    """diff?from=1&to=3 folds both updates: one status change, not two."""
    body = api.json(f"/v1/studies/{STUDY}/diff", params={"from": 1, "to": 3})
    assert (body["nct_id"], body["from"], body["to"]) == (STUDY, 1, 3)
    changes = {c["field"]: (c["kind"], c["old"], c["new"]) for c in body["changes"]}
    assert changes["status.overallStatus"] == ("changed", "RECRUITING", "COMPLETED")
    assert changes["design.enrollmentCount"] == ("changed", 60, 48)
    assert changes["status.lastUpdatePostDate"] == ("changed", "2023-10-23", "2026-07-01")
    assert set(changes) == {
        "status.overallStatus", "design.enrollmentCount", "status.lastUpdatePostDate",
        "status.lastUpdateSubmitDate",
    }  # fmt: skip
    backwards = api.json(f"/v1/studies/{STUDY}/diff", params={"from": 3, "to": 1})["changes"]
    assert {c["field"]: (c["old"], c["new"]) for c in backwards}["status.overallStatus"] == (
        "COMPLETED", "RECRUITING",
    )  # fmt: skip
    status, _, message = error_of(api.get(f"/v1/studies/{STUDY}/diff", params={"from": 1}))
    assert status == 422 and "query parameter 'to'" in message


def test_study_changes_are_that_studys_feed(api: ApiClient, app: App) -> None:
    """/v1/studies/{id}/changes pages through exactly that study's events."""
    params = {"initial": "false", "limit": 3}
    body = api.json(f"/v1/studies/{STUDY}/changes", params=params)
    assert [(e["version"], e["field"]) for e in body["changes"]] == [
        (2, "design.enrollmentCount"), (2, "status.lastUpdatePostDate"),
        (2, "status.lastUpdateSubmitDate"),
    ]  # fmt: skip
    assert body["next_cursor"] == body["changes"][-1]["id"]
    params["after"] = body["next_cursor"]
    rest = api.json(f"/v1/studies/{STUDY}/changes", params=params)["changes"]
    expected = [e.id for e in events(app.db, STUDY) if not e.initial]
    assert [e["id"] for e in body["changes"] + rest] == expected
    assert len(expected) == 6


# -- pages ------------------------------------------------------------------------------------


def test_markdown_page_of_the_newest_and_of_a_past_version(api: ApiClient) -> None:
    """/trials/{id}.md renders the seed layout; ?version=1 renders the first version."""
    response = api.get(f"/trials/{STUDY}.md")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    page = response.text
    assert page.startswith("---\ntitle: ")
    assert f"nct_id: {STUDY}\noverall_status: COMPLETED\n" in page
    assert "## Recent Field Changes (last 30 days)" in page
    first = api.get(f"/trials/{STUDY}.md", params={"version": 1}).text
    assert "overall_status: RECRUITING\n" in first
    assert error_of(api.get(f"/trials/{STUDY}.md", params={"version": 9}))[:2] == (404, "not_found")


def test_html_page(api: ApiClient) -> None:
    """/trials/{id}.html is an HTML document of the same study."""
    response = api.get(f"/trials/{STUDY}.html")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!DOCTYPE html>") and STUDY in response.text


# -- watches ----------------------------------------------------------------------------------


def test_writes_are_refused_without_a_configured_token(api: ApiClient) -> None:
    """With no api.token set, POST and DELETE answer 403 saying to set it."""
    status, code, message = error_of(api.post("/v1/watches", json={"name": "w", "all": True}))
    assert (status, code) == (403, "forbidden") and "api.token" in message
    assert error_of(api.delete("/v1/watches/w"))[:2] == (403, "forbidden")
    assert api.json("/v1/watches") == {"watches": []}


def test_watches_are_added_listed_and_removed_with_the_token(secured: ApiClient) -> None:
    """POST/GET/DELETE /v1/watches with the write token; a taken name is 409."""
    auth = bearer("write-secret")
    body = {"name": "pair", "nct_ids": [STUDY, OTHER.lower()], "schedule": "every 12h"}
    created = secured.post("/v1/watches", json=body, headers=auth)
    assert created.status_code == 201
    assert (created.json()["kind"], created.json()["nct_ids"]) == ("ids", [STUDY, OTHER])
    listed = secured.json("/v1/watches", headers=bearer("read-secret"))["watches"]
    assert [(w["name"], w["schedule"]) for w in listed] == [("pair", "every 12h")]
    assert error_of(secured.post("/v1/watches", json=body, headers=auth))[:2] == (409, "conflict")
    assert secured.delete("/v1/watches/pair", headers=auth).status_code == 204
    assert error_of(secured.delete("/v1/watches/pair", headers=auth))[:2] == (404, "not_found")


def test_a_search_watch_takes_the_clis_query_text(secured: ApiClient) -> None:
    """``query`` as text is parsed like ``--query``; DELETE also takes ``?name=``."""
    auth = bearer("write-secret")
    for name, query in [("asthma", "query.cond=asthma"), ("terms", "heart failure")]:
        created = secured.post("/v1/watches", json={"name": name, "query": query}, headers=auth)
        assert created.status_code == 201, created.text
    listed = {w["name"]: w["query"] for w in secured.json("/v1/watches", headers=auth)["watches"]}
    assert listed == {"asthma": {"query.cond": "asthma"}, "terms": {"query.term": "heart failure"}}
    assert secured.delete("/v1/watches", params={"name": "terms"}, headers=auth).status_code == 204
    assert [w["name"] for w in secured.json("/v1/watches", headers=auth)["watches"]] == ["asthma"]
    missing = secured.delete("/v1/watches", params={"name": "terms"}, headers=auth)
    assert error_of(missing)[:2] == (404, "not_found")


def test_invalid_watches_are_422(secured: ApiClient) -> None:
    """A watch of two kinds, a bad schedule or a bad id is a 422 that says what is wrong."""
    auth = bearer("write-secret")
    cases = [
        ({"name": "x", "nct_ids": [STUDY], "all": True}, "exactly one of"),
        ({"name": "x", "all": True, "schedule": "sometimes"}, "schedule 'sometimes'"),
        ({"name": "x", "nct_ids": ["NCT1"]}, "not an NCT id"),
        ({"name": "has space", "all": True}, "body field name"),
        ({"name": "x", "query": {"query.bogus": "a"}}, "unknown search parameter"),
    ]
    for body, words in cases:
        status, _, message = error_of(secured.post("/v1/watches", json=body, headers=auth))
        assert status == 422 and words in message, (body, message)


# -- auth -------------------------------------------------------------------------------------


def test_read_token_guards_reads(secured: ApiClient) -> None:
    """With api.read_token set: 401 without or with a wrong token; the read or write token works."""
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic cmVhZC1zZWNyZXQ="}):
        response = secured.get("/v1/changes", headers=headers)
        status, code, message = error_of(response)
        assert (status, code) == (401, "unauthorized") and "api.read_token" in message
        assert response.headers["www-authenticate"] == "Bearer"
    assert secured.get("/v1/changes", headers=bearer("read-secret")).status_code == 200
    assert secured.get(f"/trials/{STUDY}.md", headers=bearer("write-secret")).status_code == 200
    assert secured.get("/healthz").status_code == 200


def test_writes_need_the_write_token(secured: ApiClient) -> None:
    """The read token does not write; no token or a wrong one is 401."""
    body = {"name": "everything", "all": True}
    for headers in ({}, bearer("read-secret"), bearer("write-secre")):
        status, code, _ = error_of(secured.post("/v1/watches", json=body, headers=headers))
        assert (status, code) == (401, "unauthorized")
    assert secured.post("/v1/watches", json=body, headers=bearer("write-secret")).status_code == 201


# -- errors -----------------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_error_format(api: ApiClient) -> None:
    """An unknown path is a JSON 404; a wrong method a JSON 405."""
    status, code, message = error_of(api.get("/v1/nothing"))
    assert (status, code, message) == (
        404,
        "not_found",
        "no such endpoint: GET /v1/nothing (see /docs)",
    )
    assert error_of(api.delete("/v1/changes"))[:2] == (405, "method_not_allowed")


def test_openapi_and_docs_are_served(api: ApiClient) -> None:
    """/openapi.json documents the routes and the cursor; /docs is the interactive page."""
    spec = api.json("/openapi.json")
    assert {"/v1/changes", "/v1/studies/{nct_id}/versions/{version}", "/trials/{nct_id}.md"} <= set(
        spec["paths"]
    )
    assert "next_cursor" in spec["paths"]["/v1/changes"]["get"]["description"]
    assert api.get("/docs").status_code == 200


# -- operations -------------------------------------------------------------------------------


def test_healthz_reports_the_last_sync(api: ApiClient) -> None:
    """/healthz is 200 with the database reachable and the last sync run's status."""
    body = api.json("/healthz")
    assert (body["status"], body["database"]) == ("ok", "ok")
    assert (body["last_sync"]["id"], body["last_sync"]["status"]) == (3, "ok")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["last_sync"]["finished_at"])


def test_healthz_is_503_when_the_database_is_unreachable(settings: Settings, tmp_path: Any) -> None:
    """/healthz answers 503 when the database cannot be opened; reads answer 503 too."""
    url = f"sqlite:///{tmp_path}/missing-dir/mirror.db"
    with api_client(App(settings, Database(url))) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert error_of(client.get("/v1/changes"))[:2] == (503, "database_unavailable")


def test_metrics_count_what_the_mirror_holds_and_requests(api: ApiClient, app: App) -> None:
    """/metrics: studies by state, versions, events, sync runs, and latency by route template."""
    api.get(f"/v1/studies/{STUDY}")
    api.get("/v1/nothing")
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    events = event_total(app.db)
    assert 'ctmirror_studies{state="active"} 2.0' in text
    assert 'ctmirror_studies{state="gone"} 1.0' in text
    assert "ctmirror_study_versions_total 6.0" in text
    assert f"ctmirror_change_events_total {float(events)}" in text
    assert 'ctmirror_sync_runs{status="ok"} 3.0' in text
    assert "ctmirror_database_up 1.0" in text
    route = 'method="GET",route="/v1/studies/{nct_id}",status="200"'
    assert f"ctmirror_http_request_duration_seconds_count{{{route}}} 1.0" in text
    assert 'route="<unmatched>",status="404"} 1.0' in text


def test_an_unexpected_error_is_a_json_500(
    app: App, served: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug surfaces as a JSON 500 without details, and is counted by route."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(feed, "change_dicts", broken)
    asgi = create_app(app)
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://mirror.test") as c:
            return await c.get(path)

    response = asyncio.run(get("/v1/changes"))
    assert error_of(response) == (500, "internal_error", "internal error (logged on the server)")
    metrics = asyncio.run(get("/metrics")).text
    assert 'route="/v1/changes",status="500"} 1.0' in metrics


# -- bad input that no backend can store -------------------------------------------------------

NUL_REQUESTS = [
    ("GET", "/v1/changes?field=status.%00", None),
    ("GET", "/v1/changes?watch=a%00b", None),
    ("GET", "/v1/changes?class=dates.%00", None),
    ("GET", "/v1/changes.atom?watch=a%00b", None),
    ("GET", "/v1/studies?watch=a%00b", None),
    ("GET", f"/v1/studies/{STUDY}/changes?field=%00", None),
    ("DELETE", "/v1/watches?name=a%00b", None),
    ("DELETE", "/v1/watches/a%00b", None),
    ("POST", "/v1/watches", {"name": "x", "nct_ids": [STUDY], "schedule": "every 1h\u0000"}),
    ("POST", "/v1/watches", {"name": "a\u0000b", "nct_ids": [STUDY]}),
    ("POST", "/v1/webhooks", {"url": "http://example.org/\u0000"}),
    ("POST", "/v1/webhooks", {"url": "http://example.org/", "fields": ["status.\u0000"]}),
]


@pytest.mark.parametrize(("method", "url", "body"), NUL_REQUESTS)
def test_a_nul_character_in_any_parameter_or_body_is_a_422(
    secured: ApiClient, method: str, url: str, body: Any
) -> None:
    """NUL in a query, a path or a JSON body: 422 with the error body, on every backend."""
    response = secured.request(method, url, json=body, headers=bearer("write-secret"))
    status, _, message = error_of(response)
    assert status == 422
    assert "NUL character" in message


@pytest.mark.parametrize(
    "url",
    [
        "/v1/webhooks/deliveries?subscription_id=9223372036854775808",
        "/v1/webhooks/9223372036854775808",
        "/v1/changes?after=9223372036854775808",
        f"/v1/studies/{STUDY}/versions/2147483648",
    ],
)
def test_integers_past_the_stored_range_are_a_422(secured: ApiClient, url: str) -> None:
    """An id or number no column can hold is a usage error, not a 500."""
    status, code, _ = error_of(secured.get(url, headers=bearer("write-secret")))
    assert (status, code) == (422, "invalid_parameter")
