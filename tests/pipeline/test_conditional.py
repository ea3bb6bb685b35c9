"""Conditional re-reads: a study read by id keeps its answer's ETag, the next read sends it as
If-None-Match, and a 304 (no body) is an unchanged read; an edit in between is read in full."""

from __future__ import annotations

from fake_ctgov import FakeCtgov
from helpers import (
    STUDY,
    module,
    put_real,
    sponsor_update,
    study_row,
    sync_ids,
    version_numbers,
)

from mirror.app import App
from mirror.store import ETAG_KEY

OTHERS = ["NCT05305430", "NCT00410098"]


def answers(fake: FakeCtgov, since: int) -> list[tuple[int | None, int]]:
    """(status, body bytes) of the study requests the fake answered after the first ``since``."""
    return [(r.status, r.sent) for r in fake.requests[since:] if "/studies" in r.path]


def test_an_unchanged_reread_is_answered_304_without_a_body(fake_api: FakeCtgov, app: App) -> None:
    """The second sync of the same ids gets one 304 with no body and stores nothing new."""
    put_real(fake_api, [STUDY, *OTHERS])
    assert sync_ids(app, STUDY, *OTHERS).counts["new"] == 3
    assert study_row(app.db, STUDY).part_hashes[ETAG_KEY]
    for _ in range(2):  # and again: a 304 keeps the validator it confirmed
        before = len(fake_api.requests)
        summary = sync_ids(app, STUDY, *OTHERS)
        assert (summary.counts["fetched"], summary.counts["unchanged"]) == (3, 3)
        assert answers(fake_api, before) == [(304, 0)]
    assert [version_numbers(app.db, i) for i in (STUDY, *OTHERS)] == [[1], [1], [1]]


def test_an_edit_between_reads_is_read_in_full(fake_api: FakeCtgov, app: App) -> None:
    """After an edit the validator no longer matches: a 200 with the records, a new version,
    and the new validator kept for the read after."""
    put_real(fake_api, [STUDY, *OTHERS])
    sync_ids(app, STUDY, *OTHERS)
    first = study_row(app.db, STUDY).part_hashes[ETAG_KEY]
    completed = {"overallStatus": "COMPLETED"}
    sponsor_update(fake_api, STUDY, lambda s: module(s, "statusModule").update(completed))
    before = len(fake_api.requests)
    summary = sync_ids(app, STUDY, *OTHERS)
    assert (summary.counts["changed"], summary.counts["unchanged"]) == (1, 2)
    [(status, sent)] = answers(fake_api, before)
    assert status == 200 and sent > 0
    assert version_numbers(app.db, STUDY) == [1, 2]
    second = study_row(app.db, STUDY).part_hashes[ETAG_KEY]
    assert second != first and study_row(app.db, OTHERS[0]).part_hashes[ETAG_KEY] == second
    before = len(fake_api.requests)
    assert sync_ids(app, STUDY, *OTHERS).counts["unchanged"] == 3
    assert answers(fake_api, before) == [(304, 0)]


def test_ids_read_in_other_company_are_not_asked_conditionally(
    fake_api: FakeCtgov, app: App
) -> None:
    """Studies that came in different answers hold different validators: no If-None-Match."""
    put_real(fake_api, [STUDY, *OTHERS])
    sync_ids(app, STUDY)
    sync_ids(app, *OTHERS)
    before = len(fake_api.requests)
    assert sync_ids(app, STUDY, *OTHERS).counts["unchanged"] == 3
    [(status, _)] = answers(fake_api, before)
    assert status == 200
