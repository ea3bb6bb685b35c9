"""How a change reads: one-line summaries (Markdown pages, the CLI, Atom titles) and
side-by-side rows with the changed words marked (the HTML page)."""

from __future__ import annotations

import difflib
import fnmatch
import itertools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mirror.config import PagesSettings
from mirror.record import IDENTITY_KEYS, STUDY_FIELD, ChangeKind, identity_of
from mirror.store import ChangeEvent

INLINE_VALUE_MAX = 80
_LABEL_KEYS = ("measure", "label", "name", "facility", "title", "citation")
_CONTEXT_CHARS = 20  # kept around the first difference when a long value is elided
_CONTEXT_TOKENS = 16  # kept around each change in the HTML word diff
_SHOWN_TEXT_MAX = 600  # longest text an HTML change cell shows whole


def day(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d}"


def one_line(text: str) -> str:
    """Text for a single-line place (a heading, a bullet's label): whitespace runs collapsed."""
    return " ".join(text.split())


# -- recent field changes ---------------------------------------------------------------------


def recent_changes(events: Iterable[ChangeEvent], settings: PagesSettings) -> list[ChangeEvent]:
    """The events a page lists: fields matching ``pages.recent_fields``; newest version first
    (in time: a backfilled past has higher numbers), then in the order of ``recent_fields``,
    then by field. (The window is the caller's query.)"""
    patterns = settings.recent_fields
    ranked = [(field_rank(e.field, patterns), e) for e in events]
    kept = [(rank, e) for rank, e in ranked if rank < len(patterns)]
    kept.sort(key=lambda r: (r[0], r[1].field))
    kept.sort(key=lambda r: (r[1].observed_at, r[1].version), reverse=True)
    return [e for _, e in kept]


def field_rank(field: str, patterns: Sequence[str]) -> int:
    """The index of the first glob of ``patterns`` matching ``field``; len(patterns) if none."""
    return next((i for i, p in enumerate(patterns) if fnmatch.fnmatchcase(field, p)), len(patterns))


def change_line(event: ChangeEvent) -> str:
    """``- `field` — changed: OLD → NEW _(YYYY-MM-DD)_`` (or ``— added``, ``— removed``)."""
    what = change_text(event) if event.kind is ChangeKind.CHANGED else event.kind.value
    return f"- {code(event.field)} — {what} _({day(event.observed_at)})_"


def change_text(event: ChangeEvent, limit: int = INLINE_VALUE_MAX) -> str:
    """One event in words: ``changed: OLD → NEW``, ``added: VALUE``, ``removed``."""
    if event.field == STUDY_FIELD:
        alias = event.new.get("alias_of") if isinstance(event.new, dict) else None
        return f"{event.kind.value} (merged into {alias})" if alias else event.kind.value
    if event.kind is ChangeKind.CHANGED:
        return "changed: " + change_summary(event.field, event.old, event.new, limit)
    value = event.new if event.kind is ChangeKind.ADDED else event.old
    return event.kind.value + ("" if value is None else f": {elide(brief(value), limit)}")


def change_summary(field: str, old: Any, new: Any, limit: int = INLINE_VALUE_MAX) -> str:
    """What changed, short: ``OLD → NEW`` around the first difference for values; the items
    added, removed or edited for lists (outcomes by measure, arms by label…); the keys that
    changed for objects (a site's status, a sponsor's name)."""
    if isinstance(old, list) and isinstance(new, list):
        return _list_summary(field, old, new, limit)
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [f"{k}: {pair(brief(a), brief(b), limit // 2)}" for k, a, b in _delta(old, new)]
        more = f" and {len(parts) - 2} more" if len(parts) > 2 else ""
        return elide("; ".join(parts[:2]) + more, 2 * limit)
    return pair(brief(old), brief(new), limit)


def short_value(value: Any) -> str:
    """A value short enough for one line; long ones are elided with '…'."""
    return elide(brief(value), INLINE_VALUE_MAX)


def _list_summary(field: str, old: list[Any], new: list[Any], limit: int) -> str:
    before, after = _keyed(field, old), _keyed(field, new)
    edited = [k for k in after if k in before and after[k] != before[k]]
    parts = [
        named("added", [k for k in after if k not in before]),
        named("removed", [k for k in before if k not in after]),
        _edited(edited[0], before[edited[0]], after[edited[0]]) if len(edited) == 1 else "",
        named("edited", edited) if len(edited) > 1 else "",
    ]
    text = "; ".join(p for p in parts if p)
    return elide(text, 2 * limit) if text else f"{len(old)} → {len(new)} items"


def _keyed(field: str, items: list[Any]) -> dict[str, Any]:
    keys = IDENTITY_KEYS.get(field)
    if keys is None:
        return {brief(item): item for item in items}
    return {
        " ".join(p for p in identity_of(keys, item) if p) or brief(item): item for item in items
    }


def named(verb: str, names: list[str]) -> str:
    shown = [f'"{elide(n, 40)}"' for n in names]
    if len(shown) <= 2:
        return f"{verb} {', '.join(shown)}" if shown else ""
    return f"{verb} {len(shown)} ({', '.join(shown[:2])}, …)"


def _edited(name: str, old: Any, new: Any) -> str:
    head = f'edited "{elide(name, 40)}"'
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return head
    delta = _delta(old, new)
    if len(delta) == 1 and max(len(brief(delta[0][1])), len(brief(delta[0][2]))) <= 30:
        key, a, b = delta[0]
        return f"{head} ({words(key)}: {brief(a)} → {brief(b)})"
    return f"{head} ({', '.join(words(k) for k, _, _ in delta)})"


def _delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = [*new, *(k for k in old if k not in new)]
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def brief(value: Any) -> str:
    """A value as one line of text: a list or object by its items' names where they have one."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, list):
        return "; ".join(brief(item) for item in value)
    if isinstance(value, dict):
        label = next((value[k] for k in _LABEL_KEYS if isinstance(value.get(k), str)), None)
        if label:
            return one_line(label)
        return ", ".join(f"{k}: {brief(v)}" for k, v in value.items())
    return orjson.dumps(value).decode()


def pair(old: str, new: str, limit: int) -> str:
    """``OLD → NEW``; long values are cut to the neighbourhood of their first difference."""
    return " → ".join(cut(old, new, limit))


def cut(old: str, new: str, limit: int) -> tuple[str, str]:
    """Both texts, cut to the neighbourhood of their first difference when one is long."""
    if len(old) > limit or len(new) > limit:
        start = len(os.path.commonprefix([old, new]))
        start = max(0, old.rfind(" ", 0, max(0, start - _CONTEXT_CHARS)) + 1)
        old, new = (("…" if start else "") + s[start:] for s in (old, new))
    return elide(old, limit), elide(new, limit)


def elide(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def code(text: str) -> str:
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# -- HTML -------------------------------------------------------------------------------------

Segment = tuple[str, str]  # (mark, text); mark "", "del", "ins" or "gap" (elided unchanged run)
Item = list[tuple[str, list[Segment]]]  # an item's parts: (label, segments); label "" = main


@dataclass(frozen=True)
class ChangeRow:
    """One change event shown side by side: the old value, the new, changed words marked."""

    field: str
    kind: str
    date: str
    text: str
    old: list[Item]  # one item for a plain value; list items or object keys otherwise
    new: list[Item]
    listed: bool


def change_row(event: ChangeEvent) -> ChangeRow:
    return value_row(event.field, event.kind, event.old, event.new, day(event.observed_at))


def value_row(field: str, kind: ChangeKind, old: Any, new: Any, date: str = "") -> ChangeRow:
    """A change of ``field`` from ``old`` to ``new`` side by side (an event's, or a diff's)."""
    left, right = _side_by_side(field, old, new)
    listed = isinstance(old, list | dict) or isinstance(new, list | dict)
    text = change_text(ChangeEvent(field=field, kind=kind, old=old, new=new))
    return ChangeRow(field, kind.value, date, text, left, right, listed)


LONG_TEXT = 300  # a text longer than this (or with line breaks) compares best inline


def is_long_text(old: Any, new: Any) -> bool:
    """Two texts to show as one inline diff rather than side by side (criteria, descriptions)."""
    texts = [v for v in (old, new) if v is not None]
    return all(isinstance(v, str) for v in texts) and any(
        len(v) > LONG_TEXT or "\n" in v.strip() for v in texts
    )


def inline_diff(old: str, new: str) -> list[Segment]:
    """One text showing both: words only in ``old`` marked del, only in ``new`` ins, in
    reading order; long unchanged stretches cut to the words around the changes."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    if len(a) * len(b) > _WORD_DIFF_WORK_MAX:
        a, b = _LINE.findall(old), _LINE.findall(new)
    tokens: list[str] = []
    marks: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, False).get_opcodes():
        if tag == "equal":
            tokens += a[i1:i2]
            marks += [""] * (i2 - i1)
            continue
        tokens += a[i1:i2] + b[j1:j2]
        marks += ["del"] * (i2 - i1) + ["ins"] * (j2 - j1)
    return _segments(tokens, marks)


def _side_by_side(field: str, old: Any, new: Any) -> tuple[list[Item], list[Item]]:
    """Both values as aligned items; runs of unchanged items of a changed value become a gap."""
    a, b = _entries(field, old), _entries(field, new)
    left: list[Item] = []
    right: list[Item] = []
    keys = [*a, *(k for k in b if k not in a)]
    for same, run in itertools.groupby(keys, lambda k: bool(a and b) and a.get(k) == b.get(k)):
        group = list(run)
        if same:
            gap: Item = [("", [("gap", f"{len(group)} unchanged")])]
            left.append(gap)
            right.append(gap)
            continue
        for key in group:
            x, y = _diff_item(a.get(key, []), b.get(key, []), bool(a and b))
            left += [x] if key in a else []
            right += [y] if key in b else []
    return left, right


def _entries(field: str, value: Any) -> dict[str, list[tuple[str, str]]]:
    """A value as entries to align (list items by identity, object keys), each a list of
    (label, text) parts: an outcome is its measure, then time frame, then description."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: [(words(k), _text(v))] for k, v in value.items()}
    if not isinstance(value, list):
        return {"": [("", _text(value))]}
    entries = {}
    for key, item in _keyed(field, value).items():
        obj = item if isinstance(item, dict) else {"": item}
        label = next((k for k in ("", *_LABEL_KEYS) if k in obj), None)
        rest = sorted((k for k in obj if k != label), key=lambda k: k == "description")
        head = [("", _text(obj[label]))] if label is not None else []
        entries[key] = head + [(words(k), _text(obj[k])) for k in rest]
    return entries


def _diff_item(
    old: list[tuple[str, str]], new: list[tuple[str, str]], changed: bool
) -> tuple[Item, Item]:
    a, b = dict(old), dict(new)
    left: Item = []
    right: Item = []
    for label in [*a, *(k for k in b if k not in a)]:
        x, y = a.get(label), b.get(label)
        if x is not None and y is not None:
            sx, sy = _word_diff(x, y) if x != y else (_whole(x, ""), _whole(y, ""))
        else:
            sx, sy = _whole(x or "", "del" * changed), _whole(y or "", "ins" * changed)
        left += [(label, sx)] if x is not None else []
        right += [(label, sy)] if y is not None else []
    return left, right


def _whole(text: str, mark: str) -> list[Segment]:
    if len(text) <= _SHOWN_TEXT_MAX:
        return [(mark, text)]
    return [(mark, text[:_SHOWN_TEXT_MAX].rstrip()), ("gap", " …")]


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
_LINE = re.compile(r"[^\n]*\n|[^\n]+")
_WORD_DIFF_WORK_MAX = 250_000  # tokens old x tokens new: about 50 ms of difflib


def _word_diff(old: str, new: str) -> tuple[list[Segment], list[Segment]]:
    """Both texts as segments: words only in ``old`` marked del, only in ``new`` ins."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    # Difflib is quadratic in the worst case: it gets only what lies between the common ends,
    # and a wholesale rewrite is compared line by line instead of word by word.
    head, tail = _common_ends(a, b)
    if (len(a) - head - tail) * (len(b) - head - tail) > _WORD_DIFF_WORK_MAX:
        a, b = _LINE.findall(old), _LINE.findall(new)
        head, tail = _common_ends(a, b)
    marks_a, marks_b = [""] * len(a), [""] * len(b)
    middle = difflib.SequenceMatcher(None, a[head : len(a) - tail], b[head : len(b) - tail], False)
    for tag, i1, i2, j1, j2 in middle.get_opcodes():
        if tag != "equal":
            marks_a[head + i1 : head + i2] = ["del"] * (i2 - i1)
            marks_b[head + j1 : head + j2] = ["ins"] * (j2 - j1)
    return _segments(a, marks_a), _segments(b, marks_b)


def _common_ends(a: list[str], b: list[str]) -> tuple[int, int]:
    head = len(os.path.commonprefix([a, b]))
    return head, len(os.path.commonprefix([a[head:][::-1], b[head:][::-1]]))


def _segments(tokens: list[str], marks: list[str]) -> list[Segment]:
    for i in range(1, len(tokens) - 1):  # a space between two changed words is part of the change
        if tokens[i].isspace() and not marks[i] and marks[i - 1] and marks[i - 1] == marks[i + 1]:
            marks[i] = marks[i - 1]
    runs = [
        (m, [t for _, t in g])
        for m, g in itertools.groupby(zip(marks, tokens, strict=True), lambda x: x[0])
    ]
    out: list[Segment] = []
    for n, (mark, run) in enumerate(runs):
        out += [(mark, "".join(run))] if mark else _context(run, n == 0, n == len(runs) - 1)
    return out


def _context(tokens: list[str], first: bool, last: bool) -> list[Segment]:
    """An unchanged run, cut to the words next to the changes around it."""
    keep_head = 0 if first else _CONTEXT_TOKENS
    keep_tail = 0 if last else _CONTEXT_TOKENS
    if len(tokens) <= keep_head + keep_tail + 2 * _CONTEXT_TOKENS:
        return [("", "".join(tokens))]
    tail = "".join(tokens[len(tokens) - keep_tail :])
    return [("", "".join(tokens[:keep_head])), ("gap", "…"), ("", tail)]


def _text(value: Any) -> str:
    """A value as display text, line breaks kept."""
    return value.strip() if isinstance(value, str) else brief(value)


def words(key: str) -> str:
    """``timeFrame`` -> ``time frame``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", key).lower()
