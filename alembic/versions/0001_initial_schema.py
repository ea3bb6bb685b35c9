"""Initial schema: studies, study versions, change events, watches, sync runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:20:05.142415
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("nct_id", sa.String(length=11), nullable=False),
        sa.Column(
            "state",
            sa.Enum("active", "gone", "moved", name="studystate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("alias_of", sa.String(length=11), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column(
            "part_hashes",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("source_date", sa.String(length=10), nullable=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("nct_id", name=op.f("uq_studies_nct_id")),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "ok",
                "failed",
                "interrupted",
                name="runstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("gone", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    op.create_table(
        "watches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("ids", "query", "all", name="watchkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "nct_ids",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "query",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("schedule", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_full_run_at", UTCDateTime(), nullable=True),
        sa.Column("since_date", sa.String(length=10), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watches")),
        sa.UniqueConstraint("name", name=op.f("uq_watches_name")),
    )
    op.create_table(
        "change_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("nct_id", sa.String(length=11), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=512), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("added", "changed", "removed", name="changekind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "old",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "new",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("source_date", sa.String(length=10), nullable=True),
        sa.Column("initial", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_change_events_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_events")),
        sa.UniqueConstraint(
            "study_id", "version", "field", name=op.f("uq_change_events_study_id_version_field")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("change_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_change_events_field_id"), ["field", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_change_events_nct_id_id"), ["nct_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_change_events_observed_at"), ["observed_at"], unique=False
        )

    op.create_table(
        "study_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("source_date", sa.String(length=10), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column(
            "part_hashes",
            JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "raw", sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"), nullable=True
        ),
        sa.Column(
            "canonical",
            sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql"),
            nullable=True,
        ),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_study_versions_run_id_sync_runs")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_study_versions_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_versions")),
        sa.UniqueConstraint("study_id", "version", name=op.f("uq_study_versions_study_id_version")),
    )
    op.create_table(
        "watch_studies",
        sa.Column("watch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_watch_studies_study_id_studies")
        ),
        sa.ForeignKeyConstraint(
            ["watch_id"],
            ["watches.id"],
            name=op.f("fk_watch_studies_watch_id_watches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("watch_id", "study_id", name=op.f("pk_watch_studies")),
    )


def downgrade() -> None:
    op.drop_table("watch_studies")
    op.drop_table("study_versions")
    with op.batch_alter_table("change_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_events_observed_at"))
        batch_op.drop_index(batch_op.f("ix_change_events_nct_id_id"))
        batch_op.drop_index(batch_op.f("ix_change_events_field_id"))

    op.drop_table("change_events")
    op.drop_table("watches")
    op.drop_table("sync_runs")
    op.drop_table("studies")
