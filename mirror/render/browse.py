"""The pages for people besides the study page: the change browser (``/``), the study list
(``/trials``), two versions compared, the watches; and the study page's version bar and
folded first sights. Templates in ``templates/`` (autoescape on: registry text is escaped
there), one stylesheet in ``static/``; no scripts.

The routes (``mirror.serve.pages``) read the data (``mirror.feed``) and build the links; these
functions only shape and render.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2

from mirror.feed import (
    CompareInput,
    Labels,
    PageInput,
    StudyRow,
    VersionChanges,
    VersionMark,
    WatchRun,
)
from mirror.record import FieldChange
from mirror.render.describe import (
    ChangeRow,
    Segment,
    change_row,
    change_text,
    day,
    inline_diff,
    is_long_text,
    value_row,
    words,
)
from mirror.store import ChangeEvent

FOLD_MARKDOWN_LINES = 20  # a first sight listing more lines than this folds on the Markdown page


@functools.cache
def templates() -> jinja2.Environment:
    loader = jinja2.PackageLoader("mirror.render", "templates")
    options: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": True}
    return jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, **options
    )


def _render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


@functools.cache
def stylesheet() -> bytes:
    """The pages' stylesheet (served at ``/static/ctmirror.css``)."""
    return (resources.files("mirror.render") / "static" / "ctmirror.css").read_bytes()


def error_page(heading: str, message: str) -> str:
    return _render("error.html", here="", heading=heading, message=message)


# -- the study page: first sights folded, the version bar ----------------------------------


@dataclass(frozen=True)
class FirstSightRow:
    """A study's first version in "Recent Field Changes": one line instead of every field."""

    version: int
    date: str
    count: int
    url: str
    kind: str = "first"


def folded_rows(events: Sequence[ChangeEvent], page: PageInput) -> list[ChangeRow | FirstSightRow]:
    """The HTML page's change rows of ``events``: each first sight folded into one row."""
    rows: list[ChangeRow | FirstSightRow] = []
    folded: set[int] = set()
    for event in events:
        if not event.initial:
            rows.append(change_row(event))
        elif event.version not in folded:
            folded.add(event.version)
            count = page.first_seen.get(event.version) or sum(
                1 for e in events if e.initial and e.version == event.version
            )
            url = f"?version={event.version}" if event.version != page.version else ""
            rows.append(FirstSightRow(event.version, day(event.observed_at), count, url))
    return rows


def folded_lines(events: Sequence[ChangeEvent], first_seen: Mapping[int, int]) -> list[Any]:
    """The Markdown page's events, a first sight listing more than FOLD_MARKDOWN_LINES fields
    replaced by one ``(version, date, count)`` (a short one keeps the seed page's lines)."""
    listed: dict[int, int] = {}
    for e in events:
        listed[e.version] = listed.get(e.version, 0) + e.initial
    out: list[Any] = []
    seen: set[int] = set()
    for e in events:
        if not (e.initial and listed[e.version] > FOLD_MARKDOWN_LINES):
            out.append(e)
        elif e.version not in seen:
            seen.add(e.version)
            count = first_seen.get(e.version) or listed[e.version]
            out.append((e.version, day(e.observed_at), count))
    return out


@dataclass(frozen=True)
class Mark:
    version: int
    date: str
    origin: str
    has_record: bool
    latest: bool
    url: str


@dataclass(frozen=True)
class VersionBar:
    marks: list[Mark]
    current: Mark | None
    old: bool  # the page shows a version other than the study's present one
    latest_url: str
    previous: str
    next: str
    compare_previous: str
    compare_latest: str


def version_bar(page: PageInput) -> VersionBar:
    """Every version with its date and origin, previous/next, the latest, compare links."""
    nct = page.nct_id
    latest = page.latest if page.latest is not None else page.version
    marks = [_mark(m, latest, nct) for m in page.versions]
    readable = [m for m in marks if m.has_record]
    at = next((i for i, m in enumerate(readable) if m.version == page.version), None)
    before = readable[at - 1] if at else None
    after = readable[at + 1] if at is not None and at + 1 < len(readable) else None
    compare = f"/trials/{nct}/compare"
    current = next((m for m in marks if m.version == page.version), None)
    old = bool(page.versions) and page.version != latest
    return VersionBar(
        marks, current, old, f"/trials/{nct}.html",
        before.url if before else "", after.url if after else "",
        f"{compare}?from={before.version}&to={page.version}" if before else "",
        f"{compare}?from={page.version}&to={latest}" if old else "",
    )  # fmt: skip


def _mark(m: VersionMark, latest: int, nct_id: str) -> Mark:
    when = m.source_date or day(m.observed_at)
    url = f"/trials/{nct_id}.html" + ("" if m.version == latest else f"?version={m.version}")
    return Mark(m.version, when, m.origin, m.has_record, m.version == latest, url)


# -- the change browser ----------------------------------------------------------------------


@dataclass(frozen=True)
class VersionBlock:
    nct_id: str
    title: str
    version: int
    date: str
    observed: str
    source_date: str | None
    classes: list[str]
    folded: bool
    first_sight: int
    rows: list[ChangeRow]


def changes_page(
    versions: Sequence[VersionChanges],
    labels: Labels,
    *,
    form: Mapping[str, str],
    links: Mapping[str, str],
    watches: Sequence[str],
    error: str | None = None,
) -> str:
    """``/``: one block per study version, newest first, with the filter form and paging."""
    blocks = [
        VersionBlock(
            v.nct_id,
            labels.titles.get(v.nct_id, v.nct_id),
            v.version,
            day(v.observed_at),
            f"{v.observed_at:%Y-%m-%dT%H:%M:%SZ}",
            v.source_date,
            labels.classes.get((v.nct_id, v.version), []),
            v.folded,
            v.first_sight,
            [change_row(e) for e in v.events],
        )  # fmt: skip
        for v in versions
    ]
    return _render(
        "changes.html", here="changes", versions=blocks, form=form, links=links,
        watches=watches, error=error,
    )  # fmt: skip


# -- the study list --------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyLine:
    nct_id: str
    title: str
    status: str | None
    state: str
    versions: int
    date: str


def studies_page(
    rows: Sequence[StudyRow],
    total: int,
    offset: int,
    *,
    form: Mapping[str, str],
    links: Mapping[str, str],
    statuses: Sequence[str],
    watches: Sequence[str],
    error: str | None = None,
) -> str:
    lines = [
        StudyLine(
            r.nct_id,
            r.title,
            r.status,
            r.state,
            r.versions,
            day(r.last_change) if r.last_change else "—",
        )  # fmt: skip
        for r in rows
    ]
    return _render(
        "trials.html", here="trials", rows=lines, total=total, first=offset + 1,
        last=offset + len(lines), form=form, links=links, statuses=statuses, watches=watches,
        error=error,
    )  # fmt: skip


# -- compare ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareRow:
    field: str
    kind: str
    row: ChangeRow | None  # side by side
    inline: list[Segment] | None  # a long text as one inline diff


@dataclass(frozen=True)
class Area:
    key: str
    name: str


@dataclass(frozen=True)
class MarkLabel:
    version: int
    label: str


def compare_page(c: CompareInput, changes: Sequence[FieldChange], links: Mapping[str, str]) -> str:
    """Two versions side by side: only the fields that differ, grouped by area."""
    groups: dict[str, list[CompareRow]] = {}
    for change in changes:
        area = change.field.split(".", 1)[0]
        groups.setdefault(area, []).append(_compare_row(change))
    by_version = {m.version: m for m in c.versions}
    marks = [MarkLabel(m.version, _label(m)) for m in reversed(c.versions)]
    return _render(
        "compare.html", here="", c=c, marks=marks, links=links,
        groups=[(Area(k, words(k).capitalize()), rows) for k, rows in groups.items()],
        count=len(changes), old_label=_label(by_version[c.old]),
        new_label=_label(by_version[c.new]),
    )  # fmt: skip


def _compare_row(change: FieldChange) -> CompareRow:
    if is_long_text(change.old, change.new):
        segments = inline_diff(change.old or "", change.new or "")
        return CompareRow(change.field, change.kind.value, None, segments)
    row = value_row(change.field, change.kind, change.old, change.new)
    return CompareRow(change.field, change.kind.value, row, None)


def _label(m: VersionMark) -> str:
    left = "" if m.has_record else ", left the registry"
    return f"v{m.version} · {m.source_date or day(m.observed_at)} · {m.origin}{left}"


# -- watches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentChange:
    nct_id: str
    version: int
    field: str
    text: str
    date: str


@dataclass(frozen=True)
class WatchView:
    name: str
    kind: str
    what: str
    schedule: str | None
    studies: int
    run: WatchRun | None
    run_started: str
    run_finished: str
    changes: list[RecentChange]


def watch_view(
    watch: Mapping[str, Any], studies: int, run: WatchRun | None, changes: Sequence[ChangeEvent]
) -> WatchView:
    """A watch (``mirror.pipeline.describe``'s dict) as the watches page shows it."""
    kind = str(watch["kind"])
    if kind == "ids":
        ids = list(watch["nct_ids"])
        what = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    elif kind == "search":
        what = " ".join(f"{k}={v}" for k, v in sorted(watch["query"].items()))
    else:
        what = "the whole registry"
    recent = [
        RecentChange(e.nct_id, e.version, e.field, change_text(e, 60), day(e.observed_at))
        for e in changes
    ]
    return WatchView(
        str(watch["name"]), kind, what, watch["schedule"], studies, run,
        _instant(run.started_at) if run else "",
        _instant(run.finished_at) if run and run.finished_at else "", recent,
    )  # fmt: skip


def _instant(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def watches_page(watches: Sequence[WatchView]) -> str:
    return _render("watches.html", here="watches", watches=watches)
