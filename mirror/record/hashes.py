"""Hashes of canonical records: per area, the whole content, and the raw fingerprint that
settles an unchanged re-read before anything is normalized."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import orjson

from mirror.record.normalize import Canonical, drops_all_derived, sorted_json

DIGEST_SIZE: Final = 16


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
        body = sorted_json(fields)
        parts[area] = blake2b(body, digest_size=DIGEST_SIZE).hexdigest()
        bodies.append(body[1:-1])
    return b"{" + b",".join(bodies) + b"}", parts


# Part of every fingerprint: bump it whenever normalize() may give another record for the same
# study object, so that stored fingerprints stop matching and records are normalized again.
NORMALIZE_REVISION: Final = 2


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
    if drops_all_derived(patterns) and isinstance(study.get("derivedSection"), dict):
        study = {key: value for key, value in study.items() if key != "derivedSection"}
    try:
        body = orjson.dumps(study)
    except orjson.JSONEncodeError:
        return None
    # SHA-256, not blake2b: where the CPU has SHA instructions it hashes twice as fast.
    digest = hashlib.sha256(_fingerprint_salt(patterns))
    digest.update(body)
    return digest.hexdigest()[: 2 * DIGEST_SIZE]


@lru_cache(maxsize=64)
def _fingerprint_salt(patterns: tuple[str, ...]) -> bytes:
    return sorted_json([NORMALIZE_REVISION, *patterns])


def content_hash(parts: Mapping[str, str]) -> str:
    """One hex digest over the sorted (area, part hash) pairs of ``part_hashes()``."""
    return hashlib.blake2b(sorted_json(sorted(parts.items())), digest_size=DIGEST_SIZE).hexdigest()
