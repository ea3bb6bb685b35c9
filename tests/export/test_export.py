"""`ctmirror export`: each format read back as analysts read it equals the feed (first sight
included) and the versions' canonical records; incremental exports add up to the full one."""

from __future__ import annotations

import csv
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from conftest import Cli
from fake_ctgov import FakeCtgov, load_study
from sqlalchemy import update

from mirror import feed
from mirror.store import ChangeEvent, Database, EventBlock, StudyVersion

IDS = ["NCT00000410", "NCT00007696", "NCT00033839"]
DAY1 = datetime(2026, 6, 1, 7, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


@pytest.fixture
def mirror(fake_api: FakeCtgov, run: Cli, db_url: str) -> Database:
    """Three real studies synced on day 1; one of them edited and synced again on day 2."""
    for nct_id in IDS:
        fake_api.put(load_study(nct_id))
    run("sync", *IDS)
    fake_api.edit(IDS[0], lambda s: s["protocolSection"]["statusModule"].update(
        overallStatus="TERMINATED", whyStopped="Funding ended"))  # fmt: skip
    run("sync", *IDS)
    db = Database(db_url)
    with db.write() as session:  # date the two syncs a day apart
        for model in (ChangeEvent, EventBlock, StudyVersion):
            first = model.version == 1
            session.execute(update(model).where(first).values(observed_at=DAY1))
            session.execute(update(model).where(~first).values(observed_at=DAY2))
    yield db
    db.dispose()


def feed_events(db: Database) -> list[dict[str, Any]]:
    return [feed.event_dict(row) for row in feed.stream_changes(db, feed.ChangeFilter())]


def records(db: Database) -> dict[tuple[str, int], dict[str, Any]]:
    """Every version's canonical record, read through the feed."""
    found = {}
    for nct_id in IDS:
        _, versions = feed.history(db, nct_id)
        for v in versions:
            found[(nct_id, v.version)] = feed.study_detail(db, nct_id, v.version)["record"]
    return found


def _event(row: dict[str, Any], *, json_text: bool) -> dict[str, Any]:
    """A changes row as the feed's event (JSON text decoded, instants formatted)."""
    event = {k: row[k] for k in ("id", "nct_id", "version", "field", "kind", "old", "new",
                                 "observed_at", "source_date", "initial")}  # fmt: skip
    if json_text:
        event["old"], event["new"] = (None if v is None else orjson.loads(v)
                                      for v in (event["old"], event["new"]))  # fmt: skip
    if isinstance(event["observed_at"], datetime):
        event["observed_at"] = event["observed_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    event["initial"] = event["initial"] in (True, 1, "True")
    event["id"], event["version"] = int(event["id"]), int(event["version"])
    return event


def read_back(out: Path, fmt: str, table: str) -> list[dict[str, Any]]:
    """A table of an export as a reader of that format gets it."""
    if fmt == "parquet":
        return pq.read_table(out / f"{table}.parquet").to_pylist()
    if fmt == "csv":
        with open(out / f"{table}.csv", newline="") as f:
            return [{k: (v if v != "" else None) for k, v in r.items()} for r in csv.DictReader(f)]
    if fmt == "ndjson":
        return [orjson.loads(line) for line in (out / f"{table}.ndjson").read_bytes().splitlines()]
    conn = sqlite3.connect(out)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
    conn.close()
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson", "sqlite"])
def test_each_format_reads_back_as_the_feed_and_the_records(
    mirror: Database, run: Cli, tmp_path: Path, fmt: str
) -> None:
    """changes = the feed's events (first sight included); versions carry the canonical records."""
    out = tmp_path / ("out.db" if fmt == "sqlite" else "out")
    result = run("export", str(out), "--format", fmt)
    events = feed_events(mirror)
    assert result.stdout.startswith(f"ok: exported 3 studies, 4 versions, {len(events):,} changes")
    changes = [_event(r, json_text=fmt != "ndjson") for r in read_back(out, fmt, "changes")]
    assert changes == events
    assert sum(e["initial"] for e in changes) == len(events) - 2
    versions = read_back(out, fmt, "versions")
    got = {(v["nct_id"], int(v["version"])): v["record"] for v in versions}
    if fmt != "ndjson":
        got = {k: orjson.loads(v) for k, v in got.items()}
    assert got == records(mirror)
    edited = next(v for v in versions if v["nct_id"] == IDS[0] and int(v["version"]) == 2)
    assert edited["overall_status"] == "TERMINATED"
    studies = {s["nct_id"]: s for s in read_back(out, fmt, "studies")}
    assert set(studies) == set(IDS) and studies[IDS[0]]["overall_status"] == "TERMINATED"
    assert int(studies[IDS[0]]["versions"]) == 2 and studies[IDS[0]]["state"] == "active"
    classes = read_back(out, fmt, "classes")
    assert {(c["nct_id"], int(c["version"])) for c in classes} <= {(IDS[0], 2)}


def test_the_sqlite_export_is_plain_sqlite_with_no_blobs(mirror: Database, run: Cli,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """The SQLite file opens with the standard library: tables, indexes, no blob anywhere."""
    out = tmp_path / "analysis.db"
    run("export", str(out), "--format", "sqlite")
    conn = sqlite3.connect(out)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"studies", "versions", "changes", "classes"}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_changes_nct_id_id", "ix_versions_nct_id_version"} <= indexes
    for table in tables:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        for column in columns:
            kinds = {r[0] for r in conn.execute(f'SELECT DISTINCT typeof("{column}") FROM {table}')}
            assert "blob" not in kinds, (table, column)
    status = conn.execute(
        "SELECT json_extract(record, '$.\"status.overallStatus\"') FROM versions "
        "WHERE nct_id = ? AND version = 2", (IDS[0],)
    ).fetchone()  # fmt: skip
    assert status == ("TERMINATED",)
    conn.close()


def test_duckdb_queries_the_parquet_export(mirror: Database, run: Cli, tmp_path: Path) -> None:
    """DuckDB reads the Parquet files: the counts and a changed value as the feed has them."""
    run("export", str(tmp_path / "pq"), "--format", "parquet")
    con = duckdb.connect()
    total, first_sight = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE initial) FROM '{tmp_path}/pq/changes.parquet'"
    ).fetchone()  # fmt: skip
    assert (total, first_sight) == (len(feed_events(mirror)), len(feed_events(mirror)) - 2)
    assert con.execute(
        f"SELECT old_text, new_text FROM '{tmp_path}/pq/changes.parquet' "
        "WHERE field = 'status.overallStatus' AND NOT initial"
    ).fetchall() == [("COMPLETED", "TERMINATED")]


@pytest.mark.parametrize("fmt", ["parquet", "sqlite"])
def test_two_daily_incremental_exports_add_up_to_the_full_one(
    mirror: Database, run: Cli, tmp_path: Path, fmt: str
) -> None:
    """--since/--until of day 1 and of day 2, concatenated, are the full export's rows."""
    ext = ".db" if fmt == "sqlite" else ""
    run("export", str(tmp_path / f"full{ext}"), "--format", fmt)
    days = [("2026-06-01", "2026-06-02"), ("2026-06-02", "2026-06-03")]
    for n, (since, until) in enumerate(days):
        out = str(tmp_path / f"day{n}{ext}")
        run("export", out, "--format", fmt, "--since", since, "--until", until)
    for table in ("changes", "versions", "classes"):
        full = read_back(tmp_path / f"full{ext}", fmt, table)
        parts = [r for n in range(2) for r in read_back(tmp_path / f"day{n}{ext}", fmt, table)]
        assert parts == full, table
    day2 = read_back(tmp_path / f"day1{ext}", fmt, "changes")
    assert {r["field"] for r in day2} == {"status.overallStatus", "status.whyStopped"}
    assert {s["nct_id"] for s in read_back(tmp_path / f"day1{ext}", fmt, "studies")} == {IDS[0]}


def test_filters_narrow_the_export(mirror: Database, run: Cli, tmp_path: Path) -> None:
    """--nct, --field and --no-initial select the feed's events, as `changes` does."""
    out = tmp_path / "one"
    run("export", str(out), "--format", "ndjson", "--nct", IDS[0], "--field", "status.*",
        "--no-initial")  # fmt: skip
    changes = read_back(out, "ndjson", "changes")
    assert [(c["field"], c["new"]) for c in changes] == [
        ("status.overallStatus", "TERMINATED"), ("status.whyStopped", "Funding ended"),
    ]  # fmt: skip
    assert [s["nct_id"] for s in read_back(out, "ndjson", "studies")] == [IDS[0]]


def test_an_unwritable_or_taken_out_is_refused_before_any_work(
    mirror: Database, run: Cli, tmp_path: Path
) -> None:
    """A missing parent, a file where a directory goes, an earlier export: exit 2, nothing
    written; --force replaces the earlier export."""
    missing = run("export", str(tmp_path / "no" / "such" / "dir"), expect=2)
    assert "does not exist" in missing.stderr
    (tmp_path / "file").write_text("x")
    assert "is a file" in run("export", str(tmp_path / "file"), "--format", "csv",
                              expect=2).stderr  # fmt: skip
    unknown = run("export", str(tmp_path / "w"), "--watch", "nope", expect=1)
    assert "no watch named 'nope'" in unknown.stderr
    assert "use * and ? only" in run("export", str(tmp_path / "w"), "--field", "a[b]",
                                     expect=2).stderr  # fmt: skip
    assert not (tmp_path / "w").exists()
    run("export", str(tmp_path / "csv"), "--format", "csv")
    again = run("export", str(tmp_path / "csv"), "--format", "csv", expect=2)
    assert "exists (use --force" in again.stderr
    run("export", str(tmp_path / "csv"), "--format", "csv", "--force")
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "changes.csv", "classes.csv", "studies.csv", "versions.csv",
    ]  # fmt: skip


def test_a_write_no_check_foresees_fails_clearly(
    mirror: Database, run: Cli, tmp_path: Path
) -> None:
    """A path the file system refuses is a usage error; what only the write itself finds (here a
    directory where --force is to replace a file) fails with exit 1, naming the export and the
    reason; never a traceback."""
    refused = run("export", str(tmp_path / ("x" * 300)), "--format", "csv", expect=2)
    assert "File name too long" in refused.stderr
    (tmp_path / "out" / "changes.csv").mkdir(parents=True)
    failed = run("export", str(tmp_path / "out"), "--format", "csv", "--force", expect=1)
    assert f"cannot write the export to {tmp_path / 'out'}: Is a directory" in failed.stderr
    assert "Traceback" not in refused.stderr + failed.stderr


def test_parallel_readers_write_the_same_changes_in_order(mirror: Database, run: Cli,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """Worker processes reading slices of the feed (cutting through first-sight blocks) give
    the feed's events in id order; `export --workers 2` writes the same file as one process."""
    import pyarrow as pa

    from mirror.export.parallel import arrow_batches
    from mirror.export.tables import ExportFilter

    batches = list(arrow_batches(mirror, ExportFilter(), workers=2, slice_ids=37))
    rows = pa.Table.from_batches(batches).to_pylist()
    assert [_event(r, json_text=True) for r in rows] == feed_events(mirror)
    run("export", str(tmp_path / "one"), "--table", "changes", "--workers", "1")
    run("export", str(tmp_path / "two"), "--table", "changes", "--workers", "2")
    one, two = (pq.read_table(tmp_path / d / "changes.parquet") for d in ("one", "two"))
    assert one.equals(two) and one.num_rows == len(feed_events(mirror))
