"""What a person reads: a study version, or a digest of many, as a title and a body in plain
text and in Markdown (services that show HTML get the Markdown converted by Apprise).

A version is first *summarized* (:class:`VersionSummary`: its headline, what happened in the
words of its change classes, one line per changed field in the words the pages use); a message
for the version, or a digest of a period's summaries, is then written from summaries. Digest
items store the summary, so a digest is written without reading the versions again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from mirror.record import ChangeKind
from mirror.render import change_text, class_text, elide
from mirror.store import ChangeEvent

TITLE_MAX = 250
# A digest lists this many studies, this many versions of each and this many changed fields of
# each version; the rest are counted (the change browser and the compare pages have them).
DIGEST_STUDIES_MAX = 50
DIGEST_VERSIONS_MAX = 5
DIGEST_LINES_MAX = 10
# Headline words of a change class, before its text ("status RECRUITING → COMPLETED");
# other classes read as their name in words ("dates slipped: …").
_LABELS = {
    "status.stopped": "status", "status.completed": "status", "status.changed": "status",
    "enrollment.changed": "enrollment", "enrollment.actualized": "enrollment",
    "results.posted": "results", "study.removed": "study", "sponsor.changed": "sponsor",
    "design.phases_changed": "phases",
}  # fmt: skip
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#])")


@dataclass(frozen=True)
class Message:
    title: str
    text: str
    markdown: str


@dataclass(frozen=True)
class VersionSummary:
    """A study version in words: what every message about it is written from."""

    nct_id: str
    version: int
    study_title: str | None
    observed_at: str  # ISO 8601, UTC
    headline: str
    happened: tuple[str, ...]  # one line per change class
    changes: tuple[tuple[str, str], ...]  # (field, the change in words), one per changed field

    def as_json(self) -> dict[str, Any]:
        return {
            "nct_id": self.nct_id, "version": self.version, "study_title": self.study_title,
            "observed_at": self.observed_at, "headline": self.headline,
            "happened": list(self.happened), "changes": [list(c) for c in self.changes],
        }  # fmt: skip

    @classmethod
    def of_json(cls, data: Mapping[str, Any]) -> VersionSummary:
        return cls(
            data["nct_id"], data["version"], data["study_title"], data["observed_at"],
            data["headline"], tuple(data["happened"]),
            tuple((field, text) for field, text in data["changes"]),
        )  # fmt: skip


def summarize(
    nct_id: str,
    version: int,
    study_title: str | None,
    events: Sequence[Mapping[str, Any]],
    classes: Sequence[Mapping[str, Any]],
) -> VersionSummary:
    """A version's chosen change events (dicts as the feed gives them) and its change classes
    (``{"name": …, **params}``), in words."""
    happened = tuple(f"{class_label(c)} {class_text(c)}".strip() for c in classes)
    changes = tuple((str(e["field"]), change_text(_event(e))) for e in events)
    if happened:
        headline = happened[0]
    elif changes:
        headline = " ".join(changes[0])
    else:
        headline = "changed"
    observed = str(events[0]["observed_at"]) if events else ""
    return VersionSummary(nct_id, version, study_title, observed, headline, happened, changes)


def class_label(found: Mapping[str, Any]) -> str:
    """The words a change class's text follows in a headline."""
    name = str(found.get("name", ""))
    return _LABELS.get(name) or name.replace(".", " ").replace("_", " ") + ":"


def _event(data: Mapping[str, Any]) -> ChangeEvent:
    # The pages' change descriptions read a ChangeEvent; this one is never stored.
    return ChangeEvent(
        field=data["field"], kind=ChangeKind(data["kind"]), old=data["old"], new=data["new"]
    )


# -- one version ----------------------------------------------------------------------------


def version_message(summary: VersionSummary, base_url: str) -> Message:
    """The message about one study version."""
    more = len(summary.changes) - 1
    title = f"{summary.nct_id}: {summary.headline}" + (f" (+{more} more)" if more > 0 else "")
    links = _links(summary.nct_id, summary.version - 1, summary.version, base_url)
    heading = f"{summary.nct_id} · version {summary.version} · recorded {summary.observed_at[:10]}"
    text = [summary.study_title or summary.nct_id, heading, ""]
    markdown = [f"**{_md(summary.study_title or summary.nct_id)}**", heading, ""]
    if summary.happened:
        text += ["What happened:", *(f"- {line}" for line in summary.happened), ""]
        markdown += ["What happened:", "", *(f"- {_md(line)}" for line in summary.happened), ""]
    text += ["Changed fields:", *_text_lines(summary.changes), ""]
    markdown += ["Changed fields:", "", *_markdown_lines(summary.changes), ""]
    text += [f"{label}: {url}" for label, url in links]
    markdown += [f"{label}: <{url}>" for label, url in links]
    return Message(elide(title, TITLE_MAX), "\n".join(text), "\n".join(markdown))


def _links(nct_id: str, old: int, new: int, base_url: str) -> list[tuple[str, str]]:
    """The study page, and the compare page of two versions (when there is an older one)."""
    base = base_url.rstrip("/")
    found = [("Study page", f"{base}/trials/{nct_id}.html")]
    if old >= 1:
        query = urlencode({"from": old, "to": new})
        label = f"Compare versions {old} and {new}"
        found.append((label, f"{base}/trials/{nct_id}/compare?{query}"))
    return found


def _text_lines(changes: Iterable[tuple[str, str]]) -> list[str]:
    return [f"- {field} — {text}" for field, text in changes]


def _markdown_lines(changes: Iterable[tuple[str, str]]) -> list[str]:
    # Field names as plain text: services that take HTML derive their plain-text part from
    # it, and code spans break those lines apart.
    return [f"- {_md(field)} — {_md(text)}" for field, text in changes]


def _md(text: str) -> str:
    """Registry text inside Markdown: its markup characters shown as typed, and no HTML (a
    service converting to HTML must not get tags from a record)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("<", "&lt;")


# -- digests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    kind: str  # "daily", "weekly"
    start: datetime
    end: datetime
    zone: ZoneInfo

    def describe(self) -> str:
        def local(at: datetime) -> str:
            return f"{at.astimezone(self.zone):%Y-%m-%d %H:%M}"

        return f"{local(self.start)} – {local(self.end)} ({self.zone.key})"


def digest_message(summaries: Sequence[VersionSummary], period: Period, base_url: str) -> Message:
    """One message for a period's versions (in the order recorded), grouped by study."""
    ordered = sorted(summaries, key=lambda s: (s.nct_id, s.version))
    studies = [list(group) for _, group in groupby(ordered, key=lambda s: s.nct_id)]
    count = f"{_plural(len(studies), 'study', 'studies')} changed"
    title = f"ctmirror {period.kind} digest: {count} ({_plural(len(summaries), 'version')})"
    intro = f"{count}, {period.describe()}."
    text, markdown = [intro, ""], [intro, ""]
    for versions in studies[:DIGEST_STUDIES_MAX]:
        study_text, study_markdown = _digest_study(versions, base_url)
        text += [*study_text, ""]
        markdown += [*study_markdown, ""]
    if len(studies) > DIGEST_STUDIES_MAX:
        rest = _plural(len(studies) - DIGEST_STUDIES_MAX, "more study", "more studies")
        query = urlencode({"since": period.start.isoformat(timespec="seconds")})
        url = f"{base_url.rstrip('/')}/?{query}"
        text.append(f"… and {rest}: {url}")
        markdown.append(f"… and {rest}: <{url}>")
    return Message(elide(title, TITLE_MAX), "\n".join(text).rstrip(), "\n".join(markdown).rstrip())


def _digest_study(versions: Sequence[VersionSummary], base_url: str) -> tuple[list[str], list[str]]:
    first, last = versions[0], versions[-1]
    name = f"{first.nct_id} — {last.study_title or 'untitled'}"
    text, markdown = [name, "=" * min(len(name), 72)], [f"## {_md(name)}", ""]
    for summary in versions[:DIGEST_VERSIONS_MAX]:
        lead = f"Version {summary.version} ({summary.observed_at[:10]}): "
        shown, hidden = summary.changes[:DIGEST_LINES_MAX], summary.changes[DIGEST_LINES_MAX:]
        rest = [f"- … and {_plural(len(hidden), 'more field')}"] if hidden else []
        text += [lead + summary.headline, *_text_lines(shown), *rest]
        markdown += [lead + _md(summary.headline), "", *_markdown_lines(shown), *rest, ""]
    if len(versions) > DIGEST_VERSIONS_MAX:
        later = f"… and {_plural(len(versions) - DIGEST_VERSIONS_MAX, 'later version')}"
        text.append(later)
        markdown += [later, ""]
    links = _links(first.nct_id, first.version - 1, last.version, base_url)
    text += [f"{label}: {url}" for label, url in links]
    markdown += [f"{label}: <{url}>" for label, url in links]
    return text, markdown


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"
