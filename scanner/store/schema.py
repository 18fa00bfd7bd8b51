"""The store's tables, as SQLAlchemy 2 declarative models.

The canonical record of a scan is its ``ScanResult`` JSON (``scans.document``), so any report can
be re-rendered from the store; the other tables copy out what is queried (devices across scans,
findings by severity, clause or check, verdicts). The Alembic migrations in ``migrations/`` build
exactly these tables (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Always timezone-aware UTC on the Python side (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s",
          "uq": "uq_%(table_name)s_%(column_0_N_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}

# PostgreSQL's ``json`` (not ``jsonb``) keeps the text as given, so even a NUL escape from a
# hostile banner round-trips; both dialects can still query it with JSON operators.
Document = JSON


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ScheduleRow(Base):
    """A recurring scan; the scheduler fills ``last_run`` and ``next_run``."""

    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    cron: Mapped[str] = mapped_column(String(200))
    targets: Mapped[list[str]] = mapped_column(Document)
    excludes: Mapped[list[str]] = mapped_column(Document, server_default="[]")
    ports: Mapped[str | None] = mapped_column(Text)  # as --ports: "22,80,U:161"
    profile: Mapped[str] = mapped_column(String(500))
    formats: Mapped[list[str]] = mapped_column(Document)
    segment: Mapped[str | None] = mapped_column(String(200))
    # [{"url": …, "secret_env": …}]: the *name* of the signing secret's variable, never the secret
    webhooks: Mapped[list[dict[str, str]]] = mapped_column(Document)
    enabled: Mapped[bool] = mapped_column(Boolean)
    last_run: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_run: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ScanRow(Base):
    __tablename__ = "scans"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # ScanMeta.scan_id
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("schedules.id", ondelete="SET NULL"), index=True)
    profile: Mapped[str] = mapped_column(String(500))
    tool_version: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    complete: Mapped[bool] = mapped_column(Boolean)
    stop_reason: Mapped[str | None] = mapped_column(String(50))
    device_count: Mapped[int] = mapped_column(Integer)
    finding_count: Mapped[int] = mapped_column(Integer)
    error_count: Mapped[int] = mapped_column(Integer)
    saved_at: Mapped[datetime] = mapped_column(UtcDateTime)
    document: Mapped[dict[str, Any]] = mapped_column(Document)


class DeviceRow(Base):
    """One physical device as far as identity rules can tell, across all scans."""

    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)  # "mac:…", "serial:…", …
    mac: Mapped[str | None] = mapped_column(String(32), index=True)
    serial: Mapped[str | None] = mapped_column(String(200), index=True)
    udn: Mapped[str | None] = mapped_column(String(200), index=True)
    address: Mapped[str] = mapped_column(String(100), index=True)  # where it was seen last
    vendor: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime)
    last_scan_id: Mapped[str] = mapped_column(String(64))


class ScanDeviceRow(Base):
    """A device as seen in one scan: where it was (a multi-homed device: several rows)."""

    __tablename__ = "scan_devices"
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"),
                                         primary_key=True)
    address: Mapped[str] = mapped_column(String(100), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"),
                                           index=True)


class FindingRow(Base):
    __tablename__ = "findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    finding_id: Mapped[str] = mapped_column(String(64), index=True)  # stable across scans
    check_id: Mapped[str] = mapped_column(String(200), index=True)
    severity: Mapped[str] = mapped_column(String(20), index=True)
    address: Mapped[str] = mapped_column(String(100))
    port: Mapped[int | None] = mapped_column(Integer)
    transport: Mapped[str | None] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(Text)
    found_at: Mapped[datetime] = mapped_column(UtcDateTime)


class FindingClauseRow(Base):
    """Which clauses a finding counts against, for "findings by clause" queries."""

    __tablename__ = "finding_clauses"
    __table_args__ = (Index("ix_finding_clauses_framework_clause", "framework", "clause"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    finding_id: Mapped[str] = mapped_column(String(64))
    framework: Mapped[str] = mapped_column(String(100))
    clause: Mapped[str] = mapped_column(String(50))


class ClauseVerdictRow(Base):
    __tablename__ = "clause_verdicts"
    __table_args__ = (Index("ix_clause_verdicts_framework_clause", "framework", "clause"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    framework: Mapped[str] = mapped_column(String(100))
    clause: Mapped[str] = mapped_column(String(50))
    verdict: Mapped[str] = mapped_column(String(20))


class DeviceVerdictRow(Base):
    __tablename__ = "device_verdicts"
    __table_args__ = (UniqueConstraint("scan_id", "address", "framework"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"),
                                           index=True)
    address: Mapped[str] = mapped_column(String(100))
    framework: Mapped[str] = mapped_column(String(100))
    verdict: Mapped[str] = mapped_column(String(20))


class DriftRow(Base):
    """What changed between a scan and the one before it (written by the drift task)."""

    __tablename__ = "drift_summaries"
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"),
                                         primary_key=True)
    previous_scan_id: Mapped[str | None] = mapped_column(
        ForeignKey("scans.id", ondelete="SET NULL"))
    summary: Mapped[dict[str, Any]] = mapped_column(Document)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiTokenRow(Base):
    """An API bearer token; only its SHA-256 is kept (the secret is random, 256 bits)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # viewer | operator
    token_hash: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used: Mapped[datetime | None] = mapped_column(UtcDateTime)
