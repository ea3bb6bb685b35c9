"""ClinicalTrials.gov study ids: ``NCT`` and eight digits. The one definition ctmirror uses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from mirror.errors import InvalidNctId, MalformedRecord

NCT_ID: Final = re.compile(r"NCT[0-9]{8}")
# The same, as an OpenAPI parameter pattern: any case, as parse_nct_id accepts it.
NCT_ID_PATTERN: Final = r"^[Nn][Cc][Tt][0-9]{8}$"
_NCT_ID_IN_JSON: Final = re.compile(rb'"nctId"\s*:\s*"(NCT[0-9]{8})"')
_JSON_TYPES: Final = {
    list: "list",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def parse_nct_id(value: str) -> str:
    """``nct03039062`` -> ``NCT03039062``; InvalidNctId for anything that is not an NCT id."""
    candidate = value.strip().upper()
    if not NCT_ID.fullmatch(candidate):
        raise InvalidNctId(value)
    return candidate


def nct_id_of(study: Mapping[str, Any]) -> str:
    """The study's NCT id; MalformedRecord if it is not a study object with a valid one."""
    if not isinstance(study, Mapping):
        raise MalformedRecord(f"a JSON {_JSON_TYPES.get(type(study), 'value')}, not a study object")
    protocol = study.get("protocolSection")
    if not isinstance(protocol, dict):
        raise MalformedRecord("no protocolSection object")
    ident = protocol.get("identificationModule")
    if not isinstance(ident, dict):
        raise MalformedRecord("no protocolSection.identificationModule object")
    nct_id = ident.get("nctId")
    if nct_id is None:
        raise MalformedRecord("no protocolSection.identificationModule.nctId")
    if not isinstance(nct_id, str) or not NCT_ID.fullmatch(nct_id):
        raise MalformedRecord(f"nctId {nct_id!r} is not NCT followed by 8 digits")
    return nct_id


def guess_nct_id(raw: bytes) -> str | None:
    """The first ``"nctId": "NCT…"`` in a record's JSON, without parsing it: the study's id in
    every registry record (identificationModule comes first), but only a guess: whatever
    trusts it must hold without it (``mirror.pipeline.ingest.Sighting``)."""
    found = _NCT_ID_IN_JSON.search(raw)
    return found[1].decode() if found else None
