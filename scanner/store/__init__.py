"""The scan history store: every scan, device and finding across time, in SQL.

SQLite (a file, no set-up) by default, PostgreSQL by URL for shared use; the schema is created
or upgraded with Alembic when a store is opened, and a schema from a newer iotbaseline is
refused with a one-line ``StoreError``. The ``ScanResult`` JSON is the canonical record (reports
re-render from it); devices, findings and verdicts are also copied into tables for queries.

Repository API (``ScanStore(url)``; synchronous — async code wraps calls in
``asyncio.to_thread``)::

    save_scan(result, schedule_id=None) -> scan id    idempotent by ``meta.scan_id``
    get_scan(scan_id) -> ScanResult                   exactly what was saved
    list_scans(limit=50, offset=0, schedule=None)     -> [ScanSummary], newest first
    scan_schedule(scan_id) -> schedule id | None      the schedule a scan ran for
    scan_devices(scan_id) -> {address: device key}    the devices a scan saw, by identity
    previous_scan(schedule_id, before=scan_id)        -> scan id | None
    devices() -> [DeviceSummary]                      with the latest primary-framework verdict
    find_device(text) -> device key                   key, MAC, serial or last address
    device_history(device_key) -> DeviceHistory       scans, addresses, verdicts, findings
    create/get/list/update/delete_schedule            the scheduler's schedules (targets,
                                                      excludes, ports, [ScheduleWebhook], …)
    save_drift(scan_id, previous_scan_id, summary) / get_drift(scan_id)
    create_token(name, role) -> (ApiToken, secret) / verify_token(secret) / list_tokens /
    revoke_token(id)                                  roles: viewer | operator; a token's
                                                      last use is written at most once a minute

On SQLite, reading methods begin deferred (WAL: they never wait for a writer); writing ones
take the write lock up front (``BEGIN IMMEDIATE``), so concurrent writers queue.

Device identity (``identity.py``): MAC, then serial or UPnP UDN, then address, so a device's
history follows it when its address changes.
"""

from scanner.store.migrate import StoreError
from scanner.store.repository import (
    ApiToken,
    DeviceHistory,
    DeviceSummary,
    Drift,
    HistoryEntry,
    ScanStore,
    ScanSummary,
    Schedule,
    ScheduleWebhook,
    StoredFinding,
    default_store_path,
    redacted,
    store_url,
)

__all__ = ["ApiToken", "DeviceHistory", "DeviceSummary", "Drift", "HistoryEntry", "ScanStore",
           "ScanSummary", "Schedule", "ScheduleWebhook", "StoreError", "StoredFinding",
           "default_store_path", "redacted", "store_url"]
