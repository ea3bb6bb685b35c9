"""Schema ownership: Alembic migrations build exactly the models, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from fake_ctgov import load_study
from sqlalchemy import inspect, text

from mirror.errors import StorageError
from mirror.feed import MAX_LIMIT, ChangeFilter, event_dict
from mirror.feed.query import find
from mirror.pipeline import Ingestor
from mirror.source import Observation
from mirror.store import Database, compress, open_database


def test_migrations_match_the_models(db_url: str) -> None:
    """A database migrated to head has no drift from the SQLAlchemy models."""
    db = Database(db_url)
    assert db.current_revision() == db.head_revision()
    assert db.schema_drift() == []
    db.dispose()


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    """Every migration can be undone and redone."""
    db = Database(db_url)
    db.downgrade("base")
    assert db.current_revision() is None
    assert "change_events" not in inspect(db.engine).get_table_names()
    db.upgrade()
    assert db.current_revision() == db.head_revision()
    db.dispose()


def test_fresh_sqlite_file_is_migrated_on_first_use(tmp_path: Path) -> None:
    """Opening a SQLite file that does not exist creates it at the head revision, in WAL mode."""
    path = tmp_path / "new.db"
    db = open_database(f"sqlite:///{path}")
    assert path.exists()
    assert db.current_revision() == db.head_revision()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()


def test_database_behind_the_code_is_refused(tmp_path: Path) -> None:
    """A non-empty database without our schema is not migrated silently; the error says why."""
    path = tmp_path / "other.db"
    db = Database(f"sqlite:///{path}")
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
    db.dispose()
    with pytest.raises(StorageError, match="run `ctmirror db upgrade`"):
        open_database(f"sqlite:///{path}")


def test_0002_fills_title_and_status_of_existing_studies(db_url: str) -> None:
    """Upgrading a 0001 mirror fills studies.title/overall_status from the newest versions."""
    db = Database(db_url)
    db.downgrade("0001")
    record = {"identification.briefTitle": "A Trial", "status.overallStatus": "RECRUITING"}
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO studies (id, nct_id, state, latest_version, first_seen_at,"
                " last_seen_at) VALUES (1, 'NCT00000001', 'active', 2, :t, :t)"
            ),
            {"t": datetime(2026, 1, 1, tzinfo=UTC)},
        )
        for version, status in ((1, "NOT_YET_RECRUITING"), (2, "RECRUITING")):
            conn.execute(
                text(
                    "INSERT INTO study_versions (study_id, version, observed_at, origin,"
                    " canonical) VALUES (1, :v, :t, 'api', :c)"
                ),
                {
                    "v": version,
                    "t": datetime(2026, 1, version, tzinfo=UTC),
                    "c": compress(orjson.dumps(record | {"status.overallStatus": status})),
                },
            )
    db.upgrade()
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT title, overall_status FROM studies")).one()
    assert tuple(row) == ("A Trial", "RECRUITING")
    db.dispose()


def test_0006_downgrade_writes_blocks_back_as_rows_with_their_ids(db_url: str) -> None:
    """Downgrading below event blocks stores each block's events as rows, ids and values kept;
    upgrading again reads those rows as the same events."""
    db = Database(db_url)
    ingestor = Ingestor(db, ignore=["derived.*"])
    when = datetime(2026, 6, 1, 7, tzinfo=UTC)
    for nct_id in ("NCT05756322", "NCT00205894"):
        study = load_study(nct_id)
        ingestor.ingest([Observation(nct_id, orjson.dumps(study), study, when)])
    every = ChangeFilter(limit=MAX_LIMIT)
    with db.session() as session:
        before = [event_dict(e) for e in find(session, every)]
    assert len(before) > 100 and {e["initial"] for e in before} == {True}
    db.downgrade("0005")
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, field FROM change_events ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(e["id"], e["field"]) for e in before]
    db.upgrade()
    with db.session() as session:
        assert [event_dict(e) for e in find(session, every)] == before
    db.dispose()
