"""A small synced and edited mirror for the page tests (in-process and in a real browser):
real records from the fake API v2, a watch, sponsor-style edits, a hostile title, a study
that leaves the registry."""

from __future__ import annotations

from typing import Any

from fake_ctgov import FakeCtgov
from helpers import STUDY, module, put_real, sponsor_update, sync, sync_ids

from mirror.app import App
from mirror.pipeline import SyncRequest, add_watch, get_watch

OTHER = "NCT05305430"  # RECRUITING; its title turns hostile
GONE = "NCT00410098"  # leaves the registry
WATCH = "mine"  # STUDY and OTHER
HOSTILE = '<script>alert("owned")</script> & <b>bold</b> Disc'
CRITERIA_LINE = "* Able to swallow tablets whole."


def _sync_watch(app: App) -> None:
    sync(app, SyncRequest(watch=get_watch(app.db, WATCH)))


def build(app: App, fake: FakeCtgov) -> None:
    """STUDY at three versions (status twice, enrollment, criteria), OTHER twice (its title
    edited to markup), GONE seen once then gone; the watch has run three times."""
    put_real(fake, [STUDY, OTHER, GONE])
    add_watch(app.db, WATCH, nct_ids=[STUDY, OTHER])
    _sync_watch(app)
    sync_ids(app, GONE)

    def to_active(study: dict[str, Any]) -> None:
        module(study, "statusModule")["overallStatus"] = "ACTIVE_NOT_RECRUITING"
        module(study, "designModule")["enrollmentInfo"]["count"] = 48
        eligibility = module(study, "eligibilityModule")
        criteria = eligibility["eligibilityCriteria"].replace("greater than 18", "at least 21")
        eligibility["eligibilityCriteria"] = criteria + "\n" + CRITERIA_LINE

    def hostile(study: dict[str, Any]) -> None:
        module(study, "identificationModule")["briefTitle"] = HOSTILE

    sponsor_update(fake, STUDY, to_active)
    sponsor_update(fake, OTHER, hostile)
    fake.remove(GONE)
    _sync_watch(app)
    sync_ids(app, GONE)
    sponsor_update(
        fake,
        STUDY,
        lambda s: module(s, "statusModule").update(overallStatus="COMPLETED"),
        posted="2026-07-01",
    )
    _sync_watch(app)
