"""Study pages: Markdown in the layout of seed ``000_*.txt``, and the same content as HTML.

Content comes from the raw record of the rendered version, printed raw (this is a mirror);
"Recent Field Changes" comes from the change events, "Recent Change Classes" (only when there
are some) from the classes of the recent versions, and the HTML page's version timeline from
the study's stored versions (``mirror.render.timeline_svg``). Registry text never changes a page's
structure: in Markdown, a line of it that would open a heading, fence, rule or HTML block is
backslash-escaped and the criteria fence is longer than any backtick run inside it; in HTML the
template escapes everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mirror.config import PagesSettings
from mirror.feed import PageInput
from mirror.render.browse import folded_lines, folded_rows, templates, version_bar
from mirror.render.class_text import class_label, class_line, class_text
from mirror.render.describe import change_line, day, one_line, recent_changes
from mirror.render.timeline_svg import timeline_chart
from mirror.store import ChangeEvent

CTGOV_STUDY_URL = "https://clinicaltrials.gov/study/"
SOURCE_LABEL = "ClinicalTrials.gov (mirrored, no enrichment)"
NOT_PROVIDED = "_Not provided._"
NONE_LISTED = "_None listed._"
Module = Mapping[str, Any]  # a part of a raw API v2 record


# -- what a page shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    measure: str
    time_frame: str
    description: str


@dataclass(frozen=True)
class StudyView:
    """The content of a study page, read from one version's raw API v2 record."""

    nct_id: str
    version: int
    front_matter: dict[str, str]
    title: str
    official_title: str
    key_facts: list[tuple[str, str]]
    brief_summary: str
    detailed_description: str
    eligibility: list[tuple[str, str]]
    criteria: str
    arms: list[tuple[str, str]]
    outcomes: list[tuple[str, list[Outcome]]]  # (heading, outcomes); Other only when present
    locations: list[tuple[str, str]]  # (facility, city, state, country; status)
    changes: list[ChangeEvent]
    classes: list[dict[str, Any]]  # recent change classes, newest version first
    notice: Notice | None = None  # the study left the registry


@dataclass(frozen=True)
class Notice:
    """What a page of a study that left the registry says first."""

    headline: str  # "No longer in the registry" / "Merged into NCT…"
    date: str  # YYYY-MM-DD
    text: str
    merged_into: str | None = None


def _notice(page: PageInput) -> Notice | None:
    left = page.departure
    if left is None:
        return None
    shown = f"This page shows the last version the mirror stored (version {page.version})."
    if left.state == "moved" and left.alias_of:
        text = f"this id is now an alias of {left.alias_of}. {shown}"
        return Notice(f"Merged into {left.alias_of}", day(left.since), text, left.alias_of)
    text = f"ClinicalTrials.gov no longer has this study (it answers 404). {shown}"
    return Notice("No longer in the registry", day(left.since), text)


def _study_view(page: PageInput, settings: PagesSettings) -> StudyView:
    """What the page of ``page`` shows, shared by the Markdown and the HTML renderers."""
    protocol = _obj(page.study.get("protocolSection"))
    ident = _obj(protocol.get("identificationModule"))
    desc = _obj(protocol.get("descriptionModule"))
    status, design = _obj(protocol.get("statusModule")), _obj(protocol.get("designModule"))
    eligibility = _obj(protocol.get("eligibilityModule"))
    conditions = _texts(_obj(protocol.get("conditionsModule")).get("conditions"))
    lead = _obj(_obj(protocol.get("sponsorCollaboratorsModule")).get("leadSponsor"))
    locations = _objs(_obj(protocol.get("contactsLocationsModule")).get("locations"))
    countries = dict.fromkeys(_text(s.get("country")) for s in locations if s.get("country"))
    title = one_line(_text(ident.get("briefTitle")) or _text(ident.get("officialTitle")))
    title = title or page.nct_id
    front = {
        "title": title,
        "nct_id": page.nct_id,
        "overall_status": one_line(_text(status.get("overallStatus"))),
        "sponsor": one_line(_text(lead.get("name"))),
        "study_type": one_line(_text(design.get("studyType"))),
        "primary_condition": one_line(conditions[0]) if conditions else "",
        "countries": ", ".join(one_line(c) for c in countries),
        "canonical_url": canonical_url(page.nct_id, settings),
        "clinicaltrials_gov": CTGOV_STUDY_URL + page.nct_id,
        "ct_last_update_post_date": _date(status, "lastUpdatePost"),
        "last_seen_at": _millis(page.last_seen_at),
        "source": SOURCE_LABEL,
    }
    notice = _notice(page)
    if notice is not None:  # only then: the page of a listed study keeps the seed's keys
        front["registry_state"] = "merged" if notice.merged_into else "removed"
        front["left_registry_on"] = notice.date
        if notice.merged_into:
            front["merged_into"] = notice.merged_into
    facts = _study_facts(status, design, front["sponsor"], conditions, page.study)
    arms = _objs(_obj(protocol.get("armsInterventionsModule")).get("armGroups"))
    return StudyView(
        page.nct_id, page.version, front, title, one_line(_text(ident.get("officialTitle"))),
        facts, _text(desc.get("briefSummary")), _text(desc.get("detailedDescription")),
        _eligibility_facts(eligibility), _text(eligibility.get("eligibilityCriteria")),
        [_arm(a) for a in arms], _outcome_sections(_obj(protocol.get("outcomesModule"))),
        [_site(s) for s in locations], recent_changes(page.events, settings),
        sorted(page.classes, key=_newest_first, reverse=True), notice,
    )  # fmt: skip


def _newest_first(found: Mapping[str, Any]) -> tuple[Any, int]:
    # In time, then by number: a backfilled past has higher numbers than the present.
    return found.get("observed_at") or datetime.min.replace(tzinfo=UTC), int(found["version"])


# A stored record is shown as the registry sent it, even when a field has an unexpected type
# (docs/fields.md, "Records that are not as expected"): these read any JSON value without
# raising; a part that is not the object or list it should be shows as missing.


def _obj(value: Any) -> Module:
    return value if isinstance(value, Mapping) else {}


def _objs(value: Any) -> list[Module]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    """A value as text: strings as they are, None as nothing, anything else as its JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _texts(value: Any) -> list[str]:
    """A list of texts; a single value stands for a list of one."""
    items = value if isinstance(value, list) else [value] if value else []
    return [_text(item) for item in items]


def _study_facts(
    status: Module, design: Module, sponsor: str, conditions: list[str], study: Module
) -> list[tuple[str, str]]:
    enrollment = _obj(design.get("enrollmentInfo"))
    kind = {"ESTIMATED": "Target ", "ACTUAL": "Actual "}.get(_text(enrollment.get("type")), "")
    results = (_date(status, "resultsFirstPost") or "Yes") if study.get("hasResults") else ""
    facts = [
        ("Status", status.get("overallStatus")),
        ("Study Type", design.get("studyType")),
        ("Phase", ", ".join(_texts(design.get("phases")))),
        (f"{kind}Enrollment", enrollment.get("count")),
        ("Lead Sponsor", sponsor),
        ("Conditions", ", ".join(conditions)),
        ("Start Date", _date(status, "start")),
        ("Completion Date", _date(status, "completion")),
        ("Results First Posted", results),
        ("CT.gov Last Update", _date(status, "lastUpdatePost")),
    ]
    return [(name, one_line(_text(value))) for name, value in facts if value not in (None, "")]


def _eligibility_facts(e: Module) -> list[tuple[str, str]]:
    healthy = e.get("healthyVolunteers")
    facts = [
        ("Minimum age", e.get("minimumAge")),
        ("Maximum age", e.get("maximumAge")),
        ("Sex", e.get("sex")),
        ("Healthy Volunteers", None if healthy is None else ("Yes" if healthy else "No")),
    ]
    return [(name, one_line(_text(value))) for name, value in facts if value]


def _arm(arm: Module) -> tuple[str, str]:
    return one_line(_text(arm.get("label"))), _text(arm.get("description"))


def _outcome_sections(module: Module) -> list[tuple[str, list[Outcome]]]:
    # Other Outcomes is not in the seed: shown only when the record has some.
    kinds = ["Primary", "Secondary", *(["Other"] if module.get("otherOutcomes") else [])]
    return [
        (f"{k} Outcomes", [_outcome(o) for o in _objs(module.get(f"{k.lower()}Outcomes"))])
        for k in kinds
    ]


def _outcome(o: Module) -> Outcome:
    return Outcome(
        one_line(_text(o.get("measure"))),
        one_line(_text(o.get("timeFrame"))),
        _text(o.get("description")),
    )


def _site(site: Module) -> tuple[str, str]:
    parts = (site.get(k) for k in ("facility", "city", "state", "country"))
    return ", ".join(one_line(_text(p)) for p in parts if p), one_line(_text(site.get("status")))


def _date(status: Module, name: str) -> str:
    return one_line(_text(_obj(status.get(f"{name}DateStruct")).get("date")))


# -- Markdown -------------------------------------------------------------------------------


def render_markdown(page: PageInput, settings: PagesSettings) -> str:
    """The study page as Markdown, in the layout of seed ``000_*.txt``."""
    v = _study_view(page, settings)
    sections = [
        f"# {_heading(v.title)}",
        *([f"**Official Title:** {v.official_title}"] if v.official_title else []),
        f"**NCT ID:** [{v.nct_id}]({v.front_matter['clinicaltrials_gov']})",
        *_notice_md(v.notice),
        _section("Key Facts", _facts(v.key_facts)),
        _section("Brief Summary", _block(v.brief_summary) or NOT_PROVIDED),
        _section("Detailed Description", _block(v.detailed_description) or NOT_PROVIDED),
        _section("Eligibility", _eligibility_md(v)),
        _section("Arms", (_items(f"**{label}**", desc) for label, desc in v.arms)),
        *(_section(h, (_outcome_md(o) for o in outcomes)) for h, outcomes in v.outcomes),
        _section(
            f"Locations ({len(v.locations)})",
            (_items(_block(p), s and f"_{s}_") for p, s in v.locations),
        ),
        _section(
            f"Recent Field Changes (last {settings.recent_days} days)",
            (_change_md(e) for e in folded_lines(v.changes, page.first_seen)),
            f"_No field changes in the last {settings.recent_days} days._",
        ),
        *_classes_md(v, settings),
        *_timeline_md(page.timeline),
        _footer(v, settings),
    ]
    return _front_matter(v.front_matter) + "\n" + "\n\n".join(sections) + "\n"


def _change_md(line: ChangeEvent | tuple[int, str, int]) -> str:
    if isinstance(line, ChangeEvent):
        return change_line(line)
    version, date, count = line
    return f"- first seen (version {version}) — {count} field{'s' * (count != 1)} added _({date})_"


def _notice_md(notice: Notice | None) -> list[str]:
    if notice is None:
        return []
    head = notice.headline
    if notice.merged_into:
        head = head.replace(
            notice.merged_into, f"[{notice.merged_into}]({CTGOV_STUDY_URL}{notice.merged_into})"
        )
    return [f"> **{head}** since {notice.date}: {notice.text}"]


def _section(title: str, body: str | Iterable[str], empty: str = NONE_LISTED) -> str:
    text = body if isinstance(body, str) else "\n".join(body)
    return f"## {title}\n\n{text or empty}"


def _classes_md(v: StudyView, settings: PagesSettings) -> list[str]:
    # Only when there are some: a page without classes stays the seed's layout.
    if not v.classes:
        return []
    title = f"Recent Change Classes (last {settings.recent_days} days)"
    return [_section(title, (class_line(c) for c in v.classes))]


TIMELINE_LINES = 20  # the newest versions the Markdown timeline lists


def _timeline_md(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per version, newest first, with its change classes: only for studies whose
    past has some (a page without classes keeps the seed's layout)."""
    if len(entries) < 2 or not any(e["classes"] for e in entries):
        return []
    lines = [_timeline_line(e) for e in reversed(entries[-TIMELINE_LINES:])]
    if len(entries) > TIMELINE_LINES:
        lines.append(f"- _… {len(entries) - TIMELINE_LINES} older versions_")
    return [_section("Version Timeline", lines)]


def _timeline_line(entry: Mapping[str, Any]) -> str:
    names = [class_label(c, lambda name: f"`{name}`") for c in entry["classes"]]
    what = ", ".join(names) or (
        "first version" if entry["version"] == 1 else "no classified change"
    )
    when = entry["source_date"] or str(entry["observed_at"])[:10]
    return f"- **v{entry['version']}** {when} — {what}"


def _facts(facts: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"- **{name}:** {value}" for name, value in facts)


def _eligibility_md(v: StudyView) -> str:
    parts = [_facts(v.eligibility), _fenced(v.criteria)]
    return "\n\n".join(p for p in parts if p) or NOT_PROVIDED


def _items(head: str, description: str) -> str:
    text = _block(description, indent="  ")
    return f"- {head}" + (f" — {text}" if text else "")


def _outcome_md(o: Outcome) -> str:
    head = f"**{o.measure}**" + (f" _(time frame: {o.time_frame})_" if o.time_frame else "")
    return _items(head, o.description)


def _footer(v: StudyView, settings: PagesSettings) -> str:
    return (
        f"---\n\n*Canonical: {v.front_matter['canonical_url']}*  \n"
        f"*Source data (authoritative): {v.front_matter['clinicaltrials_gov']}*  \n"
        f"*{one_line(settings.footer_note)}*"
    )


def canonical_url(nct_id: str, settings: PagesSettings, suffix: str = ".md") -> str:
    return f"{settings.canonical_base_url.rstrip('/')}/{nct_id}{suffix}"


def _heading(text: str) -> str:
    # A trailing run of '#' would be read as the heading's closing sequence.
    return text[:-1] + "\\#" if text.endswith("#") else text


# A line that would open page structure: an ATX heading, a code fence, an HTML block, or a
# line of one repeated -, =, _ or * (a rule, or a setext underline turning the line above it
# into a heading).
_STRUCTURAL = re.compile(
    r"^( {0,3})(?=#{1,6}(?:[ \t]|$)|`{3}|~{3}|<[A-Za-z/!?]|([-=_*])(?:[ \t]*\2)*[ \t]*$)"
)


def _block(text: str, indent: str = "") -> str:
    """Registry text kept raw, except that no line of it can open page structure; lines after
    the first get ``indent`` so that they stay inside their list item."""
    lines = [_STRUCTURAL.sub(r"\1\\", line.rstrip()) for line in text.strip().splitlines()]
    return "\n".join(lines[:1] + [indent + line if line else "" for line in lines[1:]])


def _fenced(text: str) -> str:
    if not text.strip():
        return ""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return f"{fence}\n{body}\n{fence}"


# -- YAML front matter ------------------------------------------------------------------------

_QUOTED_KEYS = frozenset({"canonical_url", "clinicaltrials_gov", "last_seen_at"})
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YAML_UNPRINTABLE = re.compile(
    "[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
# Plain scalars YAML (1.1 or 1.2) would read as something other than a string.
_YAML_NOT_STRING = re.compile(
    r"[-+]?[0-9.][0-9a-zA-Z_.:+-]*|=|~|<<|(?i:y|n|yes|no|on|off|true|false|null)"
)


def _front_matter(fields: Mapping[str, str]) -> str:
    lines = [f"{key}: {_yaml_value(key, value)}" for key, value in fields.items()]
    return "---\n" + "\n".join(lines) + "\n---"


def _yaml_value(key: str, value: str) -> str:
    # The seed quotes URLs and the instant, prints the registry date as a YAML date, the rest plain.
    if key in _QUOTED_KEYS:
        return _yaml_quoted(value)
    if key == "ct_last_update_post_date" and _ISO_DATE.fullmatch(value):
        return value
    return value if _yaml_plain_ok(value) else _yaml_quoted(value)


def _yaml_plain_ok(text: str) -> bool:
    return not (
        not text
        or text != text.strip()
        or text[0] in "-?:,[]{}#&*!|>'\"%@`"
        or ": " in text
        or " #" in text
        or text.endswith(":")
        or _YAML_UNPRINTABLE.search(text)
        or _YAML_NOT_STRING.fullmatch(text)
    )


def _yaml_quoted(text: str) -> str:
    """A YAML double-quoted scalar (also a JSON string): line breaks and unprintables escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _millis(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# -- HTML ---------------------------------------------------------------------------------


def render_html(page: PageInput, settings: PagesSettings) -> str:
    """The study page as a self-contained HTML5 document (no scripts, no external assets)."""
    v = _study_view(page, settings)
    template = templates().get_template("study.html")
    html_url = canonical_url(v.nct_id, settings, ".html")
    return template.render(
        v=v, settings=settings, html_url=html_url, changes=folded_rows(v.changes, page),
        classes=[_class_row(c) for c in v.classes], timeline=timeline_chart(page.timeline),
        bar=version_bar(page),
    )  # fmt: skip


@dataclass(frozen=True)
class ClassRow:
    """A recent change class as the HTML page lists it."""

    name: str
    text: str
    date: str
    major: bool


def _class_row(found: Mapping[str, Any]) -> ClassRow:
    when = found.get("observed_at")
    date = day(when) if isinstance(when, datetime) else ""
    return ClassRow(str(found["name"]), class_text(found), date, found.get("major") is True)
