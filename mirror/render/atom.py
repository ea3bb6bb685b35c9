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
from mirror.feed import VersionChanges
from mirror.record import ChangeKind
from mirror.render.describe import change_summary, change_text, field_rank
from mirror.store import ChangeEvent

FEED_TITLE = "ctmirror: ClinicalTrials.gov field changes"
TITLE_VALUE_MAX = 40
# Characters XML 1.0 cannot carry at all (registry text could hold any of them).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def atom_feed(
    versions: Sequence[VersionChanges], *, self_url: str, site_url: str, settings: PagesSettings
) -> bytes:
    """An Atom document of ``versions`` (``mirror.feed.version_changes``): one entry per study
    version, newest first; a folded first sight is one line, not its hundreds of fields.

    ``self_url`` is the feed's own URL (its id and ``rel="self"`` link); ``site_url`` the base
    of the pages and API that entries link to. ``settings.recent_fields`` decides which field
    names an entry's title (the first matching field in that order).
    """
    site = site_url.rstrip("/")
    ordered = sorted(versions, key=lambda v: (_instant(v.observed_at), v.last_id), reverse=True)
    feed = FeedGenerator()
    feed.id(self_url)
    feed.title(FEED_TITLE)
    feed.author({"name": "ctmirror"})
    feed.link(href=self_url, rel="self", type="application/atom+xml")
    feed.link(href=f"{site}/", rel="alternate", type="text/html")
    feed.generator("ctmirror")
    feed.updated(max((_instant(v.observed_at) for v in ordered), default=datetime.now(UTC)))
    for version in ordered:
        _add_entry(feed, version, site, settings)
    data: bytes = feed.atom_str(pretty=True)
    return data


def _add_entry(
    feed: FeedGenerator, version: VersionChanges, site: str, settings: PagesSettings
) -> None:
    ranked = sorted(
        version.events, key=lambda e: (field_rank(e.field, settings.recent_fields), e.field)
    )
    nct_id, number = version.nct_id, version.version
    page = f"{site}/trials/{nct_id}"
    entry = feed.add_entry(order="append")
    entry.id(f"{site}/v1/studies/{nct_id}/versions/{number}")
    entry.title(_xml(f"{nct_id}: {_entry_title(version, ranked)}"))
    entry.updated(_instant(version.observed_at))
    entry.published(_instant(version.observed_at))
    # One link only: feedgen 1.0 drops an entry link's rel and type (its loop variable shadows
    # the link), and two alternates without a type would make the feed invalid. The compare
    # page is linked from the content.
    entry.link(href=f"{page}.html?version={number}", rel="alternate", type="text/html")
    for field in dict.fromkeys(e.field.split(".", 1)[0] for e in ranked):
        entry.category(term=field)
    entry.content(_xml(_content(version, ranked, page)), type="html")


def _entry_title(version: VersionChanges, events: Sequence[ChangeEvent]) -> str:
    """``status.overallStatus RECRUITING → COMPLETED and 2 more``; a first sighting says so."""
    if version.folded or not events:
        n = version.first_sight
        return f"first version, {n} field{'s' if n != 1 else ''}"
    top = events[0]
    if top.kind is ChangeKind.CHANGED:
        what = change_summary(top.field, top.old, top.new, TITLE_VALUE_MAX)
    else:
        what = change_text(top, TITLE_VALUE_MAX)
    more = f" and {len(events) - 1} more" if len(events) > 1 else ""
    return f"{top.field} {what}{more}"


def _content(version: VersionChanges, events: Sequence[ChangeEvent], page: str) -> str:
    when = f"{_instant(version.observed_at):%Y-%m-%d %H:%M} UTC"
    registry = f" (registry date {version.source_date})" if version.source_date else ""
    head = Markup(
        '<p><a href="{}.html?version={}">{}</a> (<a href="{}.md?version={}">Markdown</a>): '
        "version {}, observed {}{}</p>"
    ).format(page, version.version, version.nct_id, page, version.version, version.version,
             when, registry)  # fmt: skip
    if version.folded or not events:
        n = version.first_sight
        return str(head + Markup("<p>First seen on {}, {} field{}.</p>").format(
            f"{_instant(version.observed_at):%Y-%m-%d}", n, "s" if n != 1 else ""))  # fmt: skip
    items = (Markup("<li><code>{}</code> {}</li>").format(e.field, change_text(e)) for e in events)
    compare = Markup('<p><a href="{}/compare?to={}">Compare with the version before</a></p>')
    return str(
        head
        + Markup("<ul>")
        + Markup("").join(items)
        + Markup("</ul>")
        + compare.format(page, version.version)
    )


def _instant(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
