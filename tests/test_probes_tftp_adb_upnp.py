"""TFTP, ADB and UPnP IGD probes against in-process fake devices on 127.96.3.0/24.

Safety: every fake binds a 127.96.3.x address (the out-of-scope listeners 127.96.4.x exist only
to prove they are never contacted), no port list includes 2024, and every fake and every wait is
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from probes import adb, tftp, upnp
from probes.adb import AdbExposed
from probes.api import Facts, Observation, Probe, ProbeContext, Target
from probes.registry import LoadedProbe
from probes.tftp import TftpConfigReadable
from probes.upnp import UpnpControlUnauthenticated
from scanner.models import CheckStatus, Confidence, Device, Service, Severity
from scanner.net import Limits, Network, Transcript
from scanner.protocols import tftp as tftp_packets
from scanner.targets import build_scope
from tests import fakes
from tests.helpers import NEVER_TOUCH_PORTS, ScanRunner, fast_profile, safe_scope

BLOCK = "127.96.3.0/24"
OUTSIDE = "127.96.4.1"  # never in any scope here: listeners on it must see zero connections
TEST_LIMITS = Limits(connect_timeout=1.0, read_timeout=1.0, probe_budget=12.0, rate=1000.0)
HOLD = 20.0  # longest any fake here lives or serves one exchange




@dataclass
class Run:
    facts: Facts
    observations: list[Observation]
    transcript: Transcript
    network: Network
    seconds: float


async def run_probe(probe: Probe, target: Target, *, scope: str = BLOCK,
                    limits: Limits = TEST_LIMITS, excluded_ports: tuple[int, ...] = ()) -> Run:
    """collect through a real gate, then the pure evaluate; never longer than the budget."""
    network = Network(build_scope([scope], excluded_ports=(*NEVER_TOUCH_PORTS, *excluded_ports)),
                      limits)
    transcript = Transcript()
    started = time.monotonic()
    try:
        async with asyncio.timeout(limits.probe_budget):
            facts = await probe.collect(ProbeContext(target, network, transcript))
    finally:
        network.close()
    return Run(facts, probe.evaluate(target, facts), transcript, network,
               time.monotonic() - started)


def _target(address: str, port: int, protocol: str, transport: str = "tcp",
            upnp_facts: dict[str, str] | None = None) -> Target:
    service = Service(port=port, transport=transport, protocol=protocol)
    return Target(Device(address=address, services=[service], upnp=upnp_facts or {}), service)


def _evidence(run: Run) -> str:
    return "\n".join(exchange.data for exchange in run.transcript.exchanges)


# ========================================== TFTP ==========================================

TFTP_PORT = 6969  # the fakes' "port 69" (any port works; the probe uses the service's)
SECRET = b"enable secret 5 $1$iotbSECRETHASH"
RUNNING_CONFIG = (b"Building configuration...\n\nCurrent configuration : 1300 bytes\n!\n"
                  + SECRET + b"\n").ljust(1300, b"!")  # three blocks, the last short
EXACT_BLOCKS = bytes(range(256)) * 4  # 1024 bytes: two full blocks, then an empty DATA


@dataclass
class TftpFake:
    """A TFTP server: RRQ on its port, every transfer from a fresh port (a new TID)."""

    host: str
    files: dict[str, bytes] = field(default_factory=dict)
    endless: frozenset[str] = frozenset()  # names that stream full blocks forever
    mode: str = "normal"  # normal | garbage | silent | spoof
    transfer_port: int = 0  # 0: the kernel picks one
    requests: list[str] = field(default_factory=list)
    writes: int = 0  # WRQ seen: must stay 0
    acks: int = 0
    aborts: int = 0
    blocks_sent: int = 0
    transport: asyncio.DatagramTransport | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = TFTP_PORT) -> TftpFake:
        fake = self

        class Listener(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                opcode = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 0
                if opcode == tftp_packets.OP_WRQ:
                    fake.writes += 1
                if opcode != tftp_packets.OP_RRQ or len(fake.requests) >= 100:
                    return
                fake.requests.append(data[2:].split(b"\0", 1)[0].decode("utf-8", "replace"))
                if fake.mode == "silent":
                    return
                task = asyncio.get_running_loop().create_task(
                    fake._transfer(fake.requests[-1], (addr[0], addr[1])))
                fake.tasks.add(task)
                task.add_done_callback(fake.tasks.discard)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Listener, local_addr=(self.host, port))
        self.transport = transport
        return self

    async def _transfer(self, name: str, client: tuple[str, int]) -> None:
        inbox: asyncio.Queue[bytes] = asyncio.Queue(256)

        class Transfer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                if addr[1] == client[1] and not inbox.full():
                    inbox.put_nowait(data)

        served = name in self.files or name in self.endless
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Transfer, local_addr=(self.host, self.transfer_port if served else 0))
        try:
            async with asyncio.timeout(HOLD):
                await self._serve(name, client, transport, inbox)
        except TimeoutError:
            pass
        finally:
            transport.close()

    async def _serve(self, name: str, client: tuple[str, int],
                     transport: asyncio.DatagramTransport, inbox: asyncio.Queue[bytes]) -> None:
        if self.mode == "garbage":
            transport.sendto(b"\x00\x09" + os.urandom(30), client)
            return
        if self.mode == "spoof":  # another host on the LAN races the real server
            async with _udp_socket("127.96.3.250") as other:
                other.sendto(b"\x00\x03\x00\x01" + b"SPOOFED" * 10, client)
            await asyncio.sleep(0.05)
        if name not in self.files and name not in self.endless:
            transport.sendto(tftp_packets.error_packet(1, "File not found"), client)
            return
        content = self.files.get(name, b"")
        for block in range(1, 5000):
            chunk = (b"A" * 512 if name in self.endless
                     else content[(block - 1) * 512: block * 512])
            packet = struct.pack("!HH", tftp_packets.OP_DATA, block & 0xFFFF) + chunk
            for _ in range(3):  # send, and resend twice on silence
                transport.sendto(packet, client)
                self.blocks_sent += 1
                try:
                    reply = await asyncio.wait_for(inbox.get(), 2.0)
                except TimeoutError:
                    continue
                break
            else:
                return
            opcode, number = struct.unpack("!HH", reply[:4])
            if opcode == tftp_packets.OP_ERROR:
                self.aborts += 1
                return
            if opcode == tftp_packets.OP_ACK and number == block:
                self.acks += 1
            if len(chunk) < 512:
                return

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=2)


@contextlib.asynccontextmanager
async def _udp_socket(host: str) -> AsyncIterator[asyncio.DatagramTransport]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(host, 0))
    try:
        yield transport
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def tftp_server(host: str, **options: Any) -> AsyncIterator[TftpFake]:
    fake = await TftpFake(host, **options).start()
    try:
        yield fake
    finally:
        await fake.close()


def _tftp_target(host: str) -> Target:
    return _target(host, TFTP_PORT, "tftp", "udp")


def _file(run: Run, name: str) -> dict[str, Any]:
    return next(entry for entry in run.facts["files"] if entry["name"] == name)


async def test_tftp_reads_a_served_config_from_the_new_port_and_keeps_only_a_hash() -> None:
    host = "127.96.3.1"
    async with tftp_server(host, files={"running-config": RUNNING_CONFIG,
                                        "config.bin": EXACT_BLOCKS}) as fake:
        run = await run_probe(TftpConfigReadable(), _tftp_target(host))
    running = _file(run, "running-config")
    assert running["outcome"] == "readable" and running["complete"]
    assert running["bytes"] == len(RUNNING_CONFIG) == 1300 and running["blocks"] == 3
    assert running["sha256"] == hashlib.sha256(RUNNING_CONFIG).hexdigest()
    exact = _file(run, "config.bin")  # 1024 bytes end with an empty DATA block
    assert exact["bytes"] == 1024 and exact["blocks"] == 3 and exact["complete"]
    assert exact["sha256"] == hashlib.sha256(EXACT_BLOCKS).hexdigest()
    assert _file(run, "startup-config")["outcome"] == "error"
    assert _file(run, "startup-config")["error"] == "file not found"
    assert run.facts["control"]["outcome"] == "error"  # the random name: a TFTP server
    [finding] = run.observations
    assert finding.key == "tftp-config-readable" and finding.confidence is Confidence.CONFIRMED
    assert "running-config" in finding.summary and "config.bin" in finding.summary
    assert hashlib.sha256(RUNNING_CONFIG).hexdigest() in finding.facts["sha256"]
    # every well-known name asked once (plus the control), nothing written, ACKs all sent
    assert len(fake.requests) == len(tftp.CONFIG_FILES) + 1 <= 13
    assert fake.writes == 0 and fake.aborts == 0 and fake.acks == 6
    # the content never reaches facts or evidence; the request and the headers do
    assert b"SECRET" not in repr(run.facts).encode()
    assert "SECRET" not in _evidence(run) and "Building configuration" not in _evidence(run)
    assert "running-config\\x00octet" in _evidence(run)
    assert "content not recorded" in _evidence(run)


async def test_tftp_stops_an_endless_file_at_the_read_limit_and_aborts() -> None:
    host = "127.96.3.2"
    async with tftp_server(host, endless=frozenset({"startup-config"})) as fake:
        run = await run_probe(TftpConfigReadable(), _tftp_target(host))
        await asyncio.sleep(0.1)  # let the fake take the ERROR packet
    endless = _file(run, "startup-config")
    assert endless["outcome"] == "readable" and endless["complete"] is False
    assert endless["bytes"] == tftp.MAX_FILE_BYTES and endless["blocks"] == 128
    assert fake.aborts == 1  # the probe sent an ERROR to end the transfer
    assert fake.blocks_sent <= 128 + 2
    [finding] = run.observations
    assert "stopped at the read limit" in finding.summary
    assert run.seconds < 8


async def test_tftp_server_that_serves_nothing_passes() -> None:
    host = "127.96.3.3"
    async with tftp_server(host) as fake:
        run = await run_probe(TftpConfigReadable(), _tftp_target(host))
    assert run.observations == []
    assert all(entry["outcome"] == "error" for entry in run.facts["files"])
    assert len(fake.requests) == 13


async def test_tftp_ignores_datagrams_from_other_hosts() -> None:
    host = "127.96.3.4"
    async with tftp_server(host, files={"config.xml": RUNNING_CONFIG}, mode="spoof"):
        run = await run_probe(TftpConfigReadable(), _tftp_target(host))
    entry = _file(run, "config.xml")
    assert entry["sha256"] == hashlib.sha256(RUNNING_CONFIG).hexdigest()  # not the spoof
    assert "SPOOFED" not in _evidence(run)


async def test_tftp_garbage_replies_are_no_finding() -> None:
    host = "127.96.3.5"
    async with tftp_server(host, mode="garbage"):
        run = await run_probe(TftpConfigReadable(), _tftp_target(host))
    assert run.observations == []
    assert {entry["outcome"] for entry in run.facts["files"]} == {"unexpected"}


async def test_tftp_silent_server_is_an_error_not_a_hang() -> None:
    host = "127.96.3.6"
    limits = Limits(connect_timeout=0.5, read_timeout=0.3, probe_budget=10.0, rate=1000.0)
    async with tftp_server(host, mode="silent") as fake:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await run_probe(TftpConfigReadable(), _tftp_target(host), limits=limits)
    assert time.monotonic() - started < 4
    # two names (control + one) with at most two resends each, then it gives up
    assert len(fake.requests) <= tftp.SILENT_LIMIT * (1 + tftp.RETRANSMITS)


async def test_tftp_reply_from_an_excluded_port_is_not_answered() -> None:
    host, excluded = "127.96.3.7", 40969
    async with tftp_server(host, files={"running-config": RUNNING_CONFIG},
                           transfer_port=excluded) as fake:
        run = await run_probe(TftpConfigReadable(), _tftp_target(host),
                              excluded_ports=(excluded,))
    assert _file(run, "running-config")["outcome"] == "out-of-scope"
    assert fake.acks == 0 and run.observations == []
    assert any(str(excluded) in refusal for refusal in run.network.scope_refusals)


def test_tftp_evaluate_is_pure_and_discounts_a_server_that_serves_anything() -> None:
    probe, target = TftpConfigReadable(), _tftp_target("127.96.3.1")
    same: dict[str, Any] = {"outcome": "readable", "bytes": 10, "sha256": "ab", "complete": True}
    facts: dict[str, Any] = {"control": {"name": "x", **same},
             "files": [{"name": "config.xml", "same_as_control": True, **same},
                       {"name": "rom-0", "outcome": "readable", "bytes": 5, "sha256": "cd",
                        "complete": True, "family": "ZyNOS"}]}
    [finding] = probe.evaluate(target, facts)
    assert finding.confidence is Confidence.FIRM and "rom-0" in finding.summary
    assert "config.xml" not in finding.facts["files"]
    facts["files"] = facts["files"][:1]
    assert probe.evaluate(target, facts) == []
    assert probe.evaluate(target, {"files": [{"name": "a", "outcome": "error"}]}) == []
    assert probe.summarize(facts)["control"] == "readable"


def test_tftp_packets_and_file_list() -> None:
    assert tftp_packets.read_request("a") == b"\x00\x01a\x00octet\x00"
    assert tftp_packets.looks_like_tftp(tftp_packets.error_packet(1, "File not found"))
    assert tftp_packets.looks_like_tftp(b"\x00\x03\x00\x01hello")
    assert not tftp_packets.looks_like_tftp(b"HTTP/1.1 400 Bad Request\r\n")
    assert not tftp_packets.looks_like_tftp(b"\x00\x05\x00\x63oops\x00")
    assert len(tftp.CONFIG_FILES) <= 12
    assert len({name for name, _ in tftp.CONFIG_FILES}) == len(tftp.CONFIG_FILES)


# =========================================== ADB ==========================================

ADB_BANNER = (b"device::ro.product.name=sabrina;ro.product.model=Chromecast;"
              b"ro.product.device=sabrina;features=shell_v2,cmd,stat_v2\0")


@dataclass
class AdbFake:
    server: fakes.FakeServer
    commands: list[int]


async def adb_device(host: str, mode: str, port: int = 5555) -> AdbFake:
    """accept: CNXN back with a banner | auth: AUTH token | huge: CNXN announcing 4 GiB."""
    commands: list[int] = []

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(8):  # every message the client sends is logged
            head = await reader.readexactly(24)
            command, _, _, length, _, magic = struct.unpack("<6I", head)
            assert magic == command ^ 0xFFFFFFFF
            await reader.readexactly(min(length, 4096))
            commands.append(command)
            if len(commands) > 1:
                continue
            if mode == "accept":
                writer.write(adb.message(adb.A_CNXN, 0x01000000, 4096, ADB_BANNER))
            elif mode == "auth":
                writer.write(adb.message(adb.A_AUTH, 1, 0, os.urandom(20)))
            elif mode == "huge":
                writer.write(struct.pack("<6I", adb.A_CNXN, 0x01000000, 4096, 0xFFFFFFF0, 0,
                                         adb.A_CNXN ^ 0xFFFFFFFF))
                for _ in range(64):
                    writer.write(b"device::" + b"x" * 65536)
                    await writer.drain()
            await writer.drain()

    server = await fakes._serve(host, port, behaviour)
    return AdbFake(server, commands)


async def test_adb_accepting_connections_is_critical_with_the_device_banner() -> None:
    host = "127.96.3.10"
    fake = await adb_device(host, "accept")
    try:
        run = await run_probe(AdbExposed(), _target(host, 5555, "adb"))
    finally:
        await fake.server.close()
    [finding] = run.observations
    assert finding.key == "adb-exposed" and finding.confidence is Confidence.CONFIRMED
    assert finding.facts["model"] == "Chromecast" and finding.facts["product"] == "sabrina"
    assert finding.facts["state"] == "device" and "Chromecast" in finding.summary
    assert fake.commands == [adb.A_CNXN]  # the handshake only: never OPEN, never a shell
    assert AdbExposed.metadata.severity is Severity.CRITICAL


async def test_adb_requiring_authorisation_passes_and_says_so() -> None:
    host = "127.96.3.11"
    fake = await adb_device(host, "auth")
    try:
        run = await run_probe(AdbExposed(), _target(host, 5555, "adb"))
    finally:
        await fake.server.close()
    assert run.observations == [] and run.facts["reply"] == "auth"
    assert "authentication required" in AdbExposed().summarize(run.facts)["adb"]
    assert fake.commands == [adb.A_CNXN]


async def test_adb_huge_banner_is_capped() -> None:
    host = "127.96.3.12"
    fake = await adb_device(host, "huge")
    try:
        run = await run_probe(AdbExposed(), _target(host, 5555, "adb"))
    finally:
        await fake.server.close()
    assert run.facts["announced_length"] == 0xFFFFFFF0
    assert len(run.facts["banner"]) <= 512
    assert run.seconds < 8 and fake.commands == [adb.A_CNXN]


async def test_adb_garbage_is_no_finding() -> None:
    host = "127.96.3.13"
    server = await fakes.garbage(host, 5555)
    try:
        run = await run_probe(AdbExposed(), _target(host, 5555, "adb"))
    finally:
        await server.close()
    assert run.observations == [] and run.facts["reply"] == "not-adb"


@pytest.mark.parametrize(("maker", "error"), [(fakes.silent, TimeoutError),
                                              (fakes.reset, ConnectionError)])
async def test_adb_silent_or_reset_is_an_error_not_a_hang(
        maker: Callable[[str, int], Awaitable[fakes.FakeServer]],
        error: type[Exception]) -> None:
    host = "127.96.3.14"
    server = await maker(host, 5555)
    try:
        with pytest.raises(error):
            await run_probe(AdbExposed(), _target(host, 5555, "adb"))
    finally:
        await server.close()


def test_adb_messages_and_banner_parsing() -> None:
    packet = adb.connect_message()
    command, version, max_data, length, checksum, magic = struct.unpack("<6I", packet[:24])
    assert (command, version, max_data) == (0x4E584E43, 0x01000000, 256 * 1024)
    assert packet[24:] == b"host::\0" and length == 7 and checksum == sum(b"host::\0")
    assert magic == command ^ 0xFFFFFFFF
    assert adb.parse_header(b"\x00" * 24) is None
    assert adb.parse_banner(b"device::")["state"] == "device"
    assert adb.parse_banner(b"recovery:SERIAL1:ro.product.model=X;")["serial"] == "SERIAL1"
    probe, target = AdbExposed(), _target("127.96.3.10", 5555, "adb")
    assert probe.evaluate(target, {"reply": "auth"}) == []
    assert probe.evaluate(target, {"reply": "stls"}) == []
    [finding] = probe.evaluate(target, {"reply": "cnxn", "device": {"state": "device"}})
    assert "the device" in finding.summary


async def test_adb_through_the_engine(run_scan: ScanRunner) -> None:
    host = "127.96.3.15"
    fake = await adb_device(host, "accept")
    try:
        result = await run_scan(host, tcp=[5555],
                                probes=[LoadedProbe(AdbExposed(), "tests 0", False)])
    finally:
        await fake.server.close()
    [finding] = result.findings
    assert finding.check_id == "adb-exposed" and finding.port == 5555
    assert finding.evidence and fake.commands == [adb.A_CNXN]


# ======================================= UPnP IGD =========================================

SCPD_ACTIONS = ("GetConnectionTypeInfo", "GetStatusInfo", "GetExternalIPAddress",
                "AddPortMapping", "DeletePortMapping", "GetGenericPortMappingEntry",
                "GetSpecificPortMappingEntry")
SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"


def description(control: str, scpd: str = "/WANIPCn.xml", url_base: str = "") -> bytes:
    base = f"<URLBase>{url_base}</URLBase>" if url_base else ""
    return f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>{base}
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<friendlyName>Test IGD</friendlyName><manufacturer>Acme</manufacturer><modelName>R1</modelName>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><controlURL>/ctl/L3F</controlURL>
<eventSubURL>/evt/L3F</eventSubURL><SCPDURL>/L3F.xml</SCPDURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>{SERVICE}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>{control}</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>{scpd}</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>""".encode()


def scpd_document() -> bytes:
    actions = "".join(f"<action><name>{name}</name><argumentList/></action>"
                      for name in SCPD_ACTIONS)
    return (f'<?xml version="1.0"?><scpd xmlns="urn:schemas-upnp-org:service-1-0">'
            f"<specVersion><major>1</major><minor>0</minor></specVersion>"
            f"<actionList>{actions}</actionList><serviceStateTable/></scpd>").encode()


SOAP_OK = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
           b'<s:Body><u:GetExternalIPAddressResponse xmlns:u="' + SERVICE.encode() + b'">'
           b"<NewExternalIPAddress>203.0.113.7</NewExternalIPAddress>"
           b"</u:GetExternalIPAddressResponse></s:Body></s:Envelope>")
SOAP_FAULT = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
              b"<s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError"
              b"</faultstring><detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">"
              b"<errorCode>606</errorCode><errorDescription>Action not authorized"
              b"</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>")


@dataclass
class Igd:
    host: str
    port: int
    control: str = "normal"  # normal | unauthorized | fault | html | garbage-description
    control_url: str = "/ctl/IPConn"
    scpd_url: str = "/WANIPCn.xml"
    requests: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def location(self) -> str:
        return f"http://{self.host}:{self.port}/rootDesc.xml"

    @property
    def soap_actions(self) -> list[str]:
        return [action for method, _, action, _ in self.requests if method == "POST"]

    async def start(self) -> Igd:
        async def handle(request: web.Request) -> web.Response:
            body = await request.content.read(65536)
            self.requests.append((request.method, request.path,
                                  request.headers.get("SOAPAction", ""), body))
            if request.path == "/rootDesc.xml":
                if self.control == "garbage-description":
                    return web.Response(body=b"\x00\xff<root><device>" + os.urandom(64))
                return web.Response(body=description(self.control_url, self.scpd_url),
                                    content_type="text/xml")
            if request.path == "/WANIPCn.xml":
                return web.Response(body=scpd_document(), content_type="text/xml")
            if request.path == "/ctl/IPConn" and request.method == "POST":
                if self.control == "unauthorized":
                    return web.Response(status=401, headers={"WWW-Authenticate": "Digest"})
                if self.control == "fault":
                    return web.Response(status=500, body=SOAP_FAULT, content_type="text/xml")
                if self.control == "html":
                    return web.Response(body=b"<html>OK</html>", content_type="text/html")
                return web.Response(body=SOAP_OK, content_type="text/xml")
            return web.Response(status=404)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@contextlib.asynccontextmanager
async def igd(host: str, port: int = 49000, **options: Any) -> AsyncIterator[Igd]:
    device = await Igd(host, port, **options).start()
    try:
        yield device
    finally:
        await device.close()


def _ssdp_target(host: str, location: str, services: str = "") -> Target:
    facts = {"location": location, "server": "Linux UPnP/1.0 miniupnpd/2.1"}
    if services:
        facts["services"] = services
    return _target(host, 1900, "ssdp", "udp", facts)


def _no_write_action_sent(device: Igd) -> None:
    for method, _, action, body in device.requests:
        assert method in ("GET", "POST")
        assert method == "GET" or action == f'"{SERVICE}#GetExternalIPAddress"'
        assert b"AddPortMapping" not in body and b"DeletePortMapping" not in body


async def test_upnp_igd_open_control_is_a_finding_naming_port_mapping() -> None:
    host = "127.96.3.20"
    async with igd(host) as device:
        run = await run_probe(UpnpControlUnauthenticated(),
                              _ssdp_target(host, device.location))
    [finding] = run.observations
    assert finding.key == "upnp-control-unauthenticated"
    assert "AddPortMapping" in finding.summary and "DeletePortMapping" in finding.summary
    assert finding.facts["external_ip"] == "203.0.113.7"
    assert finding.facts["actions"].split(", ") == list(SCPD_ACTIONS)
    assert "AddPortMapping" in finding.facts["write_actions"]
    assert device.soap_actions == [f'"{SERVICE}#GetExternalIPAddress"']  # exactly one call
    _no_write_action_sent(device)
    assert "GetExternalIPAddress" in _evidence(run)
    assert [entry["type"] for entry in run.facts["services"]] == [SERVICE]  # not L3Forwarding


@pytest.mark.parametrize(("mode", "seen"), [("unauthorized", "HTTP 401"), ("fault", "HTTP 500"),
                                            ("html", "HTTP 200")])
async def test_upnp_hardened_or_odd_control_is_no_finding(mode: str, seen: str) -> None:
    host = "127.96.3.21"
    async with igd(host, control=mode) as device:
        run = await run_probe(UpnpControlUnauthenticated(),
                              _ssdp_target(host, device.location))
    assert run.observations == []
    [entry] = run.facts["services"]
    assert entry["control"] == seen and not entry["answered"]
    if mode == "fault":
        assert entry["fault_code"] == "606"
    _no_write_action_sent(device)


async def test_upnp_control_url_outside_the_scope_is_never_contacted() -> None:
    host = "127.96.3.22"
    outside = await fakes.banner(OUTSIDE, 49001, b"HTTP/1.1 200 OK\r\n\r\n")
    try:
        async with igd(host, control_url=f"http://{OUTSIDE}:49001/ctl/IPConn",
                       scpd_url=f"http://{OUTSIDE}:49001/WANIPCn.xml") as device:
            run = await run_probe(UpnpControlUnauthenticated(),
                                  _ssdp_target(host, device.location))
    finally:
        await outside.close()
    assert outside.connections == 0
    [entry] = run.facts["services"]
    assert entry["control"] == "outside the scope; not contacted"
    assert entry["scpd"] == "outside the scope; not contacted"
    assert entry["control_host_differs"] is True
    assert run.observations == [] and len(run.network.scope_refusals) == 2
    assert device.soap_actions == []


async def test_upnp_description_outside_the_scope_is_never_fetched() -> None:
    outside = await fakes.banner(OUTSIDE, 49002, b"HTTP/1.1 200 OK\r\n\r\n")
    try:
        run = await run_probe(UpnpControlUnauthenticated(), _ssdp_target(
            "127.96.3.23", f"http://{OUTSIDE}:49002/rootDesc.xml", f"{SERVICE} /ctl/IPConn"))
    finally:
        await outside.close()
    assert outside.connections == 0 and run.observations == []
    assert run.facts["description"] == "outside the scope; not contacted"
    [entry] = run.facts["services"]  # discovery's summary, resolved against the LOCATION
    assert entry["control"] == "outside the scope; not contacted"


async def test_upnp_garbage_description_falls_back_to_discovery_facts() -> None:
    host = "127.96.3.24"
    async with igd(host, control="garbage-description") as device:
        run = await run_probe(UpnpControlUnauthenticated(), _ssdp_target(
            host, device.location, f"{SERVICE} /ctl/IPConn"))
    assert run.facts["description"].startswith("error: ValueError")
    [finding] = run.observations  # the control URL from discovery still answers
    assert finding.facts["actions"] == "SCPD not read"
    _no_write_action_sent(device)


async def test_upnp_without_a_location_does_nothing() -> None:
    run = await run_probe(UpnpControlUnauthenticated(), _ssdp_target("127.96.3.25", ""))
    assert run.observations == [] and run.facts["services"] == []
    assert run.network.connections_opened == 0


def test_upnp_parsers_and_the_write_guard() -> None:
    location = "http://127.96.3.20:49000/rootDesc.xml"
    [service] = upnp.parse_wan_services(description("/ctl/IPConn"), location)
    assert service.control_url == "http://127.96.3.20:49000/ctl/IPConn"
    assert service.scpd_url == "http://127.96.3.20:49000/WANIPCn.xml"
    [based] = upnp.parse_wan_services(
        description("ctl", url_base="http://127.96.3.20:5000/"), location)
    assert based.control_url == "http://127.96.3.20:5000/ctl"
    assert upnp.parse_actions(scpd_document()) == list(SCPD_ACTIONS)
    assert upnp.parse_soap_reply(SOAP_FAULT)["fault_code"] == "606"
    with pytest.raises(ValueError):
        upnp.soap_request(SERVICE, "AddPortMapping")
    with pytest.raises(ValueError):  # entities are refused, never expanded
        upnp.parse_actions(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><scpd>&a;</scpd>')
    probe, target = UpnpControlUnauthenticated(), _ssdp_target("127.96.3.20", location)
    assert probe.evaluate(target, {"services": [{"answered": False}]}) == []
    [finding] = probe.evaluate(target, {"services": [
        {"answered": True, "type": SERVICE, "control_url": "u", "actions": ["GetStatusInfo"]}]})
    assert "AddPortMapping" not in finding.summary and finding.facts["write_actions"] == \
        "none listed"


async def test_upnp_through_the_engine_from_an_ssdp_answer(run_scan: ScanRunner) -> None:
    host = "127.96.3.26"
    async with igd(host) as device:
        location = device.location.encode()

        class Responder(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if data.startswith(b"M-SEARCH"):
                    self.transport.sendto(  # type: ignore[attr-defined]
                        b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:igd::upnp:"
                        b"rootdevice\r\nLOCATION: " + location + b"\r\nSERVER: miniupnpd"
                        b"\r\n\r\n", addr)

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            Responder, local_addr=(host, 1900))
        try:
            result = await run_scan(host, tcp=[], udp=[1900], profile=fast_profile(),
                                    probes=[LoadedProbe(UpnpControlUnauthenticated(),
                                                        "tests 0", False)])
        finally:
            transport.close()
    [finding] = result.findings
    assert finding.check_id == "upnp-control-unauthenticated" and finding.port == 1900
    assert finding.transport == "udp"
    [run] = result.check_runs
    assert run.status is CheckStatus.FAIL
    _no_write_action_sent(device)


def test_metadata_is_valid_and_ids_match() -> None:
    for probe_class in (TftpConfigReadable, AdbExposed, UpnpControlUnauthenticated):
        assert probe_class.metadata.problems() == []
    assert TftpConfigReadable.metadata.protocols == ("tftp",)
    assert AdbExposed.metadata.protocols == ("adb",)
    assert UpnpControlUnauthenticated.metadata.protocols == ("ssdp",)
    assert safe_scope(BLOCK).allows("127.96.3.1") and not safe_scope(BLOCK).allows(OUTSIDE)
