"""Saved searches: the query parameters of ``GET /studies`` a watch may carry, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mirror.errors import UsageError

# The saved-search parameters of GET /studies that a watch may carry.
SEARCH_PARAMS = frozenset(
    {
        "query.term", "query.cond", "query.spons", "query.intr", "query.titles",
        "query.locn", "query.outc", "query.lead", "query.id", "query.patient",
        "filter.overallStatus", "filter.advanced", "filter.ids", "filter.geo",
        "filter.synonyms",
    }
)  # fmt: skip


def check_search(params: Mapping[str, str]) -> dict[str, str]:
    """A saved search's parameters, or UsageError naming the first unknown one."""
    for key, value in params.items():
        if key not in SEARCH_PARAMS:
            known = ", ".join(sorted(SEARCH_PARAMS))
            raise UsageError(f"unknown search parameter {key!r} (known: {known})")
        if not str(value).strip():
            raise UsageError(f"search parameter {key!r} is empty")
    if not params:
        raise UsageError("a saved search needs at least one query.* or filter.* parameter")
    return dict(params)


def updated_between(params: Mapping[str, str], low: str, high: str) -> dict[str, str]:
    """``params`` narrowed to studies whose LastUpdatePostDate is in [low, high] (inclusive;
    ``YYYY-MM-DD``, ``MIN`` or ``MAX``), ANDed with any ``filter.advanced`` of their own."""
    query = dict(params)
    window = f"AREA[LastUpdatePostDate]RANGE[{low},{high}]"
    user = query.get("filter.advanced")
    query["filter.advanced"] = f"({user}) AND {window}" if user else window
    return query


def parse_query(items: Sequence[str]) -> dict[str, str]:
    """``query.cond=asthma`` pairs (bare text means ``query.term``), checked against the API."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.strip().startswith(("query.", "filter.")):
            params[key.strip()] = value.strip()
        else:
            params["query.term"] = item.strip()
    return check_search(params)
