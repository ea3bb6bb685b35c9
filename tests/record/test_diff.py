"""diff_records names exactly the fields DeepDiff finds different, however it gets there."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import orjson
import pytest
from deepdiff import DeepDiff
from test_normalize import DATA, needs_data

from mirror.record import diff_records, loosely_equal, normalize

Canonical = dict[str, Any]


def deepdiff_fields(old: Canonical, new: Canonical) -> set[str]:
    """The reference: every top-level field DeepDiff reports, less markup-only changes."""
    tree = DeepDiff(old, new, view="tree", verbose_level=0, threshold_to_diff_deeper=0)
    found = {
        str(level.path(output_format="list")[0]) for levels in tree.values() for level in levels
    }
    return {f for f in found if f not in old or f not in new or not loosely_equal(old[f], new[f])}


def fields(old: Canonical, new: Canonical) -> set[str]:
    return {change.field for change in diff_records(old, new)}


@pytest.mark.parametrize(
    ("old", "new", "changed"),
    [
        ({"a": [{"n": 1}]}, {"a": [{"n": 1.0}]}, {"a"}),  # int -> float deep inside a list
        ({"a": {"n": 1}}, {"a": {"n": True}}, {"a"}),  # 1 -> true
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 2, "x": 1}}, set()),  # key order is no change
        ({"a": [1, 2]}, {"a": [2, 1]}, set()),  # a list reordered only: markup-only, no change
        ({"a": 1, "b": 2}, {"b": 2, "c": 3}, {"a", "c"}),  # removed and added
    ],
)
def test_equal_in_python_is_not_equal_in_json(
    old: Canonical, new: Canonical, changed: set[str]
) -> None:
    assert fields(old, new) == changed == deepdiff_fields(old, new)


@needs_data
def test_real_versions_agree_with_deepdiff() -> None:
    """Consecutive real registry versions, and real records with a field edited, deleted or
    retyped: the same fields as DeepDiff over the whole records."""
    pairs = []
    for study in sorted((DATA / "history").iterdir()):
        versions = [normalize(orjson.loads(p.read_bytes())) for p in sorted(study.glob("*.json"))]
        pairs += pairwise(versions)
    rng = random.Random(20261206)
    paths = sorted((DATA / "studies").glob("NCT*.json"))
    for path in rng.sample(paths, 40):
        old = normalize(orjson.loads(path.read_bytes()))
        new = orjson.loads(orjson.dumps(old))  # a deep copy
        for field in rng.sample(sorted(new), 3):
            edit = rng.choice(["drop", "retype", "nest"])
            if edit == "drop":
                del new[field]
            elif edit == "retype":
                new[field] = orjson.loads(orjson.dumps(new[field]).replace(b"1", b"1.0", 1))
            else:
                new[field] = [new[field]]
        pairs.append((old, new))
    assert len(pairs) == 55
    for old, new in pairs:
        assert fields(old, new) == deepdiff_fields(old, new)
