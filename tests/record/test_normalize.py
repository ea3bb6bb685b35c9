"""Tests of mirror.record.normalize: raw API v2 study objects -> canonical records and paths."""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from history_fixtures import marked_up

from mirror.errors import MalformedRecord
from mirror.record import (
    DEFAULT_IGNORE,
    IDENTITY_KEYS,
    SITE_PATTERN,
    area_of,
    clean_text,
    content_hash,
    diff_records,
    field_mapping,
    identity_of,
    loosely_equal,
    nct_id_of,
    normalize,
    part_hashes,
    text_key,
)

DATA = Path(
    os.environ.get(
        "CTMIRROR_CTGOV_DATA",
        Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ctgov",
    )
)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fields.md"

needs_data = pytest.mark.skipif(
    not (DATA / "studies").is_dir(), reason=f"real records not found in {DATA}"
)

Study = dict[str, Any]


def load(path: Path) -> Study:
    data: Study = orjson.loads(path.read_bytes())
    return data


@pytest.fixture(scope="session")
def studies() -> dict[str, Study]:
    if not (DATA / "studies").is_dir():
        pytest.skip(f"real records not found in {DATA}")
    return {p.stem: load(p) for p in sorted((DATA / "studies").glob("NCT*.json"))}


@pytest.fixture(scope="session")
def records(studies: dict[str, Study]) -> dict[str, dict[str, Any]]:
    return {nct: normalize(study) for nct, study in studies.items()}


def module(study: Study, name: str) -> dict[str, Any]:
    found: dict[str, Any] = study["protocolSection"].get(name, {})
    return found


def study_stub(**modules: Any) -> Study:
    """A minimal valid study with the given protocol modules."""
    protocol = {"identificationModule": {"nctId": "NCT01234567"}, **modules}
    return {"protocolSection": protocol, "hasResults": False}


def shuffled(value: Any, rng: random.Random) -> Any:
    """A copy of value with every list, at every depth, in a random order."""
    if isinstance(value, dict):
        return {k: shuffled(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        items = [shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


def hash_of(record: dict[str, Any]) -> str:
    return content_hash(part_hashes(record))


def changed_paths(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}


# ---------------------------------------------------------------------------- real records


@needs_data
def test_all_real_records_normalize(
    studies: dict[str, Study], records: dict[str, dict[str, Any]]
) -> None:
    """Every real record normalizes to sorted paths carrying its own NCT id."""
    assert len(records) == len(studies) == 1687
    for nct, record in records.items():
        assert record["identification.nctId"] == nct
        assert list(record) == sorted(record)


@needs_data
def test_overall_status_path(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """statusModule.overallStatus is status.overallStatus."""
    seen = 0
    for nct, study in studies.items():
        if "overallStatus" in module(study, "statusModule"):
            assert (
                records[nct]["status.overallStatus"]
                == study["protocolSection"]["statusModule"]["overallStatus"]
            )
            seen += 1
    assert seen == len(studies)


@needs_data
def test_date_structs_become_date_and_type(
    studies: dict[str, Study], records: dict[str, Any]
) -> None:
    """Each statusModule <x>DateStruct gives status.<x>Date and status.<x>DateType."""
    for nct, study in studies.items():
        for key, struct in module(study, "statusModule").items():
            if key.endswith("DateStruct"):
                base = "status." + key.removesuffix("Struct")
                assert records[nct][base] == struct["date"]
                assert records[nct].get(base + "Type") == struct.get("type")
                assert not any(p.startswith(f"status.{key}") for p in records[nct])


@needs_data
def test_enrollment_paths(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """enrollmentInfo.count/.type are design.enrollmentCount/design.enrollmentType."""
    for nct, study in studies.items():
        info = module(study, "designModule").get("enrollmentInfo", {})
        assert records[nct].get("design.enrollmentCount") == info.get("count")
        assert records[nct].get("design.enrollmentType") == info.get("type")


@needs_data
def test_eligibility_paths(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """eligibilityCriteria/minimumAge/maximumAge/sex are eligibility.criteria/minAge/maxAge/sex."""
    names = {"criteria": "eligibilityCriteria", "minAge": "minimumAge"}
    names |= {"maxAge": "maximumAge", "sex": "sex"}
    for nct, study in studies.items():
        eligibility = module(study, "eligibilityModule")
        for field, source in names.items():
            value = eligibility.get(source)
            expected = clean_text(value) if isinstance(value, str) else value
            assert records[nct].get(f"eligibility.{field}") == expected


@needs_data
def test_outcome_paths_keep_measures(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """primary/secondary/otherOutcomes are outcomes.primary/secondary/other, same measures."""
    for nct, study in studies.items():
        outcomes = module(study, "outcomesModule")
        for field in ("primary", "secondary", "other"):
            raw = outcomes.get(f"{field}Outcomes")
            mapped = records[nct].get(f"outcomes.{field}")
            assert (raw is None) == (mapped is None)
            if raw is not None:
                assert Counter(o["measure"] for o in mapped) == Counter(o["measure"] for o in raw)


@needs_data
def test_arms_and_interventions_paths(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """armGroups and interventions are armsInterventions.arms and .interventions, same items."""
    for nct, study in studies.items():
        arms = module(study, "armsInterventionsModule")
        record = records[nct]
        assert Counter(a["label"] for a in record.get("armsInterventions.arms", [])) == Counter(
            a["label"] for a in arms.get("armGroups", [])
        )
        assert len(record.get("armsInterventions.interventions", [])) == len(
            arms.get("interventions", [])
        )


@needs_data
def test_sponsor_paths(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """leadSponsor is sponsor.lead as a whole object; responsibleParty is flattened."""
    for nct, study in studies.items():
        sponsors = module(study, "sponsorCollaboratorsModule")
        assert records[nct]["sponsor.lead"] == sponsors["leadSponsor"]
        party = sponsors.get("responsibleParty", {})
        assert records[nct].get("sponsor.responsibleParty.type") == party.get("type")
        assert not any(p.startswith("sponsor.lead.") for p in records[nct])


@needs_data
def test_has_results_path(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """Top-level hasResults is results.hasResults."""
    for nct, study in studies.items():
        assert records[nct]["results.hasResults"] is study["hasResults"]


@needs_data
def test_every_site_has_its_own_key(studies: dict[str, Study], records: dict[str, Any]) -> None:
    """Each location becomes one locations.* key whose value is that location."""
    for nct, study in studies.items():
        raw = module(study, "contactsLocationsModule").get("locations", [])
        sites = {p: v for p, v in records[nct].items() if p.startswith("locations.")}
        assert len(sites) == len(raw)
        as_json = Counter(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in sites.values())
        expected = normalize(study_stub(contactsLocationsModule={"locations": raw}))
        assert as_json == Counter(
            orjson.dumps(v, option=orjson.OPT_SORT_KEYS)
            for p, v in expected.items()
            if p.startswith("locations.")
        )
        for path, site in sites.items():
            facility = " ".join(str(site.get("facility", "")).split()).lower()
            assert path.startswith(f"locations.{facility}|")


@needs_data
def test_identity_sorted_lists(records: dict[str, Any]) -> None:
    """Identity-keyed lists come out ordered by their identity."""
    for record in records.values():
        for path, keys in IDENTITY_KEYS.items():
            if path in record:
                ids = [identity_of(keys, item) for item in record[path]]
                assert ids == sorted(ids)


@needs_data
def test_no_path_outside_field_mapping(records: dict[str, Any]) -> None:
    """Every path normalize() produces from real records is listed by field_mapping()."""
    known = {rule.path for rule in field_mapping()}
    produced = {p for r in records.values() for p in r if not p.startswith("locations.")}
    assert produced - known == set()
    assert len(produced) > 100


@needs_data
def test_shuffling_every_list_changes_nothing(
    studies: dict[str, Study], records: dict[str, Any]
) -> None:
    """Reordering every list at every depth gives the same record and the same hashes."""
    rng = random.Random(20240608)
    for nct, study in studies.items():
        again = normalize(shuffled(study, rng))
        assert again == records[nct]
        assert part_hashes(again) == part_hashes(records[nct])


@needs_data
def test_duplicate_real_sites_independent_of_order(studies: dict[str, Study]) -> None:
    """A real study with repeated site keys gets the same #n keys in any order."""
    study = studies["NCT00141349"]
    record = normalize(study)
    locations = study["protocolSection"]["contactsLocationsModule"]["locations"]
    study["protocolSection"]["contactsLocationsModule"]["locations"] = locations[::-1]
    try:
        assert normalize(study) == record
    finally:
        study["protocolSection"]["contactsLocationsModule"]["locations"] = locations
    assert "locations.pfizer investigational site|birmingham|alabama|united states#3" in record


@needs_data
def test_normalize_does_not_touch_its_input(studies: dict[str, Study]) -> None:
    """normalize() builds new structures and leaves the raw study as it was."""
    study = studies["NCT00141349"]
    before = orjson.dumps(study)
    record = normalize(study)
    assert orjson.dumps(study) == before
    assert (
        record["sponsor.lead"]
        is not study["protocolSection"]["sponsorCollaboratorsModule"]["leadSponsor"]
    )


# ---------------------------------------------------------------------------- history pairs


def history_pair(nct_id: str) -> tuple[Study, Study]:
    old, new = sorted((DATA / "history" / nct_id).glob("*.json"))
    return load(old), load(new)


@needs_data
def test_history_derived_only_same_hash() -> None:
    """NCT00517179's two downloads differ only in derived data: same hash by default."""
    old, new = history_pair("NCT00517179")
    assert hash_of(normalize(old, DEFAULT_IGNORE)) == hash_of(normalize(new, DEFAULT_IGNORE))
    changed = changed_paths(normalize(old), normalize(new))
    assert "derived.miscInfo.versionHolder" in changed
    assert {area_of(path) for path in changed} == {"derived"}


@needs_data
def test_history_date_types_change() -> None:
    """NCT05923112's downloads differ exactly in two date types going ESTIMATED -> ACTUAL."""
    old, new = (normalize(s, DEFAULT_IGNORE) for s in history_pair("NCT05923112"))
    fields = {"status.studyFirstPostDateType", "status.lastUpdatePostDateType"}
    assert changed_paths(old, new) == fields
    assert {old[f] for f in fields} == {"ESTIMATED"}
    assert {new[f] for f in fields} == {"ACTUAL"}
    assert part_hashes(old)["status"] != part_hashes(new)["status"]
    assert {a for a in part_hashes(old) if part_hashes(old)[a] != part_hashes(new)[a]} == {"status"}


# ---------------------------------------------------------------------------- synthetic cases


def test_site_key_format() -> None:
    """Site keys are lower-cased, whitespace-collapsed facility|city|state|country."""
    site = {"facility": "  Mayo \n Clinic ", "city": "Rochester", "country": "United States"}
    record = normalize(study_stub(contactsLocationsModule={"locations": [site]}))
    assert record["locations.mayo clinic|rochester||united states"] == site


def test_duplicate_sites_numbered_by_content() -> None:
    """Sites with one key get #2, #3 by their content, whatever their input order."""
    sites = [{"facility": "Site", "city": "X", "zip": z} for z in ("3", "1", "2")]
    records = [
        normalize(study_stub(contactsLocationsModule={"locations": order}))
        for order in (sites, sites[::-1], sites[1:] + sites[:1])
    ]
    assert records[0] == records[1] == records[2]
    assert records[0]["locations.site|x||"]["zip"] == "1"
    assert records[0]["locations.site|x||#2"]["zip"] == "2"
    assert records[0]["locations.site|x||#3"]["zip"] == "3"


def test_reordered_outcomes_arms_conditions() -> None:
    """Reordered outcomes, arms, conditions and nested lists give the same hash."""
    outcomes = [{"measure": m, "timeFrame": "1 y"} for m in ("b", "a", "c")]
    arms = [{"label": "B", "interventionNames": ["x", "y"]}, {"label": "A"}]
    modules = {
        "outcomesModule": {"primaryOutcomes": outcomes},
        "armsInterventionsModule": {"armGroups": arms},
        "conditionsModule": {"conditions": ["Flu", "Asthma"]},
    }
    reordered = {
        "outcomesModule": {"primaryOutcomes": outcomes[::-1]},
        "armsInterventionsModule": {
            "armGroups": [{"label": "A"}, {"label": "B", "interventionNames": ["y", "x"]}]
        },
        "conditionsModule": {"conditions": ["Asthma", "Flu"]},
    }
    first, second = normalize(study_stub(**modules)), normalize(study_stub(**reordered))
    assert first == second
    assert hash_of(first) == hash_of(second)
    assert [o["measure"] for o in first["outcomes.primary"]] == ["a", "b", "c"]
    assert first["conditions.conditions"] == ["Asthma", "Flu"]


def test_items_with_equal_identity_ordered_by_content() -> None:
    """Outcomes with the same measure are ordered by their canonical JSON."""
    outcomes = [{"measure": "m", "timeFrame": t} for t in ("2 y", "1 y")]
    record = normalize(study_stub(outcomesModule={"primaryOutcomes": outcomes}))
    assert [o["timeFrame"] for o in record["outcomes.primary"]] == ["1 y", "2 y"]


def test_references_identity_pmid_else_citation() -> None:
    """References sort by PubMed id, or by citation when they have none."""
    refs = [{"pmid": "2", "citation": "a"}, {"citation": "z"}, {"pmid": "1", "citation": "b"}]
    record = normalize(study_stub(referencesModule={"references": refs}))
    keys = IDENTITY_KEYS["references.references"]
    assert [identity_of(keys, r) for r in record["references.references"]] == [
        ("1",),
        ("2",),
        ("z",),
    ]


def test_mixed_scalar_list_sorted_by_json_text() -> None:
    """A list of mixed scalars sorts by JSON text, so its order is still deterministic."""
    first = normalize(study_stub(conditionsModule={"keywords": [2, "a", None, True]}))
    second = normalize(study_stub(conditionsModule={"keywords": [True, None, "a", 2]}))
    assert first["conditions.keywords"] == second["conditions.keywords"] == ["a", 2, None, True]


def test_derived_only_change_ignored_by_default() -> None:
    """A versionHolder change keeps the hash under DEFAULT_IGNORE and changes it without."""
    old = study_stub() | {"derivedSection": {"miscInfoModule": {"versionHolder": "2024-01-01"}}}
    new = study_stub() | {"derivedSection": {"miscInfoModule": {"versionHolder": "2024-01-02"}}}
    assert hash_of(normalize(old, DEFAULT_IGNORE)) == hash_of(normalize(new, DEFAULT_IGNORE))
    assert hash_of(normalize(old)) != hash_of(normalize(new))
    assert normalize(old)["derived.miscInfo.versionHolder"] == "2024-01-01"


def test_reordered_browse_leaves_same_hash() -> None:
    """Reordered derived browseLeaves change nothing, with or without the ignore."""
    leaves = [{"id": "M1", "name": "A"}, {"id": "M2", "name": "B"}]
    old = study_stub() | {"derivedSection": {"conditionBrowseModule": {"browseLeaves": leaves}}}
    new = study_stub() | {
        "derivedSection": {"conditionBrowseModule": {"browseLeaves": leaves[::-1]}}
    }
    assert hash_of(normalize(old)) == hash_of(normalize(new))
    assert "derived.conditionBrowse.browseLeaves" not in normalize(old, DEFAULT_IGNORE)


def test_date_struct_rule_in_any_module() -> None:
    """A DateStruct outside statusModule follows the same <x>Date / <x>DateType rule."""
    tracking = {"firstMcpInfo": {"postDateStruct": {"date": "2020-01-02", "type": "ACTUAL"}}}
    study = study_stub() | {"derivedSection": {"miscInfoModule": {"submissionTracking": tracking}}}
    record = normalize(study)
    base = "derived.miscInfo.submissionTracking.firstMcpInfo.postDate"
    assert (record[base], record[base + "Type"]) == ("2020-01-02", "ACTUAL")


def test_unknown_top_level_key_goes_to_other() -> None:
    """An unknown top-level key k is flattened under other.<k>."""
    study = study_stub() | {"newSection": {"aModule": {"x": 1}}, "flag": "yes"}
    record = normalize(study)
    assert record["other.newSection.aModule.x"] == 1
    assert record["other.flag"] == "yes"
    assert area_of("other.flag") == "other"


def test_values_keep_json_types() -> None:
    """Scalars keep their JSON types; empty lists stay; absent keys stay absent."""
    study = study_stub(
        designModule={"enrollmentInfo": {"count": 12}, "phases": []},
        oversightModule={"oversightHasDmc": False},
        eligibilityModule={"minimumAge": "18 Years"},
    )
    record = normalize(study)
    assert record["design.enrollmentCount"] == 12
    assert record["design.phases"] == []
    assert record["oversight.oversightHasDmc"] is False
    assert "eligibility.maxAge" not in record
    assert "design.enrollmentType" not in record


def test_ignore_globs_drop_paths() -> None:
    """Paths matching an ignore glob are dropped, others kept."""
    study = study_stub(
        statusModule={
            "overallStatus": "RECRUITING",
            "startDateStruct": {"date": "2020", "type": "A"},
        },
        contactsLocationsModule={"locations": [{"facility": "F"}]},
    )
    record = normalize(study, ["locations.*", "status.*Type"])
    assert record == {
        "identification.nctId": "NCT01234567",
        "results.hasResults": False,
        "status.overallStatus": "RECRUITING",
        "status.startDate": "2020",
    }


def test_hashes_ignore_input_key_order() -> None:
    """Hashes are the same whatever the key order of the raw object."""
    study = study_stub(statusModule={"overallStatus": "RECRUITING", "whyStopped": "x"})
    reversed_keys = {
        "hasResults": False,
        "protocolSection": {
            "statusModule": {"whyStopped": "x", "overallStatus": "RECRUITING"},
            "identificationModule": {"nctId": "NCT01234567"},
        },
    }
    parts = part_hashes(normalize(study))
    assert parts == part_hashes(normalize(reversed_keys))
    assert sorted(parts) == ["identification", "results", "status"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in parts.values())
    assert re.fullmatch(r"[0-9a-f]{32}", content_hash(parts))


def test_a_field_change_changes_hash_of_its_area_only() -> None:
    """Changing one field changes its area's part hash and the content hash, nothing else."""
    old = part_hashes(normalize(study_stub(statusModule={"overallStatus": "RECRUITING"})))
    new = part_hashes(normalize(study_stub(statusModule={"overallStatus": "COMPLETED"})))
    assert {a for a in old if old[a] != new[a]} == {"status"}
    assert content_hash(old) != content_hash(new)


def test_area_of() -> None:
    """area_of is the part before the first dot."""
    assert area_of("status.overallStatus") == "status"
    assert area_of("locations.st. mary's|x.y||usa") == "locations"
    assert area_of("derived.miscInfo.versionHolder") == "derived"


# ---------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("value", [[], "NCT01234567", None, 3])
def test_not_an_object_is_malformed(value: Any) -> None:
    """A study that is not a JSON object is a MalformedRecord."""
    with pytest.raises(MalformedRecord, match="not a study object"):
        normalize(value)


@pytest.mark.parametrize(
    "study",
    [{}, {"protocolSection": {}}, {"protocolSection": {"identificationModule": {}}}],
)
def test_missing_nct_id_is_malformed(study: Study) -> None:
    """A study without protocolSection.identificationModule.nctId is a MalformedRecord."""
    with pytest.raises(MalformedRecord, match="no protocolSection") as caught:
        nct_id_of(study)
    assert caught.value.nct_id is None


@pytest.mark.parametrize(
    "nct_id", ["NCT123", "nct01234567", "NCT012345678", 1234567, "NCT0123456٧"]
)
def test_bad_nct_id_is_malformed(nct_id: Any) -> None:
    """An nctId that is not NCT plus 8 ASCII digits is a MalformedRecord."""
    study = {"protocolSection": {"identificationModule": {"nctId": nct_id}}}
    with pytest.raises(MalformedRecord, match="is not NCT followed by 8 digits"):
        normalize(study)


def test_nct_id_of_valid() -> None:
    """nct_id_of returns the id of a valid study."""
    assert nct_id_of(study_stub()) == "NCT01234567"


def test_unrepresentable_value_is_malformed() -> None:
    """A value JSON cannot hold (an integer past 64 bits inside a list) is a MalformedRecord."""
    study = study_stub(conditionsModule={"keywords": [{"n": 2**70}, {"n": 1}]})
    with pytest.raises(MalformedRecord, match="NCT01234567"):
        normalize(study)


# ---------------------------------------------------------------------------- field mapping


def test_field_mapping_has_fixed_paths() -> None:
    """field_mapping() lists the fixed public paths with their sources and kinds."""
    rules = {rule.path: rule for rule in field_mapping()}
    fixed = {
        "status.overallStatus": "protocolSection.statusModule.overallStatus",
        "status.startDate": "protocolSection.statusModule.startDateStruct.date",
        "status.startDateType": "protocolSection.statusModule.startDateStruct.type",
        "status.completionDate": "protocolSection.statusModule.completionDateStruct.date",
        "status.lastUpdatePostDate": "protocolSection.statusModule.lastUpdatePostDateStruct.date",
        "design.enrollmentCount": "protocolSection.designModule.enrollmentInfo.count",
        "design.enrollmentType": "protocolSection.designModule.enrollmentInfo.type",
        "design.designInfo.allocation": "protocolSection.designModule.designInfo.allocation",
        "eligibility.criteria": "protocolSection.eligibilityModule.eligibilityCriteria",
        "eligibility.minAge": "protocolSection.eligibilityModule.minimumAge",
        "eligibility.maxAge": "protocolSection.eligibilityModule.maximumAge",
        "eligibility.sex": "protocolSection.eligibilityModule.sex",
        "outcomes.primary": "protocolSection.outcomesModule.primaryOutcomes",
        "outcomes.secondary": "protocolSection.outcomesModule.secondaryOutcomes",
        "outcomes.other": "protocolSection.outcomesModule.otherOutcomes",
        "armsInterventions.arms": "protocolSection.armsInterventionsModule.armGroups",
        "armsInterventions.interventions": "protocolSection.armsInterventionsModule.interventions",
        "sponsor.lead": "protocolSection.sponsorCollaboratorsModule.leadSponsor",
        "sponsor.collaborators": "protocolSection.sponsorCollaboratorsModule.collaborators",
        "results.hasResults": "hasResults",
        SITE_PATTERN: "protocolSection.contactsLocationsModule.locations",
        "derived.miscInfo.versionHolder": "derivedSection.miscInfoModule.versionHolder",
    }
    assert {path: rules[path].source for path in fixed} == fixed
    assert rules["sponsor.lead"].kind == "object"
    assert rules[SITE_PATTERN].kind == "site"
    assert rules["outcomes.primary"].kind == "list"
    assert rules["status.overallStatus"].kind == "scalar"


def test_field_mapping_paths_unique_and_sorted() -> None:
    """field_mapping() has one rule per path, sorted, and no raw struct names left."""
    paths = [rule.path for rule in field_mapping()]
    assert paths == sorted(set(paths))
    assert not any("DateStruct" in p or p.startswith("sponsorCollaborators.") for p in paths)


def test_docs_table_matches_field_mapping() -> None:
    """docs/fields.md lists exactly the rules field_mapping() returns."""
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (\w+) \|$", DOCS.read_text(), re.MULTILINE)
    # A "|" inside a table cell is written "\|" in Markdown.
    rows = [(path.replace("\\|", "|"), source, kind) for path, source, kind in rows]
    assert rows == [(r.path, r.source, r.kind) for r in field_mapping()]


# ---------------------------------------------------------------------------- text of old versions

# The real records holding HTML entities (``\\&gt;``, ``&#39;``, ``&amp;`` in URLs); the 17th
# record with an ``&`` name, "&Amp;", is not an entity.
RECORDS_WITH_ENTITIES = {
    "NCT00657033", "NCT03256916", "NCT03798535", "NCT05099809", "NCT05375500", "NCT05521087",
    "NCT05821933", "NCT05984277", "NCT06318962", "NCT06521710", "NCT06600893", "NCT06605508",
    "NCT06615518", "NCT06620835", "NCT06760702", "NCT06923098",
}  # fmt: skip
CRITERIA_HTML = (
    "<p>Inclusion Criteria:</p><ul><li>Age &gt;= 18</li><li>Signed consent</li></ul>"
    "<p>Exclusion Criteria:</p><ul><li>Pregnant &amp; nursing</li></ul>"
)
CRITERIA_MD = (
    "Inclusion Criteria:\n\n* Age \\>= 18\n* Signed consent\n\n"
    "Exclusion Criteria:\n\n* Pregnant & nursing"
)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return [text for item in items for text in strings(item)]


@needs_data
def test_clean_text_changes_only_records_with_entities(studies: dict[str, Study]) -> None:
    """Of all real records, only those holding HTML entities have a string clean_text alters."""
    changed = {n for n, study in studies.items() if any(clean_text(t) != t for t in strings(study))}
    assert changed == RECORDS_WITH_ENTITIES


@needs_data
def test_marked_up_real_records_diff_to_nothing(
    studies: dict[str, Study], records: dict[str, Any]
) -> None:
    """Every real record, its texts turned into old-style HTML, is loosely equal to itself."""
    different = []
    for nct, study in studies.items():
        old, new = normalize(marked_up(study)), records[nct]
        if old.keys() != new.keys() or not all(
            loosely_equal(old[p], new[p]) for p in old if old[p] != new[p]
        ):
            different.append(nct)
    assert different == []


def test_clean_text_html_becomes_markdown_form() -> None:
    """Paragraphs become blank lines, list items bullets, entities characters."""
    assert clean_text(CRITERIA_HTML) == (
        "Inclusion Criteria:\n\n* Age >= 18\n* Signed consent\n\n"
        "Exclusion Criteria:\n\n* Pregnant & nursing"
    )


def test_clean_text_numbers_ordered_lists_and_indents_nested_ones() -> None:
    """<ol> items are numbered; a nested list is indented two spaces."""
    html = "<ol><li>first<ul><li>sub a</li><li>sub b</li></ul></li><li>second</li></ol>"
    assert clean_text(html) == "1. first\n  * sub a\n  * sub b\n2. second"


def test_clean_text_line_breaks_and_html_whitespace() -> None:
    """<br> is a newline; whitespace inside markup collapses as HTML renders it."""
    html = "<p>Line  one<br>line\n   two<br/>\n</p>\n<p>  Next</p>"
    assert clean_text(html) == "Line one\nline two\n\nNext"


def test_clean_text_drops_inline_tags_with_attributes_in_any_case() -> None:
    """<A href=...>, <B>, <span class=...> are dropped, their text kept."""
    link = '<A HREF="http://x.org/a?b=1&amp;c=2">the <b>site</b></A>'
    html = f"<P>See {link} <span class=x>now</span></P>"
    assert clean_text(html) == "See the site now"


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("a &lt; b &gt; c &amp; d", "a < b > c & d"),
        ("and&#x2F;or &quot;x&quot; it&#39;s", 'and/or "x" it\'s'),
        ("\\&gt; 450 ms", "\\> 450 ms"),
        ("typically \\&amp;lt;1 cm", "typically \\<1 cm"),
        ("Director &amp;amp;amp; Head", "Director & Head"),
        ("&#8805; 100 bpm", "\u2265 100 bpm"),
    ],
)
def test_clean_text_unescapes_entities(text: str, plain: str) -> None:
    """Entities, double-encoded ones too, become the characters they stand for."""
    assert clean_text(text) == plain


@pytest.mark.parametrize(
    "text",
    [
        "age < 18",
        "Week 12 <Week 24",
        "Grade <I or >II",
        "p<0.05 and \\</= 65",
        "AT&T, R&D; &notice",
        "RAINBO BLUE &Amp; TAPER",
        "Inclusion Criteria:\n\n* Age \\>= 18\n  * nested\n\nLast   line  ",
    ],
)
def test_clean_text_leaves_plain_text_alone(text: str) -> None:
    """Text without a known tag or a well-formed entity comes back unchanged."""
    assert clean_text(text) == text


def test_text_key_ignores_markup_escapes_bullets_and_spacing() -> None:
    """The HTML and the markdown form of the same criteria have the same key."""
    assert text_key(CRITERIA_HTML) == text_key(CRITERIA_MD)
    assert text_key("1. a\n2) b\n- c\n  + d\n\\* e f\\*g") == "a b c d e f*g"


def test_text_key_keeps_words_and_case() -> None:
    """A different number, word or capital is a different key."""
    keys = {text_key(t) for t in ("Age >= 18", "Age >= 21", "age >= 18", "Age => 18")}
    assert len(keys) == 4


def test_markup_only_edit_is_no_change_event() -> None:
    """HTML criteria replaced by the same criteria in markdown: no event."""
    old = normalize(study_stub(eligibilityModule={"eligibilityCriteria": CRITERIA_HTML}))
    new = normalize(study_stub(eligibilityModule={"eligibilityCriteria": CRITERIA_MD}))
    assert old != new
    assert diff_records(old, new) == []


def test_wording_change_inside_markup_is_one_event() -> None:
    """A real change of wording in HTML criteria is one changed event with both texts."""
    old = normalize(study_stub(eligibilityModule={"eligibilityCriteria": CRITERIA_HTML}))
    reworded = CRITERIA_MD.replace("18", "21")
    new = normalize(study_stub(eligibilityModule={"eligibilityCriteria": reworded}))
    changes = [(c.field, c.kind.value, c.old, c.new) for c in diff_records(old, new)]
    assert changes == [("eligibility.criteria", "changed", clean_text(CRITERIA_HTML), reworded)]


def test_whitespace_only_edit_is_no_change_event() -> None:
    """Re-wrapped text with other spacing: no event."""
    old = normalize(study_stub(descriptionModule={"briefSummary": "One two.\n\nThree four."}))
    new = normalize(study_stub(descriptionModule={"briefSummary": "One  two.\nThree\tfour. "}))
    assert diff_records(old, new) == []


def test_outcome_identity_uses_cleaned_text() -> None:
    """``&amp;`` and ``&`` in a measure are the same outcome: same canonical value."""

    def outcomes(measure: str) -> Study:
        items = [{"measure": measure, "timeFrame": "1 y"}, {"measure": "B", "timeFrame": "2 y"}]
        return study_stub(outcomesModule={"primaryOutcomes": items})

    old, new = normalize(outcomes("Q3 &amp; Q4")), normalize(outcomes("Q3 & Q4"))
    assert old["outcomes.primary"] == new["outcomes.primary"]
    keys = IDENTITY_KEYS["outcomes.primary"]
    assert [identity_of(keys, item) for item in old["outcomes.primary"]] == [("B",), ("Q3 & Q4",)]


def test_escape_only_edit_of_a_list_item_is_no_change_event() -> None:
    """A measure losing its markdown escape (so sorting elsewhere) is no event."""

    def outcomes(measure: str) -> Study:
        items = [{"measure": measure}, {"measure": "HbA1c \\< 7%"}]
        return study_stub(outcomesModule={"secondaryOutcomes": items})

    old = normalize(outcomes("HbA1c \\> 9%"))
    new = normalize(outcomes("HbA1c > 9%"))
    assert [o["measure"] for o in new["outcomes.secondary"]] == ["HbA1c > 9%", "HbA1c \\< 7%"]
    assert diff_records(old, new) == []


def test_value_changing_type_is_still_a_change() -> None:
    """1 -> true is not loosely equal: JSON types count."""
    old = normalize(study_stub(designModule={"enrollmentInfo": {"count": 1}}))
    new = normalize(study_stub(designModule={"enrollmentInfo": {"count": True}}))
    assert [c.field for c in diff_records(old, new)] == ["design.enrollmentCount"]


_BULLET_LINE = re.compile(r"^[ \t]*(?:[*+-]|[0-9]{1,3}[.)])[ \t]", re.MULTILINE)
_WRAPPINGS = {
    "one <p>": lambda text: f"<p>{text}</p>",
    "a <p> per paragraph": lambda text: "".join(f"<p>{p}</p>" for p in text.split("\n\n")),
    "<div> and <br>": lambda text: "<div>" + text.replace("\n\n", "<br/>\n") + "</div>",
}


def _with_bullets(study: Study) -> list[tuple[str, Study, Study]]:
    """Copies of ``study`` with one bulleted text wrapped in markup, per wrapping and text."""
    copies = []
    protocol = study["protocolSection"]
    texts = [("eligibilityModule", "eligibilityCriteria", None)] + [
        ("outcomesModule", kind, i)
        for kind in ("primaryOutcomes", "secondaryOutcomes")
        for i in range(len(protocol.get("outcomesModule", {}).get(kind, [])))
    ]
    for module, key, index in texts:
        holder = protocol.get(module, {})
        target = holder.get(key) if index is None else holder[key][index]
        text = target if index is None else target.get("description")
        if not isinstance(text, str) or not _BULLET_LINE.search(text):
            continue
        for name, wrap in _WRAPPINGS.items():
            edited = orjson.loads(orjson.dumps(study))
            place = edited["protocolSection"][module]
            if index is None:
                place[key] = wrap(text)
            else:
                place[key][index]["description"] = wrap(text)
            copies.append((f"{module}.{key}[{index}] in {name}", study, edited))
    return copies


@needs_data
def test_markup_around_bulleted_text_is_no_change_nor_class(studies: dict[str, Study]) -> None:
    """Real bulleted texts wrapped as HTML-era versions wrapped them: no event, no class."""
    from mirror.record import classify

    every = [c for s in list(studies.values())[:400] for c in _with_bullets(s)]
    assert len(every) > 1000  # criteria and outcome descriptions with bullets are common
    cases = every[::15]  # each case diffs long texts (~35 ms): a spread sample is enough
    changed = []
    for label, plain, wrapped in cases:
        old, new = normalize(plain, DEFAULT_IGNORE), normalize(wrapped, DEFAULT_IGNORE)
        if diff_records(old, new) or classify(old, new):
            changed.append(label)
    assert changed == []
