"""Unneeded interfaces: the table, UDP/TCP identification of odd IoT services, and the
``unneeded-interface-exposed`` check against in-process fakes on 127.112.0.0/16.

Safety: every fake binds a 127.112.x.y address, no port is 2024, every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.api import Facts, Observation, Probe, ProbeContext, Target
from probes.exposure import UnneededInterfaceExposed
from probes.interfaces import interface_table, load_table
from profiles.devices import DeviceProfile, builtin_device_profiles
from profiles.yamldata import DataFileError
from scanner.discovery import fingerprint
from scanner.models import Confidence, Device, Service, Severity
from scanner.net import Limits, Network, Transcript
from scanner.protocols import iot_tcp, udp
from scanner.targets import build_scope
from tests.helpers import NEVER_TOUCH_PORTS

BLOCK = "127.112.0.0/16"
LIMITS = Limits(connect_timeout=1.0, read_timeout=1.0, probe_budget=10.0, rate=1000.0)
FUZZ = settings(max_examples=150, deadline=None)


@dataclass
class Run:
    facts: Facts
    observations: list[Observation]
    transcript: Transcript


def network(scope: str = BLOCK) -> Network:
    return Network(build_scope([scope], excluded_ports=NEVER_TOUCH_PORTS), LIMITS)


async def run_probe(probe: Probe, target: Target, scope: str = BLOCK) -> Run:
    """collect through a real gate (bounded by the budget), then the pure evaluate."""
    gate, transcript = network(scope), Transcript()
    try:
        async with asyncio.timeout(LIMITS.probe_budget):
            facts = await probe.collect(ProbeContext(target, gate, transcript))
    finally:
        gate.close()
    return Run(facts, probe.evaluate(target, facts), transcript)


def target_for(address: str, service: Service, *others: Service, **device: object) -> Target:
    return Target(Device(address=address, services=[service, *others], **device), service)


def evidence(run: Run) -> str:
    return "\n".join(exchange.data for exchange in run.transcript.exchanges)


class UdpDevice(asyncio.DatagramProtocol):
    """Answers each datagram with ``answer(request)`` (None: silence); counts what it got."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.received: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.received) < 100:
            self.received.append(data)
            reply = self.answer(data)
            if reply is not None:
                self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def udp_device(address: str, port: int,
                     answer: Callable[[bytes], bytes | None]) -> AsyncIterator[UdpDevice]:
    device = UdpDevice(answer)
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: device, local_addr=(address, port))
    except OSError as exc:
        pytest.skip(f"cannot bind UDP {address}:{port}: {exc}")
    try:
        yield device
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def tcp_device(address: str, port: int, reply: Callable[[bytes], bytes | None],
                     greeting: bytes = b"") -> AsyncIterator[list[bytes]]:
    """Sends ``greeting``, then answers each read with ``reply(data)``; records what came."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                if greeting:
                    writer.write(greeting)
                    await writer.drain()
                while data := await reader.read(4096):
                    seen.append(data)
                    answer = reply(data)
                    if answer is None:
                        break
                    writer.write(answer)
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(serve, address, port)
    except OSError as exc:
        pytest.skip(f"cannot bind TCP {address}:{port}: {exc}")
    try:
        yield seen
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


# --- the table ------------------------------------------------------------------------------

def test_table_covers_the_brief_and_is_consistent() -> None:
    table = interface_table()
    ids = {interface.id for interface in table.interfaces}
    assert {"telnet", "ftp", "tftp", "rexec", "rlogin", "rsh", "adb", "snmp-v1v2c", "upnp-ssdp",
            "upnp-igd", "tr069-connection-request", "cisco-smart-install", "mikrotik-winbox",
            "tplink-smarthome-tcp", "tplink-smarthome-udp", "dahua-dvrip", "xmeye-dvrip", "hnap",
            "raw-shell", "ubiquiti-discovery", "bacnet", "modbus", "siemens-s7", "ethernet-ip",
            "dnp3", "niagara-fox", "docker-api", "redis", "memcached", "vnc", "x11", "rpcbind",
            "smb", "ntp-mode6", "ws-discovery", "mdns-unicast", "coap"} <= ids
    for request in table.udp_requests:  # protocol-correct, never an empty datagram
        assert udp.REQUESTS[request.request]("127.112.0.1")
    assert {9100, 9101, 9102, 515, 502, 102} <= set(fingerprint.FRAGILE_PORTS)
    assert 2024 not in {port for i in table.interfaces for port in i.ports}


@pytest.mark.parametrize("change, message", [
    ("request: snmp-v2c-get-sysdescr", "unknown request builder"),
    ("udp_request: nope", "not in udp_requests"),
    ("method: udp", "only they"),
])
def test_table_errors_name_the_problem(change: str, message: str) -> None:
    text = {
        "request: snmp-v2c-get-sysdescr": "udp_requests: [{id: a, protocol: a, ports: [1], "
                                          "request: nope, reply: snmp}]\ntcp_requests: []\n"
                                          "interfaces: []\n",
        "udp_request: nope": "udp_requests: []\ntcp_requests: []\ninterfaces:\n"
                            "  - {id: a, name: abc, transport: udp, ports: [1], severity: low,"
                            " why: twenty characters at least, references: [x],"
                            " confirm: {method: udp, udp_request: nope}}\n",
        "method: udp": "udp_requests: []\ntcp_requests: []\ninterfaces:\n"
                       "  - {id: a, name: abc, transport: tcp, ports: [1], severity: low,"
                       " why: twenty characters at least, references: [x],"
                       " confirm: {method: udp, udp_request: a}}\n",
    }[change]
    with pytest.raises(DataFileError, match=message):
        load_table(text, "mine.yaml")


# --- recognisers: known replies parse, hostile ones never raise -----------------------------

def _bacnet_i_am(instance: int) -> bytes:
    apdu = bytes((0x10, 0x00, 0xC4)) + struct.pack("!I", (8 << 22) | instance) + \
        bytes((0x22, 0x01, 0xE0, 0x91, 0x00, 0x21, 0x0F))
    npdu = bytes((0x01, 0x00))
    return bytes((0x81, 0x0A)) + struct.pack("!H", 4 + len(npdu) + len(apdu)) + npdu + apdu


def _ubiquiti_reply() -> bytes:
    fields = b"".join(bytes((kind,)) + struct.pack("!H", len(value)) + value for kind, value in
                      ((0x0B, b"nanostation"), (0x0C, b"XM"), (0x03, b"XM.ar7240.v6.1.7")))
    return b"\x01\x00" + struct.pack("!H", len(fields)) + fields


def _tplink_plain() -> bytes:
    return json.dumps({"system": {"get_sysinfo": {"alias": "Kettle", "model": "HS110(EU)",
                                                  "sw_ver": "1.2.5"}}}).encode()


def _mdns_reply(request: bytes) -> bytes:
    question = request[12:]
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 12, 1, 10, 13) + b"\x05_http\x04_tcp\xc0\x23"
    return request[:2] + struct.pack("!HHHHH", 0x8400, 1, 1, 0, 0) + question + answer


WSD_REPLY = (b'<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
             b' xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><s:Body>'
             b"<d:ProbeMatches><d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types>"
             b"<d:XAddrs>http://127.112.0.9/onvif/device_service</d:XAddrs></d:ProbeMatch>"
             b"</d:ProbeMatches></s:Body></s:Envelope>")
NTP_SERVER = bytes((0x24, 2)) + bytes(46)
NTP_READVAR_REPLY = struct.pack("!BBHHHHH", 0x16, 0x82, 1, 0, 0, 0, 23) + \
    b"version=\"ntpd 4.2.8p15\""


def recognised(name: str, data: bytes) -> dict[str, str]:
    found = udp.RECOGNISERS[name](data)
    assert found is not None, f"{name} did not recognise {data[:40]!r}"
    return found


def test_known_replies_are_recognised() -> None:
    recognise = udp.RECOGNISERS
    assert recognise["bacnet"](_bacnet_i_am(4194)) == {"apdu_type": "1",
                                                      "device_instance": "4194"}
    assert recognise["ubiquiti"](_ubiquiti_reply()) == {
        "hostname": "nanostation", "platform": "XM", "firmware": "XM.ar7240.v6.1.7"}
    assert recognised("tplink", udp.tplink_encrypt(_tplink_plain()))["model"] == "HS110(EU)"
    assert recognise["ntp-server"](NTP_SERVER) == {"version": "4", "stratum": "2"}
    assert recognised("ntp-control", NTP_READVAR_REPLY)["variables"] == 'version="ntpd 4.2.8p15"'
    query = udp.mdns_services_query("127.112.0.1")
    assert udp.dns_name(query, 12)[0] == udp.SERVICES_QUERY_NAME
    assert recognise["mdns"](_mdns_reply(query)) == {"records": "1",
                                                    "services": "_http._tcp.local"}
    assert recognise["mdns"](query) is None  # a query is not an answer
    assert "NetworkVideoTransmitter" in recognised("wsd", WSD_REPLY)["types"]
    assert recognise["ntp-server"](udp.ntp_client("x")) is None  # our own request is not one
    assert udp.bacnet_who_is("x") == bytes.fromhex("810a000801001008")


def test_hostile_replies_are_bounded() -> None:
    loop = bytearray(_mdns_reply(udp.mdns_services_query("x")))
    loop[-2:] = b"\xc0" + bytes((len(loop) - 2,))  # a pointer to itself: no endless loop
    assert udp.RECOGNISERS["mdns"](bytes(loop)) is None
    huge_ubiquiti = b"\x01\x00\xff\xff" + b"\x0b\xf0\x00" + b"A" * 70000
    found = udp.RECOGNISERS["ubiquiti"](huge_ubiquiti)
    assert found is not None and len(found["hostname"]) == 128
    assert udp.RECOGNISERS["bacnet"](_bacnet_i_am(1)[:-3]) is None  # truncated: wrong length
    amplified = b"<x:ProbeMatch xmlns:x='u'>" + b"<x:Types>t</x:Types>" * 5000 + b"</x:ProbeMatch>"
    assert len(recognised("wsd", amplified)["types"]) <= 512
    assert udp.RECOGNISERS["wsd"](b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>') is None
    assert iot_tcp.PROTOCOLS["tplink"].recognise(b"\xff\xff\xff\xff" + b"x" * 10) is None


@FUZZ
@given(st.binary(max_size=2048))
def test_recognisers_never_raise(data: bytes) -> None:
    for recognise in udp.RECOGNISERS.values():
        found = recognise(data)
        assert found is None or all(len(value) <= 1024 for value in found.values())
    for protocol in iot_tcp.PROTOCOLS.values():
        protocol.complete(data)
        protocol.recognise(data)


# --- identification over UDP (table-driven) and of binary TCP services --------------------

UDP_ANSWERS: dict[int, tuple[str, Callable[[bytes], bytes | None]]] = {
    47808: ("bacnet", lambda request: _bacnet_i_am(77) if request[:2] == b"\x81\x0a" else None),
    10001: ("ubiquiti-discovery", lambda request: _ubiquiti_reply()
            if request == b"\x01\x00\x00\x00" else None),
    9999: ("tplink-shp", lambda request: udp.tplink_encrypt(_tplink_plain())
           if udp.tplink_decrypt(request) == udp.TPLINK_SYSINFO else None),
    3702: ("wsd", lambda request: WSD_REPLY if b"Probe" in request else None),
    5353: ("mdns", lambda request: _mdns_reply(request) if len(request) > 12 else None),
    123: ("ntp", lambda request: NTP_SERVER if request[0] & 7 == 3 else None),
    1900: ("ssdp", lambda request: b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:1::"
           b"upnp:rootdevice\r\nLOCATION: http://127.112.1.1:49152/d.xml\r\nSERVER: Linux "
           b"UPnP/1.0 miniupnpd/2.1\r\n\r\n" if request.startswith(b"M-SEARCH") else None),
}


@pytest.mark.parametrize("port", sorted(UDP_ANSWERS))
async def test_udp_services_are_identified_and_garbage_is_not(port: int) -> None:
    protocol, answer = UDP_ANSWERS[port]
    async with udp_device("127.112.1.1", port, answer) as device:
        found = await fingerprint.identify_udp(network(), "127.112.1.1", port)
    assert found is not None and found.protocol == protocol and found.transport == "udp"
    assert device.received and all(device.received)  # never an empty datagram
    async with udp_device("127.112.1.2", port, lambda request: b"\x00\xffgarbage" * 300):
        assert await fingerprint.identify_udp(network(), "127.112.1.2", port) is None


SMART_INSTALL = iot_tcp.SMART_INSTALL_REPLY


def _tplink_tcp(request: bytes) -> bytes:
    cipher = udp.tplink_encrypt(_tplink_plain())
    return struct.pack("!I", len(cipher)) + cipher


async def test_binary_tcp_services_are_identified() -> None:
    async with tcp_device("127.112.2.1", 9999, _tplink_tcp), \
            tcp_device("127.112.2.1", 4786, lambda request: SMART_INSTALL), \
            tcp_device("127.112.2.1", 6379, lambda request: b"+PONG\r\n"), \
            tcp_device("127.112.2.2", 6379, lambda request: b"-NOAUTH Authentication "
                                                               b"required.\r\n"), \
            tcp_device("127.112.2.1", 5900, lambda request: None, b"RFB 003.008\n"):
        gate = network()
        tplink = await fingerprint.identify_tcp(gate, "127.112.2.1", 9999)
        smart = await fingerprint.identify_tcp(gate, "127.112.2.1", 4786)
        redis_open = await fingerprint.identify_tcp(gate, "127.112.2.1", 6379)
        redis_auth = await fingerprint.identify_tcp(gate, "127.112.2.2", 6379)
        vnc = await fingerprint.identify_tcp(gate, "127.112.2.1", 5900)
    assert (tplink.protocol, tplink.details["model"]) == ("tplink-shp", "HS110(EU)")
    assert smart.protocol == "smart-install"
    assert redis_open.details == {"authentication": "none (PING answered)"}
    assert redis_auth.protocol == "redis" and redis_auth.details["authentication"] == "required"
    assert vnc.protocol == "vnc" and vnc.details["rfb_version"] == "003.008"


async def test_industrial_ports_get_no_payload_and_shells_are_told_from_logins() -> None:
    async with tcp_device("127.112.3.1", 502, lambda request: None) as seen, \
            tcp_device("127.112.3.1", 9527, lambda request: None, b"\r\n~ # "), \
            tcp_device("127.112.3.2", 9527, lambda request: None, b"DVR login: "):
        gate = network()
        modbus = await fingerprint.identify_tcp(gate, "127.112.3.1", 502)
        shell = await fingerprint.identify_tcp(gate, "127.112.3.1", 9527)
        login = await fingerprint.identify_tcp(gate, "127.112.3.2", 9527)
        await asyncio.sleep(0.1)
    assert modbus.protocol == "modbus" and modbus.details["guess"] == "port number only"
    assert seen == []  # not one byte
    assert shell.protocol == "shell"
    assert login.protocol == "telnet" and login.details["prompt"] == "login"


# --- the check ------------------------------------------------------------------------------

async def test_exposure_reports_a_debug_shell_and_passes_a_login_prompt() -> None:
    probe = UnneededInterfaceExposed(profiles=())
    async with tcp_device("127.112.4.1", 9527, lambda request: None, b"\r\n~ # "), \
            tcp_device("127.112.4.2", 9527, lambda request: None, b"DVR login: "):
        bad = target_for("127.112.4.1", Service(port=9527, transport="tcp", protocol="shell"))
        hardened = target_for("127.112.4.2",
                              Service(port=9527, transport="tcp", protocol="unknown"))
        assert probe.applies_to(bad) and probe.applies_to(hardened)
        bad_run, good_run = await run_probe(probe, bad), await run_probe(probe, hardened)
    [finding] = bad_run.observations
    assert finding.key == "raw-shell" and finding.severity == Severity.CRITICAL
    assert "~ # " in evidence(bad_run) and finding.confidence == Confidence.CONFIRMED
    assert good_run.observations == []
    assert good_run.facts["interfaces"]["raw-shell"]["confirmed"] is False


async def test_exposure_connect_only_sends_nothing() -> None:
    probe = UnneededInterfaceExposed(profiles=())
    async with tcp_device("127.112.4.3", 102, lambda request: None) as seen:
        service = Service(port=102, transport="tcp", protocol="s7comm",
                          details={"guess": "port number only"})
        run = await run_probe(probe, target_for("127.112.4.3", service))
        await asyncio.sleep(0.1)
    [finding] = run.observations
    assert finding.key == "siemens-s7" and finding.confidence == Confidence.FIRM
    assert seen == [] and "connected" in evidence(run)
    assert all(e.direction != "sent" for e in run.transcript.exchanges)


async def test_exposure_udp_evidence_and_a_silent_service_passes() -> None:
    probe = UnneededInterfaceExposed(profiles=())
    service = Service(port=10001, transport="udp", protocol="ubiquiti-discovery")
    async with udp_device("127.112.5.1", 10001, UDP_ANSWERS[10001][1]), \
            udp_device("127.112.5.2", 10001, lambda request: None):
        run = await run_probe(probe, target_for("127.112.5.1", service))
        silent = await run_probe(probe, target_for("127.112.5.2", service))
    [finding] = run.observations
    assert finding.key == "ubiquiti-discovery" and "hostname=nanostation" in \
        finding.facts["evidence"]
    directions = [e.direction for e in run.transcript.exchanges]
    assert "sent" in directions and "received" in directions
    assert silent.observations == []


def _profile(expected: list[dict[str, object]]) -> DeviceProfile:
    return DeviceProfile.model_validate({
        "id": "test-radio", "vendor": "Test", "match": {"terms": ["testradio"]},
        "expected_services": expected})


async def test_expected_services_suppress_only_what_they_declare() -> None:
    service = Service(port=10001, transport="udp", protocol="ubiquiti-discovery")
    declared = _profile([{"transport": "udp", "port": 10001, "protocol": "ubiquiti-discovery",
                          "reason": "vendor discovery tool"}])
    other = _profile([{"transport": "tcp", "port": 22, "protocol": "ssh",
                       "reason": "administration"}])
    async with udp_device("127.112.5.3", 10001, UDP_ANSWERS[10001][1]):
        target = target_for("127.112.5.3", service, hostnames=["testradio-1"])
        suppressed = await run_probe(UnneededInterfaceExposed([declared]), target)
        reported = await run_probe(UnneededInterfaceExposed([other]), target)
        unmatched = await run_probe(UnneededInterfaceExposed([declared]),
                                    target_for("127.112.5.3", service))
    assert suppressed.observations == []
    [finding] = reported.observations
    assert finding.facts["device_profile"] == "test-radio"
    assert "beyond the services device profile test-radio declares" in finding.summary
    [plain] = unmatched.observations
    assert plain.facts["device_profile"] == "none matched"


def test_builtin_profile_declares_ubiquiti_discovery() -> None:
    [airos] = [p for p in builtin_device_profiles() if p.id == "ubiquiti-airos"]
    service = Service(port=10001, transport="udp", protocol="ubiquiti-discovery")
    assert any(expected.covers(service) for expected in airos.expected_services)
    with pytest.raises(ValueError, match="port, a protocol or both"):
        _profile([{"transport": "tcp", "reason": "nothing"}])


async def test_exposure_http_entries_need_their_marker() -> None:
    async def hnap(request: bytes) -> bytes:
        return b""

    def answer(body: bytes) -> Callable[[bytes], bytes | None]:
        return lambda request: b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body), body)

    probe = UnneededInterfaceExposed(profiles=())
    soap = b"<SOAPActions><Action>GetDeviceSettings</Action></SOAPActions>"
    async with tcp_device("127.112.6.1", 8080, answer(soap)), \
            tcp_device("127.112.6.2", 8080, answer(b"<html>router</html>")):
        service = Service(port=8080, transport="tcp", protocol="http")
        started = time.monotonic()
        exposed = await run_probe(probe, target_for("127.112.6.1", service))
        plain = await run_probe(probe, target_for("127.112.6.2", service))
    assert [o.key for o in exposed.observations] == ["hnap"]
    assert "GET /HNAP1/" in evidence(exposed) and plain.observations == []
    assert time.monotonic() - started < 10
