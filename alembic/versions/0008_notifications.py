"""Notifications for people: targets (Apprise URLs), their deliveries and digest items.

Tables only: existing webhook subscriptions and deliveries are untouched, and targets start
with the versions recorded after they are added.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 07:05:22.583617
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText, UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notification_targets",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("shown_url", sa.String(length=2000), nullable=False),
        sa.Column("service", sa.String(length=100), nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column(
            "digest",
            sa.Enum("off", "daily", "weekly", name="digestperiod", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("digest_minute", sa.Integer(), nullable=False),
        sa.Column("digest_weekday", sa.Integer(), nullable=True),
        sa.Column("next_digest_at", UTCDateTime(), nullable=True),
        sa.Column("digest_since", UTCDateTime(), nullable=True),
        sa.Column(
            "state",
            sa.Enum("active", "paused", name="subscriptionstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("nct_ids", JSON, nullable=False),
        sa.Column("watches", JSON, nullable=False),
        sa.Column("fields", JSON, nullable=False),
        sa.Column("classes", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("after_outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("consecutive_dead", sa.Integer(), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_targets")),
        sa.UniqueConstraint("name", name=op.f("uq_notification_targets_name")),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("target_id", ID, nullable=False),
        sa.Column("outbox_id", ID, nullable=True),
        sa.Column("nct_id", sa.String(length=11), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_markdown", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "failed",
                "delivered",
                "dead",
                name="deliverystatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_notification_deliveries_outbox_id_outbox")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["notification_targets.id"],
            name=op.f("fk_notification_deliveries_target_id_notification_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint("message_id", name=op.f("uq_notification_deliveries_message_id")),
        sa.UniqueConstraint(
            "target_id", "outbox_id", name=op.f("uq_notification_deliveries_target_id_outbox_id")
        ),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_deliveries_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "notification_digest_items",
        sa.Column("id", ID, nullable=False),
        sa.Column("target_id", ID, nullable=False),
        sa.Column("outbox_id", ID, nullable=False),
        sa.Column("nct_id", sa.String(length=11), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("delivery_id", ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.id"],
            name=op.f("fk_notification_digest_items_delivery_id_notification_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"], ["outbox.id"], name=op.f("fk_notification_digest_items_outbox_id_outbox")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["notification_targets.id"],
            name=op.f("fk_notification_digest_items_target_id_notification_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_digest_items")),
        sa.UniqueConstraint(
            "target_id", "outbox_id", name=op.f("uq_notification_digest_items_target_id_outbox_id")
        ),
    )
    with op.batch_alter_table("notification_digest_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notification_digest_items_target_id_delivery_id"),
            ["target_id", "delivery_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_digest_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_digest_items_target_id_delivery_id"))

    op.drop_table("notification_digest_items")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_deliveries_status_next_attempt_at"))

    op.drop_table("notification_deliveries")
    op.drop_table("notification_targets")
