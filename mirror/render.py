"""The study page: Markdown in the layout of seed ``000_*.txt``.

Content comes from the raw record of the rendered version (the registry's own order
and wording); the "Recent Field Changes" section comes from the change events.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from mirror.config import PagesSettings
from mirror.feed import PageInput
from mirror.store import ChangeEvent, ChangeKind

CTGOV_STUDY_URL = "https://clinicaltrials.gov/study/"
SOURCE_LABEL = "ClinicalTrials.gov (mirrored, no enrichment)"
INLINE_VALUE_MAX = 80


def render_markdown(page: PageInput, settings: PagesSettings) -> str:
    p = _Record(page.study)
    sections = [
        _front_matter(p, page, settings),
        f"# {p.title}",
        *_optional(f"**Official Title:** {p.official_title}", p.official_title),
        f"**NCT ID:** [{page.nct_id}]({CTGOV_STUDY_URL}{page.nct_id})",
        "## Key Facts\n\n" + "\n".join(_key_facts(p)),
        *_optional(f"## Brief Summary\n\n{p.brief_summary}", p.brief_summary),
        *_optional(f"## Detailed Description\n\n{p.detailed_description}", p.detailed_description),
        _eligibility(p),
        *_listing("Arms", [_arm(a) for a in p.arms]),
        *_listing("Primary Outcomes", [_outcome(o) for o in p.outcomes("primaryOutcomes")]),
        *_listing("Secondary Outcomes", [_outcome(o) for o in p.outcomes("secondaryOutcomes")]),
        *_listing("Other Outcomes", [_outcome(o) for o in p.outcomes("otherOutcomes")]),
        f"## Locations ({len(p.locations)})\n\n" + "\n".join(_site(s) for s in p.locations),
        _recent_changes(page.events, settings),
        _footer(page.nct_id, settings),
    ]
    return "\n\n".join(s.rstrip() for s in sections) + "\n"


class _Record:
    """Convenient reads of a raw API v2 record."""

    def __init__(self, study: Mapping[str, Any]) -> None:
        self.protocol: Mapping[str, Any] = study.get("protocolSection", {})
        ident = self.module("identificationModule")
        self.title: str = ident.get("briefTitle", "") or ident.get("officialTitle", "")
        self.official_title: str = ident.get("officialTitle", "")
        desc = self.module("descriptionModule")
        self.brief_summary: str = desc.get("briefSummary", "")
        self.detailed_description: str = desc.get("detailedDescription", "")
        self.status = self.module("statusModule")
        self.design = self.module("designModule")
        self.eligibility = self.module("eligibilityModule")
        self.arms: list[dict[str, Any]] = self.module("armsInterventionsModule").get(
            "armGroups", []
        )
        self.locations: list[dict[str, Any]] = self.module("contactsLocationsModule").get(
            "locations", []
        )
        self.conditions: list[str] = self.module("conditionsModule").get("conditions", [])
        self.sponsor: str = (
            self.module("sponsorCollaboratorsModule").get("leadSponsor", {}).get("name", "")
        )

    def module(self, name: str) -> Any:
        return self.protocol.get(name, {})

    def outcomes(self, key: str) -> list[dict[str, Any]]:
        return list(self.module("outcomesModule").get(key, []))

    def date(self, name: str) -> str:
        return str(self.status.get(f"{name}DateStruct", {}).get("date", ""))

    @property
    def countries(self) -> list[str]:
        return list(dict.fromkeys(s["country"] for s in self.locations if s.get("country")))


def _front_matter(p: _Record, page: PageInput, settings: PagesSettings) -> str:
    fields = {
        "title": p.title,
        "nct_id": page.nct_id,
        "overall_status": p.status.get("overallStatus", ""),
        "sponsor": p.sponsor,
        "study_type": p.design.get("studyType", ""),
        "primary_condition": p.conditions[0] if p.conditions else "",
        "countries": ", ".join(p.countries),
        "canonical_url": _quoted(canonical_url(page.nct_id, settings)),
        "clinicaltrials_gov": _quoted(CTGOV_STUDY_URL + page.nct_id),
        "ct_last_update_post_date": p.date("lastUpdatePost"),
        "last_seen_at": _quoted(_millis(page.last_seen_at)),
        "source": SOURCE_LABEL,
    }
    lines = [f"{k}: {v if v.startswith(chr(34)) else _yaml_scalar(v)}" for k, v in fields.items()]
    return "---\n" + "\n".join(lines) + "\n---"


def _key_facts(p: _Record) -> Iterable[str]:
    enrollment = p.design.get("enrollmentInfo", {})
    label = {"ESTIMATED": "Target Enrollment", "ACTUAL": "Actual Enrollment"}.get(
        enrollment.get("type", ""), "Enrollment"
    )
    facts = [
        ("Status", p.status.get("overallStatus")),
        ("Study Type", p.design.get("studyType")),
        ("Phase", ", ".join(p.design.get("phases", []))),
        (label, enrollment.get("count")),
        ("Lead Sponsor", p.sponsor),
        ("Conditions", ", ".join(p.conditions)),
        ("Start Date", p.date("start")),
        ("Primary Completion Date", p.date("primaryCompletion")),
        ("Completion Date", p.date("completion")),
        ("CT.gov Last Update", p.date("lastUpdatePost")),
    ]
    return [f"- **{name}:** {value}" for name, value in facts if value not in (None, "")]


def _eligibility(p: _Record) -> str:
    e = p.eligibility
    healthy = e.get("healthyVolunteers")
    facts = [
        ("Minimum age", e.get("minimumAge")),
        ("Maximum age", e.get("maximumAge")),
        ("Sex", e.get("sex")),
        ("Healthy Volunteers", None if healthy is None else ("Yes" if healthy else "No")),
    ]
    lines = [f"- **{name}:** {value}" for name, value in facts if value]
    text = "## Eligibility\n\n" + "\n".join(lines)
    if criteria := e.get("eligibilityCriteria"):
        text += f"\n\n```\n{criteria.strip()}\n```"
    return text


def _arm(arm: Mapping[str, Any]) -> str:
    description = arm.get("description")
    return f"- **{arm.get('label', '')}**" + (f" — {description}" if description else "")


def _outcome(outcome: Mapping[str, Any]) -> str:
    line = f"- **{outcome.get('measure', '')}**"
    if time_frame := outcome.get("timeFrame"):
        line += f" _(time frame: {time_frame})_"
    if description := outcome.get("description"):
        line += f" — {description}"
    return line


def _site(site: Mapping[str, Any]) -> str:
    parts = [site.get(k) for k in ("facility", "city", "state", "country")]
    line = "- " + ", ".join(str(p) for p in parts if p)
    return line + (f" — _{site['status']}_" if site.get("status") else "")


def _recent_changes(events: Sequence[ChangeEvent], settings: PagesSettings) -> str:
    heading = f"## Recent Field Changes (last {settings.recent_days} days)"
    ordered = sorted(events, key=lambda e: (-e.version, _rank(e.field, settings), e.field))
    if not ordered:
        return f"{heading}\n\n_No field changes in the last {settings.recent_days} days._"
    return heading + "\n\n" + "\n".join(change_line(e) for e in ordered)


def change_line(event: ChangeEvent) -> str:
    when = event.observed_at.strftime("%Y-%m-%d")
    if event.kind is ChangeKind.CHANGED:
        what = f"changed: {short_value(event.old)} → {short_value(event.new)}"
    else:
        what = event.kind.value
    return f"- `{event.field}` — {what} _({when})_"


def short_value(value: Any) -> str:
    """A value short enough for one line; long ones are elided with '…'."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= INLINE_VALUE_MAX else text[: INLINE_VALUE_MAX - 1] + "…"


def _rank(field: str, settings: PagesSettings) -> int:
    for i, pattern in enumerate(settings.recent_fields):
        if fnmatch.fnmatchcase(field, pattern):
            return i
    return len(settings.recent_fields)


def _footer(nct_id: str, settings: PagesSettings) -> str:
    return (
        f"---\n\n*Canonical: {canonical_url(nct_id, settings)}*  \n"
        f"*Source data (authoritative): {CTGOV_STUDY_URL}{nct_id}*  \n"
        f"*{settings.footer_note}*"
    )


def canonical_url(nct_id: str, settings: PagesSettings) -> str:
    return f"{settings.canonical_base_url.rstrip('/')}/{nct_id}.md"


def _optional(text: str, condition: Any) -> list[str]:
    return [text] if condition else []


def _listing(title: str, lines: list[str]) -> list[str]:
    return [f"## {title}\n\n" + "\n".join(lines)] if lines else []


def _millis(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _quoted(value: str) -> str:
    return orjson.dumps(value).decode()


_YAML_PLAIN = re.compile(r"^[^-?:,\[\]{}#&*!|>'\"%@`\s][^#]*$")


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar: plain like the seed where that is unambiguous, double-quoted otherwise."""
    text = str(value)
    if text == "" or not _YAML_PLAIN.match(text) or ": " in text or text.endswith(":"):
        return _quoted(text) if text else '""'
    if text.lower() in {"yes", "no", "true", "false", "null", "on", "off", "~"}:
        return _quoted(text)
    return text
