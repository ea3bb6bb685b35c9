"""First sights fold: a long first-sight listing is one line on the Markdown page (a short one
keeps the seed's lines) and always one row on the HTML page; long texts compare inline."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fake_ctgov import load_study

from mirror.config import PagesSettings
from mirror.feed import PageInput
from mirror.record import ChangeKind
from mirror.render import render_html, render_markdown
from mirror.render.describe import inline_diff
from mirror.store import ChangeEvent

SEEN = datetime(2026, 5, 12, 7, 0, tzinfo=UTC)
NCT = "NCT00033839"  # 26 sites


def first_sight(fields: list[str]) -> list[ChangeEvent]:
    return [
        ChangeEvent(id=n + 1, nct_id=NCT, version=1, field=f, kind=ChangeKind.ADDED, old=None,
                    new="…", observed_at=SEEN, source_date=None, initial=True)
        for n, f in enumerate(fields)
    ]  # fmt: skip


def page(events: list[ChangeEvent], first_seen: dict[int, int]) -> PageInput:
    return PageInput(load_study(NCT), NCT, 1, SEEN, events, first_seen=first_seen)


def test_a_long_first_sight_is_one_markdown_line() -> None:
    """26 site lines and the status fold into one line that counts every field of the version."""
    events = first_sight(["status.overallStatus"] + [f"locations.site {n}" for n in range(26)])
    markdown = render_markdown(page(events, {1: 412}), PagesSettings(recent_days=100_000))
    section = markdown.split("## Recent Field Changes")[1].split("\n## ")[0]
    assert re.findall(r"^- .*$", section, re.M) == [
        "- first seen (version 1) — 412 fields added _(2026-05-12)_"
    ]


def test_a_short_first_sight_keeps_one_line_per_field() -> None:
    """Up to 20 lines (the seed page lists 15) each field keeps its line."""
    events = first_sight(["status.overallStatus", "design.enrollmentCount"])
    markdown = render_markdown(page(events, {1: 74}), PagesSettings(recent_days=100_000))
    assert "- `status.overallStatus` — added _(2026-05-12)_" in markdown
    assert "first seen" not in markdown


def test_the_html_page_always_folds_a_first_sight() -> None:
    """Even two fields of a first sight are one row, counting the version's fields."""
    events = first_sight(["status.overallStatus", "design.enrollmentCount"])
    html = render_html(page(events, {1: 74}), PagesSettings(recent_days=100_000))
    rows = re.findall(r"<tr class=\"(\w+)\">", html.split('id="recent-field-changes"')[1])
    assert rows == ["first"]
    assert "First seen on 2026-05-12, 74 fields" in html


def test_inline_diff_marks_words_in_reading_order() -> None:
    """Deleted then inserted words where they differ; the unchanged text between kept."""
    old = "Adults older than 18 years.\nNo pregnancy."
    segments = inline_diff(old, "Adults older than 21 years.\nNo pregnancy or breastfeeding.")
    marked = [(m, t) for m, t in segments if m]
    assert marked == [("del", "18"), ("ins", "21"), ("ins", " or breastfeeding")]
    assert "".join(t for m, t in segments if m != "del") == (
        "Adults older than 21 years.\nNo pregnancy or breastfeeding."
    )
