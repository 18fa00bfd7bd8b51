"""The scan history store, on SQLite and on a private PostgreSQL (tests/pg.py): round trips,
idempotent ingest, device identity, migrations, the CLI and concurrent writers.

Addresses: 127.135.0.0/16 only (PostgreSQL on 127.135.0.1, fakes on 127.135.1.x)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, select, text, update
from sqlalchemy.exc import OperationalError

from scanner.cli import main
from scanner.models import (
    CheckRun,
    CheckStatus,
    Confidence,
    Device,
    DeviceVerdict,
    Finding,
    ScanResult,
    Severity,
    Verdict,
)
from scanner.store import ScanStore, ScheduleWebhook, StoreError, migrate, repository, store_url
from scanner.store.schema import ApiTokenRow, Base
from tests import fakes
from tests.pg import PostgresServer, postgres_server
from tests.report_fixtures import T0, hostile_result, sample_result

FRAMEWORK = "iso-iec-27402-2023"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def store(url: str) -> Iterator[ScanStore]:
    with ScanStore(url) as opened:
        yield opened


def scan(scan_id: str, devices: list[Device], minutes: int = 0, *,
         findings_on: tuple[str, ...] = (), verdict: Verdict = Verdict.PASS) -> ScanResult:
    """A small assessed-looking scan: one telnet finding on each address in ``findings_on``."""
    meta = sample_result().meta.model_copy(update={
        "scan_id": scan_id, "started_at": T0 + timedelta(minutes=minutes),
        "finished_at": T0 + timedelta(minutes=minutes, seconds=30)})
    findings = [Finding(id=f"IOTB-{address}", check_id="telnet-exposed", title="Telnet exposed",
                        summary="login prompt", severity=Severity.HIGH,
                        confidence=Confidence.CONFIRMED, device=address, port=23,
                        transport="tcp", clauses={FRAMEWORK: ["5.2.6"]}, found_at=meta.started_at)
                for address in findings_on]
    return ScanResult(meta=meta, devices=devices, findings=findings, check_runs=[
        CheckRun(check_id="telnet-exposed", device=d.address, port=23, transport="tcp",
                 status=CheckStatus.FAIL if d.address in findings_on else CheckStatus.PASS,
                 started_at=meta.started_at, duration_s=0.1) for d in devices], errors=[],
        device_verdicts=[DeviceVerdict(framework=FRAMEWORK, device=d.address,
                                       verdict=Verdict.FAIL if d.address in findings_on
                                       else verdict) for d in devices])


# -- round trip and ingest ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [sample_result, hostile_result], ids=["sample", "hostile"])
def test_round_trip_returns_exactly_what_was_saved(store: ScanStore, make: object) -> None:
    assert callable(make)
    original: ScanResult = make()
    assert store.save_scan(original) == original.meta.scan_id
    assert store.get_scan(original.meta.scan_id) == original
    [summary] = store.list_scans()
    assert (summary.id, summary.devices, summary.findings, summary.errors, summary.complete) == \
        (original.meta.scan_id, 2, len(original.findings), 1, True)
    assert summary.started_at == original.meta.started_at
    assert store.count("finding_clauses") == sum(
        len(clauses) for f in original.findings for clauses in f.clauses.values())
    assert store.count("clause_verdicts") == len(original.verdicts) > 0
    with pytest.raises(LookupError):
        store.get_scan("no-such-scan")


def test_ingest_is_idempotent_by_scan_id(store: ScanStore) -> None:
    original = sample_result()
    counts = []
    for _ in range(3):
        store.save_scan(original)
        counts.append([store.count(t) for t in ("scans", "devices", "findings",
                                                "clause_verdicts", "device_verdicts")])
    assert counts[0] == counts[1] == counts[2]
    assert counts[0][:3] == [1, 2, 2]
    # A new version of the same scan (here: interrupted, one finding fewer) replaces the old.
    partial = original.model_copy(update={
        "findings": original.findings[:1],
        "meta": original.meta.model_copy(update={"complete": False,
                                                 "stop_reason": "interrupted"})})
    store.save_scan(partial)
    assert store.get_scan(original.meta.scan_id) == partial
    assert [store.count(t) for t in ("scans", "devices", "findings")] == [1, 2, 1]
    assert store.list_scans()[0].complete is False


# -- device identity ---------------------------------------------------------------------------


def test_same_mac_at_a_new_address_is_the_same_device(store: ScanStore) -> None:
    store.save_scan(scan("s1", [Device(address="10.0.0.5", mac="AA-BB-CC-00-00-01")],
                         findings_on=("10.0.0.5",)))
    store.save_scan(scan("s2", [Device(address="10.0.0.6", mac="aa:bb:cc:00:00:01")], 60))
    [device] = store.devices()
    assert (device.key, device.address, device.verdict) == ("mac:aa:bb:cc:00:00:01",
                                                            "10.0.0.6", "PASS")
    history = store.device_history(device.key)
    assert [(e.scan_id, e.address, e.verdict, len(e.findings)) for e in history.entries] == [
        ("s1", "10.0.0.5", "FAIL", 1), ("s2", "10.0.0.6", "PASS", 0)]
    assert history.entries[0].findings[0].check_id == "telnet-exposed"
    assert store.find_device("10.0.0.6") == store.find_device("AA:BB:CC:00:00:01") == device.key


def test_same_address_with_another_mac_is_another_device(store: ScanStore) -> None:
    store.save_scan(scan("s1", [Device(address="10.0.0.5", mac="aa:bb:cc:00:00:01")]))
    store.save_scan(scan("s2", [Device(address="10.0.0.5", mac="aa:bb:cc:00:00:02")], 60))
    assert sorted(d.key for d in store.devices()) == ["mac:aa:bb:cc:00:00:01",
                                                      "mac:aa:bb:cc:00:00:02"]
    assert store.find_device("10.0.0.5") == "mac:aa:bb:cc:00:00:02"  # the latest one there


def test_serial_or_udn_identifies_a_device_without_a_mac(store: ScanStore) -> None:
    store.save_scan(scan("s1", [Device(address="10.1.0.5", serial="SN-1"),
                                Device(address="10.1.0.9", upnp={"UDN": "uuid:ABC-1"})]))
    store.save_scan(scan("s2", [Device(address="10.1.0.6", serial="SN-1"),
                                Device(address="10.1.0.10", upnp={"UDN": "uuid:abc-1"})], 60))
    devices = {d.key: d for d in store.devices()}
    assert set(devices) == {"serial:SN-1", "udn:abc-1"}
    assert (devices["serial:SN-1"].address, devices["udn:abc-1"].address) == (
        "10.1.0.6", "10.1.0.10")
    # Seen on the link with its MAC, then routed without it: still the same device.
    store.save_scan(scan("s3", [Device(address="10.1.0.7", mac="aa:bb:cc:00:00:09",
                                       serial="SN-1")], 120))
    store.save_scan(scan("s4", [Device(address="10.9.0.8", serial="SN-1")], 180))
    # The same serial with a contradicting MAC is another device (vendors reuse serials).
    store.save_scan(scan("s5", [Device(address="10.1.0.11", mac="aa:bb:cc:00:00:10",
                                       serial="SN-1")], 240))
    assert sorted(d.key for d in store.devices()) == ["mac:aa:bb:cc:00:00:10", "serial:SN-1",
                                                      "udn:abc-1"]
    history = store.device_history("serial:SN-1")
    assert history.device.mac == "aa:bb:cc:00:00:09"
    assert [e.address for e in history.entries] == ["10.1.0.5", "10.1.0.6", "10.1.0.7",
                                                    "10.9.0.8"]


def test_address_only_devices_never_claim_identified_ones(store: ScanStore) -> None:
    store.save_scan(scan("s1", [Device(address="10.2.0.5")]))
    store.save_scan(scan("s2", [Device(address="10.2.0.5")], 60))
    assert [d.key for d in store.devices()] == ["address:10.2.0.5"]
    assert len(store.device_history("address:10.2.0.5").entries) == 2
    store.save_scan(scan("s3", [Device(address="10.2.0.5", mac="aa:bb:cc:00:00:05")], 120))
    assert sorted(d.key for d in store.devices()) == ["address:10.2.0.5",
                                                      "mac:aa:bb:cc:00:00:05"]
    # Two addresses answering with one MAC in one scan: one device, both addresses kept.
    store.save_scan(scan("s4", [Device(address="10.2.0.5", mac="aa:bb:cc:00:00:05"),
                                Device(address="10.2.0.6", mac="aa:bb:cc:00:00:05")], 180,
                         findings_on=("10.2.0.6",)))
    entries = store.device_history("mac:aa:bb:cc:00:00:05").entries
    assert [(e.scan_id, e.address, e.verdict) for e in entries] == [
        ("s3", "10.2.0.5", "PASS"), ("s4", "10.2.0.5", "PASS"), ("s4", "10.2.0.6", "FAIL")]
    devices = {d.key: d for d in store.devices()}
    assert devices["mac:aa:bb:cc:00:00:05"].verdict == "FAIL"  # the worst of its addresses


def test_saving_an_older_scan_later_keeps_the_latest_facts(store: ScanStore) -> None:
    store.save_scan(scan("new", [Device(address="10.3.0.6", mac="aa:bb:cc:00:00:03")], 60))
    store.save_scan(scan("old", [Device(address="10.3.0.5", mac="aa:bb:cc:00:00:03")], 0))
    [device] = store.devices()
    assert (device.address, device.last_scan_id) == ("10.3.0.6", "new")
    assert device.first_seen == T0
    assert [s.id for s in store.list_scans()] == ["new", "old"]
    assert [s.id for s in store.list_scans(limit=1, offset=1)] == ["old"]


# -- schedules, drift, tokens ------------------------------------------------------------------


def test_schedules_previous_scan_and_drift(store: ScanStore) -> None:
    nightly = store.create_schedule("nightly", "0 2 * * *", ["10.0.0.0/24"], "safe",
                                    webhooks=[ScheduleWebhook("https://hooks.invalid/x", "S")])
    other = store.create_schedule("weekly", "0 3 * * 0", ["10.0.1.0/24"], "quick",
                                  enabled=False)
    with pytest.raises(ValueError, match="exists already"):
        store.create_schedule("nightly", "* * * * *", [], "safe")
    device = [Device(address="10.0.0.5")]
    for number, schedule in enumerate([nightly.id, other.id, nightly.id, nightly.id]):
        store.save_scan(scan(f"s{number}", device, number * 60), schedule_id=schedule)
    assert (store.scan_schedule("s3"), store.scan_schedule("s1")) == (nightly.id, other.id)
    assert store.previous_scan(nightly.id, before="s3") == "s2"
    assert store.previous_scan(nightly.id, before="s2") == "s0"
    assert store.previous_scan(nightly.id, before="s0") is None
    assert [s.id for s in store.list_scans(schedule=nightly.id)] == ["s3", "s2", "s0"]
    assert [s.name for s in store.list_schedules(enabled_only=True)] == ["nightly"]
    updated = store.update_schedule(nightly.id, last_run=T0, next_run=T0 + timedelta(days=1),
                                    targets=["10.0.2.0/24"])
    assert store.get_schedule(nightly.id) == updated
    assert (updated.last_run, updated.targets) == (T0, ["10.0.2.0/24"])
    with pytest.raises(ValueError, match="not a schedule field"):
        store.update_schedule(nightly.id, colour="red")
    assert store.get_drift("s3") is None
    store.save_drift("s3", "s2", {"new_findings": ["IOTB-1"], "resolved": []})
    drift = store.save_drift("s3", "s2", {"new_findings": [], "resolved": ["IOTB-1"]})
    assert store.get_drift("s3") == drift and drift.summary["resolved"] == ["IOTB-1"]
    store.delete_schedule(other.id)
    assert store.list_scans(schedule=other.id) == []
    assert store.get_scan("s1").meta.scan_id == "s1"  # scans outlive their schedule
    with pytest.raises(LookupError):
        store.delete_schedule(other.id)


def test_schedule_fields_round_trip(store: ScanStore) -> None:
    hooks = [ScheduleWebhook("http://127.135.3.1:8080/hook", "HOOK_SECRET"),
             ScheduleWebhook("https://hooks.invalid/y", "OTHER_SECRET")]
    created = store.create_schedule("lab", "*/5 * * * *", ["127.135.2.0/24"], "quick",
                                    excludes=["127.135.2.1", "127.135.2.9"],
                                    ports="22,80,U:161", segment="lab-a", webhooks=hooks)
    assert store.get_schedule(created.id) == created
    assert (created.excludes, created.ports, created.webhooks) == (
        ["127.135.2.1", "127.135.2.9"], "22,80,U:161", hooks)
    bare = store.create_schedule("bare", "0 * * * *", ["127.135.2.5"], "safe")
    assert (bare.excludes, bare.ports, bare.webhooks, bare.formats) == ([], None, [],
                                                                        ["json", "html"])
    updated = store.update_schedule(created.id, excludes=(), ports=None, webhooks=hooks[1:])
    assert store.list_schedules()[0] == updated
    assert (updated.excludes, updated.ports, updated.webhooks) == ([], None, hooks[1:])


def test_scan_devices_follow_identity(store: ScanStore) -> None:
    store.save_scan(scan("a", [Device(address="10.0.0.5", mac="02:00:00:00:00:01"),
                               Device(address="10.0.0.6")]))
    store.save_scan(scan("b", [Device(address="10.0.0.7", mac="02:00:00:00:00:01")], 60))
    assert store.scan_devices("a") == {"10.0.0.5": "mac:02:00:00:00:00:01",
                                       "10.0.0.6": "address:10.0.0.6"}
    assert store.scan_devices("b") == {"10.0.0.7": "mac:02:00:00:00:00:01"}
    assert store.scan_devices("unknown") == {}
    assert store.scan_schedule("a") is None
    with pytest.raises(LookupError, match="no scan"):
        store.scan_schedule("unknown")


def test_api_tokens_keep_only_a_hash(store: ScanStore, url: str) -> None:
    token, secret = store.create_token("ci", "operator")
    with pytest.raises(ValueError, match="unknown role"):
        store.create_token("x", "admin")
    assert store.verify_token("iotb_wrong") is None
    used = store.verify_token(secret)
    assert used is not None and used.role == "operator" and used.last_used is not None
    assert [t.name for t in store.list_tokens()] == ["ci"]
    engine = create_engine(store_url(url))
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    engine.dispose()
    assert secret not in stored and stored.startswith("sha256:")
    store.revoke_token(token.id)
    assert store.verify_token(secret) is None


def test_a_token_use_is_recorded_at_most_once_a_minute(store: ScanStore, url: str) -> None:
    """Most API requests only read the token: writing on each would queue them behind scans."""
    _token, secret = store.create_token("dashboard", "viewer")
    first = store.verify_token(secret)
    again = store.verify_token(secret)
    assert first is not None and again is not None
    assert first.last_used is not None and again.last_used == first.last_used
    stale = first.last_used - timedelta(minutes=5)
    engine = create_engine(store_url(url))
    with engine.begin() as connection:
        connection.execute(update(ApiTokenRow).values(last_used=stale))
    engine.dispose()
    refreshed = store.verify_token(secret)
    assert refreshed is not None and refreshed.last_used is not None
    assert refreshed.last_used >= first.last_used > stale


# -- migrations --------------------------------------------------------------------------------


def test_migrations_build_exactly_the_models(store: ScanStore) -> None:
    assert store.revision == migrate.head_revision() == "0003"
    with store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_an_older_schema_is_upgraded_on_open(url: str) -> None:
    engine = create_engine(store_url(url))
    try:
        assert migrate.upgrade(engine, "0001") == "0001"
        assert "api_tokens" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with ScanStore(url) as store:
        assert store.revision == "0003"
        store.create_token("after-upgrade", "viewer")


PACKED_TARGETS = ["127.135.2.0/24", "--exclude=127.135.2.1", "--exclude=127.135.2.9",
                  "--ports=22,80,U:161"]
PACKED_WEBHOOKS = ["http://127.135.3.1:8080/hook --secret-env=HOOK_SECRET",
                   "https://hooks.invalid/never-signed"]  # one no released code could send


def test_0003_unpacks_packed_schedules_and_its_downgrade_packs_them_again(url: str) -> None:
    """Rows written in 0002's packed form (by the store itself, foreign keys on) keep their
    scans and come out as real fields; downgrading restores the exact packed lists."""
    engine = create_engine(store_url(url))
    schedules, scans = Base.metadata.tables["schedules"], Base.metadata.tables["scans"]
    try:
        assert migrate.upgrade(engine, "0002") == "0002"
        with engine.begin() as connection:
            connection.execute(insert(schedules).values(
                id=7, name="packed", cron="0 * * * *", targets=PACKED_TARGETS, profile="quick",
                formats=["json"], segment=None, webhooks=PACKED_WEBHOOKS, enabled=True))
            connection.execute(insert(schedules).values(
                id=8, name="plain", cron="0 * * * *", targets=["127.135.2.5"], profile="safe",
                formats=["json"], segment=None, webhooks=[], enabled=False))
            document = scan("s-packed", [Device(address="127.135.2.5")]).model_dump(mode="json")
            connection.execute(insert(scans).values(
                id="s-packed", schedule_id=7, profile="quick", tool_version="0",
                started_at=T0, finished_at=T0, complete=True, stop_reason=None,
                device_count=1, finding_count=0, error_count=0, saved_at=T0,
                document=document))
    finally:
        engine.dispose()

    with ScanStore(url) as store:
        assert store.revision == "0003"
        packed, plain = store.get_schedule(7), store.get_schedule(8)
        assert store.scan_schedule("s-packed") == 7  # the scan still knows its schedule
    assert (packed.targets, packed.excludes, packed.ports) == (
        ["127.135.2.0/24"], ["127.135.2.1", "127.135.2.9"], "22,80,U:161")
    assert packed.webhooks == [
        ScheduleWebhook("http://127.135.3.1:8080/hook", "HOOK_SECRET"),
        ScheduleWebhook("https://hooks.invalid/never-signed", "")]
    assert (plain.targets, plain.excludes, plain.ports, plain.webhooks) == (
        ["127.135.2.5"], [], None, [])

    engine = create_engine(store_url(url))
    try:
        with engine.begin() as connection:
            command.downgrade(migrate._config(connection), "0002")
            rows = connection.execute(select(schedules.c.id, schedules.c.targets,
                                             schedules.c.webhooks).order_by(schedules.c.id))
            assert [tuple(row) for row in rows] == [
                (7, PACKED_TARGETS, PACKED_WEBHOOKS), (8, ["127.135.2.5"], [])]
            assert {column["name"] for column in inspect(connection).get_columns(
                "schedules")}.isdisjoint({"excludes", "ports"})
            assert connection.execute(text(
                "SELECT schedule_id FROM scans WHERE id = 's-packed'")).scalar_one() == 7
    finally:
        engine.dispose()


def test_a_schema_from_the_future_is_refused(url: str) -> None:
    ScanStore(url).close()
    engine = create_engine(store_url(url))
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(StoreError) as refused:
        ScanStore(url)
    message = str(refused.value)
    assert "\n" not in message and "0099" in message and "newer" in message


# -- performance -------------------------------------------------------------------------------


def test_a_thousand_devices_save_in_seconds(store: ScanStore) -> None:
    devices = [Device(address=f"10.{n // 250}.{n % 250}.1",
                      mac=f"02:00:00:00:{n // 256:02x}:{n % 256:02x}") for n in range(1000)]
    base = scan("big", devices)
    findings = [f.model_copy(update={"id": f"IOTB-{n}-{k}", "check_id": f"check-{k}"})
                for n, d in enumerate(devices) for k, f in enumerate(
                    [scan("x", [d], findings_on=(d.address,)).findings[0]] * 5)]
    big = base.model_copy(update={"findings": findings})
    started = time.perf_counter()
    store.save_scan(big)
    elapsed = time.perf_counter() - started
    sys.stderr.write(f"\n[{store.url.get_backend_name()}] saved 1,000 devices and "
                     f"{len(findings):,} findings in {elapsed:.2f} s\n")
    assert store.count("findings") == 5000 and store.count("devices") == 1000
    assert elapsed < 30
    started = time.perf_counter()
    store.save_scan(big)  # the same report again: a cheap no-op
    assert time.perf_counter() - started < elapsed + 5
    assert store.get_scan("big") == big


# -- concurrency (SQLite) ----------------------------------------------------------------------


def _writer(path: str, worker: int) -> None:
    with ScanStore(path) as store:
        for number in range(5):
            store.save_scan(scan(f"w{worker}-{number}", [
                Device(address=f"10.4.{worker}.{number}", mac="aa:bb:cc:00:00:44"),
                Device(address=f"10.5.{worker}.{number}")], worker * 10 + number))
            store.save_scan(scan("shared", [Device(address="10.6.0.1")]))


def test_concurrent_writers_on_sqlite_do_not_corrupt(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, n)) for n in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    with ScanStore(path) as store:
        assert store.count("scans") == 21  # 4 × 5 own scans, plus the shared one once
        assert store.count("devices") == 1 + 20 + 1  # one MAC, 20 addresses, the shared one
        assert len(store.device_history("mac:aa:bb:cc:00:00:44").entries) == 20
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (os.stat(path).st_mode & 0o777) == 0o600


def test_reads_do_not_wait_behind_a_long_write_on_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long save_scan holds the write lock; API reads (and token checks) still answer."""
    monkeypatch.setattr(repository, "SQLITE_BUSY_TIMEOUT_S", 0.5)
    path = tmp_path / "busy.sqlite"
    with ScanStore(str(path)) as store:
        store.save_scan(scan("a", [Device(address="10.7.0.1")]))
        store.create_schedule("nightly", "0 3 * * *", ["10.7.0.0/24"], "safe")
        _token, secret = store.create_token("api", "viewer")
        assert store.verify_token(secret) is not None
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # a writer in the middle of a long save
            started = time.monotonic()
            assert store.get_scan("a").meta.scan_id == "a"
            assert [s.id for s in store.list_scans()] == ["a"]
            assert [s.name for s in store.list_schedules(enabled_only=True)] == ["nightly"]
            assert len(store.devices()) == 1 and store.get_drift("a") is None
            assert store.verify_token(secret) is not None
            assert time.monotonic() - started < 0.4
            with pytest.raises(OperationalError, match="locked"):  # writes do queue
                store.save_scan(scan("b", [Device(address="10.7.0.2")]))
        finally:
            writer.rollback()
            writer.close()
        store.save_scan(scan("b", [Device(address="10.7.0.2")]))
        assert store.count("scans") == 2


# -- command line ------------------------------------------------------------------------------


def test_store_commands_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "data" / "cli.sqlite"
    report = tmp_path / "report.json"
    report.write_text(sample_result().model_dump_json())
    again = tmp_path / "moved.json"
    again.write_text(scan("s2", [Device(address="192.0.2.50", mac="24:6F:28:AA:BB:CC")], 600)
                     .model_dump_json())

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["store", "--store", str(database), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run("init") == (0, f"sqlite:///{database}: schema at revision 0003\n", "")
    code, out, _ = run("import", str(report), str(report), str(again))
    assert code == 0 and out.count(sample_result().meta.scan_id) == 2
    code, out, _ = run("scans")
    assert code == 0 and out.splitlines()[0].startswith("s2 ") and len(out.splitlines()) == 2
    code, out, _ = run("devices")
    assert code == 0 and "mac:24:6f:28:aa:bb:cc" in out and "192.0.2.50" in out
    code, out, _ = run("history", "24:6f:28:aa:bb:cc")
    lines = out.splitlines()
    assert code == 0 and "192.0.2.5 " in lines[1] and "192.0.2.50" in lines[-1]
    assert "telnet-default-credentials" in out
    code, out, _ = run("history", "192.0.2.7", "--json")
    assert code == 0 and '"key": "serial:SN123"' not in out and '"entries"' in out
    assert run("history", "198.51.100.1")[0] == 2
    code, _, err = run("import", str(tmp_path / "missing.json"))
    assert code == 2 and err.count("\n") == 1
    assert run("upgrade")[0] == 0
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    code, out, err = run("scans")
    assert code == 2 and out == "" and err.count("\n") == 1 and "newer" in err


def test_store_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert store_url("default").database == str(tmp_path / "iotbaseline" / "store.sqlite")
    assert store_url("postgresql://u:secret@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(StoreError, match="unsupported"):
        store_url("mysql://h/db")
    assert main(["store", "--store", "mysql://h/db", "scans"]) == 2


async def test_a_scan_saves_into_the_store_and_survives_a_broken_one(tmp_path: Path) -> None:
    device = await fakes.banner("127.135.1.1", 2323, b"\xff\xfb\x01\r\nlogin: ")
    env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
    base = [sys.executable, "-m", "scanner", "scan", "127.135.1.1", "--ports", "2323",
            "--timeout", "1.5", "--profile", "quick"]

    async def run(*extra: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *base, *extra, stdout=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
        _, err = await asyncio.wait_for(process.communicate(), 90)
        assert process.returncode is not None
        return process.returncode, err.decode()

    try:
        database = tmp_path / "scans.sqlite"
        code, err = await run("--out", str(tmp_path / "a"), "--store", str(database))
        assert code == 1, err  # exit codes are unchanged by the store
        assert "Stored: scan" in err
        with ScanStore(str(database)) as store:
            [summary] = store.list_scans()
            saved = store.get_scan(summary.id)
        assert saved == ScanResult.model_validate_json((tmp_path / "a" / "report.json")
                                                       .read_bytes())
        # Nothing listens at 127.135.0.9:1: the store fails, the report is still written.
        code, err = await run("--out", str(tmp_path / "b"), "--store",
                              "postgresql://nobody:hunter2@127.135.0.9:1/x")
        assert code == 1 and (tmp_path / "b" / "report.json").exists()
        assert len([line for line in err.splitlines() if "not saved to the store" in line]) == 1
        assert "hunter2" not in err
        code, err = await run("--out", str(tmp_path / "c"), "--store", "oracle://x/y")
        assert code == 2 and not (tmp_path / "c").exists()
    finally:
        await device.close()
