"""Reading what the mirror holds: the change feed's query planner (``query``) and the reads of
studies, versions, diffs and page inputs (``reads``).
"""

from mirror.feed.query import MAX_LIMIT, ChangeFilter, event_dict, glob_regex
from mirror.feed.reads import (
    Departure,
    PageInput,
    StudyFilter,
    change_dicts,
    changes,
    changes_by_version,
    diff_versions,
    get_study,
    history,
    last_sync,
    page_input,
    raw_version,
    stream_change_chunks,
    stream_changes,
    studies,
    study_detail,
    timeline,
)

__all__ = [
    "Departure",
    "ChangeFilter",
    "MAX_LIMIT",
    "PageInput",
    "StudyFilter",
    "change_dicts",
    "changes",
    "changes_by_version",
    "diff_versions",
    "event_dict",
    "get_study",
    "glob_regex",
    "history",
    "last_sync",
    "page_input",
    "raw_version",
    "stream_change_chunks",
    "stream_changes",
    "studies",
    "study_detail",
    "timeline",
]
