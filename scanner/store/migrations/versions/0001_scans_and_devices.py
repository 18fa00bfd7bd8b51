"""Scans, devices across scans, findings, verdicts and schedules.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from scanner.store.schema import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(500), nullable=False),
        sa.Column("formats", sa.JSON(), nullable=False),
        sa.Column("segment", sa.String(200), nullable=True),
        sa.Column("webhooks", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_run", UtcDateTime(), nullable=True),
        sa.Column("next_run", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
    )
    op.create_table(
        "scans",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("schedule_id", sa.Integer(), sa.ForeignKey(
            "schedules.id", ondelete="SET NULL", name="fk_scans_schedule_id_schedules"),
            nullable=True),
        sa.Column("profile", sa.String(500), nullable=False),
        sa.Column("tool_version", sa.String(100), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("stop_reason", sa.String(50), nullable=True),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("finding_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("saved_at", UtcDateTime(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
    )
    op.create_index("ix_scans_schedule_id", "scans", ["schedule_id"])
    op.create_index("ix_scans_started_at", "scans", ["started_at"])
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("mac", sa.String(32), nullable=True),
        sa.Column("serial", sa.String(200), nullable=True),
        sa.Column("udn", sa.String(200), nullable=True),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("vendor", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
        sa.Column("last_scan_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("key", name="uq_devices_key"),
    )
    for column in ("mac", "serial", "udn", "address"):
        op.create_index(f"ix_devices_{column}", "devices", [column])
    op.create_table(
        "scan_devices",
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_scan_devices_scan_id_scans"),
            primary_key=True),
        sa.Column("address", sa.String(100), primary_key=True),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey(
            "devices.id", ondelete="CASCADE", name="fk_scan_devices_device_id_devices"),
            nullable=False),
    )
    op.create_index("ix_scan_devices_device_id", "scan_devices", ["device_id"])
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_findings_scan_id_scans"), nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey(
            "devices.id", ondelete="CASCADE", name="fk_findings_device_id_devices"),
            nullable=True),
        sa.Column("finding_id", sa.String(64), nullable=False),
        sa.Column("check_id", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("transport", sa.String(10), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("found_at", UtcDateTime(), nullable=False),
    )
    for column in ("scan_id", "device_id", "finding_id", "check_id", "severity"):
        op.create_index(f"ix_findings_{column}", "findings", [column])
    op.create_table(
        "finding_clauses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_finding_clauses_scan_id_scans"),
            nullable=False),
        sa.Column("finding_id", sa.String(64), nullable=False),
        sa.Column("framework", sa.String(100), nullable=False),
        sa.Column("clause", sa.String(50), nullable=False),
    )
    op.create_index("ix_finding_clauses_scan_id", "finding_clauses", ["scan_id"])
    op.create_index("ix_finding_clauses_framework_clause", "finding_clauses",
                    ["framework", "clause"])
    op.create_table(
        "clause_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_clause_verdicts_scan_id_scans"),
            nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey(
            "devices.id", ondelete="CASCADE", name="fk_clause_verdicts_device_id_devices"),
            nullable=True),
        sa.Column("framework", sa.String(100), nullable=False),
        sa.Column("clause", sa.String(50), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
    )
    op.create_index("ix_clause_verdicts_scan_id", "clause_verdicts", ["scan_id"])
    op.create_index("ix_clause_verdicts_device_id", "clause_verdicts", ["device_id"])
    op.create_index("ix_clause_verdicts_framework_clause", "clause_verdicts",
                    ["framework", "clause"])
    op.create_table(
        "device_verdicts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.String(64), sa.ForeignKey(
            "scans.id", ondelete="CASCADE", name="fk_device_verdicts_scan_id_scans"),
            nullable=False),
        sa.Column("device_id", sa.Integer(), sa.ForeignKey(
            "devices.id", ondelete="CASCADE", name="fk_device_verdicts_device_id_devices"),
            nullable=False),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("framework", sa.String(100), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.UniqueConstraint("scan_id", "address", "framework",
                            name="uq_device_verdicts_scan_id_address_framework"),
    )
    op.create_index("ix_device_verdicts_scan_id", "device_verdicts", ["scan_id"])
    op.create_index("ix_device_verdicts_device_id", "device_verdicts", ["device_id"])


def downgrade() -> None:
    for table in ("device_verdicts", "clause_verdicts", "finding_clauses", "findings",
                  "scan_devices", "devices", "scans", "schedules"):
        op.drop_table(table)
