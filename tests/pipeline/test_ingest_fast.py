"""The ingest stage's fast paths: what they skip, and that what they store is unchanged.

An unchanged re-read is settled by the record's fingerprint without normalizing it; a
record whose fingerprint moved but whose content did not is still no version; rows written
through the driver's bulk paths read back exactly as the ORM would have stored them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from deepdiff import DeepDiff
from fake_ctgov import load_study
from helpers import count, events, study_row, version_numbers

import mirror.pipeline.ingest
from mirror.pipeline import Ingestor, Outcome, Sighting
from mirror.record import fingerprint, normalize, raw_fingerprint
from mirror.record.diff import _changed_fields
from mirror.record.hashes import _sha256_fingerprint
from mirror.source import Observation
from mirror.store import (
    FINGERPRINT_KEY,
    ChangeEvent,
    Database,
    OutboxEntry,
    Study,
    StudyVersion,
    compress,
    decompress,
)

STUDIES = ("NCT05756322", "NCT05305430", "NCT00410098")
IGNORE = ("derived.*",)
DAY = datetime(2026, 11, 20, 7, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


def observe(study: dict[str, Any], at: datetime = DAY) -> Observation:
    nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    raw = orjson.dumps(study)
    return Observation(nct_id, raw, orjson.loads(raw), at)


def outcomes(results: list[Any]) -> list[tuple[str, Outcome]]:
    return [(r.nct_id, r.outcome) for r in results]


@pytest.fixture
def no_normalize(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every normalize the ingest stage runs (and runs it)."""
    calls: list[str] = []

    def counted(study: Any, ignore: Any = ()) -> Any:
        calls.append(study["protocolSection"]["identificationModule"]["nctId"])
        return normalize(study, ignore)

    monkeypatch.setattr(mirror.pipeline.ingest, "normalize", counted)
    return calls


def test_unchanged_reread_normalizes_nothing(db: Database, no_normalize: list[str]) -> None:
    """Re-reading identical records settles them by fingerprint: no normalize, no version."""
    ingestor = Ingestor(db, ignore=IGNORE)
    studies = [load_study(i) for i in STUDIES]
    assert {o for _, o in outcomes(ingestor.ingest([observe(s) for s in studies]))} == {Outcome.NEW}
    no_normalize.clear()
    later = DAY + timedelta(days=1)
    results = ingestor.ingest([observe(s, later) for s in studies])
    assert [(r.outcome, r.version) for r in results] == [(Outcome.UNCHANGED, 1)] * 3
    assert no_normalize == []
    assert count(db, StudyVersion) == 3
    assert {study_row(db, i).last_seen_at for i in STUDIES} == {later}


def test_derived_only_change_takes_the_fast_path(db: Database, no_normalize: list[str]) -> None:
    """With derived.* ignored, a regenerated derivedSection changes no fingerprint."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([observe(study)])
    study["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-11-21"
    no_normalize.clear()
    assert outcomes(ingestor.ingest([observe(study)])) == [(STUDIES[0], Outcome.UNCHANGED)]
    assert no_normalize == []


def test_reordered_record_is_unchanged_and_its_fingerprint_kept(
    db: Database, no_normalize: list[str]
) -> None:
    """Keys in another order: normalized once (same content hash), then settled by fingerprint."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([observe(study)])
    reordered = dict(reversed(list(study.items())))
    no_normalize.clear()
    assert outcomes(ingestor.ingest([observe(reordered)])) == [(STUDIES[0], Outcome.UNCHANGED)]
    assert no_normalize == [STUDIES[0]]
    assert outcomes(ingestor.ingest([observe(reordered)])) == [(STUDIES[0], Outcome.UNCHANGED)]
    assert no_normalize == [STUDIES[0]]
    assert version_numbers(db, STUDIES[0]) == [1]


def test_other_ignore_globs_do_not_trust_the_stored_fingerprint(
    db: Database, no_normalize: list[str]
) -> None:
    """An ingestor with other ignore globs normalizes again, and the content hash decides."""
    study = load_study(STUDIES[0])
    Ingestor(db, ignore=IGNORE).ingest([observe(study)])
    no_normalize.clear()
    results = Ingestor(db, ignore=()).ingest([observe(study)])
    assert outcomes(results) == [(STUDIES[0], Outcome.CHANGED)]
    assert no_normalize == [STUDIES[0]]
    fields = {e.field for e in events(db, STUDIES[0], 2)}
    assert fields and all(f.startswith("derived.") for f in fields)


def test_mixed_batch_gets_each_outcome(db: Database) -> None:
    """New, unchanged and changed studies in one batch: each gets its outcome and version."""
    ingestor = Ingestor(db, ignore=IGNORE)
    first, second, third = (load_study(i) for i in STUDIES)
    ingestor.ingest([observe(first), observe(second)])
    second["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    results = ingestor.ingest([observe(first), observe(second), observe(third)])
    assert [(r.outcome, r.version) for r in results] == [
        (Outcome.UNCHANGED, 1),
        (Outcome.CHANGED, 2),
        (Outcome.NEW, 1),
    ]
    assert [(e.field, e.new) for e in events(db, STUDIES[1], 2)] == [
        ("status.overallStatus", "COMPLETED")
    ]
    assert count(db, OutboxEntry) == count(db, StudyVersion) == 4


def test_same_study_twice_in_a_batch_is_stored_once(db: Database) -> None:
    """A batch that repeats a study (an archive may) stores it once, then finds it unchanged."""
    study = load_study(STUDIES[0])
    results = Ingestor(db, ignore=IGNORE).ingest([observe(study), observe(study)])
    assert [r.outcome for r in results] == [Outcome.NEW, Outcome.UNCHANGED]
    assert version_numbers(db, STUDIES[0]) == [1]


def test_last_seen_follows_each_observation_time(db: Database) -> None:
    """Unchanged studies observed at different times in one batch each keep their own time."""
    ingestor = Ingestor(db, ignore=IGNORE)
    studies = [load_study(i) for i in STUDIES]
    ingestor.ingest([observe(s) for s in studies])
    times = [DAY + timedelta(hours=n + 1, microseconds=n) for n in range(3)]
    ingestor.ingest([observe(s, t) for s, t in zip(studies, times, strict=True)])
    assert [study_row(db, i).last_seen_at for i in STUDIES] == times


def test_an_older_observation_never_moves_last_seen_back(db: Database) -> None:
    """An archive of last week read after today's sync leaves last_seen_at at today."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([observe(study, DAY)])
    ingestor.ingest([observe(study, DAY - timedelta(days=7))])
    assert study_row(db, STUDIES[0]).last_seen_at == DAY


def test_initial_events_read_back_as_the_canonical_values(db: Database) -> None:
    """Bulk-written events read back through the ORM with every value, time and flag intact."""
    study = load_study(STUDIES[0])
    Ingestor(db, ignore=IGNORE).ingest([observe(study)])
    record = normalize(study, IGNORE)
    stored = events(db, STUDIES[0], 1)
    assert [(e.field, e.new) for e in stored] == list(record.items())
    assert {(e.kind.value, e.old, e.initial, e.observed_at) for e in stored} == {
        ("added", None, True, DAY)
    }
    assert {e.source_date for e in stored} == {record["status.lastUpdatePostDate"]}


def test_changed_events_keep_json_types(db: Database) -> None:
    """A field that changes type (number to text, null to object) reads back as written."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([observe(study)])
    design = study["protocolSection"]["designModule"]
    old_count = design["enrollmentInfo"]["count"]
    design["enrollmentInfo"]["count"] = "501"
    study["protocolSection"]["statusModule"]["whyStopped"] = 'Ünïcode "quoted" \\ text'
    ingestor.ingest([observe(study)])
    changed = {(e.field, e.kind.value, e.old, e.new) for e in events(db, STUDIES[0], 2)}
    assert changed == {
        ("design.enrollmentCount", "changed", old_count, "501"),
        ("status.whyStopped", "added", None, 'Ünïcode "quoted" \\ text'),
    }


def test_gone_study_event_is_stored_with_null_values(db: Database) -> None:
    """A tombstone's `removed` study event has SQL NULL old/new, as before."""
    ingestor = Ingestor(db, ignore=IGNORE)
    ingestor.ingest([observe(load_study(STUDIES[0]))])
    results = ingestor.disappear([mirror.pipeline.ingest.Disappearance(STUDIES[0], DAY)])
    assert outcomes(results) == [(STUDIES[0], Outcome.GONE)]
    (event,) = events(db, STUDIES[0], 2)
    assert (event.field, event.kind.value, event.old, event.new) == ("study", "removed", None, None)
    with db.session() as session:
        nulls = session.query(ChangeEvent).filter(ChangeEvent.new.is_(None)).count()
    assert nulls == 1


def test_fingerprint_ignores_derived_only_when_the_globs_drop_it() -> None:
    """derivedSection counts for the fingerprint unless every derived.* path is ignored."""
    study = load_study(STUDIES[0])
    edited = load_study(STUDIES[0])
    edited["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-11-21"
    assert fingerprint(study, IGNORE) == fingerprint(edited, IGNORE)
    assert fingerprint(study, ()) != fingerprint(edited, ())
    assert fingerprint(study, IGNORE) != fingerprint(study, ())


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every Sighting the ingest stage parses (and parses it)."""
    calls: list[str] = []
    parsed = Sighting.parsed

    def counted(self: Sighting) -> Observation:
        calls.append(self.nct_id)
        return parsed(self)

    monkeypatch.setattr(Sighting, "parsed", counted)
    return calls


def sight(study: dict[str, Any], guess: str | None = None, at: datetime = DAY) -> Sighting:
    nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    return Sighting(guess or nct_id, orjson.dumps(study), at, f"{nct_id}.json")


def test_stored_bytes_are_settled_unparsed(db: Database, parses: list[str]) -> None:
    """An archive's record with the stored bytes (but its versionHolder) is never parsed."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    assert outcomes(ingestor.ingest([sight(study)])) == [(STUDIES[0], Outcome.NEW)]
    study["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-11-21"
    parses.clear()
    assert outcomes(ingestor.ingest([sight(study)])) == [(STUDIES[0], Outcome.UNCHANGED)]
    assert parses == []
    study["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    assert outcomes(ingestor.ingest([sight(study)])) == [(STUDIES[0], Outcome.CHANGED)]
    assert parses == [STUDIES[0]]


def test_a_wrong_guess_is_stored_under_the_records_own_id(db: Database) -> None:
    """A Sighting whose guessed id is another stored study's is parsed and stored as itself."""
    ingestor = Ingestor(db, ignore=IGNORE)
    first, second = load_study(STUDIES[0]), load_study(STUDIES[1])
    ingestor.ingest([observe(first)])
    results = ingestor.ingest([sight(second, guess=STUDIES[0])])
    assert outcomes(results) == [(STUDIES[1], Outcome.NEW)]
    assert version_numbers(db, STUDIES[0]) == version_numbers(db, STUDIES[1]) == [1]


def test_bytes_moved_content_not_renews_the_fingerprint(
    db: Database, no_normalize: list[str], parses: list[str]
) -> None:
    """derivedSection edited beyond versionHolder: parsed, not normalized, and its new bytes
    stored so that the next read settles it unparsed."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([sight(study)])
    study["derivedSection"]["conditionBrowseModule"] = {"meshes": [{"id": "D0", "term": "x"}]}
    no_normalize.clear()
    parses.clear()
    for expected_parses in ([STUDIES[0]], [STUDIES[0]]):
        assert outcomes(ingestor.ingest([sight(study)])) == [(STUDIES[0], Outcome.UNCHANGED)]
        assert parses == expected_parses
    assert no_normalize == []
    stored = study_row(db, STUDIES[0]).part_hashes[FINGERPRINT_KEY]
    assert stored.startswith(f"x3:{raw_fingerprint(orjson.dumps(study), IGNORE)}:")


def test_fingerprints_of_the_old_kind_still_settle_a_reread(
    db: Database, no_normalize: list[str]
) -> None:
    """A study stored with a SHA-256 fingerprint (before xxh3) is settled without normalize,
    and gets the new kind."""
    ingestor = Ingestor(db, ignore=IGNORE)
    study = load_study(STUDIES[0])
    ingestor.ingest([observe(study)])
    old_kind = _sha256_fingerprint(study, IGNORE)
    with db.write() as session:
        row = session.get(Study, study_row(db, STUDIES[0]).id)
        assert row is not None and row.part_hashes is not None
        row.part_hashes = {**row.part_hashes, FINGERPRINT_KEY: old_kind}
    no_normalize.clear()
    assert outcomes(ingestor.ingest([observe(study)])) == [(STUDIES[0], Outcome.UNCHANGED)]
    assert no_normalize == []
    assert study_row(db, STUDIES[0]).part_hashes[FINGERPRINT_KEY].startswith("x3:")


def test_raw_fingerprint_masks_only_derived_version_holder() -> None:
    """Only derivedSection's one versionHolder date is masked, and only when derived.* is
    ignored; a second versionHolder anywhere, or any other byte, changes the digest."""
    study = load_study(STUDIES[0])
    moved = load_study(STUDIES[0])
    moved["derivedSection"]["miscInfoModule"]["versionHolder"] = "2031-01-01"
    raw, raw_moved = orjson.dumps(study), orjson.dumps(moved)
    assert raw_fingerprint(raw, IGNORE, study) == raw_fingerprint(raw_moved, IGNORE)
    assert raw_fingerprint(raw, (), study) != raw_fingerprint(raw_moved, ())
    twice = load_study(STUDIES[0])
    twice["protocolSection"]["statusModule"]["versionHolder"] = "2026-01-01"
    twice_moved = orjson.loads(orjson.dumps(twice))
    twice_moved["protocolSection"]["statusModule"]["versionHolder"] = "2027-01-01"
    assert raw_fingerprint(orjson.dumps(twice), IGNORE) != raw_fingerprint(
        orjson.dumps(twice_moved), IGNORE
    )
    # Stored without a derived versionHolder (the one seen is elsewhere): no mask either.
    elsewhere = load_study(STUDIES[0])
    del elsewhere["derivedSection"]["miscInfoModule"]["versionHolder"]
    elsewhere["protocolSection"]["statusModule"]["versionHolder"] = "2026-01-01"
    other = orjson.loads(orjson.dumps(elsewhere))
    other["protocolSection"]["statusModule"]["versionHolder"] = "2027-01-01"
    assert raw_fingerprint(orjson.dumps(elsewhere), IGNORE, elsewhere) != raw_fingerprint(
        orjson.dumps(other), IGNORE
    )


def test_fingerprint_of_what_json_cannot_hold_is_none() -> None:
    """An object orjson cannot serialize has no fingerprint (it is normalized every time)."""
    assert fingerprint({"protocolSection": {"x": 2**70}}) is None
    assert fingerprint(["not", "an", "object"]) is None  # type: ignore[arg-type]


def test_zstd_round_trips_from_several_threads() -> None:
    """Compression contexts are per thread: parallel use gives back exactly what went in."""
    payloads = [orjson.dumps(load_study(i)) for i in STUDIES] * 20
    outputs: list[bool] = []

    def work() -> None:
        outputs.extend(decompress(compress(p)) == p for p in payloads)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == [True] * (len(payloads) * 4)


def test_bulk_rows_store_times_as_the_orm_does(db: Database) -> None:
    """Event, version and outbox times equal the ORM-written first_seen_at in SQL itself."""
    on_the_second = DAY.replace(microsecond=0)  # SQLite: its text form must still match
    Ingestor(db, ignore=IGNORE).ingest([observe(load_study(STUDIES[0]), on_the_second)])
    with db.engine.connect() as conn:
        mismatched = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM event_blocks b WHERE b.observed_at <> s.first_seen_at),"
            " (SELECT count(*) FROM study_versions v WHERE v.observed_at <> s.first_seen_at),"
            " (SELECT count(*) FROM outbox o WHERE o.created_at <> s.first_seen_at)"
            " FROM studies s"
        ).one()
    assert tuple(mismatched) == (0, 0, 0)
    assert study_row(db, STUDIES[0]).first_seen_at == on_the_second


def deepdiff_fields(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    """The changed top-level keys as DeepDiff reports them: what mirror.record.diff used to run."""
    tree = DeepDiff(
        old, new, view="tree", verbose_level=0, cache_size=0, threshold_to_diff_deeper=0
    )
    return {
        str(level.path(output_format="list")[0]) for levels in tree.values() for level in levels
    }


EDGE_PAIRS = [
    ({"a.x": 1}, {"a.x": 1.0}),  # int -> float is a change
    ({"a.x": True}, {"a.x": 1}),  # bool -> int too
    ({"a.x": {"p": 1, "q": [1, 2]}}, {"a.x": {"q": [1, 2], "p": 1}}),  # key order is not
    ({"a.x": [1, 2]}, {"a.x": [2, 1]}),  # list order is
    ({"a.x": {"lat": 0.0}}, {"a.x": {"lat": -0.0}}),  # -0.0 equals 0.0
    ({"a.x": [{"n": 1}]}, {"a.x": [{"n": 1.0}]}),  # nested type change
    ({"a.x": None, "a.y": "s"}, {"a.y": "s", "a.z": None}),  # removed and added nulls
    ({"a.x": "same"}, {"a.x": "same"}),
]


@pytest.mark.parametrize(("old", "new"), EDGE_PAIRS)
def test_changed_fields_agree_with_deepdiff(old: dict[str, Any], new: dict[str, Any]) -> None:
    """The per-key comparison finds exactly the fields DeepDiff finds."""
    assert _changed_fields(old, new) == deepdiff_fields(old, new)


def test_changed_fields_agree_with_deepdiff_on_edited_real_records() -> None:
    """Real records with sponsor-like edits: the same changed fields as DeepDiff."""
    for nct_id in STUDIES:
        old = normalize(load_study(nct_id), ())
        new = dict(old)
        for path in list(old)[::7]:
            value = old[path]
            new[path] = value[::-1] if isinstance(value, list) else {"edited": value}
        new.pop(next(iter(old)))
        new["zz.added"] = [1, 2.5, None]
        assert _changed_fields(old, new) == deepdiff_fields(old, new)
