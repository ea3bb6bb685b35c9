"""`ctmirror changes` streams the whole feed: --limit 0 / --all, the continuation hint, an empty
CSV's header, a table that fits the terminal."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from conftest import Cli
from fake_ctgov import FakeCtgov, load_study

IDS = ["NCT00000410", "NCT00007696", "NCT00033839"]


@pytest.fixture
def synced(fake_api: FakeCtgov, run: Cli) -> Cli:
    """Three real studies synced, then one edited (a long eligibility text) and synced again."""
    for nct_id in IDS:
        fake_api.put(load_study(nct_id))
    run("sync", *IDS)

    def edit(study: dict) -> None:
        module = study["protocolSection"]["eligibilityModule"]
        module["eligibilityCriteria"] = module["eligibilityCriteria"].replace("ages", "AGES", 1)

    fake_api.edit(IDS[1], edit)
    run("sync", *IDS)
    return run


def _paged(run: Cli, size: int) -> list[dict]:
    """The feed read page by page with --after, as a person had to before."""
    events: list[dict] = []
    while True:
        after = ["--after", str(events[-1]["id"])] if events else []
        page = orjson.loads(run("changes", "--limit", str(size), *after, "--format", "json").stdout)
        if not page:
            return events
        events += page


def test_limit_0_streams_every_event_of_the_feed_first_sight_included(synced: Cli) -> None:
    """`--limit 0` (and `--all`) print the whole feed: the same events as paging through it."""
    every = [orjson.loads(line) for line in synced("changes", "--limit", "0", "--format",
                                                   "ndjson").stdout.splitlines()]  # fmt: skip
    assert every == _paged(synced, 50)
    assert len(every) > 150 and sum(e["initial"] for e in every) == len(every) - 1
    assert orjson.loads(synced("changes", "--all", "--format", "json").stdout) == every
    assert [e["id"] for e in every] == sorted({e["id"] for e in every})


def test_a_page_cut_at_the_limit_says_how_to_continue(synced: Cli) -> None:
    """A feed cut at --limit names the cursor to go on from on stderr; a whole one says nothing."""
    result = synced("changes", "--limit", "7", "--format", "json")
    page = orjson.loads(result.stdout)
    assert len(page) == 7
    assert f"continue with --after {page[-1]['id']}" in result.stderr
    rest = synced("changes", "--after", str(page[-1]["id"]), "--limit", "0", "--format", "json")
    assert "continue with" not in rest.stderr
    assert orjson.loads(rest.stdout)[0]["id"] > page[-1]["id"]


def test_an_empty_csv_still_has_its_header(synced: Cli) -> None:
    """No matching event: the CSV is its header line, so CSV readers see the columns."""
    out = synced("changes", "--field", "no.such.field", "--format", "csv").stdout
    assert out == "id,nct_id,version,field,kind,old,new,observed_at,source_date,initial\n"
    rows = list(csv.DictReader(io.StringIO(synced("changes", "--no-initial", "--format",
                                                  "csv").stdout)))  # fmt: skip
    assert [r["field"] for r in rows] == ["eligibility.criteria"]


def test_the_table_fits_the_terminal_and_cuts_around_the_first_difference(synced: Cli) -> None:
    """A long changed text shows where it differs, and no line is wider than the terminal."""
    synced.env["COLUMNS"] = "100"
    out = synced("changes", "--no-initial").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["id", "nct_id", "version", "field", "change", "observed_at"]
    assert max(len(line) for line in lines) <= 100
    assert "AGES" in lines[1] and "ages" in lines[1]
