"""Drift summaries between consecutive scans, and API tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scanner.store.schema import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_summaries",
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_drift_summaries_scan_id_scans"),
            primary_key=True),
        sa.Column("previous_scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="SET NULL", name="fk_drift_summaries_previous_scan_id_scans"),
            nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_used", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("drift_summaries")
