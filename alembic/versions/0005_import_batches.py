"""Import batches: the ranges of an archive that ``ctmirror import`` workers claim.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:12:03.118402
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText, UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
STATUS = sa.Enum(
    "queued", "running", "done", "failed", name="jobstatus", native_enum=False, length=16
)


def upgrade() -> None:
    op.create_table(
        "import_batches",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("archive", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("first_record", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("byte_offset", sa.BigInteger(), nullable=True),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", BIG_ID, nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("read", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errors", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_import_batches_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_batches")),
        sa.UniqueConstraint(
            "archive", "round", "position", name=op.f("uq_import_batches_archive_round_position")
        ),
    )
    op.create_index(
        op.f("ix_import_batches_archive_round_status"),
        "import_batches",
        ["archive", "round", "status"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_import_batches_archive_round_status"), "import_batches")
    op.drop_table("import_batches")
