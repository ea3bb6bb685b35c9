"""Change classes of study versions, the registry's version numbers, class filters on webhooks.

Versions stored before this revision have no classes; ``ctmirror classes --recompute``
derives them from the stored canonical records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:18:40.534186
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from mirror.store import JsonText

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = JsonText().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "version_classes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("study_id", BIG_ID, nullable=False),
        sa.Column("nct_id", sa.String(length=11), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_version_classes_study_id_studies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_classes")),
        sa.UniqueConstraint(
            "study_id",
            "version",
            "position",
            name=op.f("uq_version_classes_study_id_version_position"),
        ),
    )
    op.create_index(
        op.f("ix_version_classes_name_study_id_version"),
        "version_classes",
        ["name", "study_id", "version"],
    )
    # Added columns and indexes only: no table is rebuilt, however big.
    op.add_column("study_versions", sa.Column("registry_version", sa.Integer(), nullable=True))
    op.create_index(
        op.f("ix_study_versions_study_id_registry_version"),
        "study_versions",
        ["study_id", "registry_version"],
        unique=True,
    )
    op.add_column(
        "webhook_subscriptions",
        sa.Column("classes", JSON, nullable=False, server_default=sa.text("'[]'")),
    )
    with op.batch_alter_table("webhook_subscriptions") as batch_op:
        batch_op.alter_column("classes", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions") as batch_op:
        batch_op.drop_column("classes")
    op.drop_index(op.f("ix_study_versions_study_id_registry_version"), "study_versions")
    with op.batch_alter_table("study_versions") as batch_op:
        batch_op.drop_column("registry_version")
    op.drop_index(op.f("ix_version_classes_name_study_id_version"), "version_classes")
    op.drop_table("version_classes")
