"""The change feed as Atom (RFC 4287): one entry per study version, listing all its changes.

Entry ids are the API URL of the version (``{site}/v1/studies/{nct}/versions/{n}``): stable,
unique, and dereferenceable to the raw record of that version.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from feedgen.feed import FeedGenerator
from markupsafe import Markup

from mirror.config import PagesSettings
from mirror.record import ChangeKind
from mirror.render.describe import change_summary, change_text, field_rank
from mirror.store import ChangeEvent

FEED_TITLE = "ctmirror: ClinicalTrials.gov field changes"
TITLE_VALUE_MAX = 40
# Characters XML 1.0 cannot carry at all (registry text could hold any of them).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def atom_feed(
    events: Sequence[ChangeEvent], *, self_url: str, site_url: str, settings: PagesSettings
) -> bytes:
    """An Atom document of ``events``: one entry per (study, version), newest first.

    ``self_url`` is the feed's own URL (its id and ``rel="self"`` link); ``site_url`` the base
    of the pages and API that entries link to. ``settings.recent_fields`` decides which field
    names an entry's title (the first matching field in that order).
    """
    site = site_url.rstrip("/")
    versions = _versions(events)
    feed = FeedGenerator()
    feed.id(self_url)
    feed.title(FEED_TITLE)
    feed.author({"name": "ctmirror"})
    feed.link(href=self_url, rel="self", type="application/atom+xml")
    feed.link(href=f"{site}/", rel="alternate", type="text/html")
    feed.generator("ctmirror")
    feed.updated(max((_instant(v[0]) for v in versions), default=datetime.now(UTC)))
    for version in versions:
        _add_entry(feed, version, site, settings)
    data: bytes = feed.atom_str(pretty=True)
    return data


def _versions(events: Sequence[ChangeEvent]) -> list[list[ChangeEvent]]:
    """Events grouped by study version, newest version first (by observation, then by id)."""
    groups: dict[tuple[str, int], list[ChangeEvent]] = {}
    for event in events:
        groups.setdefault((event.nct_id, event.version), []).append(event)
    return sorted(groups.values(), key=_newest, reverse=True)


def _newest(group: list[ChangeEvent]) -> tuple[datetime, int]:
    return max(_instant(e) for e in group), max(e.id or 0 for e in group)


def _add_entry(
    feed: FeedGenerator, events: list[ChangeEvent], site: str, settings: PagesSettings
) -> None:
    first = events[0]
    ranked = sorted(events, key=lambda e: (field_rank(e.field, settings.recent_fields), e.field))
    page = f"{site}/trials/{first.nct_id}"
    entry = feed.add_entry(order="append")
    entry.id(f"{site}/v1/studies/{first.nct_id}/versions/{first.version}")
    entry.title(_xml(f"{first.nct_id}: {_entry_title(ranked)}"))
    entry.updated(_instant(first))
    entry.published(_instant(first))
    # One link only: feedgen 1.0 drops an entry link's rel and type (its loop variable shadows
    # the link), and two alternates without a type would make the feed invalid.
    entry.link(href=f"{page}.html", rel="alternate", type="text/html")
    for field in dict.fromkeys(e.field.split(".", 1)[0] for e in ranked):
        entry.category(term=field)
    entry.content(_xml(_content(ranked, page)), type="html")


def _entry_title(events: Sequence[ChangeEvent]) -> str:
    """``status.overallStatus RECRUITING → COMPLETED and 2 more``; a first sighting says so."""
    if all(e.initial for e in events):
        return f"first version, {len(events)} field{'s' if len(events) != 1 else ''}"
    top = events[0]
    if top.kind is ChangeKind.CHANGED:
        what = change_summary(top.field, top.old, top.new, TITLE_VALUE_MAX)
    else:
        what = change_text(top, TITLE_VALUE_MAX)
    more = f" and {len(events) - 1} more" if len(events) > 1 else ""
    return f"{top.field} {what}{more}"


def _content(events: Sequence[ChangeEvent], page: str) -> str:
    first = events[0]
    when = f"{_instant(first):%Y-%m-%d %H:%M} UTC"
    registry = f" (registry date {first.source_date})" if first.source_date else ""
    head = Markup(
        '<p><a href="{}.html">{}</a> (<a href="{}.md">Markdown</a>): version {}, observed {}{}</p>'
    ).format(page, first.nct_id, page, first.version, when, registry)
    items = (Markup("<li><code>{}</code> {}</li>").format(e.field, change_text(e)) for e in events)
    return str(head + Markup("<ul>") + Markup("").join(items) + Markup("</ul>"))


def _instant(event: ChangeEvent) -> datetime:
    at = event.observed_at
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
