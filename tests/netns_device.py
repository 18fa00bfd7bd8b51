"""A fake IoT device for the network-namespace discovery test (tests/test_netns_discovery.py).

Run inside the device namespace only:

    ip netns exec <ns> <venv python> tests/netns_device.py --address 10.231.7.2

It serves, on ``--address``:
  * TCP 80: a minimal HTTP 200 page (so the TCP sweep sees an open port);
  * mDNS/DNS-SD (zeroconf, bound to ``--address`` only): ``Lab Camera._http._tcp.local.`` on
    port 80, server ``labcam.local.``, TXT ``model=CAM-9000``, ``fw=2.1.7``;
  * SSDP on UDP 1900, joined to 239.255.255.250 on ``--address``: it answers an M-SEARCH only
    when its HOST header is the multicast group (``239.255.255.250:1900``), so a reply proves
    the multicast path and not the UPnP 1.1 unicast one;
  * TCP 49152: a UPnP device description (Hikvision DS-2CD2042WD, serial SN123).

Prints ``READY`` on stdout once everything listens; exits on SIGTERM/SIGINT or after
``--lifetime`` seconds (default 60), whichever comes first. Every counter and buffer is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
UPNP_PORT = 49152
MAX_REQUEST_BYTES = 16 * 1024
MAX_SSDP_REPLIES = 200

DESCRIPTION = """<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <device>
    <deviceType>urn:schemas-upnp-org:device:Basic:1</deviceType>
    <friendlyName>Lab Camera</friendlyName>
    <manufacturer>Hikvision</manufacturer>
    <manufacturerURL>http://www.hikvision.com</manufacturerURL>
    <modelName>DS-2CD2042WD</modelName>
    <modelNumber>DS-2CD2042WD-I</modelNumber>
    <serialNumber>SN123</serialNumber>
    <UDN>uuid:11111111-2222-3333-4444-555555555555</UDN>
    <serviceList>
      <service>
        <serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
        <serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>
        <controlURL>/ctl/L3F</controlURL>
        <eventSubURL>/evt/L3F</eventSubURL>
        <SCPDURL>/L3F.xml</SCPDURL>
      </service>
    </serviceList>
  </device>
</root>
"""

INDEX = "<html><head><title>Lab Camera</title></head><body>Lab Camera</body></html>\n"


def log(message: str) -> None:
    sys.stderr.write(f"netns_device: {message}\n")
    sys.stderr.flush()


def http_response(status: str, content_type: str, body: str) -> bytes:
    payload = body.encode()
    head = (f"HTTP/1.1 {status}\r\nServer: LabCam/2.1.7\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


def http_handler(routes: dict[str, tuple[str, str]]):
    """A one-request HTTP/1.1 handler: GET path -> (content type, body), anything else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head[:MAX_REQUEST_BYTES].split(b"\r\n", 1)[0].split()
            path = parts[1].decode("latin-1") if len(parts) >= 2 else "/"
            if path in routes:
                writer.write(http_response("200 OK", *routes[path]))
            else:
                writer.write(http_response("404 Not Found", "text/plain", "not found\n"))
            await asyncio.wait_for(writer.drain(), 5)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, OSError):
            pass  # a bare connect (the TCP sweep) or a reset is fine
        finally:
            writer.close()

    return handle


def headers_of(data: bytes) -> tuple[str, dict[str, str]]:
    text = data[:MAX_REQUEST_BYTES].decode("latin-1", "replace")
    first, *lines = text.split("\r\n")
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return first.strip(), headers


class SsdpResponder(asyncio.DatagramProtocol):
    """Answers multicast M-SEARCHes only (HOST must be the group), unicast to the asker."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.ignored = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        first, headers = headers_of(data)
        if not first.upper().startswith("M-SEARCH"):
            return
        if headers.get("host", "").replace(" ", "") != f"{SSDP_GROUP}:{SSDP_PORT}" \
                or self.answered >= MAX_SSDP_REPLIES:
            self.ignored += 1
            log(f"ignored M-SEARCH from {addr[0]}:{addr[1]} with HOST {headers.get('host')!r}")
            return
        st = headers.get("st", "ssdp:all")
        if st == "ssdp:all":
            st = "upnp:rootdevice"
        reply = "\r\n".join([
            "HTTP/1.1 200 OK",
            "CACHE-CONTROL: max-age=1800",
            "EXT:",
            f"LOCATION: http://{self.address}:{UPNP_PORT}/rootDesc.xml",
            "SERVER: Linux/3.10 UPnP/1.0 LabCam/2.1.7",
            f"ST: {st}",
            f"USN: uuid:11111111-2222-3333-4444-555555555555::{st}",
            "", "",
        ]).encode()
        assert self.transport is not None
        self.transport.sendto(reply, addr)
        self.answered += 1
        log(f"answered multicast M-SEARCH from {addr[0]}:{addr[1]}")


def ssdp_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", SSDP_PORT))
    membership = socket.inet_aton(SSDP_GROUP) + socket.inet_aton(address)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address))
    sock.setblocking(False)
    return sock


async def main(address: str, lifetime: float) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    web = await asyncio.start_server(
        http_handler({"/": ("text/html", INDEX)}), address, 80, reuse_address=True)
    upnp = await asyncio.start_server(
        http_handler({"/rootDesc.xml": ("text/xml", DESCRIPTION)}), address, UPNP_PORT,
        reuse_address=True)
    transport, responder = await loop.create_datagram_endpoint(
        lambda: SsdpResponder(address), sock=ssdp_socket(address))

    zc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = ServiceInfo(
        "_http._tcp.local.", "Lab Camera._http._tcp.local.",
        addresses=[socket.inet_aton(address)], port=80,
        properties={"model": "CAM-9000", "fw": "2.1.7", "path": "/"},
        server="labcam.local.")
    try:
        await asyncio.wait_for(zc.async_register_service(info), 15)
        print("READY", flush=True)
        log(f"serving on {address} for at most {lifetime:.0f} s")
        try:
            await asyncio.wait_for(stop.wait(), lifetime)
        except TimeoutError:
            log("lifetime over; exiting")
    finally:
        with contextlib.suppress(TimeoutError, OSError):  # exiting anyway
            await asyncio.wait_for(zc.async_unregister_all_services(), 5)
        await zc.async_close()
        transport.close()
        web.close()
        upnp.close()
        log(f"ssdp: {responder.answered} answered, {responder.ignored} ignored")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.address, min(args.lifetime, 600.0))))
