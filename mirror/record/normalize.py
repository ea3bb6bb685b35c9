"""Turn a raw ClinicalTrials.gov API v2 study object into ctmirror's canonical record.

The canonical record is a flat dict, field path -> JSON value, keys sorted. Diffs, hashes and
change events all run on it, so its paths are a public contract: the rule that names them, and
its exceptions, are in ``mirror.record.fields`` (docs/fields.md lists them all).

Text: every string passes ``clean_text`` (old versions' HTML markup and entities become the
plain form today's records use); ``text_key`` is the looser key ``mirror.record.diff`` compares by.

Lists never compare by position (a reordered list is no change), so every list is sorted, at every
depth: the fields in ``IDENTITY_KEYS`` by item identity then canonical JSON, other lists of objects
by canonical JSON, lists of scalars by value (by JSON text when types are mixed).
"""

from __future__ import annotations

import bisect
import fnmatch
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import orjson

from mirror.errors import MalformedRecord
from mirror.record.fields import (
    DATE_STRUCT,
    IDENTITY_KEYS,
    RENAMED,
    SECTIONS,
    SITE_PARTS,
    SITES_PATH,
    WHOLE_OBJECTS,
    area_name,
)
from mirror.record.nct import nct_id_of
from mirror.record.text import clean_text

Canonical = dict[str, Any]

DEFAULT_IGNORE: tuple[str, ...] = ("derived.*",)
# How deep a record may nest: real ones reach about 10 levels; every output (an event inside a
# feed page inside a response) must still serialize what is stored, and orjson stops at 255.
MAX_DEPTH: Final = 64
# The longest field path stored (a site's path holds its facility name): real ones stay under 300.
MAX_PATH: Final = 512
_RENAMED_GET: Final = dict(RENAMED).get  # a plain dict's get: the hot loop looks up every path
_IDENTITY_GET: Final = dict(IDENTITY_KEYS).get
_SCALAR_TYPES: Final = frozenset({str, int, float, bool})
_NUMBER_TYPES: Final = frozenset({int, float})
_LEAF_TYPES: Final = frozenset({int, float, bool, type(None)})


# ---------------------------------------------------------------------------- normalize


def normalize(study: Mapping[str, Any], ignore: Sequence[str] = ()) -> Canonical:
    """Raw API v2 study object -> canonical record (flat dict, keys sorted).

    Paths matching any fnmatch-style glob in ``ignore`` are dropped. Raises MalformedRecord if
    the object is not a dict or has no protocolSection.identificationModule.nctId matching
    NCT\\d{8}, nests deeper than MAX_DEPTH, or holds a value JSON cannot represent.
    """
    nct_id = nct_id_of(study)
    # A lone string is one pattern, not a sequence of one-character globs ("*" would drop all).
    patterns = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    skip_derived = drops_all_derived(patterns)
    out: Canonical = {}
    try:
        for key, value in study.items():
            if not (skip_derived and key == "derivedSection" and isinstance(value, dict)):
                _top_level(key, value, out)
    except orjson.JSONEncodeError as exc:
        raise MalformedRecord(f"value not representable as JSON ({exc})", nct_id) from exc
    except MalformedRecord as exc:
        raise MalformedRecord(exc.reason, nct_id) from None
    except RecursionError:
        raise MalformedRecord(f"nests more than {MAX_DEPTH} levels deep", nct_id) from None
    if (longest := max(map(len, out), default=0)) > MAX_PATH:
        reason = f"a field path is {longest} characters long (at most {MAX_PATH})"
        raise MalformedRecord(reason, nct_id)
    return dict(_kept(sorted(out.items()), patterns))


def _kept(items: list[tuple[str, Any]], patterns: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``items`` (sorted by path) without the paths an ignore glob matches."""
    plan = _ignore_matcher(patterns)
    if plan is None:
        return items
    prefix, dropped = plan
    # Every glob needs its literal prefix, so only paths starting with their common prefix
    # can match: usually none once derivedSection was skipped.
    start = bisect.bisect_left(items, prefix, key=_path_of)
    stop = start
    while stop < len(items) and items[stop][0].startswith(prefix):
        stop += 1
    if start == stop:
        return items
    return [*items[:start], *(kv for kv in items[start:stop] if not dropped(kv[0])), *items[stop:]]


def _path_of(item: tuple[str, Any]) -> str:
    return item[0]


def _top_level(key: str, value: Any, out: Canonical) -> None:
    if key == "hasResults":
        out["results.hasResults"] = _canon(value)
    elif key in SECTIONS and isinstance(value, dict):
        prefix = SECTIONS[key]
        for module, body in value.items():
            if isinstance(body, dict):
                _flatten(body, f"{prefix}{area_name(module)}.", out)
            else:
                out[f"other.{key}.{module}"] = _canon(body)
    elif isinstance(value, dict):
        _flatten(value, f"other.{key}.", out)
    else:
        out[f"other.{key}"] = _canon(value)


def _flatten(obj: dict[str, Any], prefix: str, out: Canonical) -> None:
    if prefix.count(".") > MAX_DEPTH:
        raise MalformedRecord(f"nests more than {MAX_DEPTH} objects deep ({prefix[:80]}…)")
    for key, value in obj.items():
        path = prefix + key
        if type(value) is str:  # the common case, inlined
            out[_RENAMED_GET(path, path)] = (
                value if "<" not in value and "&" not in value else clean_text(value)
            )
        elif isinstance(value, dict):
            if path in WHOLE_OBJECTS:
                out[RENAMED[path]] = _canon(value)
            elif key.endswith(DATE_STRUCT):
                _date_struct(value, prefix + key[: -len("Struct")], out)
            else:
                _flatten(value, path + ".", out)
        elif path == SITES_PATH and isinstance(value, list):
            _sites(value, out)
        else:
            path = _RENAMED_GET(path, path)
            out[path] = _field_value(path, value)


def _date_struct(struct: dict[str, Any], base: str, out: Canonical) -> None:
    # <x>DateStruct {date, type} -> <x>Date, <x>DateType; anything else stays under the plain rule.
    for key, value in struct.items():
        if key == "date":
            out[base] = _canon(value)
        elif key == "type":
            out[base + "Type"] = _canon(value)
        else:
            _flatten({key: value}, base + "Struct.", out)


def _field_value(path: str, value: Any) -> Any:
    keys = _IDENTITY_GET(path)
    if keys is None or not isinstance(value, list):
        return _canon(value)
    items = [_canon(item) for item in value]
    items.sort(key=lambda item: (identity_of(keys, item), sorted_json(item)))
    return items


def identity_of(keys: tuple[str, ...], item: Any) -> tuple[str, ...]:
    """What identifies ``item`` of a list field whose IDENTITY_KEYS entry is ``keys``."""
    if not isinstance(item, dict):
        return ("",) * len(keys)
    return tuple(_identity_part(item, component) for component in keys)


def _identity_part(item: dict[str, Any], component: str) -> str:
    for key in component.split("|"):
        value = item.get(key)
        if value is not None and value != "":
            return value if isinstance(value, str) else sorted_json(value).decode()
    return ""


def _sites(locations: list[Any], out: Canonical) -> None:
    by_key: dict[str, list[Any]] = {}
    for location in locations:
        site = _canon(location)
        key = _site_key(site)
        same = by_key.get(key)
        if same is None:
            by_key[key] = [site]
        else:
            same.append(site)
    for key, sites in by_key.items():
        if len(sites) > 1:
            # Order by content, not by list position, so the same sites get the same suffixes.
            sites.sort(key=sorted_json)
        out[key] = sites[0]
        for n, site in enumerate(sites[1:], start=2):
            out[f"{key}#{n}"] = site


def _site_key(site: Any) -> str:
    if not isinstance(site, dict):
        return "locations." + "|" * (len(SITE_PARTS) - 1)
    get = site.get
    parts = (get("facility"), get("city"), get("state"), get("country"))  # SITE_PARTS
    return "locations." + "|".join(
        [" ".join(part.split()).lower() if type(part) is str else _key_part(part) for part in parts]
    )


def _key_part(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else sorted_json(value).decode()
    return " ".join(text.split()).lower()


def _canon(value: Any, depth: int = 0) -> Any:
    """A new copy of ``value`` with text cleaned and every list sorted; the input is untouched.

    ``depth``: how many lists and objects hold ``value`` within its field; past MAX_DEPTH the
    record is malformed (no real one comes near, and every output must still serialize it).
    """
    # Exact types first: the hot path (what orjson.loads makes); subclasses take the slow one.
    kind = type(value)
    if kind is str:
        # clean_text's own first test, inlined: it holds for nearly every string of a record.
        return value if "<" not in value and "&" not in value else clean_text(value)
    if kind is dict:
        return _canon_dict(value, depth)
    if kind is list:
        return _canon_list(value, depth)
    if kind in _LEAF_TYPES:
        return value
    if isinstance(value, str):
        return value if "<" not in value and "&" not in value else clean_text(value)
    if isinstance(value, dict):
        return _canon_dict(value, depth)
    if isinstance(value, list):
        return _canon_list(value, depth)
    return value


def _canon_list(items: list[Any], depth: int) -> list[Any]:
    if depth > MAX_DEPTH:
        raise MalformedRecord(f"a field value nests more than {MAX_DEPTH} lists or objects deep")
    return _sorted_items([_canon(item, depth + 1) for item in items])


def _canon_dict(obj: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    # _canon inlined for the common leaves: a record is mostly small dicts of strings and numbers.
    if depth > MAX_DEPTH:
        raise MalformedRecord(f"a field value nests more than {MAX_DEPTH} lists or objects deep")
    out = dict(obj)
    for key, item in obj.items():
        kind = type(item)
        if kind is str:
            if "<" in item or "&" in item:
                out[key] = clean_text(item)
        elif kind is dict:
            out[key] = _canon_dict(item, depth + 1)
        elif kind not in _LEAF_TYPES:
            out[key] = _canon(item, depth + 1)
    return out


def _sorted_items(items: list[Any]) -> list[Any]:
    if len(items) < 2:
        return items
    first = type(items[0])
    if first is str and all(type(item) is str for item in items):
        items.sort()
        return items
    types = {type(item) for item in items}
    if (len(types) == 1 and types <= _SCALAR_TYPES) or types <= _NUMBER_TYPES:
        items.sort()
    else:
        # Objects, lists, nulls and mixed scalars: canonical JSON text is a total order.
        items.sort(key=sorted_json)
    return items


def sorted_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# ---------------------------------------------------------------------------- ignore globs

_GLOB_CHARS: Final = re.compile(r"[*?[]")


@lru_cache(maxsize=64)
def _ignore_matcher(patterns: tuple[str, ...]) -> tuple[str, Callable[[str], object]] | None:
    """The literal prefix every glob starts with, and a matcher of the globs."""
    if not patterns:
        return None
    regex = "|".join(fnmatch.translate(pattern) for pattern in patterns)
    prefix = os.path.commonprefix([_GLOB_CHARS.split(pattern, 1)[0] for pattern in patterns])
    return prefix, re.compile(regex).match


@lru_cache(maxsize=64)
def drops_all_derived(patterns: tuple[str, ...]) -> bool:
    # When a glob drops every derived.* path, skip building them: derivedSection's MeSH lists
    # are a good part of a record and the default ignores them.
    for pattern in patterns:
        head = pattern[:-1]
        if (
            pattern.endswith("*")
            and not any(c in head for c in "*?[")
            and ("derived.".startswith(head))
        ):
            return True
    return False
