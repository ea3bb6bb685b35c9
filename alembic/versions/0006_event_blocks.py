"""Event blocks: a study's first-sight events held as one row instead of one row per field.

Only new first versions are stored as blocks; the first-sight events written before this
revision stay rows of ``change_events`` (readers merge both, with the same ids). The downgrade
writes every block back as rows, with its reserved ids, so nothing is lost either way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 16:02:11.204118
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
import zstandard
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "event_blocks",
        sa.Column("first_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("study_id", BIG_ID, nullable=False),
        sa.Column("nct_id", sa.String(length=11), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("source_date", sa.String(length=10), nullable=True),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_event_blocks_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("first_id", name=op.f("pk_event_blocks")),
        sa.UniqueConstraint("study_id", "version", name=op.f("uq_event_blocks_study_id_version")),
    )
    op.create_index(op.f("ix_event_blocks_last_id"), "event_blocks", ["last_id"], unique=True)
    op.create_index(op.f("ix_event_blocks_observed_at"), "event_blocks", ["observed_at"])


def downgrade() -> None:
    _blocks_to_rows()
    op.drop_index(op.f("ix_event_blocks_observed_at"), "event_blocks")
    op.drop_index(op.f("ix_event_blocks_last_id"), "event_blocks")
    op.drop_table("event_blocks")


def _blocks_to_rows() -> None:
    """Every block's events as ``change_events`` rows, with the ids the block reserved."""
    conn = op.get_bind()
    blocks = conn.execute(
        sa.text(
            "SELECT b.first_id, b.study_id, b.nct_id, b.version, b.observed_at, b.source_date,"
            " b.fields, v.canonical FROM event_blocks b JOIN study_versions v"
            " ON v.study_id = b.study_id AND v.version = b.version ORDER BY b.first_id"
        )
    )
    insert = sa.text(
        "INSERT INTO change_events (id, study_id, nct_id, version, field, kind, old, new,"
        " observed_at, source_date, initial) VALUES (:id, :study_id, :nct_id, :version, :field,"
        " 'added', NULL, :new, :observed_at, :source_date, :initial)"
    )
    if conn.dialect.name == "postgresql":
        insert = insert.bindparams(sa.bindparam("new", type_=postgresql.JSONB))
    unzstd = zstandard.ZstdDecompressor()
    postgres = conn.dialect.name == "postgresql"
    for first_id, study_id, nct_id, version, observed_at, source_date, fields, canonical in blocks:
        record = orjson.loads(unzstd.decompress(canonical))
        rows = [
            {
                "id": first_id + n, "study_id": study_id, "nct_id": nct_id, "version": version,
                "field": field, "observed_at": observed_at, "source_date": source_date,
                "initial": True,
                "new": record.get(field) if postgres else orjson.dumps(record.get(field)).decode(),
            }
            for n, field in enumerate(orjson.loads(fields))
        ]  # fmt: skip
        if rows:
            conn.execute(insert, rows)
