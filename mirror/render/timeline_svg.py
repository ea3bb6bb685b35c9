"""The version timeline of the HTML study page: geometry computed here, drawn by the template.

One slot per stored version, in version order (registry dates are uneven and many versions
share a day; the table under the chart gives every date). Three lanes: the overall status as
coloured bands, the enrollment as a step line up from 0, the primary completion date as a step
line on a date scale (a slip goes up). A filled point is ACTUAL, a hollow one ESTIMATED. Every
text here is registry text or built from it: the template escapes it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

WIDTH = 640
LEFT = 84  # the margin holding the lanes' axis labels
RIGHT = 12
STATUS_TOP, STATUS_HEIGHT = 6, 22
ENROLLMENT_TOP = 52
COMPLETION_TOP = 138
LANE_HEIGHT = 56
AXIS_Y = COMPLETION_TOP + LANE_HEIGHT  # the version ticks and their labels hang below it
HEIGHT = AXIS_Y + 36
CHAR_WIDTH = 6.2  # of the 10px band labels, to decide whether a label fits its band
TICK_SPACING = 76  # the least room between two labelled versions
NO_VALUE = "—"
# Known statuses get a colour (a CSS class of the page); any other status shares one.
_STATUS_CSS = {
    "NOT_YET_RECRUITING": "st-planned",
    "RECRUITING": "st-recruiting",
    "ENROLLING_BY_INVITATION": "st-recruiting",
    "ACTIVE_NOT_RECRUITING": "st-active",
    "COMPLETED": "st-completed",
    "SUSPENDED": "st-suspended",
    "TERMINATED": "st-terminated",
    "WITHDRAWN": "st-withdrawn",
}
_REMOVED = "(left the registry)"


@dataclass(frozen=True)
class Band:
    """A run of versions with the same overall status."""

    x: float
    width: float
    status: str
    css: str
    label: str  # the status when it fits in the band, else ""
    title: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    actual: bool
    title: str


@dataclass(frozen=True)
class Lane:
    """A step line: its path, one point per version that has a value, its axis labels."""

    name: str
    note: str
    top: float
    path: str
    points: list[Point]
    high: str  # the axis label at the top of the lane
    low: str  # and at its bottom


@dataclass(frozen=True)
class Tick:
    x: float
    version: str
    date: str  # "" when the tick is not labelled


@dataclass(frozen=True)
class VersionRow:
    """One version in the table under the chart."""

    version: int
    date: str
    status: str
    enrollment: str
    primary_completion: str
    classes: list[str]


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    left: int
    right: int
    status_top: int
    status_height: int
    lane_height: int
    axis_y: int
    point_radius: float  # smaller when many versions share the width
    bands: list[Band]
    lanes: list[Lane]
    ticks: list[Tick]
    legend: list[tuple[str, str]]  # (status, css class), in order of first appearance
    summary: str  # the chart in one sentence, for screen readers
    rows: list[VersionRow]


def timeline_chart(entries: Sequence[Mapping[str, Any]]) -> Timeline | None:
    """The chart of a study's versions (``PageInput.timeline``, oldest first); None for a study
    with fewer than two versions."""
    if len(entries) < 2:
        return None
    slot = (WIDTH - LEFT - RIGHT) / len(entries)
    xs = [LEFT + (i + 0.5) * slot for i in range(len(entries))]
    bands = _bands(entries, slot)
    lanes = [_lane(spec, entries, xs, slot) for spec in _LANES]
    legend = list(dict.fromkeys((b.status, b.css) for b in bands))
    radius = _r(min(3.0, max(1.0, slot / 4)))
    return Timeline(
        WIDTH, HEIGHT, LEFT, RIGHT, STATUS_TOP, STATUS_HEIGHT, LANE_HEIGHT, AXIS_Y, radius, bands,
        lanes,
        _ticks(entries, xs), legend, _summary(entries, bands), [_row(e) for e in entries],
    )  # fmt: skip


def _bands(entries: Sequence[Mapping[str, Any]], slot: float) -> list[Band]:
    bands: list[Band] = []
    start = 0
    for i, entry in enumerate(entries):
        status = _status(entry)
        if i + 1 < len(entries) and _status(entries[i + 1]) == status:
            continue
        x, width = LEFT + start * slot, (i + 1 - start) * slot
        label = status if len(status) * CHAR_WIDTH + 8 <= width else ""
        first, last = entries[start]["version"], entry["version"]
        span = f"v{first}" if first == last else f"v{first}–v{last}"
        css = "st-removed" if entry.get("snapshot") is None else _STATUS_CSS.get(status, "st-other")
        bands.append(Band(_r(x), _r(width), status, css, label, f"{span}: {status}"))
        start = i + 1
    return bands


@dataclass(frozen=True)
class _LaneSpec:
    name: str
    note: str
    top: float
    key: str  # of the timeline's snapshot; its type is in ``<key>_type``
    scale: Callable[[Any], float | None]  # a value as a number on the lane's axis, or None
    from_zero: bool  # counts are drawn from 0, so that a change shows its size


def _lane(
    spec: _LaneSpec, entries: Sequence[Mapping[str, Any]], xs: list[float], slot: float
) -> Lane:
    """A step line of one snapshot value, with a point for each version that has it."""
    values = [(_snapshot(e).get(spec.key), _snapshot(e).get(f"{spec.key}_type")) for e in entries]
    numbers = [spec.scale(value) for value, _ in values]
    known = [(n, v) for n, (v, _) in zip(numbers, values, strict=True) if n is not None]
    if not known:
        return Lane(spec.name, spec.note, spec.top, "", [], "", NO_VALUE)
    (low, low_value), (high, high_value) = (f(known, key=lambda k: k[0]) for f in (min, max))
    if spec.from_zero and low > 0:
        low, low_value = 0.0, 0
    slots: list[Point | None] = []
    for entry, x, n, (value, kind) in zip(entries, xs, numbers, values, strict=True):
        if n is None:
            slots.append(None)
            continue
        y = spec.top + LANE_HEIGHT * ((high - n) / (high - low) if high > low else 0.5)
        title = f"v{entry['version']} ({_date_of(entry)}): {_shown(value, kind)}"
        slots.append(Point(_r(x), _r(y), kind == "ACTUAL", title))
    low_label = _shown(low_value) if high > low else ""  # a single value has one label
    points = [p for p in slots if p is not None]
    path = _step_path(slots, slot)
    return Lane(spec.name, spec.note, spec.top, path, points, _shown(high_value), low_label)


def _step_path(slots: list[Point | None], slot: float) -> str:
    """Each value held until the next version's and the last to the end of its slot; the line
    breaks at a version without a value (a tombstone)."""
    steps: list[str] = []
    for before, point in itertools.pairwise([None, *slots, None]):
        if point is None:
            steps += [f"H{_r(before.x + slot / 2)}"] if before is not None else []
        elif before is None:
            steps.append(f"M{point.x} {point.y}")
        else:
            steps.append(f"H{point.x}" + (f"V{point.y}" if point.y != before.y else ""))
    return "".join(steps)


def _ticks(entries: Sequence[Mapping[str, Any]], xs: list[float]) -> list[Tick]:
    """A tick per version; a label (version and date) on every k-th, so labels never overlap."""
    every = math.ceil(len(entries) / max(1, (WIDTH - LEFT - RIGHT) // TICK_SPACING))
    ticks = []
    for i, (entry, x) in enumerate(zip(entries, xs, strict=True)):
        labelled = i % every == 0
        version = f"v{entry['version']}" if labelled else ""
        ticks.append(Tick(_r(x), version, _date_of(entry) if labelled else ""))
    return ticks


def _summary(entries: Sequence[Mapping[str, Any]], bands: list[Band]) -> str:
    """The chart in one sentence: span, status runs, first and last enrollment and date."""
    before, after = _snapshot(entries[0]), _snapshot(entries[-1])
    values = "; ".join(
        f"{label}: {_shown(before.get(key))} → {_shown(after.get(key))}"
        for label, key in (
            ("enrollment", "enrollment"),
            ("primary completion", "primary_completion"),
        )
    )
    span = f"{_date_of(entries[0])} to {_date_of(entries[-1])}"
    statuses = " → ".join(b.status for b in bands)
    return f"{len(entries)} versions, {span}. Status: {statuses}. First to last, {values}."


def _row(entry: Mapping[str, Any]) -> VersionRow:
    snap = _snapshot(entry)
    return VersionRow(
        entry["version"],
        _date_of(entry),
        _status(entry),
        _shown(snap.get("enrollment"), snap.get("enrollment_type")),
        _shown(snap.get("primary_completion"), snap.get("primary_completion_type")),
        [_text(c.get("name")) for c in entry.get("classes") or ()],
    )


# -- values -----------------------------------------------------------------------------------


def _snapshot(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    snap = entry.get("snapshot")
    return snap if isinstance(snap, Mapping) else {}


def _status(entry: Mapping[str, Any]) -> str:
    if entry.get("snapshot") is None:
        return _REMOVED
    return _text(_snapshot(entry).get("overall_status")) or NO_VALUE


def _date_of(entry: Mapping[str, Any]) -> str:
    """The registry's date of a version, else the day the mirror observed it."""
    return _text(entry.get("source_date") or str(entry.get("observed_at") or "")[:10])


def _shown(value: Any, kind: Any = None) -> str:
    if value is None or value == "":
        return NO_VALUE
    text = f"{value:,}" if _count(value) is not None else _text(value)
    return f"{text} ({_text(kind)})" if kind else text


def _text(value: Any) -> str:
    """A value as one line of text (registry text may hold line breaks)."""
    return " ".join(str(value).split()) if value is not None else ""


def _count(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


def _day(value: Any) -> float | None:
    """A registry date (YYYY, YYYY-MM or YYYY-MM-DD; a month is its 1st) as a day number."""
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day = (int(part or 1) for part in match.groups())
    try:
        return float(date(year, month, day).toordinal())
    except ValueError:
        return None


def _r(value: float) -> float:
    return round(value, 1)


_POINTS_NOTE = "● actual, ○ estimated"
_LANES = (
    _LaneSpec("Enrollment", _POINTS_NOTE, ENROLLMENT_TOP, "enrollment", _count, True),
    _LaneSpec(
        "Primary completion", f"later is higher; {_POINTS_NOTE}", COMPLETION_TOP,
        "primary_completion", _day, False,
    ),
)  # fmt: skip
