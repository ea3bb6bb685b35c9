"""Deterministic multi-version timelines built from real records, for record-history tests.

The registry's early versions carry HTML markup and entities where today's records carry
markdown. ``marked_up`` turns a real record's text into that older form with the same words
(built here, independently of ``mirror.record.normalize``), and ``timeline`` lays versions out with
advancing dates, the newest on the record's own lastUpdatePostDate.
"""

from __future__ import annotations

import copy
import html
import itertools
import re
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from fake_ctgov import load_study

Study = dict[str, Any]
Edit = Callable[[Study], Study]

# A 2006 record: criteria with bullets and "\~" escapes, measures with "&" and "'".
MARKUP_ONLY_ID = "NCT00351065"
# A 2025 record: bullets, "≥", "\>" escapes; REWORDING is a real change of its criteria.
REWORDED_ID = "NCT05714891"
REWORDING = ("Patients must be ≥ 18 years of age", "Patients must be ≥ 21 years of age")
# What every new version of a record changes besides its content.
BOOKKEEPING = frozenset({"status.lastUpdatePostDate", "status.lastUpdateSubmitDate"})

_TEXT_FIELDS = (
    ("descriptionModule", "briefSummary"),
    ("descriptionModule", "detailedDescription"),
    ("eligibilityModule", "eligibilityCriteria"),
)
_OUTCOME_LISTS = ("primaryOutcomes", "secondaryOutcomes", "otherOutcomes")
_ITEM = re.compile(r"^\s*(?:([*+-])|[0-9]{1,3}[.)])\s+(.*)$")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def entities(text: str) -> str:
    """Text as old versions escaped it: ``&amp; &lt; &gt; &quot; &#x27; &#x2F;``."""
    return html.escape(text, quote=True).replace("/", "&#x2F;")


def to_html(markdown: str) -> str:
    """Markdown text of today's records as old HTML: ``<p>``, ``<br>``, ``<ul><li>``, entities."""
    blocks = re.split(r"\n[ \t]*\n", markdown.strip())
    return "".join(_block(block) for block in blocks if block.strip())


def _block(block: str) -> str:
    lines = [_line(line) for line in block.split("\n") if line.strip()]
    parts = []
    for kind, group in itertools.groupby(lines, key=lambda line: line[0]):
        texts = [entities(text) for _, text in group]
        if kind == "p":
            parts.append("<p>" + "<br>".join(texts) + "</p>")
        else:
            parts.append(f"<{kind}>" + "".join(f"<li>{t}</li>" for t in texts) + f"</{kind}>")
    return "".join(parts)


def _line(line: str) -> tuple[str, str]:
    plain = _ESCAPE.sub(r"\1", line)  # HTML has no backslash escapes
    item = _ITEM.match(plain)
    if item is None:
        return "p", plain.strip()
    return ("ul" if item.group(1) else "ol"), item.group(2)


def marked_up(study: Study) -> Study:
    """A copy of ``study`` with summary, description, criteria and outcome texts in old HTML.

    Outcome descriptions become HTML; measures (which identify outcomes) get entities only.
    """
    out = copy.deepcopy(study)
    protocol = out["protocolSection"]
    for module, key in _TEXT_FIELDS:
        if isinstance(text := protocol.get(module, {}).get(key), str):
            protocol[module][key] = to_html(text)
    for kind in _OUTCOME_LISTS:
        for outcome in protocol.get("outcomesModule", {}).get(kind, []):
            if isinstance(outcome.get("description"), str):
                outcome["description"] = to_html(outcome["description"])
            if isinstance(outcome.get("measure"), str):
                outcome["measure"] = entities(_ESCAPE.sub(r"\1", outcome["measure"]))
    return out


def plain(study: Study) -> Study:
    """The record as it is today."""
    return study


def reworded(old: str, new: str) -> Edit:
    """An edit replacing ``old`` with ``new`` in the eligibility criteria (which must hold it)."""

    def edit(study: Study) -> Study:
        module = study["protocolSection"]["eligibilityModule"]
        assert old in module["eligibilityCriteria"], f"{old!r} not in the criteria"
        module["eligibilityCriteria"] = module["eligibilityCriteria"].replace(old, new)
        return study

    return edit


def with_status(status: str) -> Edit:
    """An edit setting the overall status."""

    def edit(study: Study) -> Study:
        study["protocolSection"]["statusModule"]["overallStatus"] = status
        return study

    return edit


def compose(*edits: Edit) -> Edit:
    """The edits applied in order."""

    def edit(study: Study) -> Study:
        for step in edits:
            study = step(study)
        return study

    return edit


def timeline(study: Study, edits: Sequence[Edit], step_days: int = 91) -> list[Study]:
    """One version per edit, oldest first: ``edit(copy of study)``, ``step_days`` apart.

    The newest version keeps the record's own dates; each earlier one gets lastUpdatePostDate
    and lastUpdateSubmitDate ``step_days`` before the next.
    """
    status = study["protocolSection"]["statusModule"]
    newest = date.fromisoformat(status["lastUpdatePostDateStruct"]["date"])
    versions = []
    for n, edit in enumerate(edits):
        version = edit(copy.deepcopy(study))
        if n < len(edits) - 1:
            day = (newest - timedelta(days=step_days * (len(edits) - 1 - n))).isoformat()
            module = version["protocolSection"]["statusModule"]
            module["lastUpdatePostDateStruct"]["date"] = day
            module["lastUpdateSubmitDate"] = day
        versions.append(version)
    return versions


def markup_only_timeline() -> list[Study]:
    """NCT00351065: two HTML versions, then today's plain text with the same words."""
    return timeline(load_study(MARKUP_ONLY_ID), [marked_up, marked_up, plain])


def reworded_timeline() -> list[Study]:
    """NCT05714891: HTML, then HTML with REWORDING in the criteria, then plain with REWORDING."""
    reword = reworded(*REWORDING)
    return timeline(load_study(REWORDED_ID), [marked_up, compose(reword, marked_up), reword])
