"""Turn a raw ClinicalTrials.gov API v2 study object into ctmirror's canonical record.

The canonical record is a flat dict, field path -> JSON value, keys sorted. Diffs, hashes and
change events all run on it, so its paths are a public contract (docs/fields.md lists them all;
``ctmirror fields`` prints the same table from ``field_mapping()``).

The rule
--------
* A path is ``<area>.<field>``. In protocolSection, resultsSection, documentSection and
  annotationSection the area is the module name without its ``Module`` suffix
  (``statusModule`` -> ``status``); nested objects are flattened with dots
  (``designModule.designInfo.maskingInfo.masking`` -> ``design.designInfo.maskingInfo.masking``).
  derivedSection follows the same rule under a ``derived.`` prefix
  (``derived.miscInfo.versionHolder``), so the default ignore glob ``derived.*`` drops all of it.
* A list is one field: its value is the whole list.
* Any ``<x>DateStruct`` object, in any module, becomes ``<x>Date`` (its ``date``) and
  ``<x>DateType`` (its ``type``): ``status.startDate``, ``status.startDateType``.
* Fixed exceptions (the seed page's paths) live in ``_RENAMED``, keyed by the path the plain rule
  would give: ``design.enrollmentCount``/``enrollmentType``, ``eligibility.criteria``/``minAge``/
  ``maxAge``, ``outcomes.primary``/``secondary``/``other``, ``armsInterventions.arms``, and the
  area ``sponsor`` for sponsorCollaboratorsModule with ``sponsor.lead`` = the leadSponsor object
  kept whole. Top-level ``hasResults`` is ``results.hasResults``.
* Each site of ``contactsLocationsModule.locations`` is its own field
  ``locations.<facility>|<city>|<state>|<country>`` (lower-cased, whitespace collapsed, missing
  parts empty) whose value is the whole location; sites with the same key are ordered by their
  canonical JSON and the 2nd, 3rd... get ``#2``, ``#3``.
* Robustness: an unknown top-level key ``k`` becomes ``other.<k>`` (flattened by the rule), and a
  section child that is not an object becomes ``other.<section>.<key>``.

Text: every string passes ``clean_text`` (old versions' HTML markup and entities become the
plain form today's records use); ``text_key`` is the looser key ``mirror.record.diff`` compares by.

Lists never compare by position (a reordered list is no change), so every list is sorted, at every
depth: the fields in ``IDENTITY_KEYS`` by item identity then canonical JSON, other lists of objects
by canonical JSON, lists of scalars by value (by JSON text when types are mixed).
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import html
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import orjson

from mirror.errors import MalformedRecord

Canonical = dict[str, Any]

DEFAULT_IGNORE: tuple[str, ...] = ("derived.*",)

# Top-level sections that follow the module rule, with the prefix their paths get.
_SECTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "protocolSection": "",
        "resultsSection": "",
        "documentSection": "",
        "annotationSection": "",
        "derivedSection": "derived.",
    }
)
_AREA_RENAMED: Final[Mapping[str, str]] = MappingProxyType({"sponsorCollaborators": "sponsor"})

# Plain-rule path -> fixed public path. Keyed by the rule's output so normalize() and
# field_mapping() apply exactly the same exceptions.
_RENAMED: Final[Mapping[str, str]] = MappingProxyType(
    {
        "design.enrollmentInfo.count": "design.enrollmentCount",
        "design.enrollmentInfo.type": "design.enrollmentType",
        "eligibility.eligibilityCriteria": "eligibility.criteria",
        "eligibility.minimumAge": "eligibility.minAge",
        "eligibility.maximumAge": "eligibility.maxAge",
        "outcomes.primaryOutcomes": "outcomes.primary",
        "outcomes.secondaryOutcomes": "outcomes.secondary",
        "outcomes.otherOutcomes": "outcomes.other",
        "armsInterventions.armGroups": "armsInterventions.arms",
        "sponsor.leadSponsor": "sponsor.lead",
    }
)
_RENAMED_GET: Final = dict(_RENAMED).get  # a plain dict's get: the hot loop looks up every path
# Objects kept whole instead of flattened: a sponsor's name and class change together.
_WHOLE_OBJECTS: Final[frozenset[str]] = frozenset({"sponsor.leadSponsor"})
_SITES: Final = "contactsLocations.locations"
SITE_PATTERN: Final = "locations.<facility>|<city>|<state>|<country>"
_SITE_PARTS: Final = ("facility", "city", "state", "country")
_DATE_STRUCT: Final = "DateStruct"

# Field path -> what identifies one item of that list. A component "a|b" is the first
# non-empty of a, b (a reference is its PubMed id, or its citation when it has none).
IDENTITY_KEYS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "outcomes.primary": ("measure",),
        "outcomes.secondary": ("measure",),
        "outcomes.other": ("measure",),
        "armsInterventions.arms": ("label",),
        "armsInterventions.interventions": ("type", "name"),
        "references.references": ("pmid|citation",),
        "sponsor.collaborators": ("name",),
        "contactsLocations.overallOfficials": ("name",),
        "contactsLocations.centralContacts": ("name",),
    }
)

_IDENTITY_GET: Final = dict(IDENTITY_KEYS).get
_NCT_ID: Final = re.compile(r"NCT[0-9]{8}")
_SCALAR_TYPES: Final = frozenset({str, int, float, bool})
_NUMBER_TYPES: Final = frozenset({int, float})
_LEAF_TYPES: Final = frozenset({int, float, bool, type(None)})
_DIGEST_SIZE: Final = 16


@dataclass(frozen=True)
class FieldRule:
    """One canonical path, the API v2 field it comes from, and what kind of value it holds."""

    path: str
    source: str
    kind: str  # "scalar" | "list" | "object" | "site"


# ---------------------------------------------------------------------------- validation


def nct_id_of(study: Mapping[str, Any]) -> str:
    """The study's NCT id; MalformedRecord if it is not a study object with a valid one."""
    if not isinstance(study, Mapping):
        raise MalformedRecord(f"expected a JSON object, got {type(study).__name__}")
    protocol = study.get("protocolSection")
    if not isinstance(protocol, dict):
        raise MalformedRecord("no protocolSection object")
    ident = protocol.get("identificationModule")
    if not isinstance(ident, dict):
        raise MalformedRecord("no protocolSection.identificationModule object")
    nct_id = ident.get("nctId")
    if nct_id is None:
        raise MalformedRecord("no protocolSection.identificationModule.nctId")
    if not isinstance(nct_id, str) or not _NCT_ID.fullmatch(nct_id):
        raise MalformedRecord(f"nctId {nct_id!r} is not NCT followed by 8 digits")
    return nct_id


# ---------------------------------------------------------------------------- normalize


def normalize(study: Mapping[str, Any], ignore: Sequence[str] = ()) -> Canonical:
    """Raw API v2 study object -> canonical record (flat dict, keys sorted).

    Paths matching any fnmatch-style glob in ``ignore`` are dropped. Raises MalformedRecord if
    the object is not a dict or has no protocolSection.identificationModule.nctId matching
    NCT\\d{8}, or holds a value JSON cannot represent.
    """
    nct_id = nct_id_of(study)
    # A lone string is one pattern, not a sequence of one-character globs ("*" would drop all).
    patterns = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    skip_derived = _drops_all_derived(patterns)
    out: Canonical = {}
    try:
        for key, value in study.items():
            if not (skip_derived and key == "derivedSection" and isinstance(value, dict)):
                _top_level(key, value, out)
    except orjson.JSONEncodeError as exc:
        raise MalformedRecord(f"value not representable as JSON ({exc})", nct_id) from exc
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
    elif key in _SECTIONS and isinstance(value, dict):
        prefix = _SECTIONS[key]
        for module, body in value.items():
            if isinstance(body, dict):
                _flatten(body, f"{prefix}{_area(module)}.", out)
            else:
                out[f"other.{key}.{module}"] = _canon(body)
    elif isinstance(value, dict):
        _flatten(value, f"other.{key}.", out)
    else:
        out[f"other.{key}"] = _canon(value)


def _area(module: str) -> str:
    area = module[:-6] if module.endswith("Module") and len(module) > 6 else module
    return _AREA_RENAMED.get(area, area)


def _flatten(obj: dict[str, Any], prefix: str, out: Canonical) -> None:
    for key, value in obj.items():
        path = prefix + key
        if type(value) is str:  # the common case, inlined
            out[_RENAMED_GET(path, path)] = (
                value if "<" not in value and "&" not in value else clean_text(value)
            )
        elif isinstance(value, dict):
            if path in _WHOLE_OBJECTS:
                out[_RENAMED[path]] = _canon(value)
            elif key.endswith(_DATE_STRUCT):
                _date_struct(value, prefix + key[: -len("Struct")], out)
            else:
                _flatten(value, path + ".", out)
        elif path == _SITES and isinstance(value, list):
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
    items.sort(key=lambda item: (identity_of(keys, item), _json(item)))
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
            return value if isinstance(value, str) else _json(value).decode()
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
            sites.sort(key=_json)
        out[key] = sites[0]
        for n, site in enumerate(sites[1:], start=2):
            out[f"{key}#{n}"] = site


def _site_key(site: Any) -> str:
    if not isinstance(site, dict):
        return "locations." + "|" * (len(_SITE_PARTS) - 1)
    get = site.get
    parts = (get("facility"), get("city"), get("state"), get("country"))  # _SITE_PARTS
    return "locations." + "|".join(
        [" ".join(part.split()).lower() if type(part) is str else _key_part(part) for part in parts]
    )


def _key_part(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else _json(value).decode()
    return " ".join(text.split()).lower()


def _canon(value: Any) -> Any:
    """A new copy of ``value`` with text cleaned and every list sorted; the input is untouched."""
    # Exact types first: the hot path (what orjson.loads makes); subclasses take the slow one.
    kind = type(value)
    if kind is str:
        # clean_text's own first test, inlined: it holds for nearly every string of a record.
        return value if "<" not in value and "&" not in value else clean_text(value)
    if kind is dict:
        return _canon_dict(value)
    if kind is list:
        return _sorted_items([_canon(item) for item in value])
    if kind in _LEAF_TYPES:
        return value
    if isinstance(value, str):
        return value if "<" not in value and "&" not in value else clean_text(value)
    if isinstance(value, dict):
        return _canon_dict(value)
    if isinstance(value, list):
        return _sorted_items([_canon(item) for item in value])
    return value


def _canon_dict(obj: dict[str, Any]) -> dict[str, Any]:
    # _canon inlined for the common leaves: a record is mostly small dicts of strings and numbers.
    out = dict(obj)
    for key, item in obj.items():
        kind = type(item)
        if kind is str:
            if "<" in item or "&" in item:
                out[key] = clean_text(item)
        elif kind is dict:
            out[key] = _canon_dict(item)
        elif kind not in _LEAF_TYPES:
            out[key] = _canon(item)
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
        items.sort(key=_json)
    return items


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


# ---------------------------------------------------------------------------- text

# Old registry versions carry HTML where today's records have plain text with markdown.
_BREAK_TAGS: Final = (
    "p", "div", "blockquote", "pre", "table", "center", "hr", "dl",
    "h1", "h2", "h3", "h4", "h5", "h6",
)  # fmt: skip
_LINE_TAGS: Final = ("br", "tr", "dt", "dd", "caption")
_CELL_TAGS: Final = ("td", "th")
_DROPPED_TAGS: Final = (
    "a", "b", "i", "u", "s", "em", "strong", "span", "font", "sub", "sup", "small", "big",
    "code", "tt", "strike", "del", "ins", "thead", "tbody", "tfoot",
)  # fmt: skip
_TAG_NAMES: Final = (*_BREAK_TAGS, *_LINE_TAGS, *_CELL_TAGS, "ul", "ol", "li", *_DROPPED_TAGS)
# A known tag, bare or with name=value attributes: "age < 18" or "<I or >II" stay text.
_TAG: Final = re.compile(
    r"<(/?)(" + "|".join(sorted(_TAG_NAMES, key=len, reverse=True)) + r")"
    r"(?:\s+[a-z-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'<>]+))*\s*/?>",
    re.IGNORECASE,
)
_ENTITY: Final = re.compile(r"&(?:[a-z][a-z0-9]{1,31}|#[0-9]{1,7}|#x[0-9a-f]{1,6});", re.I)
_SPACES: Final = re.compile(r"\s+")
_BLANK_LINES: Final = re.compile(r"\n{3,}")
_INNER_SPACES: Final = re.compile(r"(?<=\S)[ \t]{2,}")
_BULLET: Final = re.compile(r"^[ \t]*(?:[*+-]|[0-9]{1,3}[.)])[ \t]+", re.MULTILINE)
_ESCAPED: Final = re.compile(r"\\([^\w\s])")  # markdown escapes, and "\≥" alike


def clean_text(text: str) -> str:
    """``text`` in the plain form today's records use: HTML markup and entities converted.

    Only text holding a known tag or an ``&...;`` entity is touched (so modern text comes back
    unchanged): block tags become paragraph breaks, ``<li>`` a ``* `` bullet (``1. `` in an
    ``<ol>``), ``<br>`` a newline, other known tags are dropped, entities are unescaped and
    whitespace is tidied line by line.
    """
    if "<" not in text and "&" not in text:  # nearly every string: keep this path short
        return text
    if "<" in text and _TAG.search(text) is not None:
        return _tidy(_unescape(_render_html(text)))
    return _unescape(text) if _ENTITY.search(text) is not None else text


def text_key(text: str) -> str:
    """A loose comparison key: clean_text, then no backslash escapes, bullets or extra spaces."""
    # Escapes first: "\\* item" and "* item" are the same bullet.
    return " ".join(_BULLET.sub("", _ESCAPED.sub(r"\1", clean_text(text))).split())


def _unescape(text: str) -> str:
    # Only well-formed &...; entities (html.unescape alone would turn "&notice" into "¬ice"),
    # repeatedly: double-encoded text ("&amp;lt;") exists in real records.
    for _ in range(3):
        plain = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
        if plain == text:
            break
        text = plain
    return text


def _render_html(text: str) -> str:
    out: list[str] = []
    lists: list[int] = []  # the open <ul>/<ol>: -1 for a <ul>, else the last <ol> number
    pos = 0
    for match in _TAG.finditer(text):
        _render_text(out, text[pos : match.start()])
        _render_tag(out, lists, match.group(2).lower(), closing=bool(match.group(1)))
        pos = match.end()
    _render_text(out, text[pos:])
    return "".join(out)


def _render_text(out: list[str], segment: str) -> None:
    text = _SPACES.sub(" ", segment)  # HTML: any run of whitespace is one space
    if not out or out[-1].endswith(("\n", " ")):
        text = text.lstrip(" ")
    if text:
        out.append(text)


def _render_tag(out: list[str], lists: list[int], name: str, closing: bool) -> None:
    after_bullet = bool(out) and out[-1].startswith("\n") and out[-1].endswith(" ")
    if name in ("ul", "ol"):
        if closing and lists:
            lists.pop()
        elif not closing:
            lists.append(0 if name == "ol" else -1)
        if not lists or (len(lists) == 1 and not closing):
            out.append("\n\n")
    elif name == "li" and not closing:
        if lists and lists[-1] >= 0:
            lists[-1] += 1
        marker = f"{lists[-1]}. " if lists and lists[-1] > 0 else "* "
        out.append("\n" + "  " * max(len(lists) - 1, 0) + marker)
    elif name in _CELL_TAGS:
        out.append(" ")
    elif after_bullet or name in _DROPPED_TAGS or name == "li":
        return
    elif name in _LINE_TAGS or lists:
        out.append("\n")
    else:
        out.append("\n\n")


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.replace("\xa0", " ").split("\n"))
    return _BLANK_LINES.sub("\n\n", _INNER_SPACES.sub(" ", "\n".join(lines))).strip("\n")


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
def _drops_all_derived(patterns: tuple[str, ...]) -> bool:
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


# ---------------------------------------------------------------------------- hashes


def area_of(path: str) -> str:
    """The area of a field path: ``status.overallStatus`` -> ``status``."""
    return path.partition(".")[0]


def part_hashes(record: Canonical) -> dict[str, str]:
    """Area -> hex blake2b digest (16 bytes) of that area's fields, as sorted-key JSON."""
    return encode(record)[1]


def encode(record: Canonical) -> tuple[bytes, dict[str, str]]:
    """The record as JSON (keys sorted at every depth) and its :func:`part_hashes`.

    One serialization serves both: the JSON of each area is hashed, then the areas are joined
    into the record's JSON.
    """
    areas: dict[str, dict[str, Any]] = {}
    prefix: str | None = None
    fields: dict[str, Any] = {}
    for path, value in record.items():
        if prefix is None or not path.startswith(prefix):  # paths come grouped by area
            area = area_of(path)
            prefix, fields = area + ".", areas.setdefault(area, {})
        fields[path] = value
    blake2b = hashlib.blake2b
    parts: dict[str, str] = {}
    bodies: list[bytes] = []
    for area, fields in sorted(areas.items()):
        body = _json(fields)
        parts[area] = blake2b(body, digest_size=_DIGEST_SIZE).hexdigest()
        bodies.append(body[1:-1])
    return b"{" + b",".join(bodies) + b"}", parts


# Part of every fingerprint: bump it whenever normalize() may give another record for the same
# study object, so that stored fingerprints stop matching and records are normalized again.
NORMALIZE_REVISION: Final = 1


def fingerprint(study: Mapping[str, Any], ignore: Sequence[str] = ()) -> str | None:
    """A hex digest of everything ``normalize(study, ignore)`` reads, at a fraction of its cost.

    Equal fingerprints mean equal canonical records (for JSON-parsed objects), so an unchanged
    re-read needs no normalize. derivedSection is left out when the globs drop all of it: the
    registry regenerates it daily. Unequal fingerprints say nothing (keys may just have moved):
    the content hash decides. None when the object cannot be serialized.
    """
    if not isinstance(study, dict):
        return None
    patterns = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    if _drops_all_derived(patterns) and isinstance(study.get("derivedSection"), dict):
        study = {key: value for key, value in study.items() if key != "derivedSection"}
    try:
        body = orjson.dumps(study)
    except orjson.JSONEncodeError:
        return None
    # SHA-256, not blake2b: where the CPU has SHA instructions it hashes twice as fast.
    digest = hashlib.sha256(_fingerprint_salt(patterns))
    digest.update(body)
    return digest.hexdigest()[: 2 * _DIGEST_SIZE]


@lru_cache(maxsize=64)
def _fingerprint_salt(patterns: tuple[str, ...]) -> bytes:
    return _json([NORMALIZE_REVISION, *patterns])


def content_hash(parts: Mapping[str, str]) -> str:
    """One hex digest over the sorted (area, part hash) pairs of ``part_hashes()``."""
    return hashlib.blake2b(_json(sorted(parts.items())), digest_size=_DIGEST_SIZE).hexdigest()


# ---------------------------------------------------------------------------- field mapping


def field_mapping() -> list[FieldRule]:
    """Every path the rule can produce from the API v2 field tree, sorted by path."""
    return list(_field_rules())


@lru_cache(maxsize=1)
def _field_rules() -> tuple[FieldRule, ...]:
    tree = orjson.loads(resources.files("mirror.record").joinpath("ctgov_fields.json").read_bytes())
    rules = [FieldRule("results.hasResults", "hasResults", "scalar")]
    for section in tree["fields"]:
        prefix = _SECTIONS.get(section["name"])
        if prefix is None:
            continue
        for module in section.get("children", ()):
            source = f"{section['name']}.{module['name']}."
            dest = f"{prefix}{_area(module['name'])}."
            rules.extend(_rules_of(module.get("children", ()), source, dest))
    return tuple(sorted(rules, key=lambda rule: rule.path))


def _rules_of(nodes: Sequence[Mapping[str, Any]], source: str, dest: str) -> list[FieldRule]:
    rules: list[FieldRule] = []
    for node in nodes:
        name, children = node["name"], node.get("children", ())
        path, src = dest + name, source + name
        is_list = str(node.get("type", "")).endswith("[]")
        if path == _SITES:
            rules.append(FieldRule(SITE_PATTERN, src, "site"))
        elif path in _WHOLE_OBJECTS:
            rules.append(FieldRule(_RENAMED[path], src, "object"))
        elif children and not is_list and name.endswith(_DATE_STRUCT):
            rules.extend(_date_struct_rules(children, src, dest + name[: -len("Struct")]))
        elif children and not is_list:
            rules.extend(_rules_of(children, src + ".", path + "."))
        else:
            kind = "list" if is_list else "scalar"
            rules.append(FieldRule(_RENAMED.get(path, path), src, kind))
    return rules


def _date_struct_rules(
    children: Sequence[Mapping[str, Any]], source: str, base: str
) -> list[FieldRule]:
    rules: list[FieldRule] = []
    for child in children:
        name = child["name"]
        if name == "date":
            rules.append(FieldRule(base, f"{source}.date", "scalar"))
        elif name == "type":
            rules.append(FieldRule(base + "Type", f"{source}.type", "scalar"))
        else:
            rules.extend(_rules_of([child], source + ".", base + "Struct."))
    return rules
