"""Field-level differences between two canonical records.

Canonical records are flat (field path -> value) and their lists are already in
identity order (see ``mirror.record.normalize``), so a changed field is exactly a top-level
key whose value differs. They are looked for only within the parts (areas) whose content
hash changed (an unchanged part is never walked); DeepDiff judges values that are equal in
Python but not as JSON.

A ``changed`` field whose old and new values are equal but for markup, escaping or
whitespace (every string compared by ``text_key``, lists as unordered collections) is no
change: old registry versions carry HTML where today's records carry markdown, and a
reformatted text must not read as an edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mirror.record.events import ChangeKind
from mirror.record.hashes import area_of
from mirror.record.normalize import Canonical
from mirror.record.text import text_key


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    kind: ChangeKind
    old: Any
    new: Any


def initial_changes(record: Canonical) -> list[FieldChange]:
    """A study's first version: every field is ``added``."""
    return [FieldChange(field, ChangeKind.ADDED, None, value) for field, value in record.items()]


def diff_records(
    old: Canonical,
    new: Canonical,
    old_parts: Mapping[str, str] | None = None,
    new_parts: Mapping[str, str] | None = None,
) -> list[FieldChange]:
    """The fields that differ between ``old`` and ``new``, in path order.

    With the part hashes of both records, only the parts whose hash differs are compared.
    """
    if old_parts is not None and new_parts is not None:
        changed_areas = {
            area
            for area in old_parts.keys() | new_parts.keys()
            if old_parts.get(area) != new_parts.get(area)
        }
        old = {k: v for k, v in old.items() if area_of(k) in changed_areas}
        new = {k: v for k, v in new.items() if area_of(k) in changed_areas}
    changes = (_change(field, old, new) for field in sorted(_changed_fields(old, new)))
    return [
        change
        for change in changes
        if change.kind is not ChangeKind.CHANGED or not loosely_equal(change.old, change.new)
    ]


def loosely_equal(old: Any, new: Any) -> bool:
    """Equal but for markup, escaping and whitespace in text, and for the order of lists."""
    return _loose_json(old) == _loose_json(new)


def _loose_json(value: Any) -> bytes:
    # JSON text, not ==: True == 1 in Python, but a change from 1 to true is a change.
    return orjson.dumps(_loose(value), option=orjson.OPT_SORT_KEYS)


def _loose(value: Any) -> Any:
    if isinstance(value, str):
        return text_key(value)
    if isinstance(value, dict):
        return {key: _loose(item) for key, item in value.items()}
    if isinstance(value, list):
        # Canonical lists are sorted by text that text_key may change: compare them unordered.
        return sorted(_loose_json(item).decode() for item in value)
    return value


def _changed_fields(old: Canonical, new: Canonical) -> set[str]:
    # Most fields settle without DeepDiff: a value unequal in Python is changed (a list or a
    # dict that differs anywhere), and one whose JSON text is the same is not. DeepDiff
    # judges what is left, values equal in Python but not in JSON (1 and true, 1 and 1.0);
    # walking a changed list of hundreds of sites with it took a few hundred milliseconds.
    changed = old.keys() ^ new.keys()
    unsure: set[str] = set()
    for field in old.keys() & new.keys():
        a, b = old[field], new[field]
        if a != b:
            changed.add(field)
        elif a is not b and _typed_json(a) != _typed_json(b):
            unsure.add(field)
    if unsure:
        from deepdiff import DeepDiff  # here: reading the feed never diffs (start-up time)

        # threshold_to_diff_deeper=0: by default DeepDiff reports a dict that shares under a
        # third of its keys as one root-level change, which names no field.
        tree = DeepDiff(
            {f: old[f] for f in unsure},
            {f: new[f] for f in unsure},
            view="tree",
            verbose_level=0,
            cache_size=0,
            threshold_to_diff_deeper=0,
        )
        changed |= {
            str(level.path(output_format="list")[0]) for levels in tree.values() for level in levels
        }
    return changed


def _typed_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _change(field: str, old: Canonical, new: Canonical) -> FieldChange:
    if field not in old:
        return FieldChange(field, ChangeKind.ADDED, None, new[field])
    if field not in new:
        return FieldChange(field, ChangeKind.REMOVED, old[field], None)
    return FieldChange(field, ChangeKind.CHANGED, old[field], new[field])
