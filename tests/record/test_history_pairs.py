"""Real pairs of downloads of the same study (../shared/data/ctgov/history/), older then newer.

Each pair is ingested as two API observations; what the newer one records is checked
against an oracle built here from the raw JSON, not from mirror's normalizer: the fields
named below, and the sites keyed by docs/fields.md's ``facility|city|state|country`` rule.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_ctgov import DATA_DIR, FakeCtgov
from helpers import (
    changes,
    count,
    event_total,
    events,
    site_field,
    study_row,
    sync_ids,
    version_numbers,
)

from mirror.app import App
from mirror.pipeline import Ingestor, IngestResult, Outcome
from mirror.source import Observation
from mirror.store import ChangeEvent, StudyVersion

HISTORY = DATA_DIR / "history"
# Pairs whose protocol, results and hasResults are identical: only derivedSection differs.
DERIVED_ONLY = [
    "NCT00517179", "NCT02552212", "NCT04642755", "NCT05911841", "NCT05913115",
    "NCT05913700", "NCT05914155", "NCT05915026", "NCT05915702", "NCT05915728",
    "NCT05921903",
]  # fmt: skip
DATE_TYPE_ONLY = ["NCT05923112", "NCT05923281"]


def pair(nct_id: str) -> tuple[Path, Path]:
    older, newer = sorted((HISTORY / nct_id).glob("*.json"))
    return older, newer


def observation(path: Path) -> Observation:
    """The file as the API would have served it on the day of its download."""
    raw = path.read_bytes()
    study = orjson.loads(raw)
    nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    day = datetime.fromisoformat(path.stem).replace(tzinfo=UTC)
    return Observation(nct_id, raw, study, day, origin="api")


def ingest_pair(app: App, nct_id: str) -> tuple[IngestResult, IngestResult]:
    ingestor = Ingestor(app.db, ignore=app.settings.diff.ignore)
    older, newer = pair(nct_id)
    (first,) = ingestor.ingest([observation(older)])
    (second,) = ingestor.ingest([observation(newer)])
    assert (first.outcome, first.version) == (Outcome.NEW, 1)
    return first, second


def raw(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())  # type: ignore[no-any-return]


def at(study: dict[str, Any], *keys: str) -> Any:
    value: Any = study["protocolSection"]
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def bag(value: Any) -> Any:
    """An order-free form of a JSON value: list order is not information (docs/fields.md)."""
    if isinstance(value, dict):
        return tuple(sorted((k, bag(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(sorted((bag(v) for v in value), key=repr))
    return (type(value).__name__, value)


def kind(old: Any, new: Any) -> str:
    return "added" if old is None else "removed" if new is None else "changed"


def test_every_history_pair_is_covered() -> None:
    """The pairs checked here are all the pairs in the data set."""
    real_updates = ["NCT05827016", "NCT06060392"]
    assert sorted(p.name for p in HISTORY.iterdir()) == sorted(
        DERIVED_ONLY + DATE_TYPE_ONLY + real_updates
    )


# -- pairs that must record nothing ---------------------------------------------------------


@pytest.mark.parametrize("nct_id", DERIVED_ONLY)
def test_derived_only_pair_writes_no_version(app: App, nct_id: str) -> None:
    """A newer download differing only in derivedSection is no new version and no event."""
    older, newer = (raw(p) for p in pair(nct_id))
    assert older["derivedSection"] != newer["derivedSection"]
    assert {k: v for k, v in older.items() if k != "derivedSection"} == {
        k: v for k, v in newer.items() if k != "derivedSection"
    }
    first, second = ingest_pair(app, nct_id)
    assert (second.outcome, second.version, second.events) == (Outcome.UNCHANGED, 1, 0)
    assert version_numbers(app.db, nct_id) == [1]
    assert event_total(app.db) == first.events
    assert study_row(app.db, nct_id).last_seen_at == datetime.fromisoformat(
        pair(nct_id)[1].stem
    ).replace(tzinfo=UTC)


# -- ESTIMATED -> ACTUAL under the same LastUpdatePostDate -----------------------------------


@pytest.mark.parametrize("nct_id", DATE_TYPE_ONLY)
def test_date_type_pair_records_exactly_the_two_type_changes(app: App, nct_id: str) -> None:
    """Same LastUpdatePostDate, two date types ESTIMATED -> ACTUAL: exactly those two events."""
    older, newer = (raw(p) for p in pair(nct_id))
    for struct in ("studyFirstPostDateStruct", "lastUpdatePostDateStruct"):
        old, new = at(older, "statusModule", struct), at(newer, "statusModule", struct)
        assert (old["date"], old["type"], new["type"]) == (new["date"], "ESTIMATED", "ACTUAL")
    _, second = ingest_pair(app, nct_id)
    assert (second.outcome, second.version, second.events) == (Outcome.CHANGED, 2, 2)
    assert changes(app.db, nct_id, 2) == [
        ("status.lastUpdatePostDateType", "changed", "ESTIMATED", "ACTUAL"),
        ("status.studyFirstPostDateType", "changed", "ESTIMATED", "ACTUAL"),
    ]
    assert {e.source_date for e in events(app.db, nct_id)} == {"2023-06-28"}


def test_date_type_change_is_found_by_a_sync_without_a_new_post_date(
    fake_api: FakeCtgov, app: App
) -> None:
    """Through the API, the hidden ESTIMATED -> ACTUAL change is a new version: the hash decides."""
    older, newer = (raw(p) for p in pair("NCT05923112"))
    fake_api.put(older)
    sync_ids(app, "NCT05923112")
    fake_api.put(newer)
    summary = sync_ids(app, "NCT05923112")
    assert (summary.counts["changed"], summary.counts["unchanged"]) == (1, 0)
    assert [f for f, *_ in changes(app.db, "NCT05923112", 2)] == [
        "status.lastUpdatePostDateType",
        "status.studyFirstPostDateType",
    ]


# -- real sponsor updates -------------------------------------------------------------------

# Field -> where it lives under protocolSection, for the non-site fields the updates touch.
SOURCES: dict[str, tuple[str, ...]] = {
    "armsInterventions.interventions": ("armsInterventionsModule", "interventions"),
    "conditions.keywords": ("conditionsModule", "keywords"),
    "contactsLocations.centralContacts": ("contactsLocationsModule", "centralContacts"),
    "contactsLocations.locations_nested": ("contactsLocationsModule", "locations_nested"),
    "eligibility.criteria": ("eligibilityModule", "eligibilityCriteria"),
    "outcomes.secondary": ("outcomesModule", "secondaryOutcomes"),
    "oversight.isUsExport": ("oversightModule", "isUsExport"),
    "references.references": ("referencesModule", "references"),
    "references.seeAlsoLinks": ("referencesModule", "seeAlsoLinks"),
    "status.completionDate": ("statusModule", "completionDateStruct", "date"),
    "status.lastUpdatePostDate": ("statusModule", "lastUpdatePostDateStruct", "date"),
    "status.lastUpdateSubmitDate": ("statusModule", "lastUpdateSubmitDate"),
    "status.overallStatus": ("statusModule", "overallStatus"),
    "status.primaryCompletionDate": ("statusModule", "primaryCompletionDateStruct", "date"),
    "status.startDate": ("statusModule", "startDateStruct", "date"),
    "status.startDateType": ("statusModule", "startDateStruct", "type"),
    "status.statusVerifiedDate": ("statusModule", "statusVerifiedDate"),
}


def assert_values_match_raw(
    found: dict[str, ChangeEvent], older: dict[str, Any], newer: dict[str, Any]
) -> None:
    """Every non-site event's old and new are the raw values (list order aside)."""
    for field, event in found.items():
        if field.startswith("locations."):
            continue
        old, new = at(older, *SOURCES[field]), at(newer, *SOURCES[field])
        assert (event.kind.value, bag(event.old), bag(event.new)) == (
            kind(old, new),
            bag(old),
            bag(new),
        ), field


def sites(study: dict[str, Any]) -> dict[str, Any]:
    return {site_field(s): s for s in at(study, "contactsLocationsModule", "locations") or []}


def test_nct05827016_update_records_its_exact_field_changes(app: App) -> None:
    """NCT05827016's 2023 -> 2025 update: these 13 fields and 512 site events, nothing else."""
    older, newer = (raw(p) for p in pair("NCT05827016"))
    _, second = ingest_pair(app, "NCT05827016")
    found = {e.field: e for e in events(app.db, "NCT05827016", 2)}
    assert (second.outcome, second.version, second.events) == (Outcome.CHANGED, 2, 525)
    assert sorted(
        (f, e.kind.value) for f, e in found.items() if not f.startswith("locations.")
    ) == [
        ("armsInterventions.interventions", "changed"),
        ("conditions.keywords", "changed"),
        ("contactsLocations.centralContacts", "changed"),
        ("contactsLocations.locations_nested", "removed"),
        ("eligibility.criteria", "changed"),
        ("outcomes.secondary", "changed"),
        ("references.seeAlsoLinks", "changed"),
        ("status.lastUpdatePostDate", "changed"),
        ("status.lastUpdateSubmitDate", "changed"),
        ("status.overallStatus", "changed"),
        ("status.startDate", "changed"),
        ("status.startDateType", "changed"),
        ("status.statusVerifiedDate", "changed"),
    ]
    assert_values_match_raw(found, older, newer)
    assert (found["status.overallStatus"].old, found["status.overallStatus"].new) == (
        "NOT_YET_RECRUITING",
        "RECRUITING",
    )
    old_sites, new_sites = sites(older), sites(newer)
    expected_sites = {
        field: (kind(old_sites.get(field), new_sites.get(field)), bag(old_sites.get(field)),
                bag(new_sites.get(field)))
        for field in old_sites.keys() | new_sites.keys()
        if bag(old_sites.get(field)) != bag(new_sites.get(field))
    }  # fmt: skip
    assert {
        f: (e.kind.value, bag(e.old), bag(e.new))
        for f, e in found.items()
        if f.startswith("locations.")
    } == expected_sites
    assert Counter(k for k, _, _ in expected_sites.values()) == Counter(
        added=234, removed=230, changed=48
    )
    assert {e.source_date for e in found.values()} == {"2025-07-01"}


def test_nct06060392_update_records_its_exact_field_changes(app: App) -> None:
    """NCT06060392's 2024 -> 2025 update: exactly these seven field changes."""
    older, newer = (raw(p) for p in pair("NCT06060392"))
    _, second = ingest_pair(app, "NCT06060392")
    found = {e.field: e for e in events(app.db, "NCT06060392", 2)}
    assert (second.outcome, second.version) == (Outcome.CHANGED, 2)
    assert sorted(
        (f, e.kind.value, e.old, e.new) for f, e in found.items() if "references" not in f
    ) == [
        ("oversight.isUsExport", "added", None, False),
        ("status.completionDate", "changed", "2025-03-01", "2025-11-01"),
        ("status.lastUpdatePostDate", "changed", "2023-11-18", "2025-06-13"),
        ("status.lastUpdateSubmitDate", "changed", "2023-11-14", "2025-06-12"),
        ("status.primaryCompletionDate", "changed", "2024-12-02", "2025-09-02"),
        ("status.statusVerifiedDate", "changed", "2023-11", "2025-06"),
    ]
    assert sorted(found) == sorted(
        [
            "oversight.isUsExport", "references.references", "status.completionDate",
            "status.lastUpdatePostDate", "status.lastUpdateSubmitDate",
            "status.primaryCompletionDate", "status.statusVerifiedDate",
        ]
    )  # fmt: skip
    assert_values_match_raw(found, older, newer)
    assert count(app.db, StudyVersion) == 2
