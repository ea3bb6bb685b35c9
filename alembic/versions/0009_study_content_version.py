"""Stable version numbers: a study names the version holding its current content.

Version numbers are identifiers in storage order; a backfill adds the registry's past after
the present instead of renumbering. ``studies.content_version`` says which version holds the
study's newest content (what a page shows by default and what the next new version is
compared with). Existing mirrors numbered versions in time order, so it is their newest
version with a record.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 08:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("studies", sa.Column("content_version", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE studies SET content_version = (SELECT max(v.version) FROM study_versions v"
        " WHERE v.study_id = studies.id AND v.canonical IS NOT NULL)"
    )


def downgrade() -> None:
    # A plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): a batch copy of ``studies`` would have
    # to drop a table other tables' foreign keys point at.
    op.drop_column("studies", "content_version")
