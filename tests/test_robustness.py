"""A real scan of a lab of hostile devices (tests/hostile.py), judged from both sides: what the
report says, and what each device saw of the scanner.

One lab scan is shared by the module (it is the slow part, ~30 s); a few small scans check
what needs other settings (secrets shown, a private credential file). Addresses: devices on
127.133.0.x, the out-of-scope listener on 127.134.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import os
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from probes.registry import load_probes
from reports.renderers import RENDERERS, write_reports
from scanner.cli import print_summary
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import CheckStatus, ScanResult
from scanner.net import REDACTED
from scanner.storage import (
    JOURNAL_NAME,
    REPORT_NAME,
    ResultStore,
    StoredScan,
    load_report,
    write_private,
)
from tests import hostile
from tests.helpers import NEVER_TOUCH_PORTS, ScanRunner, fast_profile, safe_scope, validate_report

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBE_BUDGET = 4.0
HOST_BUDGET = 30.0
RATE = 10.0  # new connections per second to one device
PER_HOST = 2
LAB_PROFILE = fast_profile(
    timing={"probe_budget": PROBE_BUDGET, "host_budget": HOST_BUDGET, "rate": RATE,
            "per_host": PER_HOST},
    authentication={"spacing": 0.1})  # fast attempts: the per-account budget is what limits
# A probe's run may end a little after its budget (cancellation, the run record itself).
RUN_SLACK = 1.5
STREAM_BOUND = 16 * 1024 * 1024  # bytes one endless stream may get out before the scanner stops
CRASH_KINDS = {"plugin"}  # an error kind that means a parser or probe crashed on input


@dataclass
class LabScan:
    lab: hostile.Lab
    result: ScanResult
    stored: StoredScan
    out: Path
    seconds: float

    def device(self, kind: str) -> hostile.Device:
        [device] = self.lab.of(kind)
        return device

    def runs(self, kind: str) -> list[tuple[str, CheckStatus, float]]:
        address = self.device(kind).address
        return [(run.check_id, run.status, run.duration_s) for run in self.result.check_runs
                if run.device == address]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scan(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LabScan]:
    os.environ["IOTBASELINE_EXCLUDE_PORTS"] = ",".join(map(str, NEVER_TOUCH_PORTS))
    lab = await hostile.start_lab(list(hostile.KINDS))
    out = tmp_path_factory.mktemp("hostile") / "report"
    plan = ScanPlan.build(safe_scope(*lab.addresses), LAB_PROFILE, load_probes()[0],
                          ports={"tcp": hostile.TCP_PORTS, "udp": hostile.UDP_PORTS})
    plan.formats = list(RENDERERS)
    started = time.monotonic()
    try:
        stored = await asyncio.wait_for(ScanEngine(plan, ResultStore(out)).execute(), 120)
        seconds = time.monotonic() - started
        await asyncio.sleep(0.2)  # let the devices see the last hang-ups
        yield LabScan(lab, load_report(out / REPORT_NAME), stored, out, seconds)
    finally:
        await lab.close()


# ------------------------------------------------------------------------------ time

async def test_the_lab_scan_completes_within_the_host_budget(scan: LabScan) -> None:
    assert scan.result.meta.complete
    assert scan.seconds < HOST_BUDGET + 10
    validate_report(scan.out / REPORT_NAME)
    seen = {device.address for device in scan.result.devices}
    assert set(scan.lab.addresses) <= seen  # every hostile device is in the report
    crashes = [e for e in scan.result.errors if e.kind in CRASH_KINDS]
    assert crashes == []  # hostile input ends in facts or clean errors, never a crash


async def test_stalling_devices_cost_at_most_the_probe_budget(scan: LabScan) -> None:
    for kind in ("silent", "drip", "iac-storm", "tls-renegotiation"):
        runs = scan.runs(kind)
        assert runs or kind == "drip", kind  # a drip says too little to be identified
        assert max((seconds for _, _, seconds in runs), default=0) <= PROBE_BUDGET + RUN_SLACK
        device = scan.device(kind)
        assert sum(server.connections for server in device.servers) > 0, kind
        assert all(server.active == 0 for server in device.servers), kind  # hung up


async def test_endless_negotiation_is_not_taken_for_a_service(scan: LabScan) -> None:
    tls = scan.result.devices[[d.address for d in scan.result.devices].index(
        scan.device("tls-renegotiation").address)]
    assert all(service.certificate is None for service in tls.services)
    telnet_runs = dict((check, status) for check, status, _ in scan.runs("iac-storm"))
    assert telnet_runs.get("telnet-unauthenticated-shell") is not CheckStatus.FAIL


# ------------------------------------------------------------------------------ memory

async def test_streams_stop_when_the_byte_cap_is_reached(scan: LabScan) -> None:
    for kind in ("endless-http", "huge-length-http", "mqtt-giant", "ssh-hostile"):
        streamed = scan.device(kind).seen.streamed
        assert streamed, kind  # the device did stream at the scanner
        assert max(streamed) < STREAM_BOUND, (kind, max(streamed))
    for device in scan.result.devices:
        for service in device.services:
            assert len(service.banner) <= 1024
    for finding in scan.result.findings:
        assert all(len(e.data) <= 4 * 4096 for e in finding.evidence)  # escaped, capped


async def test_a_256_mb_mqtt_claim_keeps_the_findings_already_made(scan: LabScan) -> None:
    address = scan.device("mqtt-giant").address
    checks = {f.check_id for f in scan.result.findings if f.device == address}
    assert "mqtt-anonymous" in checks


# ------------------------------------------------------------------------------ parsers

async def test_malformed_protocol_replies_end_in_recorded_errors(scan: LabScan) -> None:
    ssh = scan.device("ssh-hostile").address
    ssh_errors = [e for e in scan.result.errors if e.device == ssh]
    assert ssh_errors and {e.kind for e in ssh_errors} <= {"protocol", "connection", "timeout"}
    assert any("packet length" in e.reason for e in ssh_errors)
    snmp = scan.device("snmp-malformed").address
    [agent] = [d for d in scan.result.devices if d.address == snmp]
    assert [s.protocol for s in agent.services] == ["snmp"]
    assert {e.kind for e in scan.result.errors if e.device == snmp} <= {"protocol", "timeout"}


async def test_xml_bombs_and_external_entities_are_refused(scan: LabScan) -> None:
    address = scan.device("xml-bomb").address
    [device] = [d for d in scan.result.devices if d.address == address]
    assert "DTD" in device.upnp.get("location_note", "")
    assert "lollol" not in json.dumps(device.upnp)
    assert scan.lab.outside_connections == 0  # the external entity was never fetched


# ------------------------------------------------------------------------------ scope

async def test_links_outside_the_scope_are_never_contacted(scan: LabScan) -> None:
    assert scan.lab.outside_connections == 0
    escape = scan.device("scope-escape")
    [device] = [d for d in scan.result.devices if d.address == escape.address]
    assert hostile.OUTSIDE in device.upnp["presentationURL"]  # the scanner did see the links
    assert hostile.OUTSIDE in device.upnp.get("services", "")
    assert escape.seen.connections > 0
    outside = scan.device("ssdp-outside")
    [pointer] = [d for d in scan.result.devices if d.address == outside.address]
    assert "outside the scope" in pointer.upnp["location_note"]
    report = (scan.out / REPORT_NAME).read_text()
    assert "is outside the scope; not contacted" in report or \
        "outside the scope" in report


# ------------------------------------------------------------------------------ harm

async def test_a_lockout_after_three_device_is_never_locked(scan: LabScan) -> None:
    seen = scan.device("lockout").seen
    assert seen.logins  # credentials were tried
    assert max(seen.logins.values()) <= LAB_PROFILE.authentication.max_per_account
    assert seen.locked == set()


async def test_per_host_rate_and_concurrency_are_respected(scan: LabScan) -> None:
    seen = scan.device("rate-meter").seen
    assert seen.connections >= 2 * RATE  # enough connections for the rate to matter
    assert 1 <= seen.peak <= PER_HOST
    starts = sorted(seen.starts)
    busiest = max(sum(1 for other in starts if start <= other < start + 1.0)
                  for start in starts)
    assert busiest <= RATE + 1


async def test_raw_print_ports_are_never_sent_a_byte(scan: LabScan) -> None:
    printer = scan.device("print-port")
    assert printer.seen.connections > 0  # the port was found open…
    assert printer.seen.print_bytes == 0  # …and nothing was printed
    assert scan.device("rate-meter").seen.print_bytes == 0


# ------------------------------------------------------------------------------ output

CONTROLS = ("\x1b", "\x00", "\x07", "\u202e")  # ANSI/OSC, NUL, BEL, bidi override
MARKUP = ("<script>", "<img src=x")


def _live(text: str, dangers: tuple[str, ...]) -> list[str]:
    return [danger for danger in dangers if danger in text]


async def test_every_renderer_neutralises_hostile_device_text(
        scan: LabScan, capsys: pytest.CaptureFixture[str]) -> None:
    attack = scan.device("output-attack").address
    [device] = [d for d in scan.result.devices if d.address == attack]
    assert any("<script>" in service.banner for service in device.services)  # it got through
    live = {}
    for renderer in RENDERERS.values():
        text = (scan.out / renderer.filename).read_text(encoding="utf-8")
        # report.json keeps device text whole, as data (the encoder escapes every control
        # character); SARIF message text is plain text by its spec, made visible but not
        # entity-escaped; every other format is read by a person or a tool that acts on markup.
        dangers = {"json": CONTROLS[:3], "sarif": CONTROLS}.get(renderer.name,
                                                                CONTROLS + MARKUP)
        live[renderer.name] = _live(text, dangers)
        if renderer.filename.endswith(".json"):
            json.loads(text)
        if renderer.name == "junit":
            ET.fromstring(text)
        if renderer.name == "csv":
            for row in csv.reader(io.StringIO(text)):
                assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row)
    for line in (scan.out / JOURNAL_NAME).read_text(encoding="utf-8").splitlines():
        live.setdefault("journal", []).extend(_live(line, CONTROLS))
        json.loads(line)
    print_summary(scan.stored, scan.out)
    live["terminal"] = _live(capsys.readouterr().out, CONTROLS + MARKUP[1:])
    assert {name: found for name, found in live.items() if found} == {}


async def test_report_files_are_owner_only(scan: LabScan) -> None:
    assert stat.S_IMODE(scan.out.stat().st_mode) == 0o700
    for path in scan.out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


async def test_a_stale_temporary_or_planted_link_cannot_widen_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    stale = tmp_path / ".report.json.tmp"
    stale.write_text("old")
    stale.chmod(0o644)
    write_private(report, "{}")
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("keep")
    stale.symlink_to(victim)
    write_private(report, "{}")
    assert victim.read_text() == "keep" and report.read_text() == "{}"


# ------------------------------------------------------------------------------ secrets

async def test_found_passwords_are_redacted_unless_asked(scan: LabScan, tmp_path: Path) -> None:
    user, password = hostile.DEFAULT_LOGIN
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    weak = scan.device("weak-password").address
    [finding] = [f for f in scan.result.findings
                 if f.device == weak and f.check_id == "http-default-credentials"]
    for renderer in RENDERERS.values():
        text = (scan.out / renderer.filename).read_text(encoding="utf-8")
        assert token not in text, renderer.name
    assert any(REDACTED in e.data for e in finding.evidence)
    device = await hostile.start("weak-password", "127.133.0.200")
    try:
        profile = fast_profile(checks={"include": ["http-default-credentials"]},
                               authentication={"spacing": 0.0})
        plan = ScanPlan.build(safe_scope(device.address), profile, load_probes()[0],
                              ports={"tcp": [80]}, show_secrets=True)
        shown = await ScanEngine(plan, ResultStore(tmp_path / "shown")).run()
    finally:
        await device.close()
    [revealed] = [f for f in shown.findings if f.check_id == "http-default-credentials"]
    assert any(token in e.data for e in revealed.evidence)


async def test_credential_files_are_only_read(tmp_path: Path, run_scan: ScanRunner) -> None:
    extra = tmp_path / "site-credentials.yaml"
    extra.write_text("description: site list\nentries:\n  - {vendor: site, protocol: http, "
                     "username: admin, password: s1te-secret, source: site}\n")
    extra.chmod(0o400)
    before = (extra.read_bytes(), extra.stat().st_mode, extra.stat().st_mtime_ns)
    device = await hostile.start("lockout", "127.133.0.201")
    try:
        profile = fast_profile(checks={"include": ["http-default-credentials"]},
                               authentication={"spacing": 0.0, "extra_files": [str(extra)]})
        result = await run_scan(device.address, tcp=[80], profile=profile)
    finally:
        await device.close()
    assert result.meta.complete
    assert (extra.read_bytes(), extra.stat().st_mode, extra.stat().st_mtime_ns) == before
    assert "s1te-secret" not in json.dumps(result.model_dump(mode="json"))
    assert max(device.seen.logins.values()) <= 3 and device.seen.locked == set()


async def test_write_reports_gives_every_format_owner_only(scan: LabScan,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "again"
    out.mkdir(mode=0o700)
    for path in write_reports(scan.result, out, list(RENDERERS)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
