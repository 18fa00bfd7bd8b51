"""The engine against in-process devices on 127.x: findings, contained failures, politeness,
scope, interruption. Every scan here writes a report that is checked against the schema."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.registry import LoadedProbe, load_probes
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import CheckStatus, Intrusiveness, Severity
from scanner.storage import JOURNAL_NAME, REPORT_NAME, ResultStore
from tests import fakes
from tests.helpers import ScanRunner, fast_profile, safe_scope, validate_report

TELNET_PROMPT = b"\xff\xfb\x01\xff\xfb\x03\r\nBusyBox v1.19 built-in shell\r\nlogin: "


def _meta(check_id: str) -> ProbeMetadata:
    return ProbeMetadata(check_id=check_id, title="A test condition holds", description="t",
                         severity=Severity.MEDIUM, intrusiveness=Intrusiveness.SAFE,
                         protocols=("telnet",), remediation="none")


class Hangs(Probe):
    metadata = _meta("test-hangs")

    async def collect(self, ctx: ProbeContext) -> Facts:
        await asyncio.sleep(3600)
        return {}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return []


class Raises(Hangs):
    metadata = _meta("test-raises")

    async def collect(self, ctx: ProbeContext) -> Facts:
        raise RuntimeError("plugin bug")


class EscapesScope(Hangs):
    metadata = _meta("test-escapes-scope")

    async def collect(self, ctx: ProbeContext) -> Facts:
        await ctx.network.open_tcp("127.99.99.99", 80)
        return {}


class Floods(Hangs):
    metadata = _meta("test-floods")

    async def collect(self, ctx: ProbeContext) -> Facts:
        return {}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return [Observation(summary=f"flood {n}", key=str(n)) for n in range(10_000)]


def _loaded(*probes: Probe) -> list[LoadedProbe]:
    return [LoadedProbe(p, "tests 0", False) for p in probes] + load_probes()[0]


async def test_telnet_device_gives_a_mapped_finding_with_evidence(run_scan: ScanRunner) -> None:
    device = await fakes.banner("127.90.1.1", 2323, TELNET_PROMPT)
    try:
        result = await run_scan("127.90.1.1", tcp=[2323, 8080])
    finally:
        await device.close()
    assert result.meta.complete
    [found] = result.devices
    assert [(s.port, s.protocol) for s in found.services] == [(2323, "telnet")]
    assert sorted(f.check_id for f in result.findings) == [
        "telnet-exposed", "unneeded-interface-exposed", "version-disclosure"]
    [finding] = [f for f in result.findings if f.check_id == "telnet-exposed"]
    assert finding.port == 2323
    assert finding.clauses["iso-iec-27402-2023"] == ["5.2.2", "5.2.5", "5.2.6"]
    received = [e.data for e in finding.evidence if e.direction == "received"]
    assert any("login:" in data for data in received)
    assert any(e.direction == "sent" and "\\xff\\xfe\\x01" in e.data for e in finding.evidence)
    [run] = [r for r in result.check_runs if r.check_id == "telnet-exposed"]
    assert run.status is CheckStatus.FAIL


async def test_misbehaving_devices_end_in_results_not_hangs(run_scan: ScanRunner) -> None:
    starters = [fakes.silent, fakes.garbage, fakes.reset, fakes.endless, fakes.drip]
    servers = [await start(f"127.90.2.{n}", 2323) for n, start in enumerate(starters, 1)]
    try:
        result = await asyncio.wait_for(run_scan("127.90.2.1-5", tcp=[2323]), 60)
    finally:
        for server in servers:
            await server.close()
    assert result.meta.complete
    assert {d.address for d in result.devices} == {f"127.90.2.{n}" for n in range(1, 6)}
    by_address = {d.address: d.services[0] for d in result.devices}
    assert by_address["127.90.2.2"].protocol == "unknown"  # garbage is not mistaken for telnet
    assert len(by_address["127.90.2.4"].banner) <= 255  # endless data was capped
    assert not any(f.device in ("127.90.2.2", "127.90.2.3", "127.90.2.4")
                   for f in result.findings)


async def test_plugin_failures_are_recorded_and_the_scan_goes_on(run_scan: ScanRunner) -> None:
    device = await fakes.banner("127.90.3.1", 2323, TELNET_PROMPT)
    profile = fast_profile(timing={"probe_budget": 1.0})
    try:
        result = await run_scan("127.90.3.1", tcp=[2323], profile=profile,
                                probes=_loaded(Hangs(), Raises(), EscapesScope(), Floods()))
    finally:
        await device.close()
    errors = {e.check_id: e for e in result.errors}
    assert errors["test-hangs"].kind == "timeout"
    assert errors["test-raises"].kind == "plugin"
    assert "RuntimeError: plugin bug" in errors["test-raises"].traceback
    assert errors["test-escapes-scope"].kind == "scope"
    statuses = {r.check_id: r.status for r in result.check_runs}
    assert statuses["test-hangs"] is CheckStatus.ERROR
    assert statuses["telnet-exposed"] is CheckStatus.FAIL  # the built-in still ran
    assert sum(f.check_id == "test-floods" for f in result.findings) == 100  # capped


async def test_per_host_concurrency_is_never_exceeded(run_scan: ScanRunner) -> None:
    active = peak = 0

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:  # hold until the scanner hangs up, so `active` counts its open connections
            await asyncio.wait_for(reader.read(), 5)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            active -= 1
            writer.close()

    ports = list(range(40100, 40106))
    servers = [await asyncio.start_server(hold, "127.90.4.1", port) for port in ports]
    try:
        await run_scan("127.90.4.1", tcp=ports, probes=[],
                       profile=fast_profile(timing={"per_host": 2, "rate": 50.0}))
    finally:
        for server in servers:
            server.close()
    assert 1 <= peak <= 2


async def test_ssdp_location_outside_scope_is_never_fetched(run_scan: ScanRunner) -> None:
    outside = await fakes.banner("127.90.5.2", 49152, b"HTTP/1.1 200 OK\r\n\r\n")

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if data.startswith(b"M-SEARCH"):
                self.transport.sendto(  # type: ignore[attr-defined]
                    b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:1::upnp:rootdevice"
                    b"\r\nLOCATION: http://127.90.5.2:49152/desc.xml\r\nSERVER: evil\r\n\r\n",
                    addr)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Responder,
                                                       local_addr=("127.90.5.1", 1900))
    try:
        result = await run_scan("127.90.5.1", tcp=[], udp=[1900])
    finally:
        transport.close()
        await outside.close()
    assert outside.connections == 0
    [device] = result.devices
    assert "outside the scope" in device.upnp["location_note"]
    assert device.upnp["server"] == "evil"


async def test_interrupted_scan_keeps_partial_results(tmp_path: pytest.TempPathFactory) -> None:
    telnet = await fakes.banner("127.90.6.1", 2323, TELNET_PROMPT)
    silent = [await fakes.silent(f"127.90.6.{n}", 2323) for n in range(2, 6)]
    plan = ScanPlan.build(safe_scope("127.90.6.1-5"), fast_profile(timing={"probe_budget": 30}),
                          load_probes()[0], ports={"tcp": [2323], "udp": []})
    out = tmp_path / "partial"  # type: ignore[operator]
    engine = ScanEngine(plan, ResultStore(out))
    try:
        task = asyncio.create_task(engine.run())
        for _ in range(100):
            await asyncio.sleep(0.1)
            if engine.store.finding_count:
                break
        engine.stop()
        result = await asyncio.wait_for(task, 10)
    finally:
        await telnet.close()
        for server in silent:
            await server.close()
    assert not result.meta.complete and result.meta.interrupted_reason
    assert any(f.device == "127.90.6.1" for f in result.findings)
    document = validate_report(out / REPORT_NAME)
    assert document["meta"]["complete"] is False
    kinds = [json.loads(line)["kind"] for line in (out / JOURNAL_NAME).read_text().splitlines()]
    assert kinds[0] == "meta" and "device" in kinds and "finding" in kinds
    assert kinds[-1] == "end"
    assert oct((out / REPORT_NAME).stat().st_mode & 0o777) == "0o600"


async def test_host_without_open_ports_is_not_a_device(run_scan: ScanRunner) -> None:
    result = await run_scan("127.90.7.1-3", tcp=[40200, 40201])
    assert result.meta.complete and result.devices == [] and result.findings == []


async def test_bad_ssdp_location_keeps_the_device(run_scan: ScanRunner) -> None:
    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n"
                b"LOCATION: http://127.90.8.1:99999/desc.xml\r\n\r\n", addr)

    web = await fakes.banner("127.90.8.1", 8080, b"HTTP/1.0 200 OK\r\n\r\n<title>x</title>")
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Responder, local_addr=("127.90.8.1", 1900))
    try:
        result = await run_scan("127.90.8.1", tcp=[8080], udp=[1900])
    finally:
        transport.close()
        await web.close()
    [device] = result.devices
    assert device.service(8080) is not None
    assert "description not read" in device.upnp["location_note"]


async def test_shell_lookalikes_are_not_telnet(run_scan: ScanRunner) -> None:
    progress = await fakes.banner("127.90.9.1", 8080, b"Loading 100%\r\n")
    xml = await fakes.banner("127.90.9.1", 9999, b'<?xml version="1.0"?><hello/>')
    try:
        result = await run_scan("127.90.9.1", tcp=[8080, 9999])
    finally:
        await progress.close()
        await xml.close()
    [device] = result.devices
    assert {s.protocol for s in device.services} == {"unknown"}
    assert not result.findings


async def test_host_budget_cancellation_leaves_a_trace(run_scan: ScanRunner) -> None:
    device = await fakes.banner("127.90.10.1", 2323, TELNET_PROMPT)
    profile = fast_profile(timing={"probe_budget": 60.0, "host_budget": 3.0})
    try:
        result = await run_scan("127.90.10.1", tcp=[2323], profile=profile,
                                probes=[LoadedProbe(Hangs(), "tests 0", False)])
    finally:
        await device.close()
    assert result.meta.complete
    assert [d.address for d in result.devices] == ["127.90.10.1"]  # kept despite the budget
    kinds = {(e.check_id, e.kind) for e in result.errors}
    assert ("test-hangs", "cancelled") in kinds and ("host-scan", "timeout") in kinds
    [run] = result.check_runs
    assert run.status is CheckStatus.ERROR


async def test_gate_state_does_not_grow_with_the_scope() -> None:
    plan = ScanPlan.build(safe_scope("127.90.11.1-60"), fast_profile(), [],
                          ports={"tcp": [40400], "udp": []})
    engine = ScanEngine(plan, ResultStore(Path(tempfile.mkdtemp()) / "gate"))
    await engine.run()
    await asyncio.sleep(0.1)
    assert engine.network.connections_opened >= 60
    assert engine.network._hosts == {}


def test_plan_validates_overrides_and_ports() -> None:
    from scanner.engine import PlanError

    with pytest.raises(PlanError, match="--per-host"):
        ScanPlan.build(safe_scope("127.0.0.1"), fast_profile(), [], overrides={"per_host": 500})
    with pytest.raises(PlanError, match="every port is excluded"):
        ScanPlan.build(safe_scope("127.0.0.1"), fast_profile(), [],
                       ports={"tcp": [2024], "udp": []})
