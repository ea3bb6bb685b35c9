"""``ctmirror import``: real records from a zip, a directory or NDJSON, into a real database.

Archives are built from the real API v2 records in ``DATA_DIR/studies``; damage (corrupt
records, truncated zips) is made by writing bad bytes, never by patching the readers. The
multi-worker tests run on PostgreSQL only: SQLite has a single writer.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_ctgov import DATA_DIR, all_study_ids
from helpers import all_events, changes, count, event_total, runs
from sqlalchemy import delete, select, update

from mirror.app import App
from mirror.config import Settings, SyncSettings
from mirror.pipeline import Importer, ImportSummary, auto_workers
from mirror.pipeline.import_batches import claim_batch, open_round
from mirror.pipeline.importer import AUTO_WORKERS_MAX
from mirror.source import NdjsonArchive, ZipArchive, open_archive
from mirror.store import (
    Base,
    Database,
    ImportBatch,
    JobStatus,
    RunStatus,
    Study,
    StudyVersion,
    decompress,
)

SAMPLE = all_study_ids()[::8][:200]
WHEN = datetime(2026, 6, 1, 7, 0, 35, tzinfo=UTC)
LATER = datetime(2026, 6, 8, 7, 0, 0, tzinfo=UTC)
ON_POSTGRES = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
CORRUPT = {
    "NCT99999991.json": b'{"protocolSection": {"identificationModule": ',
    "NCT99999992.json": b"[1, 2, 3]",
    "NCT99999993.json": b'{"protocolSection": {"statusModule": {}}}',
}


def real(nct_id: str) -> bytes:
    return (DATA_DIR / "studies" / f"{nct_id}.json").read_bytes()


def records(nct_ids: list[str]) -> dict[str, bytes]:
    return {f"{nct_id}.json": real(nct_id) for nct_id in nct_ids}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_dir(path: Path, members: dict[str, bytes]) -> Path:
    path.mkdir()
    for name, data in members.items():
        (path / name).write_bytes(data)
    return path


def write_ndjson(path: Path, members: dict[str, bytes]) -> Path:
    path.write_bytes(b"".join(data + b"\n" for data in members.values()))
    return path


WRITERS: dict[str, Callable[[Path, dict[str, bytes]], Path]] = {
    "zip": lambda tmp, m: write_zip(tmp / "ctg-studies.json.zip", m),
    "directory": lambda tmp, m: write_dir(tmp / "studies", m),
    "ndjson": lambda tmp, m: write_ndjson(tmp / "studies.ndjson", m),
}


def content(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every version (with its raw JSON's bytes) and every event, without ids."""
    with db.session() as session:
        versions = session.execute(
            select(
                Study.nct_id, StudyVersion.version, StudyVersion.content_hash,
                StudyVersion.origin, StudyVersion.observed_at, StudyVersion.source_date,
                StudyVersion.raw,
            ).join(Study, Study.id == StudyVersion.study_id)
        ).all()  # fmt: skip
    events = all_events(db)
    return (
        sorted((*v[:-1], decompress(v[-1])) for v in versions),
        sorted(
            orjson.dumps({k: v for k, v in e.as_dict().items() if k != "id"}).decode()
            for e in events
        ),
    )


def wipe(db: Database) -> None:
    with db.write() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def settings_with(settings: Settings, batch_size: int) -> Settings:
    return settings.model_copy(update={"sync": SyncSettings(batch_size=batch_size)})


def stored_ids(db: Database) -> list[str]:
    with db.session() as session:
        return sorted(session.scalars(select(Study.nct_id)))


# -- formats ------------------------------------------------------------------------------------


def test_zip_directory_and_ndjson_store_the_same_content(
    tmp_path: Path, run: Any, app: App
) -> None:
    """200 real records as a zip, a directory and NDJSON store identical versions and events."""
    seen = []
    for fmt, write in WRITERS.items():
        path = write(tmp_path, records(SAMPLE))
        result = run("import", str(path), "--observed-at", WHEN.isoformat())
        assert result.stdout.startswith("import ok: 200 read, 200 new, 0 changed"), fmt
        seen.append(content(app.db))
        wipe(app.db)
    versions, events = seen[0]
    assert len(versions) == 200 and len(events) > 200 * 20
    assert seen[1] == seen[0]
    assert seen[2] == seen[0]


def test_an_import_is_one_run_with_one_summary_line(tmp_path: Path, run: Any, app: App) -> None:
    """An import prints sync's kind of summary line and records one ``sync_runs`` row."""
    path = write_dir(tmp_path / "studies", records(SAMPLE[:12]))
    result = run("import", str(path))
    assert result.stdout.startswith(
        "import ok: 12 read, 12 new, 0 changed, 0 unchanged, 0 failed in "
    )
    [row] = runs(app.db)
    assert (row.status, row.selection, row.fetched, row.new, row.failed) == (
        RunStatus.OK, "import studies", 12, 12, 0,
    )  # fmt: skip
    with app.db.session() as session:
        assert set(session.scalars(select(StudyVersion.run_id))) == {row.id}
        assert set(session.scalars(select(StudyVersion.origin))) == {"archive"}


@pytest.mark.parametrize(
    ("fmt", "labels"),
    [
        ("zip", list(CORRUPT)),
        ("directory", list(CORRUPT)),
        ("ndjson", ["studies.ndjson line 6", "studies.ndjson line 7", "studies.ndjson line 8"]),
    ],
)
def test_corrupt_records_are_named_and_skipped(
    tmp_path: Path, run: Any, app: App, fmt: str, labels: list[str]
) -> None:
    """Invalid JSON, a non-object and a record without nctId are named and skipped (exit 1)."""
    path = WRITERS[fmt](tmp_path, records(SAMPLE[:5]) | CORRUPT)
    result = run("import", str(path), expect=1)
    assert result.stdout.startswith("import partial: 8 read, 5 new, 0 changed, 0 unchanged, 3 fail")
    reasons = [
        "not valid JSON",
        "a JSON list, not a study object",
        "no protocolSection.identificationModule object",
    ]
    for label, reason in zip(labels, reasons, strict=True):
        assert f"failed {label}: malformed study record: {reason}" in result.stderr
    assert stored_ids(app.db) == SAMPLE[:5]


def _cut_points(path: Path) -> dict[str, tuple[int, int]]:
    """Where to cut the zip, and how many members are whole before each cut."""
    with zipfile.ZipFile(path) as archive:
        starts = [info.header_offset for info in archive.infolist()]
    size = path.stat().st_size
    directory = size - 22 - 30 * 50  # inside the central directory (50-byte entries or more)
    return {
        "in the first header": (10, 0),
        "in the middle of member 8": ((starts[7] + starts[8]) // 2, 7),
        "between members 11 and 12": (starts[11], 11),
        "in the central directory": (directory, 30),
        "one byte short": (size - 1, 30),
    }


@pytest.mark.parametrize(
    "cut",
    [
        "in the first header",
        "in the middle of member 8",
        "between members 11 and 12",
        "in the central directory",
        "one byte short",
    ],
)
def test_truncated_zip_imports_every_whole_member(
    tmp_path: Path, run: Any, app: App, cut: str
) -> None:
    """A zip cut at any byte says it is truncated and imports every member before the cut."""
    whole = write_zip(tmp_path / "whole.zip", records(SAMPLE[:30]))
    at, expected = _cut_points(whole)[cut]
    cut_zip = tmp_path / "ctg-studies.json.zip"
    cut_zip.write_bytes(whole.read_bytes()[:at])
    result = run("import", str(cut_zip), expect=1)
    assert result.stdout.startswith(f"import failed: {expected} read, {expected} new")
    assert "error: ctg-studies.json.zip is truncated" in result.stderr
    assert stored_ids(app.db) == SAMPLE[:expected]
    assert runs(app.db)[0].status is RunStatus.FAILED


def test_damaged_zip_member_loses_only_the_rest_of_its_batch(
    tmp_path: Path, run: Any, app: App
) -> None:
    """A garbled member is named; only it and the rest of its batch are not imported."""
    run.env["CTMIRROR_SYNC__BATCH_SIZE"] = "10"
    path = write_zip(tmp_path / "ctg-studies.json.zip", records(SAMPLE[:30]))
    with zipfile.ZipFile(path) as archive:
        member = archive.infolist()[14]
    data = bytearray(path.read_bytes())
    start = member.header_offset + 30 + len(member.filename) + len(member.extra) + 100
    data[start : start + 8] = bytes(b ^ 0xFF for b in data[start : start + 8])
    path.write_bytes(bytes(data))
    result = run("import", str(path), expect=1)
    assert result.stdout.startswith("import failed: 24 read, 24 new")
    assert (
        f"error: ctg-studies.json.zip is damaged at member #15 ({SAMPLE[14]}.json) "
        in result.stderr
    )
    assert "; members #15-#20 skipped" in result.stderr
    assert stored_ids(app.db) == SAMPLE[:14] + SAMPLE[20:30]


def test_zip64_central_directory_is_split_at_its_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip whose central directory holds zip64 offsets is cut into spans at member starts."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)  # every offset past 1000 bytes is zip64
    path = write_zip(tmp_path / "zip64.zip", records(SAMPLE[:25]))
    monkeypatch.undo()
    archive = ZipArchive(path)
    spans = list(archive.spans(10))
    assert [(s.first, s.count) for s in spans] == [(0, 10), (10, 10), (20, 5)]
    read = [r for s in spans for batch in archive.batches(10, s) for r in batch]
    assert [(r.label, r.data) for r in read] == list(records(SAMPLE[:25]).items())


# -- what an import records -----------------------------------------------------------------------


def test_reimport_writes_no_new_version(tmp_path: Path, run: Any, app: App) -> None:
    """Importing the same archive again writes no version or event, only ``last_seen_at``."""
    path = write_zip(tmp_path / "ctg-studies.json.zip", records(SAMPLE))
    run("import", str(path), "--observed-at", WHEN.isoformat())
    before = (count(app.db, StudyVersion), event_total(app.db))
    result = run("import", str(path), "--observed-at", LATER.isoformat())
    assert result.stdout.startswith("import ok: 200 read, 0 new, 0 changed, 200 unchanged")
    assert (count(app.db, StudyVersion), event_total(app.db)) == before
    with app.db.session() as session:
        seen = set(session.execute(select(Study.first_seen_at, Study.last_seen_at)))
    assert seen == {(WHEN, LATER)}


def test_edited_archive_records_exactly_its_edits(tmp_path: Path, run: Any, app: App) -> None:
    """A second archive with two studies edited and one added writes exactly those events."""
    first = records(SAMPLE[:40])
    run("import", str(write_dir(tmp_path / "first", first)))
    status_id, enrol_id, added_id = SAMPLE[3], SAMPLE[7], SAMPLE[100]
    status_study = orjson.loads(first[f"{status_id}.json"])
    enrol_study = orjson.loads(first[f"{enrol_id}.json"])
    status = status_study["protocolSection"]["statusModule"]
    old_status, status["overallStatus"] = status["overallStatus"], "WITHDRAWN"
    enrolment = enrol_study["protocolSection"]["designModule"]["enrollmentInfo"]
    old_count, enrolment["count"] = enrolment["count"], enrolment["count"] + 7
    second = first | {
        f"{status_id}.json": orjson.dumps(status_study),
        f"{enrol_id}.json": orjson.dumps(enrol_study),
    }
    events_before = event_total(app.db)
    second_dir = write_dir(tmp_path / "second", second | records([added_id]))
    result = run("import", str(second_dir))
    assert result.stdout.startswith("import ok: 41 read, 1 new, 2 changed, 38 unchanged")
    assert changes(app.db, status_id, 2) == [
        ("status.overallStatus", "changed", old_status, "WITHDRAWN")
    ]
    assert changes(app.db, enrol_id, 2) == [
        ("design.enrollmentCount", "changed", old_count, old_count + 7)
    ]
    fresh = {(e.nct_id, e.version, e.initial) for e in all_events(app.db) if e.id > events_before}
    assert sorted(fresh) == sorted(
        [(status_id, 2, False), (enrol_id, 2, False), (added_id, 1, True)]
    )


def test_observed_at_dates_versions_and_events(tmp_path: Path, run: Any, app: App) -> None:
    """``--observed-at`` is the observation time of every version, event and first sighting."""
    path = write_ndjson(tmp_path / "studies.ndjson", records(SAMPLE[:5]))
    run("import", str(path), "--observed-at", "2026-06-01T07:00:35Z")
    with app.db.session() as session:
        assert set(session.scalars(select(StudyVersion.observed_at))) == {WHEN}
        assert {e.observed_at for e in all_events(app.db)} == {WHEN}
        assert set(session.scalars(select(Study.first_seen_at))) == {WHEN}


def test_observed_at_must_be_a_time(tmp_path: Path, run: Any) -> None:
    """An ``--observed-at`` that is not ISO 8601 is a usage error (exit 2)."""
    path = write_ndjson(tmp_path / "studies.ndjson", records(SAMPLE[:1]))
    result = run("import", str(path), "--observed-at", "last tuesday", expect=2)
    assert "'last tuesday' is not an ISO 8601 time" in result.stderr


def test_ndjson_from_standard_input(run: Any, app: App) -> None:
    """``ctmirror import -`` reads NDJSON from stdin and names bad lines by number."""
    lines = b"".join(real(n) + b"\n" for n in SAMPLE[:4]) + b"\n{not json\n"
    result = run("import", "-", input=lines, expect=1)
    assert result.stdout.startswith("import partial: 5 read, 4 new, 0 changed, 0 unchanged, 1 fail")
    assert "failed stdin line 6: malformed study record: not valid JSON" in result.stderr
    assert stored_ids(app.db) == SAMPLE[:4]


def test_missing_path_is_a_usage_error(tmp_path: Path, run: Any) -> None:
    """A path that does not exist is named, with exit code 2."""
    result = run("import", str(tmp_path / "nowhere.zip"), expect=2)
    assert f"cannot read {tmp_path / 'nowhere.zip'}" in result.stderr


# -- batches and workers --------------------------------------------------------------------------


def test_dead_workers_batch_is_taken_over_after_its_lease(tmp_path: Path, app: App) -> None:
    """A batch a dead worker claimed is imported by another once its lease runs out."""
    settings = settings_with(app.settings, 10)
    source = open_archive(str(write_zip(tmp_path / "a.zip", records(SAMPLE[:40]))))
    rnd = open_round(app.db, source, 10)
    dead = claim_batch(app.db, rnd, "dead-host:1:0", timedelta(seconds=0.5))
    assert dead is not None and dead.position == 0
    importer = Importer(app.db, settings, lease=timedelta(seconds=5))
    summary = importer.run(source)
    assert summary.line().startswith("import ok: 40 read, 40 new")
    assert stored_ids(app.db) == SAMPLE[:40]
    with app.db.session() as session:
        batches = session.scalars(select(ImportBatch).order_by(ImportBatch.position)).all()
    assert [(b.status, b.claimed_by) for b in batches] == [(JobStatus.DONE, importer.owner)] * 4
    assert [b.attempts for b in batches] == [2, 1, 1, 1]


def test_interrupted_import_resumes_where_it_stopped(tmp_path: Path, app: App) -> None:
    """Started again, an unfinished import writes only the batches not done yet."""
    settings = settings_with(app.settings, 10)
    path = write_dir(tmp_path / "studies", records(SAMPLE[:30]))
    source = open_archive(str(path))
    rnd = open_round(app.db, source, 10, WHEN)
    with app.db.write() as session:  # as if a first run had finished batch 0 and then died
        session.execute(
            update(ImportBatch)
            .where(ImportBatch.position == 0)
            .values(status=JobStatus.DONE, read=10, new=10)
        )
    summary = Importer(app.db, settings).run(source)
    assert summary.line().startswith("import ok: 20 read, 20 new")
    assert stored_ids(app.db) == SAMPLE[10:30]
    assert open_round(app.db, source, 10).round == rnd.round + 1  # that import is finished


def test_workers_default_to_the_cpus_only_for_archives_of_several_batches(tmp_path: Path) -> None:
    """Without --workers: one process for a few batches or an unsplittable archive, else one
    per CPU (at most AUTO_WORKERS_MAX)."""
    small = open_archive(str(write_dir(tmp_path / "small", records(SAMPLE[:40]))))
    large = open_archive(str(write_zip(tmp_path / "large.zip", records(SAMPLE[:60]))))
    cpus = min(os.cpu_count() or 1, AUTO_WORKERS_MAX)
    assert (auto_workers(small, 10), auto_workers(large, 10), auto_workers(small, 5)) == (
        1, cpus, cpus,
    )  # fmt: skip
    assert auto_workers(NdjsonArchive("stdin", stream=io.BytesIO(b"")), 1) == 1


@ON_POSTGRES
def test_two_importers_at_once_store_every_study_once(
    tmp_path: Path, app: App, db_url: str
) -> None:
    """Two workers with their own engines at once: each batch, study and event exactly once."""
    settings = settings_with(app.settings, 10)
    path = str(write_zip(tmp_path / "ctg-studies.json.zip", records(SAMPLE)))
    summaries: list[ImportSummary] = []
    start = threading.Barrier(2)

    def work() -> None:
        db = Database(db_url)
        start.wait()
        summaries.append(Importer(db, settings).run(open_archive(path)))
        db.dispose()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(s.tally.counts["read"] for s in summaries) == 200
    assert sum(s.tally.counts["new"] for s in summaries) == 200
    with app.db.session() as session:
        assert sorted(session.scalars(select(StudyVersion.version))) == [1] * 200
        keys = [(e.nct_id, e.version, e.field) for e in all_events(app.db)]
        attempts = set(session.scalars(select(ImportBatch.attempts)))
    assert len(keys) == len(set(keys))
    assert {k[0] for k in keys} == set(SAMPLE)
    assert attempts == {1}


def test_workers_option_imports_with_several_processes(tmp_path: Path, run: Any, app: App) -> None:
    """``--workers 2`` runs two processes that import every study once, as one run (on SQLite
    they take turns writing)."""
    run.env["CTMIRROR_SYNC__BATCH_SIZE"] = "20"
    path = write_zip(tmp_path / "ctg-studies.json.zip", records(SAMPLE))
    result = run("import", str(path), "--workers", "2")
    assert result.stdout.startswith("import ok: 200 read, 200 new, 0 changed")
    assert stored_ids(app.db) == sorted(SAMPLE)
    [row] = runs(app.db)
    with app.db.session() as session:
        batches = session.execute(select(ImportBatch.status, ImportBatch.run_id)).all()
    assert set(batches) == {(JobStatus.DONE, row.id)} and len(batches) == 10


def _batches_done(db: Database) -> tuple[int, int]:
    with db.session() as session:
        statuses = list(session.scalars(select(ImportBatch.status)))
    return sum(s is JobStatus.DONE for s in statuses), len(statuses)


def _worker_pids(parent: int) -> list[int]:
    """The multiprocessing workers ``parent`` started: its forks, or the children of its fork
    server (its resource tracker is no worker)."""
    kids = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in _children(parent)}
    servers = [p for p, cmdline in kids.items() if b"forkserver" in cmdline]
    forked = [p for p, cmdline in kids.items() if b"resource_tracker" not in cmdline]
    return [w for s in servers for w in _children(s)] or forked


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(child) for child in found.split()]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child nobody has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_stop_when_their_import_is_killed(
    tmp_path: Path, env: dict[str, str], app: App
) -> None:
    """kill -9 of ``ctmirror import --workers 2``: its workers take no further batch and exit;
    a second import finishes the rest, every study stored once."""
    everything = all_study_ids()
    path = write_zip(tmp_path / "ctg-studies.json.zip", records(everything))
    command = [sys.executable, "-m", "mirror", "import", str(path), "--workers", "2"]
    child_env = {**os.environ, **env, "CTMIRROR_SYNC__BATCH_SIZE": "5"}
    parent = subprocess.Popen(command, env=child_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while _batches_done(app.db)[0] == 0:
        assert parent.poll() is None and time.monotonic() < deadline, "no batch was written"
        time.sleep(0.05)
    workers = _worker_pids(parent.pid)
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in workers if _running(pid)] == []
    done, total = _batches_done(app.db)
    assert 0 < done < total  # they stopped at a batch boundary, long before the end
    subprocess.run(command, env=child_env, check=True, capture_output=True, timeout=300)
    assert stored_ids(app.db) == sorted(everything)
    with app.db.session() as session:
        assert set(session.scalars(select(StudyVersion.version))) == {1}
        assert count(app.db, StudyVersion) == len(everything)
