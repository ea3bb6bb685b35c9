"""The fake ClinicalTrials.gov API v2 (tests/fake_ctgov.py), exercised over real loopback HTTP."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fake_ctgov import DATA_DIR, FakeCtgov, all_study_ids, load_study

SOME_IDS = ["NCT00000410", "NCT00007696", "NCT00033839"]


@pytest.fixture(scope="module")
def full_api() -> Iterator[FakeCtgov]:
    """All real records, shared by the read-only tests of this module."""
    with FakeCtgov() as api:
        yield api


@pytest.fixture
def api() -> Iterator[FakeCtgov]:
    """A few real records, for tests that change records or inject faults."""
    with FakeCtgov(ids=SOME_IDS) as fake:
        yield fake


def client(api: FakeCtgov, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, timeout=timeout)


def nct_id(study: dict[str, Any]) -> str:
    return str(study["protocolSection"]["identificationModule"]["nctId"])


def search_all(api: FakeCtgov, **params: str) -> list[str]:
    """Ids of every study a search returns, following nextPageToken."""
    ids: list[str] = []
    query: dict[str, str] = {**params, "pageSize": "1000"}
    with client(api) as http:
        while True:
            page = http.get("/studies", params=query).raise_for_status().json()
            ids += [nct_id(s) for s in page["studies"]]
            if "nextPageToken" not in page:
                return ids
            query["pageToken"] = page["nextPageToken"]


@functools.cache
def real_records() -> tuple[dict[str, Any], ...]:
    return tuple(load_study(i) for i in all_study_ids())


def records_where(keep: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Independent oracle: ids of the real records for which keep(record) is true."""
    return [nct_id(s) for s in real_records() if keep(s)]


def has_word(texts: list[Any], word: str) -> bool:
    return any(re.search(rf"\b{word}\b", t, re.IGNORECASE) for t in texts if isinstance(t, str))


# --------------------------------------------------------------------------- data helpers


def test_all_study_ids_lists_the_data_files() -> None:
    """all_study_ids() is the sorted list of the 1,687 NCT*.json files."""
    ids = all_study_ids()
    assert len(ids) == 1687
    assert ids == sorted(ids)
    assert ids[0] == "NCT00000410"


def test_load_study_parses_the_data_file() -> None:
    """load_study() returns the record whose nctId is the file name."""
    assert nct_id(load_study("NCT00007696")) == "NCT00007696"


# --------------------------------------------------------------------------- /version


def test_version_reports_api_version_and_data_timestamp(api: FakeCtgov) -> None:
    """/version answers apiVersion 2.0.5 and the settable data_timestamp."""
    api.data_timestamp = "2026-12-01T10:11:12"
    with client(api) as http:
        body = http.get("/version").json()
    assert body == {"apiVersion": "2.0.5", "dataTimestamp": "2026-12-01T10:11:12"}


# --------------------------------------------------------------------------- /studies/{nctId}


def test_single_study_is_byte_identical_to_the_data_file(api: FakeCtgov) -> None:
    """/studies/{id} serves exactly the bytes of the data file, as application/json."""
    with client(api) as http:
        response = http.get("/studies/NCT00000410")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == (DATA_DIR / "studies" / "NCT00000410.json").read_bytes()
    assert response.content == api.served_bytes("NCT00000410")


def test_unknown_study_is_404(api: FakeCtgov) -> None:
    """An unknown NCT id answers 404 with a text/plain message (the spec's errorMessage)."""
    with client(api) as http:
        response = http.get("/studies/NCT99999999")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert "NCT99999999" in response.text


def test_malformed_nct_id_is_400(api: FakeCtgov) -> None:
    """An id that does not match the spec's NCT pattern answers 400."""
    with client(api) as http:
        assert http.get("/studies/XYZ123").status_code == 400


def test_short_nct_id_is_normalised(api: FakeCtgov) -> None:
    """nct410 matches the spec pattern and is served as NCT00000410."""
    with client(api) as http:
        response = http.get("/studies/nct410")
    assert response.status_code == 200
    assert nct_id(response.json()) == "NCT00000410"


def test_csv_format_is_400(api: FakeCtgov) -> None:
    """format=csv is valid in the spec but not faked: 400."""
    with client(api) as http:
        assert http.get("/studies/NCT00000410", params={"format": "csv"}).status_code == 400


def test_aliased_id_redirects_to_the_merged_study(api: FakeCtgov) -> None:
    """After alias(old, new), /studies/{old} answers 301 with Location .../studies/{new}."""
    api.alias("NCT00000410", "NCT00007696")
    with client(api) as http:
        response = http.get("/studies/NCT00000410")
        followed = http.get("/studies/NCT00000410", follow_redirects=True)
    assert response.status_code == 301
    assert response.headers["location"] == f"{api.base_url}/studies/NCT00007696"
    assert nct_id(followed.json()) == "NCT00007696"
    assert (
        "NCT00000410" in followed.json()["protocolSection"]["identificationModule"]["nctIdAliases"]
    )


def test_alias_is_found_by_filter_ids(api: FakeCtgov) -> None:
    """filter.ids with an aliased id returns the study it was merged into."""
    api.alias("NCT00000410", "NCT00007696")
    assert search_all(api, **{"filter.ids": "NCT00000410"}) == ["NCT00007696"]


def test_unknown_endpoint_is_404(api: FakeCtgov) -> None:
    """A path the API does not have answers 404."""
    with client(api) as http:
        assert http.get("/nothing-here").status_code == 404


# --------------------------------------------------------------------------- /studies paging


def test_paging_over_all_studies_returns_each_id_once(full_api: FakeCtgov) -> None:
    """pageSize=1000 pages over all records: every id exactly once, ascending."""
    ids = search_all(full_api)
    assert ids == all_study_ids()


def test_default_page_size_is_10_and_last_page_has_no_token(api: FakeCtgov) -> None:
    """Without pageSize a page holds at most 10 studies; a short last page has no token."""
    with client(api) as http:
        page = http.get("/studies").json()
    assert [nct_id(s) for s in page["studies"]] == SOME_IDS
    assert "nextPageToken" not in page


def test_page_token_continues_where_the_page_ended(api: FakeCtgov) -> None:
    """pageSize=2 then the token: the second page holds the third study and no token."""
    with client(api) as http:
        first = http.get("/studies", params={"pageSize": 2}).json()
        params = {"pageSize": 2, "pageToken": first["nextPageToken"]}
        second = http.get("/studies", params=params).json()
    assert [nct_id(s) for s in first["studies"]] == SOME_IDS[:2]
    assert [nct_id(s) for s in second["studies"]] == SOME_IDS[2:]
    assert "nextPageToken" not in second


def test_page_token_with_changed_params_is_400(api: FakeCtgov) -> None:
    """A pageToken used with different query parameters answers 400."""
    with client(api) as http:
        first = http.get("/studies", params={"pageSize": 1}).json()
        params = {"pageToken": first["nextPageToken"], "query.cond": "asthma"}
        response = http.get("/studies", params=params)
    assert response.status_code == 400
    assert "pageToken" in response.text


def test_garbage_page_token_is_400(api: FakeCtgov) -> None:
    """A pageToken the fake never issued answers 400."""
    with client(api) as http:
        assert http.get("/studies", params={"pageToken": "abracadabra"}).status_code == 400


def test_page_size_above_1000_is_coerced_to_1000(full_api: FakeCtgov) -> None:
    """pageSize=1001 returns 1,000 studies: the spec coerces it down, it is not an error."""
    with client(full_api) as http:
        page = http.get("/studies", params={"pageSize": 1001}).json()
    assert len(page["studies"]) == 1000
    assert "nextPageToken" in page


def test_negative_page_size_is_400(api: FakeCtgov) -> None:
    """pageSize=-1 is below the spec's minimum 0: 400."""
    with client(api) as http:
        assert http.get("/studies", params={"pageSize": -1}).status_code == 400


def test_count_total_is_on_the_first_page_only(api: FakeCtgov) -> None:
    """countTotal=true adds totalCount to the first page, not to the next ones."""
    with client(api) as http:
        first = http.get("/studies", params={"pageSize": 2, "countTotal": "true"}).json()
        params = {"pageSize": 2, "countTotal": "true", "pageToken": first["nextPageToken"]}
        second = http.get("/studies", params=params).json()
    assert first["totalCount"] == 3
    assert "totalCount" not in second


# --------------------------------------------------------------------------- /studies search


def test_filter_ids_returns_the_batch(full_api: FakeCtgov) -> None:
    """filter.ids (comma- or pipe-separated) returns exactly those studies, unknown ids ignored."""
    ids = "NCT00033839,NCT00000410|NCT00007696|NCT99999999"
    found = search_all(full_api, **{"filter.ids": ids})
    assert found == ["NCT00000410", "NCT00007696", "NCT00033839"]


def test_query_cond_matches_conditions_keywords_and_mesh_terms(full_api: FakeCtgov) -> None:
    """query.cond=asthma returns the records naming asthma in conditions, keywords or MeSH."""

    def about_asthma(s: dict[str, Any]) -> bool:
        cond = s["protocolSection"].get("conditionsModule", {})
        meshes = s.get("derivedSection", {}).get("conditionBrowseModule", {}).get("meshes", [])
        texts = cond.get("conditions", []) + cond.get("keywords", [])
        return has_word(texts + [m["term"] for m in meshes], "asthma")

    expected = records_where(about_asthma)
    assert len(expected) > 10
    assert search_all(full_api, **{"query.cond": "Asthma"}) == expected


def test_query_spons_matches_lead_sponsor_and_collaborators(full_api: FakeCtgov) -> None:
    """query.spons=pfizer returns the records with Pfizer as lead sponsor or collaborator."""

    def pfizer(s: dict[str, Any]) -> bool:
        mod = s["protocolSection"].get("sponsorCollaboratorsModule", {})
        names = [mod["leadSponsor"]["name"], *(c["name"] for c in mod.get("collaborators", []))]
        return has_word(names, "pfizer")

    expected = records_where(pfizer)
    assert len(expected) > 10
    assert search_all(full_api, **{"query.spons": "pfizer"}) == expected


def test_query_term_supports_or_and_phrases(full_api: FakeCtgov) -> None:
    """query.term '"spine patient" OR zzznotaword' finds the SPORT study by its title phrase."""
    found = search_all(full_api, **{"query.term": '"Spine Patient" OR zzznotaword'})
    assert "NCT00000410" in found
    assert search_all(full_api, **{"query.term": "zzznotaword"}) == []


def test_filter_advanced_last_update_range(full_api: FakeCtgov) -> None:
    """AREA[LastUpdatePostDate]RANGE[2024-01-01,2024-06-30] keeps exactly those dates."""

    def in_range(s: dict[str, Any]) -> bool:
        date: str = s["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"]
        return "2024-01-01" <= date <= "2024-06-30"

    expected = records_where(in_range)
    advanced = "AREA[LastUpdatePostDate]RANGE[2024-01-01,2024-06-30]"
    assert len(expected) > 10
    assert search_all(full_api, **{"filter.advanced": advanced}) == expected


def test_filter_advanced_range_to_max_and_status(full_api: FakeCtgov) -> None:
    """RANGE[2025-01-01,MAX] AND AREA[OverallStatus]COMPLETED combines both conditions."""

    def recent_completed(s: dict[str, Any]) -> bool:
        status = s["protocolSection"]["statusModule"]
        return bool(
            status["lastUpdatePostDateStruct"]["date"] >= "2025-01-01"
            and status["overallStatus"] == "COMPLETED"
        )

    advanced = "AREA[LastUpdatePostDate]RANGE[2025-01-01,MAX] AND AREA[OverallStatus]COMPLETED"
    expected = records_where(recent_completed)
    assert len(expected) > 0
    assert search_all(full_api, **{"filter.advanced": advanced}) == expected


def test_filter_advanced_it_cannot_parse_is_400(api: FakeCtgov) -> None:
    """An unsupported Essie operator in filter.advanced answers 400 with a message."""
    with client(api) as http:
        response = http.get("/studies", params={"filter.advanced": "EXPANSION[Concept]x"})
    assert response.status_code == 400
    assert "EXPANSION" in response.text


def test_filter_overall_status(full_api: FakeCtgov) -> None:
    """filter.overallStatus=WITHDRAWN|SUSPENDED keeps only those statuses."""
    expected = records_where(
        lambda s: (
            s["protocolSection"]["statusModule"]["overallStatus"] in ("WITHDRAWN", "SUSPENDED")
        ),
    )
    assert len(expected) == 43
    assert search_all(full_api, **{"filter.overallStatus": "WITHDRAWN|SUSPENDED"}) == expected


def test_query_of_only_nct_ids_ignores_filters(full_api: FakeCtgov) -> None:
    """query.term holding only NCT ids ignores filter.* (as the spec says)."""
    params = {"query.term": "NCT00000410", "filter.overallStatus": "RECRUITING"}
    assert search_all(full_api, **params) == ["NCT00000410"]


# --------------------------------------------------------------------------- record changes


def test_edit_is_visible_on_the_next_request(api: FakeCtgov) -> None:
    """edit() changes what /studies/{id} and /studies serve next."""

    def retitle(study: dict[str, Any]) -> None:
        study["protocolSection"]["identificationModule"]["briefTitle"] = "Edited title"

    returned = api.edit("NCT00007696", retitle)
    with client(api) as http:
        single = http.get("/studies/NCT00007696").json()
        listed = http.get("/studies", params={"query.titles": '"edited title"'}).json()
    assert returned["protocolSection"]["identificationModule"]["briefTitle"] == "Edited title"
    assert single["protocolSection"]["identificationModule"]["briefTitle"] == "Edited title"
    assert [nct_id(s) for s in listed["studies"]] == ["NCT00007696"]
    assert api.served_bytes("NCT00007696") == orjson.dumps(api.get("NCT00007696"))


def test_get_returns_a_copy(api: FakeCtgov) -> None:
    """Mutating what get() returns does not change the served record."""
    study = api.get("NCT00000410")
    study["hasResults"] = "changed"
    assert api.get("NCT00000410")["hasResults"] is False


def test_remove_gives_404_and_drops_from_lists(api: FakeCtgov) -> None:
    """remove() makes /studies/{id} 404 and the id leaves /studies."""
    api.remove("NCT00000410")
    with client(api) as http:
        assert http.get("/studies/NCT00000410").status_code == 404
    assert search_all(api) == SOME_IDS[1:]


def test_put_adds_a_study(api: FakeCtgov) -> None:
    """put() of a new record makes it served."""
    study = load_study("NCT00000410")
    study["protocolSection"]["identificationModule"]["nctId"] = "NCT00000001"
    api.put(study)
    with client(api) as http:
        assert http.get("/studies/NCT00000001").content == orjson.dumps(study)
    assert search_all(api)[0] == "NCT00000001"


def test_explicit_studies_are_served(api: FakeCtgov) -> None:
    """FakeCtgov(studies=[...]) serves exactly the given records."""
    with FakeCtgov([load_study("NCT00033839")]) as other, client(other) as http:
        page = http.get("/studies").json()
    assert [nct_id(s) for s in page["studies"]] == ["NCT00033839"]


# --------------------------------------------------------------------------- faults


def test_status_fault_answers_that_status_then_recovers(api: FakeCtgov) -> None:
    """fault_next('status', status=503) answers 503 with a JSON body once, then 200."""
    api.fault_next("status", status=503)
    with client(api) as http:
        failed = http.get("/version")
        ok = http.get("/version")
    assert failed.status_code == 503
    assert "message" in failed.json()
    assert ok.status_code == 200


def test_429_fault_carries_retry_after(api: FakeCtgov) -> None:
    """A 429 fault carries Retry-After with the given seconds."""
    api.fault_next("status", status=429, retry_after=2)
    with client(api) as http:
        response = http.get("/studies/NCT00000410")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"


def test_fault_only_hits_matching_paths_and_count(api: FakeCtgov) -> None:
    """path_contains limits a fault to matching requests; count limits how many."""
    api.fault_next("status", count=2, status=500, path_contains="/studies/NCT00007696")
    with client(api) as http:
        statuses = [
            http.get("/studies/NCT00000410").status_code,
            http.get("/studies/NCT00007696").status_code,
            http.get("/version").status_code,
            http.get("/studies/NCT00007696").status_code,
            http.get("/studies/NCT00007696").status_code,
        ]
    assert statuses == [200, 500, 200, 500, 200]


def test_slow_fault_exceeds_a_short_client_timeout(api: FakeCtgov) -> None:
    """A slow answer makes a client with a shorter read timeout time out."""
    api.fault_next("slow", seconds=0.5)
    with client(api, timeout=0.1) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/studies/NCT00000410")
    with client(api) as http:
        assert http.get("/version").status_code == 200


def test_slow_fault_then_answers_normally(api: FakeCtgov) -> None:
    """A patient client gets the normal answer after the delay."""
    api.fault_next("slow", seconds=0.1)
    with client(api) as http:
        response = http.get("/studies/NCT00000410")
    assert response.content == api.served_bytes("NCT00000410")


def test_truncate_body_breaks_the_http_message(api: FakeCtgov) -> None:
    """truncate_body sends half the announced body and closes: httpx raises RemoteProtocolError."""
    api.fault_next("truncate_body")
    with client(api) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/studies/NCT00000410")
        assert http.get("/studies/NCT00000410").status_code == 200


def test_truncate_json_gives_a_body_that_does_not_parse(api: FakeCtgov) -> None:
    """truncate_json sends a complete HTTP message whose JSON is cut short."""
    api.fault_next("truncate_json")
    with client(api) as http:
        response = http.get("/studies/NCT00000410")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert api.served_bytes("NCT00000410").startswith(response.content)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


def test_reset_closes_without_a_response(api: FakeCtgov) -> None:
    """reset drops the connection with no response; the server keeps serving."""
    api.fault_next("reset")
    with client(api) as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            http.get("/version")
        assert http.get("/version").status_code == 200
    assert api.requests[0].status is None


def test_fail_randomly_fails_about_that_fraction(api: FakeCtgov) -> None:
    """fail_randomly(0.5) fails some requests with 500 or 429 (429 with Retry-After)."""
    api.fail_randomly(0.5, retry_after=0.05, seed=1)
    with client(api) as http:
        responses = [http.get("/version") for _ in range(40)]
    statuses = [r.status_code for r in responses]
    assert 10 <= sum(s != 200 for s in statuses) <= 30
    assert set(statuses) == {200, 500, 429}
    assert all(r.headers["retry-after"] == "0.05" for r in responses if r.status_code == 429)


def test_clear_faults_stops_failures(api: FakeCtgov) -> None:
    """clear_faults() drops queued and random faults."""
    api.fail_randomly(1.0)
    api.fault_next("reset")
    api.clear_faults()
    with client(api) as http:
        assert [http.get("/version").status_code for _ in range(5)] == [200] * 5


def test_unknown_fault_kind_is_rejected(api: FakeCtgov) -> None:
    """fault_next with an unknown kind raises ValueError."""
    with pytest.raises(ValueError, match="unknown fault kind"):
        api.fault_next("explode")


# --------------------------------------------------------------------------- request log


def test_requests_are_recorded(api: FakeCtgov) -> None:
    """Every request is logged with method, path, parsed query and status."""
    with client(api) as http:
        http.get("/studies", params={"filter.ids": "NCT00000410", "pageSize": 5})
        http.get("/studies/NCT99999999")
    first, second = api.requests
    assert (first.method, first.path, first.status) == ("GET", "/api/v2/studies", 200)
    assert first.query == {"filter.ids": ["NCT00000410"], "pageSize": ["5"]}
    assert (second.path, second.status) == ("/api/v2/studies/NCT99999999", 404)
    assert api.request_count("/studies/") == 1
    assert api.request_count() == 2


# -- record history (/api/int) ------------------------------------------------------------


def history_client(api: FakeCtgov) -> httpx.Client:
    return httpx.Client(base_url=api.history_base_url, timeout=5.0)


def posted_on(day: str, status: str | None = None) -> Callable[[dict[str, Any]], None]:
    def edit(study: dict[str, Any]) -> None:
        module = study["protocolSection"]["statusModule"]
        module["lastUpdatePostDateStruct"]["date"] = day
        if status:
            module["overallStatus"] = status

    return edit


def test_history_of_a_loaded_record_is_one_version(api: FakeCtgov) -> None:
    """A record as loaded is version 0, dated its lastUpdatePostDate, with its status."""
    status = load_study(SOME_IDS[0])["protocolSection"]["statusModule"]
    with history_client(api) as http:
        body = http.get(f"/studies/{SOME_IDS[0]}", params={"history": "true"}).json()
    assert body["history"]["changes"] == [
        {
            "version": 0,
            "date": status["lastUpdatePostDateStruct"]["date"],
            "status": status["overallStatus"],
            "moduleLabels": sorted(load_study(SOME_IDS[0])["protocolSection"]),
        }
    ]
    assert {k: v for k, v in body.items() if k != "history"} == load_study(SOME_IDS[0])


def test_edit_appends_a_version(api: FakeCtgov) -> None:
    """Each edit is a new version; the listing names the modules it changed."""
    api.edit(SOME_IDS[1], posted_on("2026-02-03", "COMPLETED"))
    with history_client(api) as http:
        changes = http.get(f"/studies/{SOME_IDS[1]}?history=true").json()["history"]["changes"]
    assert [(c["version"], c["date"], c["status"]) for c in changes][1:] == [
        (1, "2026-02-03", "COMPLETED")
    ]
    assert changes[1]["moduleLabels"] == ["statusModule"]


def test_history_version_serves_each_version(api: FakeCtgov) -> None:
    """/studies/{id}/history/{v} is {"studyVersion": v, "study": <that version>}."""
    before = api.get(SOME_IDS[1])
    after = api.edit(SOME_IDS[1], posted_on("2026-02-03"))
    with history_client(api) as http:
        bodies = [http.get(f"/studies/{SOME_IDS[1]}/history/{v}").json() for v in (0, 1)]
    assert bodies == [{"studyVersion": 0, "study": before}, {"studyVersion": 1, "study": after}]


def test_set_history_installs_a_timeline(api: FakeCtgov) -> None:
    """set_history: every version is served, the last one is the live API v2 record."""
    base = load_study(SOME_IDS[2])
    versions = [copy.deepcopy(base) for _ in range(3)]
    for n, version in enumerate(versions):
        posted_on(f"201{n}-05-01", ("RECRUITING", "RECRUITING", "TERMINATED")[n])(version)
    api.set_history(SOME_IDS[2], versions)
    with history_client(api) as http:
        changes = http.get(f"/studies/{SOME_IDS[2]}?history=true").json()["history"]["changes"]
        second = http.get(f"/studies/{SOME_IDS[2]}/history/1").json()["study"]
    with client(api) as http:
        live = http.get(f"/studies/{SOME_IDS[2]}").json()
    assert [(c["date"], c["status"]) for c in changes] == [
        ("2010-05-01", "RECRUITING"),
        ("2011-05-01", "RECRUITING"),
        ("2012-05-01", "TERMINATED"),
    ]
    assert (second, live) == (versions[1], versions[2])


def test_put_starts_a_new_history(api: FakeCtgov) -> None:
    """put() replaces the record and its earlier versions: version 0 again."""
    api.edit(SOME_IDS[0], posted_on("2026-02-03"))
    api.put(load_study(SOME_IDS[0]))
    assert len(api.versions(SOME_IDS[0])) == 1


def test_set_history_refuses_another_study(api: FakeCtgov) -> None:
    """Versions of another study (or none) are a ValueError."""
    with pytest.raises(ValueError, match=SOME_IDS[0]):
        api.set_history(SOME_IDS[0], [load_study(SOME_IDS[1])])
    with pytest.raises(ValueError):
        api.set_history(SOME_IDS[0], [])


def test_history_without_the_flag_is_the_plain_study(api: FakeCtgov) -> None:
    """/api/int/studies/{id} without history=true has no history key."""
    with history_client(api) as http:
        body = http.get(f"/studies/{SOME_IDS[0]}").json()
    assert body == load_study(SOME_IDS[0])


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/NCT09999999?history=true", 404),
        ("/studies/NCT09999999/history/0", 404),
        (f"/studies/{SOME_IDS[0]}/history/1", 404),
        (f"/studies/{SOME_IDS[0]}/history/x", 404),
        (f"/studies/{SOME_IDS[0]}/versions/0", 404),
        ("/studies/NCTXYZ?history=true", 400),
        (f"/studies/{SOME_IDS[0]}?history=maybe", 400),
        (f"/studies/{SOME_IDS[0]}?fields=x", 400),
    ],
)
def test_history_errors(api: FakeCtgov, path: str, status: int) -> None:
    """Unknown ids and versions are 404, invalid ids and parameters 400, as text."""
    with history_client(api) as http:
        response = http.get(path)
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        "text/plain; charset=utf-8",
    )


def test_removed_study_has_no_history(api: FakeCtgov) -> None:
    """After remove(), the history answers 404 too."""
    api.edit(SOME_IDS[0], posted_on("2026-02-03"))
    api.remove(SOME_IDS[0])
    with history_client(api) as http:
        assert http.get(f"/studies/{SOME_IDS[0]}/history/0").status_code == 404


def test_faults_apply_to_history_requests(api: FakeCtgov) -> None:
    """fault_next matching /api/int answers the fault, then the history answers normally."""
    api.fault_next("status", status=503, path_contains="/api/int/")
    with history_client(api) as http:
        statuses = [http.get(f"/studies/{SOME_IDS[0]}/history/0").status_code for _ in range(2)]
    assert statuses == [503, 200]
    assert [r.fault for r in api.requests] == ["status", None]
