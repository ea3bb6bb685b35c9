"""Change classes: what a new study version means, in named classes with parameters.

Field events say *which fields* changed; a class says *what happened*: the study stopped, the
primary completion date slipped by five months, a primary outcome was swapped for another one.
``classify(old, new)`` is pure: it reads two canonical records (``mirror.record.normalize``) and
returns the classes of the newer one. ``CATALOG`` documents every class it can emit, and
docs/classes.md explains each with an example.

Outcomes are matched across versions by the similarity of their text, never by position or
exact identity, with one one-to-one assignment over all old against all new outcomes
(primary, secondary and other pooled), so a measure moved from primary to secondary is one
demotion, not a removal plus an addition. Text is compared loosely: HTML markup, entities,
markdown escapes and whitespace never count as a change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

from mirror.record.normalize import Canonical
from mirror.record.similarity import MATCH_THRESHOLD, loose, outcome_similarity


@dataclass(frozen=True, slots=True)
class VersionClass:
    """One class of a study version: its catalog name and its parameters (JSON values)."""

    name: str
    params: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@dataclass(frozen=True)
class ClassInfo:
    """A catalog entry: a class name, when it fires, and what each parameter means."""

    name: str
    summary: str
    params: Mapping[str, str]


_KINDS: Final = ("primary", "secondary", "other")
_STOPPED: Final = frozenset({"TERMINATED", "SUSPENDED", "WITHDRAWN"})
_DATES: Final = (
    ("start", "status.startDate"),
    ("primary_completion", "status.primaryCompletionDate"),
    ("completion", "status.completionDate"),
)
MAJOR_ENROLLMENT_PERCENT: Final = 20.0
MAJOR_SHIFT_DAYS: Final = 30
_TIE_BONUS: Final = 0.01
_SHIFT: Final = (
    "date: start | primary_completion | completion; from: previous date; to: new date; "
    "shift_days: days from the previous date to the new one (YYYY-MM: its 1st); "
    f"major: |shift_days| >= {MAJOR_SHIFT_DAYS}"
)
_SIM: Final = "similarity: text similarity of the matched outcomes, 0..1"

# The catalog: "name | when it fires | param: meaning; param: meaning"; an indented line
# continues the one above. {kind} rows exist for primary, secondary and other outcomes.
_CATALOG_TABLE: Final = f"""
study.removed | the study left the registry | last_status: its last overall status
status.stopped | overall status became TERMINATED, SUSPENDED or WITHDRAWN
  | from: previous status; to: new status; why_stopped: status.whyStopped (or null)
status.completed | overall status became COMPLETED | from: previous status
status.changed | any other change of overall status | from: previous status; to: new status
results.posted | results.hasResults became true | date: status.resultsFirstPostDate (or null);
  days_after_primary_completion: days from status.primaryCompletionDate to it (or null)
enrollment.changed | enrollment count changed (type not going ESTIMATED -> ACTUAL)
  | from: previous count; to: new count; percent: change in % of the previous count, to 0.1
  (null from 0 or none); major: |percent| >= {MAJOR_ENROLLMENT_PERCENT:g}, or from 0;
  type: the new design.enrollmentType
enrollment.actualized | enrollment type went ESTIMATED -> ACTUAL (count may change too)
  | from: estimated count; to: actual count; percent: as enrollment.changed;
  major: as enrollment.changed
dates.slipped | a study date moved later | {_SHIFT}
dates.advanced | a study date moved earlier | {_SHIFT}
dates.actualized | a study date's type went ESTIMATED -> ACTUAL
  | date: start | primary_completion | completion; on: the actual date
outcomes.{{kind}}.added | an outcome listed as {{kind}}, with no counterpart in the previous version
  | measure: its measure; time_frame: its time frame (or null)
outcomes.{{kind}}.removed | an outcome listed as {{kind}}, with no counterpart in the new version
  | measure: its measure; time_frame: its time frame (or null)
outcomes.{{kind}}.reworded | an outcome kept as {{kind}}, the wording of its measure edited
  | from_measure: previous measure; to_measure: new measure; {_SIM}
outcomes.{{kind}}.description_changed | an outcome kept as {{kind}} with the same measure,
  its description edited | measure: the measure; {_SIM}
outcomes.{{kind}}.timeframe_changed | an outcome kept as {{kind}}, its time frame edited
  | measure: the new measure; from_time_frame: previous; to_time_frame: new
outcomes.primary.demoted | a primary outcome now listed as secondary or other
  | measure: previous (primary) measure; to_measure: new measure; to: secondary | other; {_SIM}
outcomes.primary.promoted | a secondary or other outcome now listed as primary
  | measure: new (primary) measure; from_measure: previous measure; from: secondary | other;
  {_SIM}
eligibility.changed | eligibility.* fields changed (text compared loosely)
  | fields: sorted paths of the changed fields
sites.added | sites added | count: number of sites; countries: their countries, sorted, unique
sites.removed | sites removed | count: number of sites; countries: their countries, sorted, unique
sponsor.changed | lead sponsor renamed or replaced | from: previous name; to: new name
sponsor.collaborators_changed | collaborators added or removed
  | added: names, sorted; removed: names, sorted
design.phases_changed | design.phases changed | from: previous list; to: new list
"""


def _catalog(table: str) -> tuple[ClassInfo, ...]:
    rows = [row.split(" | ", 2) for row in re.sub(r"\n\s+", " ", table).strip().splitlines()]
    family = [row for row in rows if "{kind}" in row[0]]
    primary_only = [row for row in rows if row[0].startswith("outcomes.primary.")]
    infos = []
    for row in rows:
        if row is family[0]:
            for kind in _KINDS:
                block = family + primary_only if kind == "primary" else family
                infos += [_catalog_row(each, kind) for each in block]
        elif row not in family and row not in primary_only:
            infos.append(_catalog_row(row, ""))
    return tuple(infos)


def _catalog_row(row: list[str], kind: str) -> ClassInfo:
    name, summary, params = (part.strip().format(kind=kind) for part in row)
    fields = dict(item.split(": ", 1) for item in params.split("; "))
    return ClassInfo(name, summary, MappingProxyType(fields))


CATALOG: Final[tuple[ClassInfo, ...]] = _catalog(_CATALOG_TABLE)
_RANK: Final = {info.name: rank for rank, info in enumerate(CATALOG)}


def classify(old: Canonical | None, new: Canonical | None) -> list[VersionClass]:
    """The classes of the version ``new`` given the study's previous version ``old``.

    ``old`` None (the study's first version) gives []; ``new`` None (the study left the
    registry) gives [study.removed]. Order: catalog order, then by parameters.
    """
    if old is None:
        return []
    if new is None:
        return [VersionClass("study.removed", {"last_status": old.get("status.overallStatus")})]
    found: list[VersionClass] = []
    for rule in _RULES:
        found.extend(rule(old, new))
    return sorted(found, key=_order)


def class_matches(pattern: str, name: str) -> bool:
    """Whether a class name matches a glob: ``*`` is any run of characters, ``?`` one."""
    return _glob(pattern).fullmatch(name) is not None


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _order(found: VersionClass) -> tuple[int, str]:
    return _RANK[found.name], json.dumps(found.params, sort_keys=True, default=str)


# ---------------------------------------------------------------------- status, results


def _status(old: Canonical, new: Canonical) -> list[VersionClass]:
    before, after = old.get("status.overallStatus"), new.get("status.overallStatus")
    if before == after:
        return []
    if after in _STOPPED:
        why = new.get("status.whyStopped")
        return [VersionClass("status.stopped", {"from": before, "to": after, "why_stopped": why})]
    if after == "COMPLETED":
        return [VersionClass("status.completed", {"from": before})]
    return [VersionClass("status.changed", {"from": before, "to": after})]


def _results(old: Canonical, new: Canonical) -> list[VersionClass]:
    if old.get("results.hasResults") is True or new.get("results.hasResults") is not True:
        return []
    posted = new.get("status.resultsFirstPostDate")
    completed, on = _day(new.get("status.primaryCompletionDate")), _day(posted)
    days = (on - completed).days if completed and on else None
    return [VersionClass("results.posted", {"date": posted, "days_after_primary_completion": days})]


# ---------------------------------------------------------------------- enrollment, dates


def _enrollment(old: Canonical, new: Canonical) -> list[VersionClass]:
    before, after = old.get("design.enrollmentCount"), new.get("design.enrollmentCount")
    kind = new.get("design.enrollmentType")
    actualized = old.get("design.enrollmentType") == "ESTIMATED" and kind == "ACTUAL"
    if not actualized and before == after:
        return []
    percent: float | None = None
    if isinstance(before, int | float) and isinstance(after, int | float) and before:
        percent = round((after - before) / before * 100, 1)
    major = abs(percent) >= MAJOR_ENROLLMENT_PERCENT if percent is not None else before == 0
    params = {"from": before, "to": after, "percent": percent, "major": major}
    if actualized:
        return [VersionClass("enrollment.actualized", params)]
    return [VersionClass("enrollment.changed", {**params, "type": kind})]


def _dates(old: Canonical, new: Canonical) -> list[VersionClass]:
    found = []
    for label, path in _DATES:
        before, after = old.get(path), new.get(path)
        if old.get(f"{path}Type") == "ESTIMATED" and new.get(f"{path}Type") == "ACTUAL":
            found.append(VersionClass("dates.actualized", {"date": label, "on": after}))
        shift = _shift_days(before, after)
        if shift:
            name = "dates.slipped" if shift > 0 else "dates.advanced"
            major = abs(shift) >= MAJOR_SHIFT_DAYS
            params = {"date": label, "from": before, "to": after, "shift_days": shift}
            found.append(VersionClass(name, {**params, "major": major}))
    return found


def _shift_days(before: Any, after: Any) -> int | None:
    start, end = _day(before), _day(after)
    if start is None or end is None or before == after:
        return None
    # "2027-06" -> "2027-06-15" adds precision within the same month: not a move.
    if len(before) != len(after) and before[:7] == after[:7]:
        return None
    return (end - start).days


def _day(value: Any) -> date | None:
    """An ISO date, YYYY-MM (its 1st) or YYYY (January 1st); None if not one."""
    if not isinstance(value, str):
        return None
    parts = value.split("-")
    try:
        numbers = [int(part) for part in parts] + [1] * (3 - len(parts))
        return date(numbers[0], numbers[1], numbers[2]) if len(numbers) == 3 else None
    except ValueError:
        return None


# ---------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: str  # primary | secondary | other
    measure: str  # as in the record
    time_frame: str | None
    loose_measure: str
    loose_description: str
    loose_time_frame: str


def _outcomes(record: Canonical) -> list[_Outcome]:
    found = []
    for kind in _KINDS:
        items = record.get(f"outcomes.{kind}")
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict):
                measure, frame = _str(item.get("measure")), item.get("timeFrame")
                frame = frame if isinstance(frame, str) else None
                texts = loose(measure), loose(_str(item.get("description"))), loose(frame or "")
                found.append(_Outcome(kind, measure, frame, *texts))
    return found


def _outcome_classes(old: Canonical, new: Canonical) -> list[VersionClass]:
    before, after = _outcomes(old), _outcomes(new)
    if sorted(map(_fingerprint, before)) == sorted(map(_fingerprint, after)):
        return []
    pairs = _assign(before, after)
    found = [c for a, b, similarity in pairs for c in _pair_classes(a, b, similarity)]
    matched_old, matched_new = {id(a) for a, _, _ in pairs}, {id(b) for _, b, _ in pairs}
    for gone in (o for o in before if id(o) not in matched_old):
        found.append(_lone(gone, "removed"))
    for came in (o for o in after if id(o) not in matched_new):
        found.append(_lone(came, "added"))
    return found


def _similarity(a: _Outcome, b: _Outcome) -> float:
    return outcome_similarity(
        a.loose_measure, a.loose_description, b.loose_measure, b.loose_description
    )


def _fingerprint(outcome: _Outcome) -> tuple[str, str, str, str]:
    o = outcome
    return o.kind, o.loose_measure, o.loose_description, o.loose_time_frame


def _lone(outcome: _Outcome, what: str) -> VersionClass:
    params = {"measure": outcome.measure, "time_frame": outcome.time_frame}
    return VersionClass(f"outcomes.{outcome.kind}.{what}", params)


def _assign(
    before: list[_Outcome], after: list[_Outcome]
) -> list[tuple[_Outcome, _Outcome, float]]:
    """One-to-one pairs: same loose measure first, then greedy best-first by similarity."""
    pairs: list[tuple[_Outcome, _Outcome, float]] = []
    rest_old, rest_new = list(before), list(after)
    new_measures = {b.loose_measure for b in after}
    for a in (a for a in before if a.loose_measure in new_measures):
        same = [b for b in rest_new if b.loose_measure == a.loose_measure]
        if same:
            b = max(same, key=lambda b: (b.kind == a.kind, _fingerprint(b) == _fingerprint(a)))
            same_text = a.loose_description == b.loose_description
            pairs.append((a, b, 1.0 if same_text else _similarity(a, b)))
            rest_old.remove(a)
            rest_new.remove(b)
    scored = []
    for i, a in enumerate(rest_old):
        for j, b in enumerate(rest_new):
            similarity = outcome_similarity(
                a.loose_measure, a.loose_description, b.loose_measure, b.loose_description
            )
            if similarity >= MATCH_THRESHOLD:
                # Near-ties go to the pair that kept its list, then its time frame.
                kept = 2 * (a.kind == b.kind) + (a.loose_time_frame == b.loose_time_frame)
                scored.append((-(similarity + _TIE_BONUS * kept), i, j, similarity))
    taken_old: set[int] = set()
    taken_new: set[int] = set()
    for _, i, j, similarity in sorted(scored):
        if i not in taken_old and j not in taken_new:
            taken_old.add(i)
            taken_new.add(j)
            pairs.append((rest_old[i], rest_new[j], similarity))
    return pairs


def _pair_classes(a: _Outcome, b: _Outcome, similarity: float) -> list[VersionClass]:
    sim = round(similarity, 2)
    if a.kind == "primary" and b.kind != "primary":
        params = {"measure": a.measure, "to_measure": b.measure, "to": b.kind, "similarity": sim}
        return [VersionClass("outcomes.primary.demoted", params)]
    if a.kind != "primary" and b.kind == "primary":
        params = {"measure": b.measure, "from_measure": a.measure, "from": a.kind}
        return [VersionClass("outcomes.primary.promoted", {**params, "similarity": sim})]
    if a.kind != b.kind:
        return []  # secondary <-> other: not classified
    family, found = f"outcomes.{b.kind}", []
    if a.loose_measure != b.loose_measure:
        params = {"from_measure": a.measure, "to_measure": b.measure, "similarity": sim}
        found.append(VersionClass(f"{family}.reworded", params))
    elif a.loose_description != b.loose_description:
        params = {"measure": b.measure, "similarity": sim}
        found.append(VersionClass(f"{family}.description_changed", params))
    if a.loose_time_frame != b.loose_time_frame:
        params = {"measure": b.measure, "from_time_frame": a.time_frame}
        found.append(
            VersionClass(f"{family}.timeframe_changed", {**params, "to_time_frame": b.time_frame})
        )
    return found


# ---------------------------------------------------------------------- other areas


def _eligibility(old: Canonical, new: Canonical) -> list[VersionClass]:
    paths = {p for p in (*old, *new) if p.startswith("eligibility.")}
    changed = sorted(p for p in paths if not _same_value(old.get(p), new.get(p)))
    return [VersionClass("eligibility.changed", {"fields": changed})] if changed else []


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return loose(a) == loose(b)
    return bool(a == b)


def _sites(old: Canonical, new: Canonical) -> list[VersionClass]:
    before = {p for p in old if p.startswith("locations.")}
    after = {p for p in new if p.startswith("locations.")}
    found = []
    for name, paths, record in (
        ("sites.added", after - before, new),
        ("sites.removed", before - after, old),
    ):
        if paths:
            sites = [record[p] for p in paths if isinstance(record[p], dict)]
            countries = sorted({s["country"] for s in sites if isinstance(s.get("country"), str)})
            found.append(VersionClass(name, {"count": len(paths), "countries": countries}))
    return found


def _sponsor(old: Canonical, new: Canonical) -> list[VersionClass]:
    found = []
    before, after = _name(old.get("sponsor.lead")), _name(new.get("sponsor.lead"))
    if loose(before) != loose(after):
        found.append(VersionClass("sponsor.changed", {"from": before, "to": after}))
    was, now = _names(old.get("sponsor.collaborators")), _names(new.get("sponsor.collaborators"))
    added = sorted(name for key, name in now.items() if key not in was)
    removed = sorted(name for key, name in was.items() if key not in now)
    if added or removed:
        found.append(
            VersionClass("sponsor.collaborators_changed", {"added": added, "removed": removed})
        )
    return found


def _name(item: Any) -> str:
    return _str(item.get("name")) if isinstance(item, dict) else ""


def _names(items: Any) -> dict[str, str]:
    names = (_name(item) for item in items) if isinstance(items, list) else ()
    return {loose(name).casefold(): name for name in names if name}


def _phases(old: Canonical, new: Canonical) -> list[VersionClass]:
    before, after = old.get("design.phases"), new.get("design.phases")
    if before == after:
        return []
    return [VersionClass("design.phases_changed", {"from": before, "to": after})]


_RULES: Final[tuple[Callable[[Canonical, Canonical], list[VersionClass]], ...]] = (
    _status,
    _results,
    _enrollment,
    _dates,
    _outcome_classes,
    _eligibility,
    _sites,
    _sponsor,
    _phases,
)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
