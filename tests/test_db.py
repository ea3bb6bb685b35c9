"""Schema ownership: Alembic migrations build exactly the models, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from mirror.db import Database, alembic_config, open_database
from mirror.errors import StorageError


def test_migrations_match_the_models(db_url: str) -> None:
    """A database migrated to head has no drift from the SQLAlchemy models."""
    db = Database(db_url)
    assert db.current_revision() == db.head_revision()
    assert db.schema_drift() == []
    db.dispose()


def test_downgrade_and_upgrade_round_trip(db_url: str) -> None:
    """Every migration can be undone and redone."""
    db = Database(db_url)
    cfg = alembic_config(db.url.render_as_string(hide_password=False))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
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
