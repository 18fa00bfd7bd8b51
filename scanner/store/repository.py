"""``ScanStore``: the repository the CLI, the scheduler, the API and the agents share.

Synchronous on purpose (one small dependency set, the same code on SQLite and PostgreSQL); async
callers use ``await asyncio.to_thread(store.save_scan, result)``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, insert, or_, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scanner.models import ScanResult, Severity, utc_now
from scanner.store import migrate
from scanner.store.identity import Identity, column_text, identify
from scanner.store.migrate import StoreError
from scanner.store.schema import (
    ApiTokenRow,
    ClauseVerdictRow,
    DeviceRow,
    DeviceVerdictRow,
    DriftRow,
    FindingClauseRow,
    FindingRow,
    ScanDeviceRow,
    ScanRow,
    ScheduleRow,
)

PRIMARY_FRAMEWORK = "iso-iec-27402-2023"
ROLES = ("viewer", "operator")
SQLITE_BUSY_TIMEOUT_S = 30.0
# A token's last use is recorded at this granularity: most API requests then only read.
TOKEN_USE_GRANULARITY = timedelta(seconds=60)
_READ_ONLY = "iotbaseline_read_only"  # execution option of the read-only sessions' engine
_CHUNK = 500  # identifiers per IN (…) query: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class ScanSummary:
    id: str
    started_at: datetime
    finished_at: datetime | None
    complete: bool
    profile: str
    schedule_id: int | None
    devices: int
    findings: int
    errors: int


@dataclass(frozen=True)
class DeviceSummary:
    key: str
    address: str
    mac: str | None
    serial: str | None
    udn: str | None
    vendor: str | None
    model: str | None
    first_seen: datetime
    last_seen: datetime
    last_scan_id: str
    verdict: str | None  # the primary framework's device verdict in the latest scan


@dataclass(frozen=True)
class StoredFinding:
    finding_id: str
    check_id: str
    severity: str
    port: int | None
    transport: str | None
    title: str


@dataclass(frozen=True)
class HistoryEntry:
    scan_id: str
    started_at: datetime
    address: str
    verdict: str | None
    findings: list[StoredFinding]


@dataclass(frozen=True)
class DeviceHistory:
    device: DeviceSummary
    entries: list[HistoryEntry]  # oldest first


@dataclass(frozen=True)
class ScheduleWebhook:
    """Where a schedule's drift is posted, and the *name* of the environment variable that holds
    its signing secret (the secret itself is never stored). Plain data: ``scanner.webhooks``
    validates it when it is added and again when it is used."""

    url: str
    secret_env: str


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    cron: str
    targets: list[str]
    profile: str
    excludes: list[str] = field(default_factory=list)
    ports: str | None = None  # as --ports; None: the profile's
    formats: list[str] = field(default_factory=lambda: ["json", "html"])
    segment: str | None = None
    webhooks: list[ScheduleWebhook] = field(default_factory=list)
    enabled: bool = True
    last_run: datetime | None = None
    next_run: datetime | None = None


@dataclass(frozen=True)
class Drift:
    scan_id: str
    previous_scan_id: str | None
    summary: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used: datetime | None


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/iotbaseline/store.sqlite`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "iotbaseline" / "store.sqlite"


def store_url(text: str) -> URL:
    """A SQLAlchemy URL, a bare file path (SQLite) or ``default``; PostgreSQL uses psycopg 3."""
    if text == "default":
        text = str(default_store_path())
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreError(f"not a database URL: {text!r}") from None
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise StoreError(f"unsupported store {url.get_backend_name()!r} (use sqlite or "
                         "postgresql)")
    return url


def redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url: URL) -> Engine:
    """WAL (readers never block the writer), a busy timeout, and write transactions that take
    the lock up front (``BEGIN IMMEDIATE``) so concurrent writers queue instead of failing;
    read-only sessions begin deferred, so a reader never waits behind a long write."""
    if url.database and url.database != ":memory:":
        path = Path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Scans hold evidence about devices: the database is the owner's alone.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600))
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class ScanStore:
    """Scans and what they found, across time. Open with a URL; the schema is migrated on open.

    Errors reaching the database (unreachable server, bad credentials, a schema from a newer
    iotbaseline) are raised as one-line ``StoreError``; unknown ids as ``LookupError``.
    """

    def __init__(self, url: str) -> None:
        self.url = store_url(url)
        try:
            self.engine = (_sqlite_engine(self.url) if self.url.get_backend_name() == "sqlite"
                           else create_engine(self.url, pool_pre_ping=True))
            self.revision = migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"store {redacted(self.url)}: "
                             f"{_first_line(getattr(exc, 'orig', None) or exc)}") from None
        except OSError as exc:
            raise StoreError(f"store {redacted(self.url)}: {exc.strerror or exc}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.engine.execution_options(**{_READ_ONLY: True}),
                                           expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ScanStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A write transaction (on SQLite it holds the write lock from its start)."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """A transaction that only reads: it never waits for the write lock."""
        with self._read_sessions.begin() as session:
            yield session

    # -- scans ---------------------------------------------------------------------------------

    def save_scan(self, result: ScanResult, schedule_id: int | None = None) -> str:
        """Save a scan; idempotent by scan id. The same report again changes nothing; a new
        version of it (a re-assessed or completed report) replaces the old rows."""
        document = result.model_dump(mode="json")
        scan_id = result.meta.scan_id
        for attempt in range(2):  # a concurrent writer may insert the same scan id first
            try:
                with self._session() as session:
                    existing = session.get(ScanRow, scan_id)
                    if existing is not None and existing.document == document \
                            and existing.schedule_id == schedule_id:
                        return scan_id
                    if existing is not None:
                        self._delete_scan_rows(session, scan_id)
                        session.delete(existing)
                        session.flush()
                    self._insert_scan(session, result, document, schedule_id)
                return scan_id
            except IntegrityError:
                if attempt:
                    raise
        return scan_id

    @staticmethod
    def _delete_scan_rows(session: Session, scan_id: str) -> None:
        for table in (FindingClauseRow, FindingRow, ClauseVerdictRow, DeviceVerdictRow,
                      ScanDeviceRow):
            session.execute(delete(table).where(table.scan_id == scan_id))

    def _insert_scan(self, session: Session, result: ScanResult, document: dict[str, Any],
                     schedule_id: int | None) -> None:
        meta = result.meta
        session.add(ScanRow(
            id=meta.scan_id, schedule_id=schedule_id,
            profile=column_text(meta.profile, 500) or "",
            tool_version=column_text(meta.tool_version, 100) or "", started_at=meta.started_at,
            finished_at=meta.finished_at, complete=meta.complete, stop_reason=meta.stop_reason,
            device_count=len(result.devices), finding_count=len(result.findings),
            error_count=len(result.errors), saved_at=utc_now(), document=document))
        session.flush()
        device_ids = self._resolve_devices(session, result)
        if device_ids:
            session.execute(insert(ScanDeviceRow), [
                {"scan_id": meta.scan_id, "device_id": device_id, "address": address}
                for address, device_id in device_ids.items()])
        if result.findings:
            session.execute(insert(FindingRow), [
                {"scan_id": meta.scan_id, "device_id": device_ids.get(f.device),
                 "finding_id": f.id, "check_id": f.check_id, "severity": f.severity.value,
                 "address": f.device, "port": f.port, "transport": f.transport,
                 "title": column_text(f.title, 2000) or "", "found_at": f.found_at}
                for f in result.findings])
        clause_rows = [{"scan_id": meta.scan_id, "finding_id": f.id, "framework": framework,
                        "clause": clause}
                       for f in result.findings for framework, clauses in f.clauses.items()
                       for clause in clauses]
        if clause_rows:
            session.execute(insert(FindingClauseRow), clause_rows)
        if result.verdicts:
            session.execute(insert(ClauseVerdictRow), [
                {"scan_id": meta.scan_id, "device_id": device_ids.get(v.device),
                 "framework": v.framework, "clause": v.clause, "verdict": v.verdict.value}
                for v in result.verdicts])
        verdict_rows = [{"scan_id": meta.scan_id, "device_id": device_ids[v.device],
                         "address": v.device, "framework": v.framework, "verdict": v.verdict.value}
                        for v in result.device_verdicts if v.device in device_ids]
        if verdict_rows:
            session.execute(insert(DeviceVerdictRow), verdict_rows)

    def _resolve_devices(self, session: Session,
                         result: ScanResult) -> dict[str, int]:
        """Match each scanned device to a stored one (creating the new ones): address -> id.
        Two addresses of one device (a MAC answering on both) map to the same row."""
        sightings = [(device, identify(device)) for device in result.devices]
        known = self._candidates(session, [identity for _, identity in sightings])
        started, scan_id = result.meta.started_at, result.meta.scan_id
        rows: dict[str, DeviceRow] = {}
        for device, identity in sightings:
            row = _match(known, identity)
            if row is None:
                row = DeviceRow(key=identity.key, mac=identity.mac, serial=identity.serial,
                                udn=identity.udn, address=device.address,
                                vendor=column_text(device.vendor, 200),
                                model=column_text(device.model, 200), first_seen=started,
                                last_seen=started,
                                last_scan_id=scan_id)
                session.add(row)
                known.append(row)
            else:
                row.mac = row.mac or identity.mac
                row.serial = row.serial or identity.serial
                row.udn = row.udn or identity.udn
                row.first_seen = min(row.first_seen, started)
                if started >= row.last_seen:
                    row.last_seen, row.last_scan_id = started, scan_id
                    row.address = device.address
                    row.vendor = column_text(device.vendor, 200) or row.vendor
                    row.model = column_text(device.model, 200) or row.model
            rows[device.address] = row
        session.flush()  # assigns the new rows' ids (batched INSERT … RETURNING)
        return {address: row.id for address, row in rows.items()}

    @staticmethod
    def _candidates(session: Session, identities: Sequence[Identity]) -> list[DeviceRow]:
        columns = ((DeviceRow.mac, {i.mac for i in identities if i.mac}),
                   (DeviceRow.serial, {i.serial for i in identities if i.serial}),
                   (DeviceRow.udn, {i.udn for i in identities if i.udn}),
                   (DeviceRow.key, {f"address:{i.address}" for i in identities}))
        rows: dict[int, DeviceRow] = {}
        for column, values in columns:
            for chunk in _chunks(sorted(values)):
                for row in session.scalars(select(DeviceRow).where(column.in_(chunk))):
                    rows[row.id] = row
        return list(rows.values())

    def get_scan(self, scan_id: str) -> ScanResult:
        """The scan exactly as saved (the canonical JSON record)."""
        with self._reading() as session:
            row = session.get(ScanRow, scan_id)
            if row is None:
                raise LookupError(f"no scan {scan_id!r} in the store")
            return ScanResult.model_validate(row.document)

    def list_scans(self, limit: int = 50, offset: int = 0,
                   schedule: int | None = None) -> list[ScanSummary]:
        """Newest first."""
        query = select(ScanRow.id, ScanRow.started_at, ScanRow.finished_at, ScanRow.complete,
                       ScanRow.profile, ScanRow.schedule_id, ScanRow.device_count,
                       ScanRow.finding_count, ScanRow.error_count)
        if schedule is not None:
            query = query.where(ScanRow.schedule_id == schedule)
        query = query.order_by(ScanRow.started_at.desc(), ScanRow.id).limit(limit).offset(offset)
        with self._reading() as session:
            return [ScanSummary(*row) for row in session.execute(query)]

    def scan_schedule(self, scan_id: str) -> int | None:
        """The schedule a scan was run for (None for a one-off scan)."""
        with self._reading() as session:
            row = session.execute(select(ScanRow.schedule_id)
                                  .where(ScanRow.id == scan_id)).one_or_none()
        if row is None:
            raise LookupError(f"no scan {scan_id!r} in the store")
        schedule_id, = row
        return schedule_id

    def scan_devices(self, scan_id: str) -> dict[str, str]:
        """Address -> the store's device key, for every device a scan saw (a device seen on two
        addresses appears twice, with one key)."""
        with self._reading() as session:
            rows = session.execute(select(ScanDeviceRow.address, DeviceRow.key)
                                   .join(DeviceRow, DeviceRow.id == ScanDeviceRow.device_id)
                                   .where(ScanDeviceRow.scan_id == scan_id))
            return {address: key for address, key in rows}

    def previous_scan(self, schedule_id: int, before: str) -> str | None:
        """The scan of the same schedule that started last before ``before`` did."""
        with self._reading() as session:
            reference = session.get(ScanRow, before)
            if reference is None:
                raise LookupError(f"no scan {before!r} in the store")
            return session.scalar(
                select(ScanRow.id).where(ScanRow.schedule_id == schedule_id,
                                         ScanRow.started_at < reference.started_at,
                                         ScanRow.id != before)
                .order_by(ScanRow.started_at.desc()).limit(1))

    # -- devices -------------------------------------------------------------------------------

    def devices(self) -> list[DeviceSummary]:
        """Every device ever seen, with its verdict in the scan that saw it last."""
        verdict = (select(_worst(DeviceVerdictRow.verdict))
                   .where(DeviceVerdictRow.device_id == DeviceRow.id,
                          DeviceVerdictRow.scan_id == DeviceRow.last_scan_id,
                          DeviceVerdictRow.framework == PRIMARY_FRAMEWORK)
                   .scalar_subquery())
        with self._reading() as session:
            rows = session.execute(select(DeviceRow, verdict).order_by(DeviceRow.address,
                                                                       DeviceRow.key))
            return [_summary(row, device_verdict) for row, device_verdict in rows]

    def find_device(self, text: str) -> str:
        """A device key from what a person types: the key, a MAC, or its latest address."""
        wanted = text.strip()
        with self._reading() as session:
            key = session.scalar(
                select(DeviceRow.key).where(or_(
                    DeviceRow.key == wanted, DeviceRow.mac == wanted.lower(),
                    DeviceRow.serial == wanted, DeviceRow.address == wanted))
                .order_by((DeviceRow.key == wanted).desc(), DeviceRow.last_seen.desc())
                .limit(1))
        if key is None:
            raise LookupError(f"no device {text!r} in the store")
        return key

    def device_history(self, device_key: str) -> DeviceHistory:
        """Every scan that saw the device, oldest first, with its address, verdict and
        findings there."""
        with self._reading() as session:
            device = session.scalar(select(DeviceRow).where(DeviceRow.key == device_key))
            if device is None:
                raise LookupError(f"no device {device_key!r} in the store")
            sightings = session.execute(
                select(ScanRow.id, ScanRow.started_at, ScanDeviceRow.address,
                       DeviceVerdictRow.verdict)
                .join(ScanDeviceRow, ScanDeviceRow.scan_id == ScanRow.id)
                .outerjoin(DeviceVerdictRow, (DeviceVerdictRow.scan_id == ScanRow.id)
                           & (DeviceVerdictRow.address == ScanDeviceRow.address)
                           & (DeviceVerdictRow.framework == PRIMARY_FRAMEWORK))
                .where(ScanDeviceRow.device_id == device.id)
                .order_by(ScanRow.started_at, ScanRow.id, ScanDeviceRow.address)).all()
            findings: dict[str, list[StoredFinding]] = {}
            for row in session.scalars(select(FindingRow).where(FindingRow.device_id == device.id)
                                       .order_by(FindingRow.id)):
                findings.setdefault(row.scan_id, []).append(StoredFinding(
                    row.finding_id, row.check_id, row.severity, row.port, row.transport,
                    row.title))
            current = session.scalar(
                select(_worst(DeviceVerdictRow.verdict)).where(
                    DeviceVerdictRow.device_id == device.id,
                    DeviceVerdictRow.scan_id == device.last_scan_id,
                    DeviceVerdictRow.framework == PRIMARY_FRAMEWORK))
            for entries in findings.values():
                entries.sort(key=lambda f: (-Severity(f.severity).rank, f.port or 0, f.check_id))
            return DeviceHistory(_summary(device, current), [
                HistoryEntry(scan_id, started, address, verdict, findings.get(scan_id, []))
                for scan_id, started, address, verdict in sightings])

    # -- schedules -----------------------------------------------------------------------------

    def create_schedule(self, name: str, cron: str, targets: list[str], profile: str, *,
                        excludes: Sequence[str] = (), ports: str | None = None,
                        formats: Sequence[str] = ("json", "html"), segment: str | None = None,
                        webhooks: Sequence[ScheduleWebhook] = (), enabled: bool = True,
                        next_run: datetime | None = None) -> Schedule:
        row = ScheduleRow(name=name, cron=cron, targets=list(targets), excludes=list(excludes),
                          ports=ports, profile=profile, formats=list(formats), segment=segment,
                          webhooks=_webhook_rows(webhooks), enabled=enabled, next_run=next_run)
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
                return _schedule(row)
        except IntegrityError:
            raise ValueError(f"a schedule named {name!r} exists already") from None

    def get_schedule(self, schedule_id: int) -> Schedule:
        with self._reading() as session:
            row = session.get(ScheduleRow, schedule_id)
            if row is None:
                raise LookupError(f"no schedule {schedule_id}")
            return _schedule(row)

    def list_schedules(self, enabled_only: bool = False) -> list[Schedule]:
        query = select(ScheduleRow).order_by(ScheduleRow.id)
        if enabled_only:
            query = query.where(ScheduleRow.enabled)
        with self._reading() as session:
            return [_schedule(row) for row in session.scalars(query)]

    _SCHEDULE_FIELDS = frozenset({"name", "cron", "targets", "excludes", "ports", "profile",
                                  "formats", "segment", "webhooks", "enabled", "last_run",
                                  "next_run"})

    def update_schedule(self, schedule_id: int, **changes: Any) -> Schedule:
        unknown = set(changes) - self._SCHEDULE_FIELDS
        if unknown:
            raise ValueError(f"not a schedule field: {', '.join(sorted(unknown))}")
        with self._session() as session:
            row = session.get(ScheduleRow, schedule_id)
            if row is None:
                raise LookupError(f"no schedule {schedule_id}")
            for name, value in changes.items():
                if name == "webhooks":
                    value = _webhook_rows(value)
                setattr(row, name, list(value) if isinstance(value, tuple) else value)
            session.flush()
            return _schedule(row)

    def delete_schedule(self, schedule_id: int) -> None:
        with self._session() as session:
            row = session.get(ScheduleRow, schedule_id)
            if row is None:
                raise LookupError(f"no schedule {schedule_id}")
            session.delete(row)

    # -- drift ---------------------------------------------------------------------------------

    def save_drift(self, scan_id: str, previous_scan_id: str | None,
                   summary: dict[str, Any]) -> Drift:
        """Record (or replace) what changed since the previous scan."""
        with self._session() as session:
            row = session.get(DriftRow, scan_id)
            if row is None:
                row = DriftRow(scan_id=scan_id)
                session.add(row)
            row.previous_scan_id, row.summary, row.created_at = \
                previous_scan_id, summary, utc_now()
            session.flush()
            return Drift(row.scan_id, row.previous_scan_id, row.summary, row.created_at)

    def get_drift(self, scan_id: str) -> Drift | None:
        with self._reading() as session:
            row = session.get(DriftRow, scan_id)
            return None if row is None else Drift(row.scan_id, row.previous_scan_id,
                                                  row.summary, row.created_at)

    # -- API tokens ----------------------------------------------------------------------------

    def create_token(self, name: str, role: str) -> tuple[ApiToken, str]:
        """A new token and its secret, shown once: only its SHA-256 is stored."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r} (choose from {', '.join(ROLES)})")
        secret = "iotb_" + secrets.token_urlsafe(32)
        row = ApiTokenRow(name=name, role=role, token_hash=_token_hash(secret),
                          created_at=utc_now())
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
                return _token(row), secret
        except IntegrityError:
            raise ValueError(f"a token named {name!r} exists already") from None

    def verify_token(self, secret: str) -> ApiToken | None:
        """The token this secret belongs to, or None. Its last use is recorded only when the
        recorded one is older than ``TOKEN_USE_GRANULARITY``: a request does not write (nor wait
        for the write lock) on every call."""
        with self._reading() as session:
            row = session.scalar(select(ApiTokenRow).where(
                ApiTokenRow.token_hash == _token_hash(secret)))
            if row is None:
                return None
            token = _token(row)
        now = utc_now()
        if token.last_used is not None and now - token.last_used < TOKEN_USE_GRANULARITY:
            return token
        with self._session() as session:
            row = session.get(ApiTokenRow, token.id)
            if row is None:  # revoked meanwhile
                return None
            row.last_used = now
            return _token(row)

    def list_tokens(self) -> list[ApiToken]:
        with self._reading() as session:
            return [_token(row) for row in session.scalars(
                select(ApiTokenRow).order_by(ApiTokenRow.id))]

    def revoke_token(self, token_id: int) -> None:
        with self._session() as session:
            row = session.get(ApiTokenRow, token_id)
            if row is None:
                raise LookupError(f"no token {token_id}")
            session.delete(row)

    def count(self, table: str) -> int:
        """Rows in one of the store's tables (for status output and tests)."""
        tables = {row.__tablename__: row for row in (
            ScanRow, DeviceRow, ScanDeviceRow, FindingRow, FindingClauseRow, ClauseVerdictRow,
            DeviceVerdictRow, ScheduleRow, DriftRow, ApiTokenRow)}
        with self._reading() as session:
            return session.scalar(select(func.count()).select_from(tables[table])) or 0


_IDENTIFIERS = ("mac", "serial", "udn")  # strongest first


def _match(rows: Iterable[DeviceRow], identity: Identity) -> DeviceRow | None:
    """The stored device this sighting is: equal on the strongest identifier they share and
    not contradicted by a stronger one (same serial but another MAC is another device)."""
    for rank, attribute in enumerate(_IDENTIFIERS):
        value = getattr(identity, attribute)
        if value is None:
            continue
        for row in rows:
            if getattr(row, attribute) == value and not any(
                    getattr(row, stronger) and getattr(identity, stronger)
                    and getattr(row, stronger) != getattr(identity, stronger)
                    for stronger in _IDENTIFIERS[:rank]):
                return row
    if any(getattr(identity, attribute) for attribute in _IDENTIFIERS):
        return None
    # Known by address alone: only a device never identified more strongly may be claimed.
    return next((row for row in rows if row.key == f"address:{identity.address}"
                 and not any(getattr(row, attribute) for attribute in _IDENTIFIERS)), None)


def _worst(verdict: Any) -> Any:
    """The worst of a device's verdicts when it answered on several addresses in one scan:
    the alphabetical minimum, as FAIL < INCONCLUSIVE < MANUAL < NOT_APPLICABLE < PASS."""
    return func.min(verdict)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]


def _token_hash(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _summary(row: DeviceRow, verdict: str | None) -> DeviceSummary:
    return DeviceSummary(row.key, row.address, row.mac, row.serial, row.udn, row.vendor,
                         row.model, row.first_seen, row.last_seen, row.last_scan_id, verdict)


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule(row.id, row.name, row.cron, list(row.targets), row.profile,
                    list(row.excludes), row.ports, list(row.formats), row.segment,
                    [ScheduleWebhook(hook["url"], hook["secret_env"]) for hook in row.webhooks],
                    row.enabled, row.last_run, row.next_run)


def _webhook_rows(webhooks: Iterable[ScheduleWebhook]) -> list[dict[str, str]]:
    return [asdict(hook) for hook in webhooks]


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(row.id, row.name, row.role, row.created_at, row.last_used)
