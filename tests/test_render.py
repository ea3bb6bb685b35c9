"""Study pages: Markdown against seed ``000_*.txt`` section by section, change lines, HTML."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fake_ctgov import FakeCtgov, load_study
from helpers import sponsor_update, sync_ids
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import update

from mirror.app import App
from mirror.config import PagesSettings
from mirror.describe import change_line
from mirror.feed import PageInput, page_input
from mirror.render import render_html, render_markdown
from mirror.store import ChangeEvent, ChangeKind

SEED_000 = next((Path(__file__).resolve().parents[2] / "shared" / "seeds").glob("000_*.txt"))
SEED = SEED_000.read_text()
SEED_SETTINGS = PagesSettings(
    canonical_base_url="https://parkinsonspathways.com/agent/trials",
    footer_note="This page is a raw mirror with no AI summary, no editorial enrichment, "
    "and no Parkinson's-specific filtering.",
)
SEEN = datetime(2026, 5, 12, 7, 0, 35, 585000, tzinfo=UTC)
# Real records covering the shapes a page must handle.
RECORDS = {
    "NCT01901029": "observational, estimated enrollment, every seed section filled",
    "NCT00069082": "no detailed description, no outcomes, six sites",
    "NCT00033839": "no detailed description, no arms, no outcomes, 26 sites",
    "NCT00143221": "no sites",
    "NCT00084552": "has results",
    "NCT00936338": "no official title, no healthy-volunteers flag",
    "NCT00512707": "other outcomes",
}


def event(
    field: str,
    kind: ChangeKind = ChangeKind.ADDED,
    old: Any = None,
    new: Any = None,
    *,
    version: int = 1,
    at: datetime = SEEN,
    nct_id: str = "NCT03039062",
) -> ChangeEvent:
    initial = version == 1 and kind is ChangeKind.ADDED
    return ChangeEvent(
        nct_id=nct_id, version=version, field=field, kind=kind, old=old, new=new,
        observed_at=at, source_date=None, initial=initial,
    )  # fmt: skip


def page_of(
    study: dict[str, Any], events: Sequence[ChangeEvent] = (), version: int = 1
) -> PageInput:
    nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    return PageInput(study, nct_id, version, SEEN, list(events))


def real_page(nct_id: str, events: Sequence[ChangeEvent] = ()) -> PageInput:
    return page_of(load_study(nct_id), events)


def headings(markdown: str) -> list[str]:
    return [re.sub(r"\(\d+\)", "(N)", h) for h in re.findall(r"^##? .*$", body(markdown), re.M)]


def body(markdown: str) -> str:
    """The page without its front matter."""
    assert markdown.startswith("---\n")
    return markdown.split("\n---\n", 1)[1]


def front_lines(markdown: str) -> list[str]:
    return markdown.split("---\n")[1].splitlines()


def front_matter(markdown: str) -> dict[str, Any]:
    """The front matter parsed by a YAML parser when one is installed, else checked by hand."""
    block = "\n".join(front_lines(markdown))
    try:
        import yaml
    except ImportError:
        return {
            k: _hand_checked(v) for k, v in (line.split(": ", 1) for line in block.splitlines())
        }
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


def _hand_checked(value: str) -> Any:
    if value.startswith('"'):
        return json.loads(value)
    assert re.fullmatch(r"[^-?:,\[\]{}#&*!|>'\"%@`\s](?:(?!: | #)[^\"\n])*(?<![:\s])", value), value
    return value


def md_structure(markdown: str) -> tuple[list[str], list[str]]:
    """(h1/h2 headings, code-fence contents) as a CommonMark parser reads the page body."""
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(body(markdown))
    heads = [
        f"{t.tag} {tokens[i + 1].content}"
        for i, t in enumerate(tokens)
        if t.type == "heading_open"
    ]  # fmt: skip
    return heads, [t.content for t in tokens if t.type == "fence"]


def section(markdown: str, title: str) -> str:
    """The text of section ``## title`` (up to the next section or the footer)."""
    match = re.search(
        rf"^## {re.escape(title)}\n\n(.*?)(?=\n\n## |\n\n---\n)", markdown, re.M | re.S
    )
    assert match, f"no section {title!r}"
    return match.group(1)


# -- the seed page ----------------------------------------------------------------------------


def seed_record() -> dict[str, Any]:
    """NCT03039062 as API v2 would give it, rebuilt from seed 000 (the data set lacks it): the
    scalars typed in here, the registry's long texts taken from the seed itself."""
    texts = {t: section(SEED, t) for t in ("Brief Summary", "Detailed Description", "Eligibility")}
    arms = re.findall(r"^- \*\*(.+?)\*\* — (.+)$", section(SEED, "Arms"), re.M)
    outcome = r"^- \*\*(.+?)\*\* _\(time frame: (.+?)\)_(?: — (.+))?$"
    primary = re.findall(outcome, section(SEED, "Primary Outcomes"), re.M)
    secondary = re.findall(outcome, section(SEED, "Secondary Outcomes"), re.M)

    def outcomes(found: list[tuple[str, str, str]]) -> list[dict[str, str]]:
        return [
            {"measure": m, "timeFrame": t, **({"description": d} if d else {})}
            for m, t, d in found
        ]  # fmt: skip

    title = re.search(r"^# (.+)$", SEED, re.M)
    official = re.search(r"^\*\*Official Title:\*\* (.+)$", SEED, re.M)
    assert title and official
    return {
        "protocolSection": {
            "identificationModule": {
                "nctId": "NCT03039062", "briefTitle": title.group(1),
                "officialTitle": official.group(1),
            },
            "statusModule": {
                "overallStatus": "UNKNOWN",
                "startDateStruct": {"date": "2016-07", "type": "ACTUAL"},
                "primaryCompletionDateStruct": {"date": "2017-06", "type": "ESTIMATED"},
                "completionDateStruct": {"date": "2017-07", "type": "ESTIMATED"},
                "lastUpdatePostDateStruct": {"date": "2017-03-30", "type": "ESTIMATED"},
            },
            "sponsorCollaboratorsModule": {
                "leadSponsor": {"name": "Chinese Academy of Medical Sciences", "class": "OTHER"}
            },
            "descriptionModule": {
                "briefSummary": texts["Brief Summary"],
                "detailedDescription": texts["Detailed Description"],
            },
            "conditionsModule": {
                "conditions": ["Chemotherapeutic Toxicity", "Malignant Tumor", "Liver Injury"]
            },
            "designModule": {
                "studyType": "OBSERVATIONAL",
                "enrollmentInfo": {"count": 180, "type": "ESTIMATED"},
            },
            "armsInterventionsModule": {
                "armGroups": [{"label": label, "description": d} for label, d in arms]
            },
            "outcomesModule": {
                "primaryOutcomes": outcomes(primary), "secondaryOutcomes": outcomes(secondary),
            },
            "eligibilityModule": {
                "eligibilityCriteria": texts["Eligibility"].split("```\n")[1].rstrip("`\n"),
                "healthyVolunteers": True, "sex": "ALL",
                "minimumAge": "18 Years", "maximumAge": "70 Years",
            },
            "contactsLocationsModule": {
                "locations": [{
                    "facility": "Cancer Hospital, ChineseAMS", "status": "RECRUITING",
                    "city": "Beijing", "state": "Beijing Municipality", "country": "China",
                }]
            },
        },
        "hasResults": False,
    }  # fmt: skip


def seed_events() -> list[ChangeEvent]:
    """The first version's events: every field of the record, in canonical (path) order."""
    listed = re.findall(r"^- `(.+?)` — added", SEED, re.M)
    others = ["conditions.conditions", "descriptions.briefSummary", "status.startDate"]
    return [event(f, new="…") for f in sorted(listed + others)]


def test_seed_page_is_reproduced_byte_for_byte() -> None:
    """The seed's own study, first sighting, with the seed site's settings, renders as seed 000."""
    page = page_of(seed_record(), seed_events())
    assert render_markdown(page, SEED_SETTINGS) == SEED


def test_default_recent_fields_are_the_seed_list() -> None:
    """`pages.recent_fields` by default lists exactly the seed's fields, in the seed's order."""
    listed = re.findall(r"^- `(.+?)` — added", SEED, re.M)
    defaults = PagesSettings().recent_fields
    assert list(defaults[:-1]) == listed[:-1] and defaults[-1] == "locations.*"


# -- structure of real records ------------------------------------------------------------------


@pytest.mark.parametrize("nct_id", RECORDS)
def test_front_matter_has_the_seed_keys_order_and_quoting(nct_id: str) -> None:
    """Front matter: the seed's keys in order, URLs and instant quoted, valid YAML, right values."""
    page = render_markdown(real_page(nct_id), PagesSettings())
    lines = front_lines(page)
    assert [line.split(":", 1)[0] for line in lines] == [
        line.split(":", 1)[0] for line in front_lines(SEED)
    ]
    for key in ("canonical_url", "clinicaltrials_gov", "last_seen_at"):
        assert next(v for v in lines if v.startswith(key + ": ")).endswith('"')
    values = front_matter(page)
    ident = load_study(nct_id)["protocolSection"]["identificationModule"]
    assert values["title"] == ident["briefTitle"]
    assert values["nct_id"] == nct_id
    assert values["clinicaltrials_gov"] == f"https://clinicaltrials.gov/study/{nct_id}"
    assert values["canonical_url"] == f"http://127.0.0.1:8000/trials/{nct_id}.md"
    assert values["last_seen_at"] == "2026-05-12T07:00:35.585Z"
    assert values["source"] == "ClinicalTrials.gov (mirrored, no enrichment)"


@pytest.mark.parametrize("nct_id", RECORDS)
def test_sections_are_the_seed_sections_in_order(nct_id: str) -> None:
    """Every seed heading is there, in order, whatever the record lacks (Other Outcomes extra)."""
    page = render_markdown(real_page(nct_id), PagesSettings())
    expected = headings(SEED)[1:]
    if load_study(nct_id)["protocolSection"].get("outcomesModule", {}).get("otherOutcomes"):
        expected.insert(expected.index("## Secondary Outcomes") + 1, "## Other Outcomes")
    assert headings(page)[1:] == expected
    assert headings(page)[0].startswith("# ")
    assert md_structure(page)[0] == ["h1 " + headings(page)[0][2:]] + [
        "h2 " + re.sub(r"\(N\)", f"({len(_sites(nct_id))})", h[3:]) for h in expected
    ]


def _sites(nct_id: str) -> list[Any]:
    return list(
        load_study(nct_id)["protocolSection"]
        .get("contactsLocationsModule", {})
        .get("locations", [])
    )


def test_page_top_and_key_facts_follow_the_seed_formats() -> None:
    """Title, official title, NCT link and Key Facts bullets are worded as in the seed."""
    page = render_markdown(real_page("NCT01901029"), PagesSettings())
    top = body(page).split("\n\n## ")[0]
    assert top == (
        "# Male Reproductive Health of Floating Population: a Large-Scale Survey in Dongguan\n\n"
        "**Official Title:** Prevalence of Reproductive Health Problems and Their Social, "
        "Psychological and Physical Association Among Men in Floating Population: a Large-Scale "
        "Cross-Sectional Study in Dongguan City\n\n"
        "**NCT ID:** [NCT01901029](https://clinicaltrials.gov/study/NCT01901029)"
    )
    assert section(page, "Key Facts").splitlines() == [
        "- **Status:** UNKNOWN",
        "- **Study Type:** OBSERVATIONAL",
        "- **Target Enrollment:** 3100",
        "- **Lead Sponsor:** First Affiliated Hospital, Sun Yat-Sen University",
        "- **Conditions:** Sexual Behavior, Erectile Dysfunction, Premature Ejaculation",
        "- **Start Date:** 2013-07",
        "- **Completion Date:** 2013-09",
        "- **CT.gov Last Update:** 2013-08-13",
    ]


def test_eligibility_arms_outcomes_and_sites_follow_the_seed_formats() -> None:
    """Eligibility bullets and fenced criteria, arm, outcome and site bullets as in the seed."""
    page = render_markdown(real_page("NCT01901029"), PagesSettings())
    eligibility = section(page, "Eligibility")
    assert eligibility.startswith(
        "- **Minimum age:** 18 Years\n- **Maximum age:** 70 Years\n- **Sex:** MALE\n"
        "- **Healthy Volunteers:** Yes\n\n```\nInclusion Criteria:\n\n* have reached 18 years old"
    )
    assert eligibility.endswith("* live in Dongguan less than 6 months\n```")
    assert section(page, "Arms").splitlines()[0] == (
        "- **men of floating population** — males who live in Dongguan more than 6 months and "
        "without residence cards"
    )
    assert section(page, "Primary Outcomes") == (
        "- **Prevalence of sexual problems** _(time frame: one month)_ — Determine the prevalence "
        "of sexual problems among men of floating population in Dongguan."
    )
    assert section(page, "Locations (1)") == (
        "- Dongguan Taiping People's Hospital Andrology Department, Dongguan, Guangdong, China "
        "— _RECRUITING_"
    )


def test_missing_parts_are_said_not_dropped() -> None:
    """A record without description, arms, outcomes or sites keeps the headings, saying so."""
    page = render_markdown(real_page("NCT00033839"), PagesSettings())
    assert section(page, "Detailed Description") == "_Not provided._"
    assert section(page, "Arms") == "_None listed._"
    assert section(page, "Primary Outcomes") == "_None listed._"
    assert section(page, "Locations (26)").count("\n- ") == 25
    no_sites = render_markdown(real_page("NCT00143221"), PagesSettings())
    assert section(no_sites, "Locations (0)") == "_None listed._"
    assert front_matter(no_sites)["countries"] == ""


def test_record_with_results_says_when_they_were_posted() -> None:
    """hasResults adds a Results First Posted fact; actual enrollment is not called a target."""
    facts = section(render_markdown(real_page("NCT00084552"), PagesSettings()), "Key Facts")
    assert "- **Results First Posted:** 2021-02-25" in facts.splitlines()
    assert "- **Actual Enrollment:** 116" in facts.splitlines()
    assert "- **Phase:** NA" in facts.splitlines()


def test_multiline_item_texts_stay_inside_their_bullet() -> None:
    """An outcome description with paragraphs and a list is indented under its bullet."""
    study = load_study("NCT01901029")
    study["protocolSection"]["outcomesModule"]["primaryOutcomes"][0]["description"] = (
        "First paragraph.\n\n* point one\n* point two\n\n## not a heading"
    )
    page = render_markdown(page_of(study), PagesSettings())
    assert section(page, "Primary Outcomes").endswith(
        "— First paragraph.\n\n  * point one\n  * point two\n\n  \\## not a heading"
    )
    h2s = [h for h in md_structure(page)[0] if h.startswith("h2 ")]
    assert h2s == ["h2 " + h[3:].replace("(N)", "(1)") for h in headings(SEED)[1:]]


def test_footer_is_the_seeds_with_hard_line_breaks() -> None:
    """The footer: a rule, then canonical and source lines ending in two spaces, then the note."""
    page = render_markdown(real_page("NCT01901029"), PagesSettings(footer_note="Note."))
    assert page.endswith(
        "\n\n---\n\n*Canonical: http://127.0.0.1:8000/trials/NCT01901029.md*  \n"
        "*Source data (authoritative): https://clinicaltrials.gov/study/NCT01901029*  \n"
        "*Note.*\n"
    )


# -- registry text that must not break the page -------------------------------------------------


def test_criteria_with_a_fence_get_a_longer_fence() -> None:
    """Criteria containing ``` and ```` stay one code block, closed by a longer fence."""
    study = load_study("NCT01901029")
    criteria = "Inclusion:\n\n```\n* adults\n````\n\nExclusion:\n\n* none"
    study["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = criteria
    page = render_markdown(page_of(study), PagesSettings())
    assert f"\n`````\n{criteria}\n`````\n" in page
    heads, fences = md_structure(page)
    assert fences == [criteria + "\n"]
    assert "h2 Arms" in heads


def test_registry_text_cannot_open_headings_fences_or_rules() -> None:
    """Headings, fences, rules, setext underlines and HTML blocks in a summary are neutralised."""
    study = load_study("NCT01901029")
    study["protocolSection"]["descriptionModule"]["briefSummary"] = (
        "Intro\n## Injected\nText\n---\nMore\n===\n```\nopen fence\n<!-- open comment\n***"
    )
    page = render_markdown(page_of(study), PagesSettings())
    assert section(page, "Brief Summary") == (
        "Intro\n\\## Injected\nText\n\\---\nMore\n\\===\n\\```\nopen fence\n"
        "\\<!-- open comment\n\\***"
    )
    heads, fences = md_structure(page)
    assert heads == ["h1 " + headings(page)[0][2:]] + [
        "h2 " + h[3:].replace("(N)", "(1)") for h in headings(SEED)[1:]
    ]
    assert len(fences) == 1


_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)  # utf-8: no lone surrogates
_LINES = st.lists(st.sampled_from(["```", "~~~", "# h", "---", "===", "<div>", "- x", "", "  ```"])
    | _TEXT, max_size=8).map("\n".join)  # fmt: skip


@hyp_settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(title=_TEXT.filter(str.strip), summary=_LINES, criteria=_LINES, arm=_LINES)
def test_no_registry_text_changes_the_page_structure(
    title: str, summary: str, criteria: str, arm: str
) -> None:
    """Whatever the text fields hold, the page has the seed's sections and valid front matter."""
    study = load_study("NCT01901029")
    protocol = study["protocolSection"]
    protocol["identificationModule"]["briefTitle"] = title
    protocol["descriptionModule"]["briefSummary"] = summary
    protocol["eligibilityModule"]["eligibilityCriteria"] = criteria
    protocol["armsInterventionsModule"]["armGroups"][0]["description"] = arm
    page = render_markdown(page_of(study), PagesSettings())
    heads = [h for h in md_structure(page)[0] if h.startswith("h2 ")]
    assert heads == ["h2 " + h[3:].replace("(N)", "(1)") for h in headings(SEED)[1:]]
    assert front_matter(page)["title"] == " ".join(title.split())


@pytest.mark.parametrize(
    "title",
    ["Study: a #1 trial", "yes", "- dash", "2024", "1_000", "@home", '"quoted"', "it's",
     "ends with:", "null", "[x]", "12:30", ".inf", "tab\there", "a\u2028b", "del\x7f", "%TAG"],
)  # fmt: skip
def test_front_matter_title_is_valid_yaml_for_awkward_titles(title: str) -> None:
    """Titles YAML would misread (numbers, booleans, indicators, ': ', controls) are quoted."""
    study = load_study("NCT01901029")
    study["protocolSection"]["identificationModule"]["briefTitle"] = title
    page = render_markdown(page_of(study), PagesSettings())
    assert front_matter(page)["title"] == " ".join(title.split())


# -- recent field changes ---------------------------------------------------------------------

DAY = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)


def test_change_lines_for_added_changed_removed() -> None:
    """Added and removed lines name the field; changed lines show OLD → NEW; all dated."""
    assert change_line(event("status.overallStatus", new="RECRUITING", at=DAY)) == (
        "- `status.overallStatus` — added _(2026-06-01)_"
    )
    changed = event("status.overallStatus", ChangeKind.CHANGED, "RECRUITING", "COMPLETED", at=DAY)
    assert change_line(changed) == (
        "- `status.overallStatus` — changed: RECRUITING → COMPLETED _(2026-06-01)_"
    )
    removed = event("status.whyStopped", ChangeKind.REMOVED, old="Funding", version=2, at=DAY)
    assert change_line(removed) == "- `status.whyStopped` — removed _(2026-06-01)_"
    count = event("design.enrollmentCount", ChangeKind.CHANGED, 180, 212, at=DAY)
    assert change_line(count) == "- `design.enrollmentCount` — changed: 180 → 212 _(2026-06-01)_"


def test_long_values_are_elided_around_their_first_difference() -> None:
    """A long text change shows the neighbourhood of the edit, cut with '…', on one line."""
    criteria = load_study("NCT01901029")["protocolSection"]["eligibilityModule"][
        "eligibilityCriteria"
    ]
    edited = criteria.replace("less than 6 months", "less than 3 months")
    line = change_line(event("eligibility.criteria", ChangeKind.CHANGED, criteria, edited, at=DAY))
    assert line == (
        "- `eligibility.criteria` — changed: …in Dongguan less than 6 months → "
        "…in Dongguan less than 3 months _(2026-06-01)_"
    )
    assert "\n" not in line


def test_list_changes_name_the_items_added_removed_and_edited() -> None:
    """Outcome changes say which measure was added, removed, or had its time frame changed."""
    orr = {"measure": "ORR", "timeFrame": "1 year"}
    cr = {"measure": "CR", "timeFrame": "1 year"}
    os_ = {"measure": "Overall survival", "timeFrame": "5 years"}
    swapped = event("outcomes.primary", ChangeKind.CHANGED, [cr, orr], [orr, os_], at=DAY)
    assert change_line(swapped) == (
        '- `outcomes.primary` — changed: added "Overall survival"; removed "CR" _(2026-06-01)_'
    )
    longer = event("outcomes.primary", ChangeKind.CHANGED, [orr], [dict(orr, timeFrame="2 years")])
    assert 'changed: edited "ORR" (time frame: 1 year → 2 years)' in change_line(longer)
    arms = [{"label": f"Arm {n}"} for n in range(5)]
    many = event("armsInterventions.arms", ChangeKind.CHANGED, arms[:1], arms)
    assert 'changed: added 4 ("Arm 1", "Arm 2", …)' in change_line(many)


def test_object_changes_name_the_keys_that_changed() -> None:
    """A site's status change and a sponsor change are shown key by key, not as JSON."""
    site = {"facility": "Cancer Hospital", "city": "Beijing", "status": "RECRUITING"}
    closed = event("locations.x", ChangeKind.CHANGED, site, dict(site, status="COMPLETED"))
    assert "— changed: status: RECRUITING → COMPLETED _(" in change_line(closed)
    lead = event(
        "sponsor.lead", ChangeKind.CHANGED,
        {"name": "Univ", "class": "OTHER"}, {"name": "Pharma Inc", "class": "INDUSTRY"},
    )  # fmt: skip
    assert "— changed: name: Univ → Pharma Inc; class: OTHER → INDUSTRY _(" in change_line(lead)


def test_section_lists_newest_version_first_in_recent_fields_order() -> None:
    """Newer versions come first; within one, the order of pages.recent_fields, then the field."""
    events = [
        event("locations.b|x||", new={}, version=1),
        event("status.overallStatus", new="RECRUITING", version=1),
        event("locations.a|x||", ChangeKind.CHANGED, {"status": "A"}, {"status": "B"}, version=2),
        event("status.overallStatus", ChangeKind.CHANGED, "RECRUITING", "COMPLETED", version=2),
        event("conditions.conditions", ChangeKind.CHANGED, ["a"], ["b"], version=2),
    ]
    lines = section(render_markdown(real_page("NCT01901029", events), PagesSettings()),
                    "Recent Field Changes (last 30 days)").splitlines()  # fmt: skip
    assert [re.sub(r" — .*", "", line) for line in lines] == [
        "- `status.overallStatus`", "- `locations.a|x||`",
        "- `status.overallStatus`", "- `locations.b|x||`",
    ]  # fmt: skip


def test_recent_fields_and_window_length_are_settings() -> None:
    """`recent_fields` decides which fields are listed and in what order; the heading names
    `recent_days`."""
    events = [
        event("eligibility.minAge", new="18 Years"),
        event("status.overallStatus", new="RECRUITING"),
        event("status.startDate", new="2020-01"),
    ]
    settings = PagesSettings(recent_fields=("status.start*", "eligibility.*"), recent_days=7)
    page = render_markdown(real_page("NCT01901029", events), settings)
    assert section(page, "Recent Field Changes (last 7 days)").splitlines() == [
        "- `status.startDate` — added _(2026-05-12)_",
        "- `eligibility.minAge` — added _(2026-05-12)_",
    ]
    empty = render_markdown(real_page("NCT01901029"), settings)
    assert section(empty, "Recent Field Changes (last 7 days)") == (
        "_No field changes in the last 7 days._"
    )


def test_page_input_window_keeps_only_recent_versions(app: App, fake_api: FakeCtgov) -> None:
    """Through the database: with a 30-day window, a version observed 40 days ago is not listed."""
    study = "NCT01901029"
    fake_api.put(load_study(study))
    sync_ids(app, study)
    sponsor_update(fake_api, study, lambda s: s["protocolSection"]["statusModule"].update(
        overallStatus="COMPLETED"))  # fmt: skip
    sync_ids(app, study)
    with app.db.write() as session:
        session.execute(
            update(ChangeEvent).where(ChangeEvent.version == 1)
            .values(observed_at=datetime.now(UTC) - timedelta(days=40))
        )  # fmt: skip
    settings = PagesSettings()
    page = render_markdown(page_input(app.db, study, None, settings), settings)
    lines = section(page, "Recent Field Changes (last 30 days)").splitlines()
    assert [line.split(" _(")[0] for line in lines] == [
        "- `status.overallStatus` — changed: UNKNOWN → COMPLETED",
        "- `status.lastUpdatePostDate` — changed: 2013-08-13 → 2026-06-01",
    ]
    wide = PagesSettings(recent_days=60)
    assert render_markdown(page_input(app.db, study, None, wide), wide).count("— added _(") == 15


# -- HTML -------------------------------------------------------------------------------------


class _Html(HTMLParser):
    """Collects tags, h1/h2 texts and the text of del/ins elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.heads: list[str] = []
        self.marked: dict[str, list[str]] = {"del": [], "ins": []}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._open.append(tag)
        if tag in ("h1", "h2", "del", "ins"):
            (self.heads if tag in ("h1", "h2") else self.marked[tag]).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        for tag, target in (("h1", self.heads), ("h2", self.heads), ("del", self.marked["del"]),
                            ("ins", self.marked["ins"])):  # fmt: skip
            if tag in self._open:
                target[-1] += data


def parse_html(page: str) -> _Html:
    parser = _Html()
    parser.feed(page)
    return parser


def test_html_page_has_the_markdown_sections_and_no_external_assets() -> None:
    """The HTML page has the Markdown page's headings, inline CSS, no script, no remote asset."""
    page = real_page("NCT00512707", [event("status.overallStatus", new="RECRUITING")])
    html = render_html(page, PagesSettings())
    parsed = parse_html(html)
    assert html.startswith("<!DOCTYPE html>")
    markdown = body(render_markdown(page, PagesSettings()))
    assert parsed.heads == [h.lstrip("# ") for h in re.findall(r"^##? .*$", markdown, re.M)]
    assert "style" in parsed.tags and "script" not in parsed.tags
    assert not re.search(r"\b(src|srcset)=|rel=\"stylesheet\"|@import|url\(", html)


def test_html_escapes_registry_text() -> None:
    """A <script> in the title, summary or a changed value is escaped, never live markup."""
    study = load_study("NCT01901029")
    study["protocolSection"]["identificationModule"]["briefTitle"] = "<script>alert(1)</script>"
    study["protocolSection"]["descriptionModule"]["briefSummary"] = '<img src=x onerror="y">'
    change = event("status.overallStatus", ChangeKind.CHANGED, "<b>A</b>", "<script>B</script>")
    html = render_html(page_of(study, [change]), PagesSettings())
    parsed = parse_html(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags and "b" not in parsed.tags
    assert parsed.heads[0] == "<script>alert(1)</script>"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert parsed.marked == {"del": ["b", "A", "b"], "ins": ["script", "B", "script"]}
    assert "&lt;<ins>script</ins>&gt;<ins>B</ins>&lt;/<ins>script</ins>&gt;" in html


def test_html_highlights_the_changed_words_side_by_side() -> None:
    """Old and new values sit side by side; only the changed words are in del/ins."""
    criteria = load_study("NCT01901029")["protocolSection"]["eligibilityModule"][
        "eligibilityCriteria"
    ]
    events = [
        event("status.overallStatus", ChangeKind.CHANGED, "ACTIVE_NOT_RECRUITING", "COMPLETED",
              version=2),
        event("eligibility.criteria", ChangeKind.CHANGED, criteria,
              criteria.replace("more than 6 months", "at least 12 months"), version=2),
    ]  # fmt: skip
    html = render_html(real_page("NCT01901029", events), PagesSettings())
    parsed = parse_html(html)
    assert parsed.marked == {"del": ["ACTIVE_NOT_RECRUITING", "more than 6"],
                             "ins": ["COMPLETED", "at least 12"]}  # fmt: skip
    assert "residence card" in html and "* have reached 18 years old" in html
    assert re.search(r'<td class="old">.*<del>more than 6</del> months', html, re.S)


def test_html_shows_outcomes_as_measures_and_time_frames() -> None:
    """A list change shows each outcome's measure and time frame; unchanged ones are counted."""
    orr = {"measure": "ORR", "timeFrame": "1 year", "description": "Overall response rate"}
    others = [{"measure": f"M{n}", "timeFrame": "1 year"} for n in range(3)]
    after = [dict(orr, timeFrame="2 years"), *others, {"measure": "OS", "timeFrame": "5 years"}]
    change = event("outcomes.secondary", ChangeKind.CHANGED, [orr, *others], after)
    html = render_html(real_page("NCT01901029", [change]), PagesSettings())
    parsed = parse_html(html)
    assert parsed.marked == {"del": ["1 year"], "ins": ["2 years", "OS", "5 years"]}
    assert "time frame:</span>" in html and "3 unchanged" in html
    assert "{&#34;measure" not in html and '{"measure' not in html
