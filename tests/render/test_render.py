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
from mirror.feed import PageInput, page_input
from mirror.record import ChangeKind
from mirror.render import change_line, class_line, render_html, render_markdown, timeline_chart
from mirror.store import ChangeEvent, EventBlock

SEED_000 = next((Path(__file__).resolve().parents[3] / "shared" / "seeds").glob("000_*.txt"))
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
            update(EventBlock).where(EventBlock.version == 1)
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


# -- change classes ---------------------------------------------------------------------------

CLASSES_AT = datetime(2026, 5, 12, 7, 0, tzinfo=UTC)


def found(name: str, params: dict[str, Any], version: int = 3) -> dict[str, Any]:
    """A recent change class as ``PageInput.classes`` holds it."""
    return {"version": version, "observed_at": CLASSES_AT, "name": name, **params}


def classes_page(
    classes: Sequence[dict[str, Any]] = (), timeline: Sequence[dict[str, Any]] = ()
) -> PageInput:
    """Version 3 of NCT01901029 (its real record) with change classes and a timeline."""
    study = load_study("NCT01901029")
    return PageInput(study, "NCT01901029", 3, SEEN, [], list(classes), list(timeline))


_COUNTRIES = ["Austria", "Belgium", "France", "Germany", "Italy", "Spain"]


@pytest.mark.parametrize(
    ("name", "params", "text"),
    [
        ("status.stopped", {"from": "RECRUITING", "to": "TERMINATED",
                            "why_stopped": "Lack of\n funding"},
         "RECRUITING → TERMINATED (why stopped: Lack of funding)"),
        ("status.completed", {"from": "ACTIVE_NOT_RECRUITING"},
         "ACTIVE_NOT_RECRUITING → COMPLETED"),
        ("status.changed", {"from": "RECRUITING", "to": "UNKNOWN"}, "RECRUITING → UNKNOWN"),
        ("enrollment.changed", {"from": 394, "to": 1063, "percent": 169.8, "major": True,
                                "type": "ESTIMATED"}, "394 → 1,063 (+169.8%), major"),
        ("enrollment.changed", {"from": 0, "to": 50, "percent": None, "major": True},
         "0 → 50, major"),
        ("enrollment.actualized", {"from": 1063, "to": 998, "percent": -6.1, "major": False},
         "estimated 1,063 → actual 998 (-6.1%)"),
        ("dates.slipped", {"date": "primary_completion", "from": "2027-01", "to": "2027-06",
                           "shift_days": 151, "major": True},
         "primary completion 2027-01 → 2027-06 (+151 days), major"),
        ("dates.advanced", {"date": "start", "from": "2026-03-02", "to": "2026-03-01",
                            "shift_days": -1, "major": False},
         "start 2026-03-02 → 2026-03-01 (-1 day)"),
        ("dates.actualized", {"date": "completion", "on": "2026-04-30"},
         "completion ESTIMATED → ACTUAL (2026-04-30)"),
        ("outcomes.primary.added", {"measure": "Overall survival", "time_frame": "5 years"},
         '"Overall survival" (time frame: 5 years)'),
        ("outcomes.secondary.removed", {"measure": "ORR", "time_frame": None}, '"ORR"'),
        ("outcomes.primary.reworded", {"from_measure": "Change in HbA1c",
                                       "to_measure": "Change in HbA1c from baseline",
                                       "similarity": 0.83},
         '"Change in HbA1c" → "Change in HbA1c from baseline" (similarity 0.83)'),
        ("outcomes.secondary.description_changed", {"measure": "ORR", "similarity": 0.91},
         '"ORR" (similarity 0.91)'),
        ("outcomes.other.timeframe_changed", {"measure": "ORR", "from_time_frame": "12 weeks",
                                              "to_time_frame": "24 weeks"},
         '"ORR": 12 weeks → 24 weeks'),
        ("outcomes.primary.demoted", {"measure": "ORR", "to_measure": "ORR", "to": "secondary",
                                      "similarity": 1.0}, '"ORR" to secondary'),
        ("outcomes.primary.promoted", {"measure": "Overall survival (OS)",
                                       "from_measure": "Overall survival", "from": "secondary",
                                       "similarity": 0.9},
         '"Overall survival (OS)" from secondary (was "Overall survival", similarity 0.9)'),
        ("eligibility.changed", {"fields": ["eligibility.criteria", "eligibility.minAge"]},
         "criteria, min age"),
        ("sites.added", {"count": 3, "countries": ["France"]}, "3 sites (France)"),
        ("sites.removed", {"count": 1, "countries": []}, "1 site"),
        ("sites.added", {"count": 6, "countries": _COUNTRIES},
         "6 sites (Austria, Belgium, France, Germany and 2 more)"),
        ("sponsor.changed", {"from": "Univ", "to": "Pharma Inc"}, "Univ → Pharma Inc"),
        ("sponsor.collaborators_changed", {"added": ["A"], "removed": ["B", "C"]},
         'added "A"; removed "B", "C"'),
        ("results.posted", {"date": "2026-05-01", "days_after_primary_completion": 412},
         "posted 2026-05-01, 412 days after primary completion"),
        ("study.removed", {"last_status": "RECRUITING"},
         "left the registry (last status: RECRUITING)"),
        ("design.phases_changed", {"from": ["PHASE2"], "to": ["PHASE2", "PHASE3"]},
         "PHASE2 → PHASE2, PHASE3"),
    ],
)  # fmt: skip
def test_class_lines_describe_each_family(name: str, params: dict[str, Any], text: str) -> None:
    """Each class family reads as one line: its name, what happened, the observation day."""
    assert class_line(found(name, params)) == f"- `{name}` — {text} _(2026-05-12)_"


def test_unknown_class_lists_its_parameters() -> None:
    """A class this version does not know is shown as `key: value` pairs, lists joined."""
    line = class_line(found("results.retracted", {"date": "2026-05-01", "codes": [7, 9]}))
    assert line == "- `results.retracted` — date: 2026-05-01; codes: 7, 9 _(2026-05-12)_"


def test_long_reworded_measures_are_cut_around_their_difference() -> None:
    """Two long measures show the neighbourhood of their first difference, like field lines."""
    old = (
        "Change from baseline in the Movement Disorder Society Unified Parkinson's Disease "
        "Rating Scale part III score at week 12"
    )
    new = old.replace("week 12", "week 24")
    params = {"from_measure": old, "to_measure": new, "similarity": 0.97}
    assert class_line(found("outcomes.primary.reworded", params)) == (
        '- `outcomes.primary.reworded` — "…part III score at week 12" → '
        '"…part III score at week 24" (similarity 0.97) _(2026-05-12)_'
    )


def test_long_added_measure_is_elided() -> None:
    """A long measure is cut with '…' at 60 characters, so the line stays short."""
    measure = "Change from baseline in the Movement Disorder Society Unified Parkinson's Disease"
    line = class_line(found("outcomes.primary.added", {"measure": measure, "time_frame": None}))
    assert line == (
        '- `outcomes.primary.added` — "Change from baseline in the Movement Disorder Society '
        'Unifi…" _(2026-05-12)_'
    )


def test_class_section_follows_field_changes_newest_version_first() -> None:
    """ "Recent Change Classes" comes after "Recent Field Changes", newest version first."""
    classes = [
        found("status.changed", {"from": "RECRUITING", "to": "UNKNOWN"}, version=2),
        found("sites.added", {"count": 1, "countries": ["China"]}, version=3),
        found("enrollment.changed", {"from": 2000, "to": 3100, "percent": 55.0, "major": True},
              version=3),
    ]  # fmt: skip
    page = render_markdown(classes_page(classes), PagesSettings(recent_days=7))
    assert headings(page)[-2:] == [
        "## Recent Field Changes (last 7 days)", "## Recent Change Classes (last 7 days)",
    ]  # fmt: skip
    assert section(page, "Recent Change Classes (last 7 days)").splitlines() == [
        "- `sites.added` — 1 site (China) _(2026-05-12)_",
        "- `enrollment.changed` — 2,000 → 3,100 (+55.0%), major _(2026-05-12)_",
        "- `status.changed` — RECRUITING → UNKNOWN _(2026-05-12)_",
    ]


def test_page_without_classes_has_no_class_section() -> None:
    """Without classes there is no class section: the seed page, even with a timeline of
    unclassified versions, is unchanged byte for byte."""
    page = page_of(seed_record(), seed_events())
    plain = [e | {"classes": []} for e in timeline_entries()]
    with_timeline = PageInput(page.study, page.nct_id, 2, page.last_seen_at, page.events, (), plain)
    assert render_markdown(with_timeline, SEED_SETTINGS) == SEED
    assert "Recent Change Classes" not in render_markdown(classes_page(), PagesSettings())


def test_classified_past_versions_are_listed_before_the_footer() -> None:
    """A timeline with classes adds "Version Timeline", newest first, after the changes."""
    entries = timeline_entries()
    page = render_markdown(classes_page(timeline=entries), PagesSettings())
    assert headings(page)[-1] == "## Version Timeline"
    lines = section(page, "Version Timeline").splitlines()
    assert len(lines) == len(entries) and lines[-1].startswith("- **v1** ")
    assert all(
        line.startswith(f"- **v{entries[-1 - n]['version']}** ") for n, line in enumerate(lines)
    )


def test_registry_text_in_classes_cannot_change_the_page_structure() -> None:
    """Line breaks, headings, fences and rules inside a class's registry text stay on its line."""
    hostile = "x\n## Injected\n```\n---\n<!-- open"
    classes = [
        found("outcomes.primary.added", {"measure": hostile, "time_frame": hostile}),
        found("status.stopped", {"from": "RECRUITING", "to": "WITHDRAWN", "why_stopped": hostile}),
    ]
    page = render_markdown(classes_page(classes), PagesSettings())
    lines = section(page, "Recent Change Classes (last 30 days)").splitlines()
    assert lines[0] == (
        '- `outcomes.primary.added` — "x ## Injected ``` --- <!-- open" '
        "(time frame: x ## Injected ``` --- <!-- open) _(2026-05-12)_"
    )
    heads, fences = md_structure(page)
    assert heads[-1] == "h2 Recent Change Classes (last 30 days)" and len(fences) == 1
    assert len(lines) == 2


# -- the HTML timeline ----------------------------------------------------------------------


def snapshot(status: str, count: int, count_type: str, done: str, done_type: str) -> dict[str, Any]:
    return {
        "overall_status": status, "enrollment": count, "enrollment_type": count_type,
        "primary_completion": done, "primary_completion_type": done_type,
    }  # fmt: skip


def timeline_entries() -> list[dict[str, Any]]:
    """NCT01901029's history as the mirror could hold it; version 3 is its real record."""
    versions = [
        ("2013-07-17", [], snapshot("RECRUITING", 2000, "ESTIMATED", "2013-06", "ESTIMATED")),
        ("2013-08-13", ["enrollment.changed", "dates.slipped", "dates.actualized"],
         snapshot("RECRUITING", 3100, "ESTIMATED", "2013-08", "ACTUAL")),
        ("2026-05-12", ["status.changed"],
         snapshot("UNKNOWN", 3100, "ESTIMATED", "2013-08", "ACTUAL")),
    ]  # fmt: skip
    return [
        {
            "version": n, "source_date": when, "observed_at": "2026-05-12T07:00:00Z",
            "origin": "history", "registry_version": n - 1,
            "classes": [{"name": name} for name in names], "snapshot": snap,
        }
        for n, (when, names, snap) in enumerate(versions, start=1)
    ]  # fmt: skip


class _Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def elements(html: str, tag: str = "", css: str = "") -> list[dict[str, str | None]]:
    """The attributes of every ``tag`` element (any if "") whose class list includes ``css``."""
    parser = _Elements()
    parser.feed(html)
    return [
        attrs for t, attrs in parser.found
        if tag in ("", t) and (not css or css in (attrs.get("class") or "").split())
    ]  # fmt: skip


def svg_of(html: str) -> str:
    match = re.search(r"<svg.*?</svg>", html, re.S)
    assert match, "no timeline svg"
    return match.group()


def test_html_lists_the_change_classes() -> None:
    """The HTML page lists the classes like the Markdown page, major ones marked."""
    classes = [
        found("enrollment.changed", {"from": 394, "to": 1063, "percent": 169.8, "major": True}),
        found("sites.added", {"count": 3, "countries": ["France"]}),
    ]
    html = render_html(classes_page(classes), PagesSettings())
    assert parse_html(html).heads[-1] == "Recent Change Classes (last 30 days)"
    assert (
        '<li class="major"><code>enrollment.changed</code> — <span class="what">394 → 1,063 '
        '(+169.8%), major</span> <span class="date">(2026-05-12)</span></li>' in html
    )
    assert '<li><code>sites.added</code> — <span class="what">3 sites (France)</span>' in html


def test_html_without_classes_or_history_has_neither_section() -> None:
    """No classes and a single version: no class list, no timeline."""
    html = render_html(classes_page((), timeline_entries()[:1]), PagesSettings())
    assert 'id="recent-change-classes"' not in html and "<svg" not in html
    assert parse_html(html).heads[-1] == "Recent Field Changes (last 30 days)"


def test_html_timeline_has_one_point_per_version_in_each_lane() -> None:
    """Enrollment and primary completion each get a point per version, ACTUAL ones filled."""
    html = render_html(classes_page((), timeline_entries()), PagesSettings())
    svg = svg_of(html)
    points = elements(svg, "circle", "point")
    assert len(points) == 6
    assert [p["class"] for p in points] == [
        "point", "point", "point", "point", "point actual", "point actual",
    ]  # fmt: skip
    assert [p["cx"] for p in points] == ["174.7", "356.0", "537.3"] * 2
    assert (
        "v2 (2013-08-13): 3,100 (ESTIMATED)" in svg and "v2 (2013-08-13): 2013-08 (ACTUAL)" in svg
    )


def test_html_timeline_shows_status_bands_and_a_table() -> None:
    """Status runs become coloured bands; the table lists each version with its classes."""
    html = render_html(classes_page((), timeline_entries()), PagesSettings())
    bands = [g["class"] for g in elements(svg_of(html), "g") if g["class"] != "lane"]
    assert bands == ["st-recruiting", "st-other"]
    assert "<title>v1–v2: RECRUITING</title>" in html
    table = html.split('<table class="versions">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 4  # the header and three versions
    assert (
        "<tr><td>2</td><td>2013-08-13</td><td>RECRUITING</td><td>3,100 (ESTIMATED)</td>"
        "<td>2013-08 (ACTUAL)</td><td><code>enrollment.changed</code>, <code>dates.slipped</code>, "
        "<code>dates.actualized</code></td></tr>"
    ) in table


def test_primary_completion_slip_goes_up_and_a_tombstone_breaks_the_lines() -> None:
    """A later date is drawn higher; a version without a record breaks both step lines."""
    entries = timeline_entries()
    entries.insert(2, {**entries[1], "version": 3, "snapshot": None, "classes": []})
    entries[3]["version"] = 4
    chart = timeline_chart(entries)
    assert chart is not None
    enrollment, completion = chart.lanes
    assert completion.points[0].y > completion.points[1].y  # 2013-06 -> 2013-08: up
    assert completion.high == "2013-08" and completion.low == "2013-06"
    assert enrollment.high == "3,100" and enrollment.low == "0"
    assert [p.count("M") for p in (enrollment.path, completion.path)] == [2, 2]
    assert [b.status for b in chart.bands] == ["RECRUITING", "(left the registry)", "UNKNOWN"]
    assert chart.bands[1].css == "st-removed"


def test_html_timeline_escapes_registry_text_and_stays_self_contained() -> None:
    """Markup in a status or class name is escaped; the timeline has no script or link."""
    entries = timeline_entries()
    entries[2]["snapshot"]["overall_status"] = "<script>alert(1)</script>"
    entries[2]["classes"] = [{"name": '<img src=x onerror="y">'}]
    classes = [found("status.stopped", {"from": "A", "to": "B", "why_stopped": "<b>why</b>"})]
    html = render_html(classes_page(classes, entries), PagesSettings())
    tags = parse_html(html).tags
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert "<title>v3: &lt;script&gt;alert(1)&lt;/script&gt;</title>" in html
    assert "<code>&lt;img src=x onerror=&#34;y&#34;&gt;</code>" in html
    assert "(why stopped: &lt;b&gt;why&lt;/b&gt;)" in html
    assert not re.search(r"\b(src|srcset|href)=|@import|url\(|<script|<image|<use", svg_of(html))
    assert not [a for a in elements(html) if {"src", "srcset"} & set(a)]
    assert not re.search(r'rel="stylesheet"|@import|url\(', html)
