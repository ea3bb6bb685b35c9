"""Pure functions on study records, no database: the canonical record (``normalize``), its
field table (``fields``), hashes, text cleaning, diffs into field changes, change classes,
NCT ids and the vocabulary of change events.
"""

from mirror.record.classes import CATALOG, VersionClass, class_matches, classify
from mirror.record.diff import FieldChange, diff_records, initial_changes, loosely_equal
from mirror.record.events import STUDY_FIELD, ChangeKind, format_instant, utcnow
from mirror.record.fields import IDENTITY_KEYS, SITE_PATTERN, FieldRule, field_mapping
from mirror.record.hashes import (
    NORMALIZE_REVISION,
    area_of,
    content_hash,
    encode,
    fingerprint,
    fingerprints,
    part_hashes,
    raw_fingerprint,
    same_parsed,
    same_raw,
)
from mirror.record.nct import NCT_ID, NCT_ID_PATTERN, guess_nct_id, nct_id_of, parse_nct_id
from mirror.record.normalize import DEFAULT_IGNORE, Canonical, identity_of, normalize
from mirror.record.text import NUL_REPLACEMENT, clean_text, text_key, without_nul

__all__ = [
    "CATALOG",
    "Canonical",
    "ChangeKind",
    "DEFAULT_IGNORE",
    "FieldChange",
    "FieldRule",
    "IDENTITY_KEYS",
    "NCT_ID",
    "NCT_ID_PATTERN",
    "NORMALIZE_REVISION",
    "NUL_REPLACEMENT",
    "SITE_PATTERN",
    "STUDY_FIELD",
    "VersionClass",
    "area_of",
    "class_matches",
    "classify",
    "clean_text",
    "content_hash",
    "diff_records",
    "encode",
    "field_mapping",
    "fingerprint",
    "fingerprints",
    "format_instant",
    "guess_nct_id",
    "identity_of",
    "initial_changes",
    "loosely_equal",
    "nct_id_of",
    "normalize",
    "parse_nct_id",
    "part_hashes",
    "raw_fingerprint",
    "same_parsed",
    "same_raw",
    "text_key",
    "utcnow",
    "without_nul",
]
