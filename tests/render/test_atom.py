"""The Atom feed: valid RFC 4287, one entry per study version, newest first, stable ids."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mirror.config import PagesSettings
from mirror.feed import group_versions
from mirror.record import ChangeKind
from mirror.render import atom_feed
from mirror.store import ChangeEvent

NS = {"a": "http://www.w3.org/2005/Atom"}
SITE = "https://mirror.example.org"
SELF = f"{SITE}/v1/changes.atom?field=status.*&nct_id=NCT03039062"
T0 = datetime(2026, 6, 1, 7, 0, 35, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def event(
    nct_id: str, version: int, field: str, kind: ChangeKind, old: Any = None, new: Any = None,
    *, at: datetime = T0, initial: bool = False,
) -> ChangeEvent:  # fmt: skip
    return ChangeEvent(
        id=next(_ids), nct_id=nct_id, version=version, field=field, kind=kind, old=old, new=new,
        observed_at=at, source_date="2026-05-29", initial=initial,
    )  # fmt: skip


def feed(events: Sequence[ChangeEvent], settings: PagesSettings | None = None) -> ET.Element:
    versions = group_versions(events)
    data = atom_feed(
        versions, self_url=SELF, site_url=SITE + "/", settings=settings or PagesSettings()
    )
    assert data.startswith(b"<?xml")
    return ET.fromstring(data)


def text(element: ET.Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None and found.text is not None, f"missing {path}"
    return found.text


def entries(root: ET.Element) -> list[ET.Element]:
    return root.findall("a:entry", NS)


def sample() -> list[ChangeEvent]:
    """Two studies: a first sighting, then a two-field version, and another study's change."""
    day2 = T0 + timedelta(days=1)
    return [
        event("NCT03039062", 1, "status.overallStatus", ChangeKind.ADDED, new="RECRUITING",
              initial=True),
        event("NCT03039062", 1, "design.enrollmentCount", ChangeKind.ADDED, new=180, initial=True),
        event("NCT06486350", 4, "status.completionDate", ChangeKind.CHANGED, "2025-06", "2026-06"),
        event("NCT03039062", 2, "design.enrollmentCount", ChangeKind.CHANGED, 180, 164, at=day2),
        event("NCT03039062", 2, "status.overallStatus", ChangeKind.CHANGED, "RECRUITING",
              "COMPLETED", at=day2),
        event("NCT03039062", 2, "status.whyStopped", ChangeKind.ADDED, new="Enough data", at=day2),
    ]  # fmt: skip


def test_feed_has_every_element_atom_requires() -> None:
    """Feed id/title/updated/author/self link; each entry id, title, updated, link, content."""
    root = feed(sample())
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    assert text(root, "a:id") == SELF
    assert text(root, "a:title") == "ctmirror: ClinicalTrials.gov field changes"
    assert text(root, "a:author/a:name") == "ctmirror"
    assert datetime.fromisoformat(text(root, "a:updated")) == T0 + timedelta(days=1)
    links = {(link.get("rel"), link.get("href")) for link in root.findall("a:link", NS)}
    assert ("self", SELF) in links and ("alternate", SITE + "/") in links
    for entry in entries(root):
        for required in ("a:id", "a:title", "a:updated", "a:content"):
            assert text(entry, required).strip()
        assert entry.find("a:content", NS).get("type") == "html"  # type: ignore[union-attr]
        assert entry.find("a:link", NS).get("href").startswith(f"{SITE}/trials/")  # type: ignore[union-attr]
    ids = [text(e, "a:id") for e in entries(root)]
    assert len(ids) == len(set(ids)) == 3


def test_feedparser_reads_the_feed_without_complaint() -> None:
    """feedparser parses the feed as well-formed Atom 1.0."""
    import feedparser

    parsed = feedparser.parse(atom_feed(group_versions(sample()), self_url=SELF, site_url=SITE,
                                        settings=PagesSettings()))  # fmt: skip
    assert not parsed.bozo and parsed.version == "atom10"
    assert len(parsed.entries) == 3


def test_one_entry_per_study_version_newest_first() -> None:
    """Events of one study version make one entry; entries run from the newest observation."""
    root = feed(sample())
    assert [text(e, "a:id") for e in entries(root)] == [
        f"{SITE}/v1/studies/NCT03039062/versions/2",
        f"{SITE}/v1/studies/NCT06486350/versions/4",
        f"{SITE}/v1/studies/NCT03039062/versions/1",
    ]
    updated = [datetime.fromisoformat(text(e, "a:updated")) for e in entries(root)]
    assert updated == [T0 + timedelta(days=1), T0, T0]


def test_entry_title_names_the_most_important_change_and_counts_the_rest() -> None:
    """The title leads with the first field in recent_fields order, then 'and N more'."""
    titles = [text(e, "a:title") for e in entries(feed(sample()))]
    assert titles == [
        "NCT03039062: status.overallStatus RECRUITING → COMPLETED and 2 more",
        "NCT06486350: status.completionDate 2025-06 → 2026-06",
        "NCT03039062: first version, 2 fields",
    ]
    enrollment_first = PagesSettings(recent_fields=("design.*", "status.*"))
    assert text(entries(feed(sample(), enrollment_first))[0], "a:title") == (
        "NCT03039062: design.enrollmentCount 180 → 164 and 2 more"
    )


def test_entry_content_lists_every_change_of_the_version() -> None:
    """The content names each field of the version with what happened to it."""
    content = html.unescape(text(entries(feed(sample()))[0], "a:content"))
    items = re.findall(r"<li>(.*?)</li>", content)
    assert items == [
        "<code>status.overallStatus</code> changed: RECRUITING → COMPLETED",
        "<code>design.enrollmentCount</code> changed: 180 → 164",
        "<code>status.whyStopped</code> added: Enough data",
    ]
    assert f'<a href="{SITE}/trials/NCT03039062.html?version=2">NCT03039062</a>' in content
    assert f'<a href="{SITE}/trials/NCT03039062/compare?to=2">' in content
    assert "version 2, observed 2026-06-02 07:00 UTC (registry date 2026-05-29)" in content


def test_a_first_sight_is_one_line_not_its_fields() -> None:
    """A first version's entry counts its fields instead of listing them (folded)."""
    content = html.unescape(text(entries(feed(sample()))[2], "a:content"))
    assert "<li>" not in content and "First seen on 2026-06-01, 2 fields." in content
    assert "/compare" not in content


def test_list_changes_in_titles_name_the_items() -> None:
    """An outcome change is titled by the measure added, not by raw JSON."""
    before, after = [{"measure": "ORR"}], [{"measure": "ORR"}, {"measure": "Overall survival"}]
    change = event("NCT03039062", 3, "outcomes.primary", ChangeKind.CHANGED, before, after)
    assert text(entries(feed([change]))[0], "a:title") == (
        'NCT03039062: outcomes.primary added "Overall survival"'
    )


def test_registry_text_is_escaped_and_made_xml_safe() -> None:
    """Markup in values stays text in the HTML content; characters XML forbids are replaced."""
    change = event("NCT03039062", 2, "status.whyStopped", ChangeKind.ADDED,
                   new="<script>x</script>\x01 & done")  # fmt: skip
    entry = entries(feed([change]))[0]
    content = text(entry, "a:content")
    assert "&lt;script&gt;x&lt;/script&gt;\ufffd &amp; done" in content
    assert "<script>" not in content
    assert (
        text(entry, "a:title")
        == "NCT03039062: status.whyStopped added: <script>x</script>\ufffd & done"
    )


def test_entry_ids_are_stable_across_renderings() -> None:
    """The same version gets the same entry id whatever else the feed holds."""
    alone = feed(sample()[3:])
    together = feed(sample())
    assert text(entries(alone)[0], "a:id") == text(entries(together)[0], "a:id")


def test_empty_feed_is_still_valid() -> None:
    """No events: a feed with its id, title and updated, and no entries."""
    root = feed([])
    assert entries(root) == []
    assert text(root, "a:id") == SELF and text(root, "a:title") and text(root, "a:updated")
