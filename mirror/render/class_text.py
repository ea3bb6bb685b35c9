"""How a change class reads: one line per class on the study pages and in the CLI.

The classes and their parameters are defined in ``mirror.record.classes`` (docs/classes.md); a name
without a description here is shown as its parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from mirror.render.describe import (
    INLINE_VALUE_MAX,
    brief,
    code,
    cut,
    day,
    elide,
    named,
    pair,
    words,
)

ClassParams = Mapping[str, Any]
_NOT_PARAMS = frozenset({"name", "version", "observed_at"})
_MEASURE_MAX = 60  # an outcome measure quoted in a class line
_COUNTRIES_SHOWN = 4


def class_label(found: ClassParams, quote: Callable[[str], str] = str) -> str:
    """The class's name (``quote``-d), then `` (major)`` when its parameters say so."""
    return quote(str(found.get("name", ""))) + (" (major)" if found.get("major") is True else "")


def class_line(found: ClassParams) -> str:
    """``- `enrollment.changed` — 394 → 1,063 (+169.8%), major _(2026-05-12)_``: a change
    class (``{"name", "observed_at", **params}``) as a Markdown list item."""
    text = class_text(found)
    when = found.get("observed_at")
    date = f" _({day(when)})_" if isinstance(when, datetime) else ""
    return f"- {code(str(found.get('name', '')))}" + (f" — {text}" if text else "") + date


def class_text(found: ClassParams) -> str:
    """A change class in words, on one line; an unknown class as ``key: value; …``."""
    name = str(found.get("name", ""))
    params = {k: v for k, v in found.items() if k not in _NOT_PARAMS}
    # Outcome classes read alike whatever the list (primary, secondary, other).
    describe = _CLASS_TEXTS.get(re.sub(r"^outcomes\.[^.]+\.", "outcomes.*.", name), _params_text)
    return describe(params)


def _params_text(p: ClassParams) -> str:
    parts = (f"{k}: {elide(_plain(v), 40)}" for k, v in p.items())
    return elide("; ".join(parts), 2 * INLINE_VALUE_MAX)


def _plain(value: Any) -> str:
    """A parameter as text: counts with thousands separators, registry text on one line."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) or "(none)"
    return brief(value)


def _arrow(p: ClassParams, to: Any = None) -> str:
    return pair(_plain(p.get("from")), _plain(p.get("to", to)), INLINE_VALUE_MAX)


def _quoted(measure: Any) -> str:
    return f'"{elide(_plain(measure), _MEASURE_MAX)}"'


def _major(p: ClassParams) -> str:
    return ", major" if p.get("major") is True else ""


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _status_text(p: ClassParams) -> str:
    why = p.get("why_stopped")
    return _arrow(p, "COMPLETED") + (f" (why stopped: {elide(_plain(why), 60)})" if why else "")


def _percent(p: ClassParams) -> str:
    percent = _number(p.get("percent"))
    return f" ({percent:+,.1f}%)" if percent else ""


def _enrollment_text(p: ClassParams) -> str:
    return _arrow(p) + _percent(p) + _major(p)


def _actualized_enrollment_text(p: ClassParams) -> str:
    counts = f"estimated {_plain(p.get('from'))} → actual {_plain(p.get('to'))}"
    return counts + _percent(p) + _major(p)


def _days(days: float, sign: str = "") -> str:
    return f"{days:{sign},.0f} day{'' if abs(days) == 1 else 's'}"


def _date_name(p: ClassParams) -> str:
    return _plain(p.get("date", "date")).replace("_", " ")  # primary_completion


def _shift_text(p: ClassParams) -> str:
    days = _number(p.get("shift_days"))
    shift = f" ({_days(days, '+')})" if days else ""
    return f"{_date_name(p)} {_arrow(p)}{shift}{_major(p)}"


def _actualized_date_text(p: ClassParams) -> str:
    return f"{_date_name(p)} ESTIMATED → ACTUAL ({_plain(p.get('on'))})"


def _results_text(p: ClassParams) -> str:
    days = _number(p.get("days_after_primary_completion"))
    when = f"posted {_plain(p['date'])}" if p.get("date") else "posted"
    if days is None:
        return when
    side = "after" if days >= 0 else "before"
    return f"{when}, {_days(abs(days))} {side} primary completion"


def _similarity(p: ClassParams) -> list[str]:
    value = _number(p.get("similarity"))
    return [f"similarity {value:g}"] if value is not None else []


def _aside(parts: list[str]) -> str:
    return f" ({', '.join(parts)})" if parts else ""


def _lone_outcome_text(p: ClassParams) -> str:
    frame = p.get("time_frame")
    aside = [f"time frame: {elide(_plain(frame), 40)}"] if frame else []
    return _quoted(p.get("measure")) + _aside(aside)


def _reworded_text(p: ClassParams) -> str:
    old, new = cut(_plain(p.get("from_measure")), _plain(p.get("to_measure")), _MEASURE_MAX)
    return f'"{old}" → "{new}"' + _aside(_similarity(p))


def _description_text(p: ClassParams) -> str:
    return _quoted(p.get("measure")) + _aside(_similarity(p))


def _time_frame_text(p: ClassParams) -> str:
    frames = pair(_plain(p.get("from_time_frame")), _plain(p.get("to_time_frame")), 40)
    return f"{_quoted(p.get('measure'))}: {frames}"


def _moved_text(p: ClassParams, way: str, other: str) -> str:
    """A demoted or promoted outcome; the other list's measure only when it was reworded."""
    text = f"{_quoted(p.get('measure'))} {way} {_plain(p.get(way))}"
    if _plain(p.get(other)) == _plain(p.get("measure")):
        return text
    return text + _aside(
        [f"{'now' if way == 'to' else 'was'} {_quoted(p.get(other))}", *_similarity(p)]
    )


def _names(value: Any) -> list[str]:
    return [_plain(v) for v in value] if isinstance(value, list) else []


def _sites_text(p: ClassParams) -> str:
    count, countries = _number(p.get("count")), _names(p.get("countries"))
    if count is None:
        return _params_text(p)
    shown = ", ".join(countries[:_COUNTRIES_SHOWN])
    more = len(countries) - _COUNTRIES_SHOWN
    where = f" ({shown}{f' and {more} more' if more > 0 else ''})" if countries else ""
    return f"{count:,.0f} site{'' if count == 1 else 's'}{where}"


def _collaborators_text(p: ClassParams) -> str:
    parts = [named("added", _names(p.get("added"))), named("removed", _names(p.get("removed")))]
    return "; ".join(part for part in parts if part)


def _eligibility_text(p: ClassParams) -> str:
    return ", ".join(words(f.rsplit(".", 1)[-1]) for f in _names(p.get("fields")))


_CLASS_TEXTS: dict[str, Callable[[ClassParams], str]] = {
    "study.removed": lambda p: f"left the registry (last status: {_plain(p.get('last_status'))})",
    "status.stopped": _status_text,
    "status.completed": _status_text,
    "status.changed": _status_text,
    "results.posted": _results_text,
    "enrollment.changed": _enrollment_text,
    "enrollment.actualized": _actualized_enrollment_text,
    "dates.slipped": _shift_text,
    "dates.advanced": _shift_text,
    "dates.actualized": _actualized_date_text,
    "outcomes.*.added": _lone_outcome_text,
    "outcomes.*.removed": _lone_outcome_text,
    "outcomes.*.reworded": _reworded_text,
    "outcomes.*.description_changed": _description_text,
    "outcomes.*.timeframe_changed": _time_frame_text,
    "outcomes.*.demoted": lambda p: _moved_text(p, "to", "to_measure"),
    "outcomes.*.promoted": lambda p: _moved_text(p, "from", "from_measure"),
    "eligibility.changed": _eligibility_text,
    "sites.added": _sites_text,
    "sites.removed": _sites_text,
    "sponsor.changed": _arrow,
    "sponsor.collaborators_changed": _collaborators_text,
    "design.phases_changed": _arrow,
}
