"""Bad records, generated: real records mutated by hypothesis go through a sync and an import
beside good ones, then through every reader. A bad record fails alone (named and counted) or is
stored as the registry sent it; the good ones are stored; nothing is left half written; no
reader raises. ``CTMIRROR_TEST_EXAMPLES`` sets how many examples each test tries."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_client import ApiClient, api_client
from fake_ctgov import FakeCtgov, load_study
from helpers import orphans, put_real, sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mirror import feed
from mirror.app import App
from mirror.pipeline import SyncRequest
from mirror.render import render_html, render_markdown
from mirror.store import Study, StudyVersion

GOOD = ["NCT00000410", "NCT05756322", "NCT05305430"]
EXAMPLES = int(os.environ.get("CTMIRROR_TEST_EXAMPLES", "30"))
FRESH = (f"NCT9{n:07d}" for n in itertools.count(1))  # a new id for each bad record

Json = Any

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
    | st.sampled_from(
        [
            "",
            "a\x00b",
            "\x00",
            "<p>* one\n* two</p>",
            "&amp;",
            "NCT1",
            "x" * 600,
            "2026-06-01T00:00:00Z",
            "RECRUITING " * 5,
        ]
    ),  # fmt: skip
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def bad_records(draw: st.DrawFn) -> tuple[str, bytes]:
    """(how it was made, its JSON text): a real record with one part replaced, dropped or
    nested deep, or something that is not a study at all."""
    study = load_study(draw(st.sampled_from(GOOD)))
    study["protocolSection"]["identificationModule"]["nctId"] = next(FRESH)
    kind = draw(st.sampled_from(["replace", "replace", "replace", "drop", "deep", "whole"]))
    if kind == "whole":
        return "not a study", json.dumps(draw(json_values)).encode()
    path = draw(_paths(study))
    parent, key = _node(study, path[:-1]), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind == "deep":
        value: Json = parent[key]
        for _ in range(draw(st.integers(200, 400))):
            value = [value]
        parent[key] = value
    else:
        parent[key] = draw(json_values)
    return f"{kind} {'.'.join(map(str, path))}", json.dumps(study).encode()


@st.composite
def _paths(draw: st.DrawFn, study: Json) -> list[Any]:
    """A path to some part of ``study``: each step goes into a random child, or stops."""
    path: list[Any] = []
    node = study
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        path.append(draw(st.sampled_from(keys)))
        node = node[path[-1]]
        if not isinstance(node, dict | list) or draw(st.integers(0, 3)) == 0:
            break
    return path or ["protocolSection"]


def _node(study: Json, path: list[Any]) -> Json:
    for step in path:
        study = study[step]
    return study


def _stored(app: App) -> dict[str, int]:
    with app.db.session() as session:
        rows = session.execute(
            select(Study.nct_id, StudyVersion.version).join(
                StudyVersion, StudyVersion.study_id == Study.id
            )
        )
        return {nct_id: version for nct_id, version in rows}


def _read_everything(app: App, api: ApiClient, nct_id: str) -> None:
    """Every reader of a stored study: pages, detail, history, timeline, feed, the API."""
    pages = app.settings.pages
    page = feed.page_input(app.db, nct_id, None, pages)
    assert nct_id in render_markdown(page, pages)
    assert nct_id in render_html(page, pages)
    assert feed.study_detail(app.db, nct_id)["nct_id"] == nct_id
    assert feed.history(app.db, nct_id)[0].nct_id == nct_id
    feed.timeline(app.db, nct_id)
    for url in (
        f"/v1/studies/{nct_id}",
        f"/v1/studies/{nct_id}/versions",
        f"/v1/studies/{nct_id}/timeline",
        f"/v1/changes?nct_id={nct_id}",
        f"/v1/changes.atom?nct_id={nct_id}",
        f"/trials/{nct_id}.md",
        f"/trials/{nct_id}.html",
    ):
        response = api.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])


@pytest.fixture
def api(app: App) -> Iterator[ApiClient]:
    with api_client(app) as client:
        yield client


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad=bad_records())
def test_a_bad_record_in_a_sync_fails_alone(
    bad: tuple[str, bytes], fake_api: FakeCtgov, app: App, api: ApiClient
) -> None:
    """A bad record in an API page: the good ones of the page are stored, the bad one is
    stored as sent or failed by name, nothing half written, every reader answers."""
    how, raw = bad
    put_real(fake_api, GOOD)
    fake_api.clear_junk()
    fake_api.add_junk(raw)
    before = _stored(app)
    summary = sync(app, SyncRequest(query={"filter.ids": ",".join(GOOD)}))
    stored = _stored(app)
    assert set(GOOD) <= set(stored), how
    new = set(stored) - set(before) - set(GOOD)
    assert len(new) + summary.counts["failed"] == 1, (how, summary.line(), summary.failures)
    assert orphans(app.db) == ([], []), how
    for nct_id in [*GOOD, *new]:
        _read_everything(app, api, nct_id)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad=bad_records())
def test_a_bad_record_in_an_archive_fails_alone(
    bad: tuple[str, bytes], app: App, api: ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A bad line in an NDJSON archive: the others are imported, the bad one is stored as
    read or failed by its line, nothing half written, every reader answers."""
    how, raw = bad
    lines = [json.dumps(load_study(nct_id)).encode() for nct_id in GOOD]
    path: Path = tmp_path_factory.mktemp("archive") / "studies.ndjson"
    path.write_bytes(b"\n".join([lines[0], raw, *lines[1:]]) + b"\n")
    from mirror.source import open_archive

    before = _stored(app)
    summary = app.importer().run(open_archive(str(path)))
    stored = _stored(app)
    assert set(GOOD) <= set(stored), how
    new = set(stored) - set(before) - set(GOOD)
    failed = summary.tally.counts["failed"]
    assert len(new) + failed == 1, (how, summary.line(), summary.tally.failures)
    assert [label for label, _ in summary.tally.failures] == (["studies.ndjson line 2"] * failed)
    assert orphans(app.db) == ([], []), how
    for nct_id in [*GOOD, *new]:
        _read_everything(app, api, nct_id)
