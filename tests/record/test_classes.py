"""Change classes (mirror.record.classes): each test edits copies of real records and classifies."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from class_cases import DATA, KINDS, PLAN, build_cases, outcome_labels

from mirror.record import CATALOG, Canonical, VersionClass, class_matches, classify, normalize

DOCS = Path(__file__).resolve().parents[2] / "docs" / "classes.md"
# RECRUITING; 5 sites in Taiwan and Australia; 2 primary and 4 secondary outcomes.
STUDY = "NCT05756322"
# RECRUITING; one primary outcome (AEs), three secondary, two other.
ONE_PRIMARY = "NCT02682511"
# Another study's primary outcome: "Fusion rate" (spine surgery).
UNRELATED = "NCT03853356"
# Primary "Disease free survival (DFS)", secondary "Overall survival (OS)".
ONCOLOGY = "NCT04267848"

Study = dict[str, Any]


def raw(nct_id: str) -> Study:
    return orjson.loads((DATA / f"{nct_id}.json").read_bytes())  # type: ignore[no-any-return]


def canon(study: Study) -> Canonical:
    return normalize(study, ignore=["derived.*"])


def edit(study: Study, change: Callable[[Study], None]) -> Study:
    edited = copy.deepcopy(study)
    change(edited)
    return edited


def names(found: list[VersionClass]) -> list[str]:
    return [c.name for c in found]


def module(study: Study, name: str) -> dict[str, Any]:
    return study["protocolSection"].setdefault(name, {})  # type: ignore[no-any-return]


def outcomes(study: Study, kind: str) -> list[dict[str, Any]]:
    return module(study, "outcomesModule").setdefault(f"{kind}Outcomes", [])  # type: ignore[no-any-return]


def set_status(study: Study, **fields: Any) -> None:
    module(study, "statusModule").update(fields)


# ---------------------------------------------------------------------- versions


def test_first_version_has_no_classes() -> None:
    """A study's first version (no previous one) has no classes."""
    assert classify(None, canon(raw(STUDY))) == []


def test_study_gone_from_registry_is_removed() -> None:
    """A study that left the registry gives exactly study.removed with its last status."""
    found = classify(canon(raw(STUDY)), None)
    assert [c.as_dict() for c in found] == [{"name": "study.removed", "last_status": "RECRUITING"}]


def test_same_content_has_no_classes() -> None:
    """Two versions with the same content, in another order, have no classes."""
    study = raw(STUDY)
    reordered = edit(study, lambda s: outcomes(s, "secondary").reverse())
    assert classify(canon(study), canon(reordered)) == []


def with_texts(criteria: str, measure: str, time_frame: str) -> Canonical:
    def change(s: Study) -> None:
        outcomes(s, "primary")[0].update(measure=measure, timeFrame=time_frame)
        module(s, "eligibilityModule")["eligibilityCriteria"] = criteria

    return canon(edit(raw(ONE_PRIMARY), change))


def test_markup_only_differences_have_no_classes() -> None:
    """HTML tags, entities, markdown escapes and whitespace in text are no change."""
    old = with_texts(
        "<p>Inclusion Criteria:</p><ul><li>Age &gt;= 18 years</li><li>FVC &lt; 80%</li></ul>",
        "<p>Incidence of adverse events (AEs) &amp; SAEs</p>",
        "56&nbsp;weeks ",
    )
    new = with_texts(
        "Inclusion Criteria:\n\n* Age \\>= 18 years\n* FVC \\< 80%",
        "Incidence of adverse events (AEs) & SAEs",
        "56 weeks",
    )
    assert classify(old, new) == []
    # Without normalize's cleaning too: classify's own comparison ignores the markup.
    primary = [
        dict(
            new["outcomes.primary"][0],
            measure="<p>Incidence of adverse events (AEs) &amp; SAEs</p>",
        )
    ]
    assert classify(dict(new, **{"outcomes.primary": primary}), new) == []


# ---------------------------------------------------------------------- status and results


def test_terminated_is_stopped_with_the_reason() -> None:
    """RECRUITING -> TERMINATED is status.stopped with from, to and why_stopped."""
    study = raw(STUDY)
    stopped = edit(study, lambda s: set_status(s, overallStatus="TERMINATED", whyStopped="Funding"))
    found = classify(canon(study), canon(stopped))
    assert [c.as_dict() for c in found] == [
        {
            "name": "status.stopped",
            "from": "RECRUITING",
            "to": "TERMINATED",
            "why_stopped": "Funding",
        }
    ]


def test_completed_is_its_own_class() -> None:
    """-> COMPLETED is status.completed, not status.changed."""
    study = raw(STUDY)
    done = edit(study, lambda s: set_status(s, overallStatus="COMPLETED"))
    assert [c.as_dict() for c in classify(canon(study), canon(done))] == [
        {"name": "status.completed", "from": "RECRUITING"}
    ]


def test_other_status_change_is_status_changed() -> None:
    """RECRUITING -> ACTIVE_NOT_RECRUITING is status.changed."""
    study = raw(STUDY)
    closed = edit(study, lambda s: set_status(s, overallStatus="ACTIVE_NOT_RECRUITING"))
    assert [c.as_dict() for c in classify(canon(study), canon(closed))] == [
        {"name": "status.changed", "from": "RECRUITING", "to": "ACTIVE_NOT_RECRUITING"}
    ]


def test_results_posted_counts_days_from_primary_completion() -> None:
    """hasResults false -> true is results.posted, with the days since primary completion."""
    study = raw(STUDY)

    def post(s: Study) -> None:
        s["hasResults"] = True
        set_status(s, resultsFirstPostDateStruct={"date": "2026-12-15", "type": "ACTUAL"})

    found = classify(canon(study), canon(edit(study, post)))
    assert [c.as_dict() for c in found] == [
        {"name": "results.posted", "date": "2026-12-15", "days_after_primary_completion": 365}
    ]


# ---------------------------------------------------------------------- enrollment


def enrollment(count: int, kind: str) -> Callable[[Study], None]:
    return lambda s: module(s, "designModule").update(enrollmentInfo={"count": count, "type": kind})


def test_enrollment_scenario_changed_then_actualized() -> None:
    """394 -> 1063 (estimated) is a major change; -> 1062 ACTUAL is only actualized."""
    study = raw(STUDY)
    v1, v2, v3 = (
        canon(edit(study, enrollment(n, k)))
        for n, k in ((394, "ESTIMATED"), (1063, "ESTIMATED"), (1062, "ACTUAL"))
    )
    assert [c.as_dict() for c in classify(v1, v2)] == [
        {
            "name": "enrollment.changed",
            "from": 394,
            "to": 1063,
            "percent": 169.8,
            "major": True,
            "type": "ESTIMATED",
        }
    ]
    assert [c.as_dict() for c in classify(v2, v3)] == [
        {"name": "enrollment.actualized", "from": 1063, "to": 1062, "percent": -0.1, "major": False}
    ]


def test_small_enrollment_change_is_not_major() -> None:
    """60 -> 66 is +10%: enrollment.changed with major false."""
    study = raw(STUDY)
    found = classify(canon(study), canon(edit(study, enrollment(66, "ESTIMATED"))))
    assert names(found) == ["enrollment.changed"]
    assert (found[0].params["percent"], found[0].params["major"]) == (10.0, False)


# ---------------------------------------------------------------------- dates


def test_primary_completion_slipped_months() -> None:
    """2025-12-15 -> 2026-06-15 is dates.slipped by 182 days, major."""
    study = raw(STUDY)
    moved = edit(
        study,
        lambda s: set_status(
            s, primaryCompletionDateStruct={"date": "2026-06-15", "type": "ESTIMATED"}
        ),
    )
    assert [c.as_dict() for c in classify(canon(study), canon(moved))] == [
        {
            "name": "dates.slipped",
            "date": "primary_completion",
            "from": "2025-12-15",
            "to": "2026-06-15",
            "shift_days": 182,
            "major": True,
        }
    ]


def test_date_moved_earlier_is_advanced() -> None:
    """A start date moved 10 days earlier is dates.advanced with shift -10, not major."""
    study = raw(STUDY)
    moved = edit(study, lambda s: set_status(s, startDateStruct={"date": "2023-07-10"}))
    found = classify(canon(study), canon(moved))
    assert names(found) == ["dates.advanced"]
    assert (found[0].params["shift_days"], found[0].params["major"]) == (-10, False)


def test_date_turning_actual_within_its_month_is_only_actualized() -> None:
    """ESTIMATED 2025-12 -> ACTUAL 2025-12-20 is dates.actualized, no shift (same month)."""
    study = edit(
        raw(STUDY),
        lambda s: set_status(s, completionDateStruct={"date": "2025-12", "type": "ESTIMATED"}),
    )
    actual = edit(
        study,
        lambda s: set_status(s, completionDateStruct={"date": "2025-12-20", "type": "ACTUAL"}),
    )
    assert [c.as_dict() for c in classify(canon(study), canon(actual))] == [
        {"name": "dates.actualized", "date": "completion", "on": "2025-12-20"}
    ]


def test_date_turning_actual_later_is_actualized_and_slipped() -> None:
    """ESTIMATED 2025-12 -> ACTUAL 2026-02-01 is both dates.actualized and dates.slipped."""
    study = edit(
        raw(STUDY),
        lambda s: set_status(s, completionDateStruct={"date": "2025-12", "type": "ESTIMATED"}),
    )
    late = edit(
        study,
        lambda s: set_status(s, completionDateStruct={"date": "2026-02-01", "type": "ACTUAL"}),
    )
    found = classify(canon(study), canon(late))
    assert names(found) == ["dates.slipped", "dates.actualized"]
    assert found[0].params["shift_days"] == 62  # from 2025-12-01


# ---------------------------------------------------------------------- outcomes


def replace_primary_with_unrelated(s: Study) -> None:
    outcomes(s, "primary")[:] = [copy.deepcopy(outcomes(raw(UNRELATED), "primary")[0])]


def test_outcome_switching_scenario() -> None:
    """Primary A replaced by an unrelated B; B's time frame edited; B moved to secondary."""
    v1 = raw(ONE_PRIMARY)
    v2 = edit(v1, replace_primary_with_unrelated)
    v3 = edit(v2, lambda s: outcomes(s, "primary")[0].update(timeFrame="12 months"))

    def demote(s: Study) -> None:
        outcomes(s, "secondary").append(outcomes(s, "primary").pop())

    v4 = edit(v3, demote)
    a = "Incidence of adverse events (AEs) and Serious AEs (SAEs)"
    first, second, third = (classify(canon(o), canon(n)) for o, n in ((v1, v2), (v2, v3), (v3, v4)))
    assert [(c.name, c.params["measure"]) for c in first] == [
        ("outcomes.primary.added", "Fusion rate"),
        ("outcomes.primary.removed", a),
    ]
    assert [c.as_dict() for c in second] == [
        {
            "name": "outcomes.primary.timeframe_changed",
            "measure": "Fusion rate",
            "from_time_frame": "6 months",
            "to_time_frame": "12 months",
        }
    ]
    assert [c.as_dict() for c in third] == [
        {
            "name": "outcomes.primary.demoted",
            "measure": "Fusion rate",
            "to_measure": "Fusion rate",
            "to": "secondary",
            "similarity": 1.0,
        }
    ]


def test_reworded_primary_reports_both_measures() -> None:
    """An abbreviation spelt out and a qualifier added is outcomes.primary.reworded."""
    study = raw(ONE_PRIMARY)
    new = "Incidence of adverse events and serious adverse events (safety population)"
    found = classify(
        canon(study), canon(edit(study, lambda s: outcomes(s, "primary")[0].update(measure=new)))
    )
    assert names(found) == ["outcomes.primary.reworded"]
    assert found[0].params["from_measure"].startswith("Incidence of adverse events (AEs)")
    assert found[0].params["to_measure"] == new
    assert 0.5 <= found[0].params["similarity"] < 1


def test_reworded_with_new_time_frame_gives_both_classes() -> None:
    """Rewording a measure and editing its time frame in one version gives both classes."""
    study = raw(ONE_PRIMARY)
    edited = edit(
        study,
        lambda s: outcomes(s, "primary")[0].update(
            measure="Incidence of AEs and SAEs", timeFrame="52 weeks"
        ),
    )
    found = classify(canon(study), canon(edited))
    assert names(found) == ["outcomes.primary.reworded", "outcomes.primary.timeframe_changed"]
    assert found[1].params["to_time_frame"] == "52 weeks"


def test_description_edit_alone_is_description_changed() -> None:
    """The same measure with an edited description is outcomes.primary.description_changed."""
    study = raw(ONE_PRIMARY)

    def extend(s: Study) -> None:
        outcomes(s, "primary")[0]["description"] += " Graded by CTCAE v5.0."

    found = classify(canon(study), canon(edit(study, extend)))
    assert names(found) == ["outcomes.primary.description_changed"]


def test_survival_endpoint_swapped_is_removed_and_added() -> None:
    """Disease-free -> progression-free survival (same description) is a new measure."""
    study = raw(ONCOLOGY)
    pfs = "Progression-free survival (PFS)"
    found = classify(
        canon(study), canon(edit(study, lambda s: outcomes(s, "primary")[0].update(measure=pfs)))
    )
    assert [(c.name, c.params["measure"]) for c in found] == [
        ("outcomes.primary.added", pfs),
        ("outcomes.primary.removed", "Disease free survival (DFS)"),
    ]


def test_time_point_in_measure_changed_is_removed_and_added() -> None:
    """ "... at 12 weeks" -> "... at 24 weeks" in the measure is another measure."""
    at = "Change from baseline in forced vital capacity (FVC) at {} weeks"
    study = edit(
        raw(ONE_PRIMARY), lambda s: outcomes(s, "secondary")[0].update(measure=at.format(12))
    )
    later = edit(study, lambda s: outcomes(s, "secondary")[0].update(measure=at.format(24)))
    found = classify(canon(study), canon(later))
    assert names(found) == ["outcomes.secondary.added", "outcomes.secondary.removed"]


def other_measure(old: str, new: str) -> list[VersionClass]:
    """Classify a version where ONE_PRIMARY's first other outcome went from ``old`` to ``new``."""
    before = edit(raw(ONE_PRIMARY), lambda s: outcomes(s, "other")[0].update(measure=old))
    after = edit(before, lambda s: outcomes(s, "other")[0].update(measure=new))
    return classify(canon(before), canon(after))


def test_word_swapped_inside_a_measure_is_another_measure() -> None:
    """left -> right ventricular function, the rest unchanged, is removed + added."""
    found = other_measure(
        "Change from baseline in left ventricular function as determined by cardiac MRI",
        "Change from baseline in right ventricular function as determined by cardiac MRI",
    )
    assert names(found) == ["outcomes.other.added", "outcomes.other.removed"]


def test_qualifier_swapped_or_typo_fixed_is_a_rewording() -> None:
    """A qualifier replaced by another, or a typo fixed, keeps the outcome: reworded."""
    swapped = other_measure(
        "Right ventricular ejection fraction by cardiac MRI (per-protocol population)",
        "Right ventricular ejection fraction by cardiac MRI as assessed by the central reader",
    )
    fixed = other_measure(
        "Ventricular funtcion by cardiac MRI", "Ventricular function by cardiac MRI"
    )
    assert names(swapped) == names(fixed) == ["outcomes.other.reworded"]


def test_secondary_promoted_to_primary() -> None:
    """A secondary outcome moved to the primary list is outcomes.primary.promoted."""
    study = raw(ONCOLOGY)
    promoted = edit(study, lambda s: outcomes(s, "primary").append(outcomes(s, "secondary").pop(0)))
    found = classify(canon(study), canon(promoted))
    assert [c.as_dict() for c in found] == [
        {
            "name": "outcomes.primary.promoted",
            "measure": "Overall survival (OS)",
            "from_measure": "Overall survival (OS)",
            "from": "secondary",
            "similarity": 1.0,
        }
    ]


def test_primary_and_secondary_swapped() -> None:
    """Swapping the primary and a secondary outcome is one demotion and one promotion."""
    study = raw(ONCOLOGY)

    def swap(s: Study) -> None:
        primary, secondary = outcomes(s, "primary"), outcomes(s, "secondary")
        primary[0], secondary[0] = secondary[0], primary[0]

    found = classify(canon(study), canon(edit(study, swap)))
    assert [(c.name, c.params["measure"]) for c in found] == [
        ("outcomes.primary.demoted", "Disease free survival (DFS)"),
        ("outcomes.primary.promoted", "Overall survival (OS)"),
    ]


def test_outcome_order_does_not_matter_to_classify() -> None:
    """classify() matches outcomes by text, not by list position, even on unsorted lists."""
    old = canon(raw(STUDY))
    new = dict(old, **{"outcomes.secondary": list(reversed(old["outcomes.secondary"]))})
    assert classify(old, new) == []


# ---------------------------------------------------------------------- other areas


def test_eligibility_changed_names_the_fields() -> None:
    """Edited criteria and a new minimum age give eligibility.changed with both paths."""
    study = raw(STUDY)

    def tighten(s: Study) -> None:
        eligibility = module(s, "eligibilityModule")
        eligibility["eligibilityCriteria"] += "\n* No prior stem cell transplant"
        eligibility["minimumAge"] = "21 Years"

    assert [c.as_dict() for c in classify(canon(study), canon(edit(study, tighten)))] == [
        {"name": "eligibility.changed", "fields": ["eligibility.criteria", "eligibility.minAge"]}
    ]


def test_sites_added_and_removed_with_countries() -> None:
    """One site closed in Taiwan and two opened in Japan and France: both classes, by country."""
    study = raw(STUDY)

    def move_sites(s: Study) -> None:
        sites = module(s, "contactsLocationsModule")["locations"]
        sites[:] = [
            site for site in sites if site["facility"] != "National Taiwan University Hospital"
        ]
        sites.append({"facility": "Osaka University Hospital", "city": "Osaka", "country": "Japan"})
        sites.append({"facility": "Hopital Edouard Herriot", "city": "Lyon", "country": "France"})

    assert [c.as_dict() for c in classify(canon(study), canon(edit(study, move_sites)))] == [
        {"name": "sites.added", "count": 2, "countries": ["France", "Japan"]},
        {"name": "sites.removed", "count": 1, "countries": ["Taiwan"]},
    ]


def test_sponsor_and_collaborators_changed() -> None:
    """A new lead sponsor and a swapped collaborator give both sponsor classes."""
    study = raw(STUDY)

    def acquire(s: Study) -> None:
        sponsors = module(s, "sponsorCollaboratorsModule")
        sponsors["leadSponsor"] = {"name": "Big Pharma AG", "class": "INDUSTRY"}
        sponsors["collaborators"] = [{"name": "Lin BioScience, Inc", "class": "INDUSTRY"}]

    assert [c.as_dict() for c in classify(canon(study), canon(edit(study, acquire)))] == [
        {"name": "sponsor.changed", "from": "Lin BioScience, Inc", "to": "Big Pharma AG"},
        {
            "name": "sponsor.collaborators_changed",
            "added": ["Lin BioScience, Inc"],
            "removed": ["Lin BioScience Pty Ltd"],
        },
    ]


def test_phases_changed() -> None:
    """PHASE1/PHASE2 -> PHASE2 is design.phases_changed."""
    study = raw(STUDY)
    later = edit(study, lambda s: module(s, "designModule").update(phases=["PHASE2"]))
    assert [c.as_dict() for c in classify(canon(study), canon(later))] == [
        {"name": "design.phases_changed", "from": ["PHASE1", "PHASE2"], "to": ["PHASE2"]}
    ]


# ---------------------------------------------------------------------- contract


def test_classes_come_in_catalog_order() -> None:
    """Several classes of one version come in catalog order."""
    study = raw(STUDY)

    def update(s: Study) -> None:
        set_status(s, overallStatus="COMPLETED")
        enrollment(75, "ACTUAL")(s)
        module(s, "designModule")["phases"] = ["PHASE2"]
        outcomes(s, "primary").pop()

    found = names(classify(canon(study), canon(edit(study, update))))
    ranks = [next(i for i, info in enumerate(CATALOG) if info.name == n) for n in found]
    assert found[0] == "status.completed" and ranks == sorted(ranks) and len(found) == 4


def test_every_emitted_class_is_in_the_catalog_with_its_params() -> None:
    """Each class emitted on the labelled set has a catalog entry naming exactly its params."""
    params = {info.name: set(info.params) for info in CATALOG}
    seen = {c.name: set(c.params) for case in labelled() for c in classify(case.old, case.new)}
    assert seen and all(params[name] == keys for name, keys in seen.items())


def test_catalog_names_are_unique_and_documented() -> None:
    """Catalog names are unique, and docs/classes.md has a section for each."""
    catalog = [info.name for info in CATALOG]
    documented = set(re.findall(r"^### `([a-z_.]+)`", DOCS.read_text(), flags=re.MULTILINE))
    assert len(set(catalog)) == len(catalog) and set(catalog) <= documented


def test_as_dict_is_json() -> None:
    """as_dict() is the name plus the parameters, serialisable as JSON."""
    found = VersionClass("enrollment.changed", {"from": 1, "to": 2, "percent": 100.0})
    assert orjson.loads(orjson.dumps(found.as_dict())) == {
        "name": "enrollment.changed",
        "from": 1,
        "to": 2,
        "percent": 100.0,
    }


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("outcomes.primary.*", "outcomes.primary.demoted", True),
        ("outcomes.*", "outcomes.secondary.added", True),
        ("outcomes.*.added", "outcomes.other.added", True),
        ("dates.s?ipped", "dates.slipped", True),
        ("outcomes.primary.*", "outcomes.secondary.added", False),
        ("status.stop", "status.stopped", False),
        ("dates.[sa]*", "dates.slipped", False),  # only * and ? are special
    ],
)
def test_class_matches(pattern: str, name: str, matches: bool) -> None:
    """Class globs: * any run (dots too), ? one character, everything else literal."""
    assert class_matches(pattern, name) is matches


# ---------------------------------------------------------------------- labelled set


_LABELLED: list[Any] = []


def labelled() -> list[Any]:
    if not _LABELLED:
        _LABELLED.extend(build_cases())
    return _LABELLED


def test_labelled_set_is_deterministic_and_covers_every_kind() -> None:
    """The labelled set is the same on every build, and holds every kind of case in PLAN."""
    again = build_cases()
    assert [(c.case_id, c.expected) for c in again] == [(c.case_id, c.expected) for c in labelled()]
    assert len(again) >= 150 and {c.kind for c in again} == set(PLAN)


def test_labelled_no_ops_expect_nothing_and_get_nothing() -> None:
    """Reordered and markup-only cases expect no outcome class, and classify agrees."""
    no_ops = [c for c in labelled() if c.kind.startswith("noop")]
    assert no_ops and all(not c.expected for c in no_ops)
    assert all(outcome_labels(classify(c.old, c.new)) == frozenset() for c in no_ops)


def test_labelled_expectations_name_real_outcome_lists() -> None:
    """Every expected class is an outcome class of the catalog."""
    catalog = {info.name for info in CATALOG}
    expected = {name for case in labelled() for name, _ in case.expected}
    assert expected <= catalog and {n.split(".")[1] for n in expected} <= set(KINDS)
