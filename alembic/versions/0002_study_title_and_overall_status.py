"""Denormalize each study's title and overall status onto studies (listing and filtering).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:39:24.257767
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
import zstandard
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title", sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column("overall_status", sa.String(length=40), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_studies_overall_status"), ["overall_status"], unique=False
        )
    _backfill()


def _backfill() -> None:
    """Fill the new columns from each study's newest canonical record."""
    conn = op.get_bind()
    newest = sa.text(
        "SELECT v.study_id, v.canonical FROM study_versions v"
        " JOIN (SELECT study_id, max(version) AS version FROM study_versions"
        "       WHERE canonical IS NOT NULL GROUP BY study_id) n"
        " ON n.study_id = v.study_id AND n.version = v.version"
    )
    update = sa.text("UPDATE studies SET title = :title, overall_status = :status WHERE id = :id")
    decompressor = zstandard.ZstdDecompressor()
    for study_id, blob in conn.execute(newest):
        record = orjson.loads(decompressor.decompress(blob))
        title = record.get("identification.briefTitle") or record.get(
            "identification.officialTitle"
        )
        conn.execute(
            update,
            {"id": study_id, "title": title, "status": record.get("status.overallStatus")},
        )


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_overall_status"))
        batch_op.drop_column("overall_status")
        batch_op.drop_column("title")
