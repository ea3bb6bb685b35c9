"""Pages of first-sight events (blocks): a page reads the records of the blocks it takes, and
takes exactly the events it would if every block were expanded, in either order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fake_ctgov import all_study_ids, load_study

from mirror.feed import query as feed_query
from mirror.feed.query import ChangeFilter, find
from mirror.pipeline import Ingestor
from mirror.source import Observation
from mirror.store import Database, EventRow, expand, expandable

DAY = datetime(2026, 11, 20, 7, tzinfo=UTC)
STUDIES = all_study_ids()[:30]


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """30 real studies seen once: 30 blocks (SQLite; the query is the same on both)."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('blocks')}/mirror.db")
    db.upgrade()
    observations = []
    for n, nct_id in enumerate(STUDIES):
        raw = orjson.dumps(load_study(nct_id))
        observations.append(Observation(nct_id, raw, orjson.loads(raw), DAY + timedelta(n)))
    Ingestor(db, ignore=("derived.*",)).ingest(observations)
    yield db
    db.dispose()


def every_block_event(db: Database) -> list[EventRow]:
    with db.session() as session:
        return sorted(e for block in session.execute(expandable()) for e in expand(block))


@pytest.mark.parametrize("fields", [(), ("status.overallStatus",), ("status.*",), ("locations.*",)])
@pytest.mark.parametrize("newest_first", [False, True])
def test_block_pages_take_what_full_expansion_would(
    mirrored: Database, fields: tuple[str, ...], newest_first: bool
) -> None:
    events = every_block_event(mirrored)
    matching = [e for e in events if not fields or feed_query.field_test(fields)(e[3])]
    assert len({e[1] for e in matching}) > 4 * feed_query.BLOCK_CHUNK or not fields
    for limit in (1, 7, 100):
        for after in (0, events[len(events) // 3][0], events[-1][0] - 5):
            expected = [e for e in matching if e[0] > after]
            expected = (expected[::-1] if newest_first else expected)[:limit]
            flt = ChangeFilter(after=after, fields=fields, limit=limit, newest_first=newest_first)
            with mirrored.session() as session:
                got = find(session, flt)
            assert [e[0] for e in got] == [e[0] for e in expected], (fields, limit, after)
            assert got == expected


def test_a_page_reads_only_the_records_it_takes(
    mirrored: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event a block (an exact field): a page of 7 reads the records of 7 versions."""
    read: list[int] = []
    expand_chosen = feed_query.expand_chosen

    def counted(session, taken):  # type: ignore[no-untyped-def]
        read.append(len(taken))
        return expand_chosen(session, taken)

    monkeypatch.setattr(feed_query, "expand_chosen", counted)
    with mirrored.session() as session:
        page = find(session, ChangeFilter(fields=("status.overallStatus",), limit=7))
    assert [e[3] for e in page] == ["status.overallStatus"] * 7
    assert read == [7]
