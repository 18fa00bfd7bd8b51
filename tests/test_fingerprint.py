"""Service identification on non-standard ports and over UDP, against in-process devices."""

from __future__ import annotations

import asyncio
import os

import pytest

from scanner.discovery import fingerprint
from scanner.lab import Lab, default_devices
from scanner.net import Limits, Network
from tests import fakes
from tests.helpers import ScanRunner, safe_scope

HOST = "127.92.0.1"


def _network(*targets: str) -> Network:
    return Network(safe_scope(*targets), Limits(connect_timeout=1.0, read_timeout=1.5))


async def test_banner_protocols_on_odd_ports() -> None:
    servers = [
        await fakes.banner(HOST, 40501, b"SSH-2.0-dropbear_2019.78\r\n"),
        await fakes.banner(HOST, 40502, b"220 (vsFTPd 3.0.3)\r\n"),
        await fakes.banner(HOST, 40503, b"\xff\xfd\x18\xff\xfd\x20Username: "),
        await fakes.banner(HOST, 40504, b"\x00\x01weird binary banner"),
    ]
    network = _network(HOST)
    try:
        found = {port: await fingerprint.identify_tcp(network, HOST, port)
                 for port in (40501, 40502, 40503, 40504)}
    finally:
        for server in servers:
            await server.close()
    assert (found[40501].protocol, found[40501].product, found[40501].version) == \
        ("ssh", "dropbear", "2019.78")
    assert found[40502].protocol == "ftp" and "vsFTPd" in found[40502].banner
    assert found[40503].protocol == "telnet" and found[40503].details["prompt"] == "login"
    assert found[40504].protocol == "unknown" and "weird binary" in found[40504].banner


async def test_client_first_protocols_and_tls_on_odd_ports() -> None:
    lab = default_devices("127.92.1")
    camera, hub, thermostat = lab[0], lab[2], lab[3]
    async with Lab([camera, hub, thermostat]):
        network = _network("127.92.1.0/24")
        http = await fingerprint.identify_tcp(network, camera.address, 8080)
        rtsp = await fingerprint.identify_tcp(network, camera.address, 8554)
        mqtt = await fingerprint.identify_tcp(network, hub.address, 1883)
        tls = await fingerprint.identify_tcp(network, thermostat.address, 8443)
    assert http.protocol == "http" and http.details["auth"] == "basic"
    assert http.product == "Boa/0.94.13" and http.details["status"] == "401"
    assert rtsp.protocol == "rtsp" and "DESCRIBE" in rtsp.details["methods"]
    assert mqtt.protocol == "mqtt" and mqtt.details["connack"] == "accepted"
    assert tls.protocol == "http" and tls.tls and tls.details["title"] == "Thermostat"
    assert tls.certificate is not None and not tls.certificate.self_signed
    assert tls.certificate.issuer == "CN=iotbaseline demo lab CA"
    assert "127.92.1.14" in tls.certificate.subject_alt_names


async def test_http_on_an_unhinted_port_and_ipv6() -> None:
    async def page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nServer: GoAhead-Webs\r\n\r\n<title>IPC</title>")
        await writer.drain()
        writer.close()

    server4 = await asyncio.start_server(page, HOST, 40510)
    try:
        server6 = await asyncio.start_server(page, "::1", 40511)
    except OSError:
        server4.close()
        pytest.skip("IPv6 loopback is not available here")
    try:
        found4 = await fingerprint.identify_tcp(_network(HOST), HOST, 40510)
        found6 = await fingerprint.identify_tcp(_network("::1"), "::1", 40511)
    finally:
        server4.close()
        server6.close()
    for found in (found4, found6):
        assert found.protocol == "http" and found.product == "GoAhead-Webs"
        assert found.details["title"] == "IPC"


async def test_fragile_ports_get_no_bytes() -> None:
    received = bytearray()

    async def printer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read(100))
        writer.close()

    server = await asyncio.start_server(printer, HOST, 9100)
    try:
        service = await fingerprint.identify_tcp(_network(HOST), HOST, 9100)
        await asyncio.sleep(0.2)
    finally:
        server.close()
    assert service.protocol == "jetdirect" and received == b""


class _UdpDevice(asyncio.DatagramProtocol):
    """Answers SNMP and CoAP requests with canned replies built by the real encoders."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.reply, addr)  # type: ignore[attr-defined]


@pytest.mark.skipif(os.geteuid() != 0, reason="binding UDP port 161 needs root")
async def test_udp_snmp_and_coap_identification(run_scan: ScanRunner) -> None:
    from scapy.asn1.asn1 import ASN1_OID, ASN1_STRING
    from scapy.layers.snmp import SNMP, SNMPresponse, SNMPvarbind

    snmp_reply = bytes(SNMP(community=b"public", PDU=SNMPresponse(id=1, varbindlist=[
        SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"),
                    value=ASN1_STRING(b"Linux DVR 3.10 armv7l"))])))
    coap_reply = b"\x60\x45\x00\x01\xff</sensors/temp>;rt=\"temperature\""
    loop = asyncio.get_running_loop()
    snmp, _ = await loop.create_datagram_endpoint(lambda: _UdpDevice(snmp_reply),
                                                  local_addr=(HOST, 161))
    coap, _ = await loop.create_datagram_endpoint(lambda: _UdpDevice(coap_reply),
                                                  local_addr=(HOST, 5683))
    try:
        result = await run_scan(HOST, tcp=[], udp=[161, 5683, 1900])
    finally:
        snmp.close()
        coap.close()
    [device] = result.devices
    services = {s.port: s for s in device.services}
    assert services[161].protocol == "snmp" and "Linux DVR" in services[161].banner
    assert device.os_guess == "Linux DVR 3.10 armv7l"
    assert services[5683].protocol == "coap" and "/sensors/temp" in \
        services[5683].details["resources"]
    assert 1900 not in services  # nothing answered SSDP



@pytest.mark.skipif(os.geteuid() != 0, reason="binding UDP port 69 needs root")
async def test_tftp_is_identified_although_it_answers_from_a_new_port() -> None:
    import socket

    answered_from: list[int] = []

    class Tftp(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if data[:2] == b"\x00\x01":  # RRQ: answer from a fresh transfer id, as servers do
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as reply:
                    reply.bind((HOST, 0))
                    answered_from.append(reply.getsockname()[1])
                    reply.sendto(b"\x00\x05\x00\x01File not found\x00", addr)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Tftp, local_addr=(HOST, 69))
    try:
        [service] = await fingerprint.identify_all_udp(_network(HOST), HOST, [69])
    finally:
        transport.close()
    assert service.protocol == "tftp" and service.banner == "File not found"
    assert answered_from and answered_from[0] != 69
