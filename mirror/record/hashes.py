"""Hashes of canonical records: per area, the whole content, and the fingerprints that
settle an unchanged re-read before anything is normalized (the raw one before anything is
parsed)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

import orjson
import xxhash

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

# A stored fingerprint of today's kind: ``x3:<raw>:<parsed>``, two xxh3-128 digests. One
# without the prefix is of the old kind (SHA-256 of the parsed route): still compared.
FINGERPRINT_KIND: Final = "x3:"

# The one part of a record the registry rewrites every day: derivedSection's versionHolder
# (the date of the data). Masked in the raw digest when derived.* is ignored.
_VERSION_HOLDER: Final = b'"versionHolder":"'
_VERSION_HOLDER_KEY: Final = b'"versionHolder"'
_DATE: Final = re.compile(rb"\d{4}-\d{2}-\d{2}")
_MASK: Final = b"0000-00-00"


def raw_fingerprint(
    raw: bytes, ignore: Sequence[str] = (), study: Mapping[str, Any] | None = None
) -> str:
    """A hex digest of a record's bytes as read, without parsing them.

    Equal digests mean equal bytes, so equal records, except for the one value masked when
    derived.* is ignored: the versionHolder date, masked only when it is the record's one
    ``"versionHolder"`` and no key can hide behind a ``\\u`` escape. Given the parsed
    ``study`` (when the digest is stored), it is also masked only when that one is
    derivedSection's: a digest equal to a stored one then means the same bytes but for that
    date, at the same place, whatever the new bytes are.
    """
    patterns = _patterns(ignore)
    at = _version_holder_at(raw) if drops_all_derived(patterns) else -1
    if at >= 0 and study is not None and not _holds_version_holder(study):
        at = -1
    digest = xxhash.xxh3_128(_fingerprint_salt(patterns))
    if at < 0:
        digest.update(raw)
    else:
        view = memoryview(raw)  # no copies of the two halves
        digest.update(view[:at])
        digest.update(_MASK)
        digest.update(view[at + len(_MASK) :])
    return digest.hexdigest()


def fingerprint(study: Mapping[str, Any], ignore: Sequence[str] = ()) -> str | None:
    """A hex digest of everything ``normalize(study, ignore)`` reads, at a fraction of its cost.

    Equal fingerprints mean equal canonical records (for JSON-parsed objects), so an unchanged
    re-read needs no normalize. derivedSection is left out when the globs drop all of it: the
    registry regenerates it daily. Unequal fingerprints say nothing (keys may just have moved):
    the content hash decides. None when the object cannot be serialized.
    """
    digest = _parsed_digest(study, ignore, xxhash.xxh3_128)
    return None if digest is None else digest.hexdigest()


def fingerprints(raw: bytes, study: Mapping[str, Any], ignore: Sequence[str] = ()) -> str | None:
    """What is stored with a study: its :func:`raw_fingerprint` and :func:`fingerprint`."""
    parsed = fingerprint(study, ignore)
    if parsed is None:
        return None
    return f"{FINGERPRINT_KIND}{raw_fingerprint(raw, ignore, study)}:{parsed}"


def same_raw(stored: str | None, raw_print: str) -> bool:
    """Whether a stored fingerprint says the bytes behind ``raw_print`` are the stored ones."""
    return stored is not None and stored.startswith(f"{FINGERPRINT_KIND}{raw_print}:")


def same_parsed(
    stored: str | None,
    study: Mapping[str, Any],
    ignore: Sequence[str],
    fresh: str | None = None,
) -> bool:
    """Whether a stored fingerprint, of either kind, says ``study`` normalizes as stored
    (``fresh``: the study's :func:`fingerprints`, when they are made already)."""
    if stored is None:
        return False
    if stored.startswith(FINGERPRINT_KIND):
        parsed = fresh.rpartition(":")[2] if fresh is not None else fingerprint(study, ignore)
        return stored.rpartition(":")[2] == parsed
    return stored == _sha256_fingerprint(study, ignore)


def _sha256_fingerprint(study: Mapping[str, Any], ignore: Sequence[str]) -> str | None:
    """The fingerprint stored before xxh3: kept so that an upgraded mirror's first re-read
    needs no normalize either (it then stores the new kind)."""
    digest = _parsed_digest(study, ignore, hashlib.sha256)
    return None if digest is None else digest.hexdigest()[: 2 * DIGEST_SIZE]


def _parsed_digest(study: Mapping[str, Any], ignore: Sequence[str], algorithm: Any) -> Any:
    """``algorithm`` (a hashlib-style constructor) over the salt and the parsed body of
    ``study``; None when it cannot be serialized."""
    patterns = _patterns(ignore)
    body = _parsed_body(study, patterns)
    if body is None:
        return None
    digest = algorithm(_fingerprint_salt(patterns))
    digest.update(body)
    return digest


def _parsed_body(study: Mapping[str, Any], patterns: tuple[str, ...]) -> bytes | None:
    if not isinstance(study, dict):
        return None
    if drops_all_derived(patterns) and isinstance(study.get("derivedSection"), dict):
        study = {key: value for key, value in study.items() if key != "derivedSection"}
    try:
        return orjson.dumps(study)
    except orjson.JSONEncodeError:
        return None


def _patterns(ignore: Sequence[str]) -> tuple[str, ...]:
    return (ignore,) if isinstance(ignore, str) else tuple(ignore)


def _version_holder_at(raw: bytes) -> int:
    """Where the date of the record's one versionHolder starts in ``raw``; -1 when it has none,
    more than one, or a ``\\u`` escape (which could spell a key that is not seen here)."""
    at = raw.find(_VERSION_HOLDER_KEY)  # the first, then none after it: one pass over raw
    if at < 0 or not raw.startswith(_VERSION_HOLDER, at):
        return -1
    if raw.find(_VERSION_HOLDER_KEY, at + 1) >= 0 or b"\\u" in raw:
        return -1
    at += len(_VERSION_HOLDER)
    if raw[at + len(_MASK) : at + len(_MASK) + 1] != b'"' or not _DATE.fullmatch(
        raw, at, at + len(_MASK)
    ):
        return -1
    return at


def _holds_version_holder(study: Mapping[str, Any]) -> bool:
    derived = study.get("derivedSection")
    misc = derived.get("miscInfoModule") if isinstance(derived, dict) else None
    return isinstance(misc, dict) and isinstance(misc.get("versionHolder"), str)


@lru_cache(maxsize=64)
def _fingerprint_salt(patterns: tuple[str, ...]) -> bytes:
    return sorted_json([NORMALIZE_REVISION, *patterns])


def content_hash(parts: Mapping[str, str]) -> str:
    """One hex digest over the sorted (area, part hash) pairs of ``part_hashes()``."""
    return hashlib.blake2b(sorted_json(sorted(parts.items())), digest_size=DIGEST_SIZE).hexdigest()
