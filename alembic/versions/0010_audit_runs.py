"""Completeness audits: one row per audit of a watch (``ctmirror audit``, the daemon after a full
run), so that ``/healthz`` and the CLI can tell what the last one found.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText, UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_runs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("watch_id", BigId, nullable=True),
        sa.Column("watch_name", sa.String(length=100), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("registry_total", sa.Integer(), nullable=True),
        sa.Column("mirror_total", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("extra", sa.Integer(), nullable=False),
        sa.Column("stale", sa.Integer(), nullable=False),
        sa.Column("ids_compared", sa.Boolean(), nullable=False),
        sa.Column(
            "detail",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["watch_id"],
            ["watches.id"],
            name=op.f("fk_audit_runs_watch_id_watches"),
            ondelete="SET NULL",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_runs")),
    )
    op.create_index(op.f("ix_audit_runs_watch_id_id"), "audit_runs", ["watch_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_runs_watch_id_id"), table_name="audit_runs")
    op.drop_table("audit_runs")
