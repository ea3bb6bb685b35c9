"""Sync job parts: a full run of a big watch is queued as parts that daemons share.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:10:42.512904
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Added columns and an index only: existing jobs are runs in one piece.
    op.add_column("sync_jobs", sa.Column("part", JSON, nullable=True))
    op.add_column("sync_jobs", sa.Column("group_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "sync_jobs", sa.Column("parts", sa.Integer(), nullable=False, server_default=sa.text("1"))
    )
    with op.batch_alter_table("sync_jobs") as batch_op:
        batch_op.alter_column("parts", server_default=None)
    op.create_index(op.f("ix_sync_jobs_group_id"), "sync_jobs", ["group_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sync_jobs_group_id"), "sync_jobs")
    with op.batch_alter_table("sync_jobs") as batch_op:
        batch_op.drop_column("parts")
        batch_op.drop_column("group_id")
        batch_op.drop_column("part")
