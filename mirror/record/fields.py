"""The field table: which canonical path each API v2 field gets, by one rule and its exceptions.

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
* Fixed exceptions (the seed page's paths) live in ``RENAMED``, keyed by the path the plain rule
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import orjson

# Top-level sections that follow the module rule, with the prefix their paths get.
SECTIONS: Final[Mapping[str, str]] = MappingProxyType(
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
RENAMED: Final[Mapping[str, str]] = MappingProxyType(
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
# Objects kept whole instead of flattened: a sponsor's name and class change together.
WHOLE_OBJECTS: Final[frozenset[str]] = frozenset({"sponsor.leadSponsor"})
SITES_PATH: Final = "contactsLocations.locations"
SITE_PATTERN: Final = "locations.<facility>|<city>|<state>|<country>"
SITE_PARTS: Final = ("facility", "city", "state", "country")
DATE_STRUCT: Final = "DateStruct"

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


@dataclass(frozen=True)
class FieldRule:
    """One canonical path, the API v2 field it comes from, and what kind of value it holds."""

    path: str
    source: str
    kind: str  # "scalar" | "list" | "object" | "site"


def area_name(module: str) -> str:
    """``statusModule`` -> ``status`` (with the renamed areas)."""
    area = module[:-6] if module.endswith("Module") and len(module) > 6 else module
    return _AREA_RENAMED.get(area, area)


# ---------------------------------------------------------------------------- field mapping


def field_mapping() -> list[FieldRule]:
    """Every path the rule can produce from the API v2 field tree, sorted by path."""
    return list(_field_rules())


@lru_cache(maxsize=1)
def _field_rules() -> tuple[FieldRule, ...]:
    tree = orjson.loads(resources.files("mirror.record").joinpath("ctgov_fields.json").read_bytes())
    rules = [FieldRule("results.hasResults", "hasResults", "scalar")]
    for section in tree["fields"]:
        prefix = SECTIONS.get(section["name"])
        if prefix is None:
            continue
        for module in section.get("children", ()):
            source = f"{section['name']}.{module['name']}."
            dest = f"{prefix}{area_name(module['name'])}."
            rules.extend(_rules_of(module.get("children", ()), source, dest))
    return tuple(sorted(rules, key=lambda rule: rule.path))


def _rules_of(nodes: Sequence[Mapping[str, Any]], source: str, dest: str) -> list[FieldRule]:
    rules: list[FieldRule] = []
    for node in nodes:
        name, children = node["name"], node.get("children", ())
        path, src = dest + name, source + name
        is_list = str(node.get("type", "")).endswith("[]")
        if path == SITES_PATH:
            rules.append(FieldRule(SITE_PATTERN, src, "site"))
        elif path in WHOLE_OBJECTS:
            rules.append(FieldRule(RENAMED[path], src, "object"))
        elif children and not is_list and name.endswith(DATE_STRUCT):
            rules.extend(_date_struct_rules(children, src, dest + name[: -len("Struct")]))
        elif children and not is_list:
            rules.extend(_rules_of(children, src + ".", path + "."))
        else:
            kind = "list" if is_list else "scalar"
            rules.append(FieldRule(RENAMED.get(path, path), src, kind))
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
