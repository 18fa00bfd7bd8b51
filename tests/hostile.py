"""A lab of hostile IoT devices: each kind attacks one promise the scanner makes.

Time (never answers, drips, negotiates forever), memory (streams without end, claims 2 GB bodies
or 256 MB MQTT packets), parsers (malformed BER, SSH lengths, XML bombs), scope (links to an
out-of-scope listener), output (banners that attack HTML, terminals, CSV…), and harm (an
account that locks after three failures, a meter of connection rate and concurrency, a raw
print port that records every byte). Every device counts what it saw so a test can assert the
scanner's behaviour from the device's side.

Loopback only: devices bind 127.133.x.y, the out-of-scope listener 127.134.x.y. Every
connection is bounded by ``fakes.HOLD``; every stream stops when the client goes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests import fakes

OUTSIDE = "127.134.0.1"  # the out-of-scope listener every scope-escaping link points at
OUTSIDE_PORTS = (80, 49152)
TCP_PORTS = [22, 23, 80, 443, 1883, 8080, 9100, 49152]  # what a lab scan sweeps
UDP_PORTS = [161, 1900]
LOCKOUT_AFTER = 3  # failed logins per account before the lockout device locks it
DEFAULT_LOGIN = ("admin", "password")  # what the weak-password device accepts (a store entry)
CHUNK = 64 * 1024

# Text that attacks every output format at once: HTML/JS, ANSI colour and OSC title escapes,
# NUL, invalid UTF-8 (as bytes on the wire), a bidi override and a CSV formula.
ATTACK = (b"<script>alert('xss')</script><img src=x onerror=alert(1)>\x1b]0;pwned\x07"
          b"\x1b[2J\x1b[31mRED\x1b[0m \x00NUL \xff\xfe\xc3 \xe2\x80\xaeevil =cmd|' /C calc'!A0")
HUGE_ATTACK = ATTACK + b"A" * 100_000


@dataclass
class Seen:
    """What a device observed of the scanner."""

    connections: int = 0
    print_bytes: int = 0  # bytes that reached the raw print port
    streamed: list[int] = field(default_factory=list)  # bytes each endless stream got out
    logins: Counter[str] = field(default_factory=Counter)  # login attempts per account
    locked: set[str] = field(default_factory=set)  # accounts that got an attempt while locked
    starts: list[float] = field(default_factory=list)  # connection start times (rate meter)
    active: int = 0
    peak: int = 0  # most connections open at once


@dataclass
class Device:
    kind: str
    address: str
    seen: Seen = field(default_factory=Seen)
    servers: list[fakes.FakeServer] = field(default_factory=list)
    datagrams: list[asyncio.BaseTransport] = field(default_factory=list)

    async def close(self) -> None:
        for transport in self.datagrams:
            transport.close()
        for server in self.servers:
            await server.close()


# ------------------------------------------------------------------------------ building blocks

async def _read_head(reader: asyncio.StreamReader, limit: int = 16384) -> bytes:
    """An HTTP request head, at most ``limit`` bytes (b"" if the client sent none)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = await reader.read(4096)
        if not chunk:
            break
        data += chunk
    return data


async def _stream(device: Device, writer: asyncio.StreamWriter, chunk: bytes) -> None:
    """Send ``chunk`` for ever; drain() blocks on a full window and raises once the client left.
    What got out is recorded: a scanner that stops reading stops the stream."""
    index = len(device.seen.streamed)
    device.seen.streamed.append(0)
    while not writer.is_closing():
        writer.write(chunk)
        await writer.drain()
        device.seen.streamed[index] += len(chunk)


def _http(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            f"{headers}\r\n").encode() + body


Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


async def _web(device: Device, port: int, handle: Handler) -> None:
    """An HTTP server on ``port`` whose every request goes to ``handle(head, writer)``."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        head = await _read_head(reader)
        if head:
            await handle(head, writer)
            await writer.drain()

    device.servers.append(await fakes._serve(device.address, port, behaviour))


async def _udp(device: Device, port: int, answer: Callable[[bytes], list[bytes]]) -> None:
    """A UDP responder: every datagram gets the datagrams ``answer`` returns."""

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            for reply in answer(data):
                self.transport.sendto(reply, addr)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Responder, local_addr=(device.address, port))
    device.datagrams.append(transport)


def _ssdp(device: Device, location: str) -> Callable[[bytes], list[bytes]]:
    def answer(data: bytes) -> list[bytes]:
        if not data.startswith(b"M-SEARCH"):
            return []
        return [(f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: upnp:rootdevice\r\n"
                 f"USN: uuid:hostile-{device.address}::upnp:rootdevice\r\n"
                 f"LOCATION: {location}\r\nSERVER: Linux/2.6 UPnP/1.0 hostile/1\r\n\r\n"
                 ).encode()]
    return answer


# ------------------------------------------------------------------------------ time

async def silent(device: Device) -> None:
    """Accepts on the telnet and web ports and never says a word."""
    device.servers += [await fakes.silent(device.address, port) for port in (23, 80)]


async def drip(device: Device) -> None:
    """One byte every 2 s on the telnet and web ports: timeouts must be totals."""
    device.servers += [await fakes.drip(device.address, port) for port in (23, 80)]


async def iac_storm(device: Device) -> None:
    """Telnet that negotiates for ever: a new option every 20 ms, more for every reply."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        option = 0
        while not writer.is_closing():
            option = (option + 1) % 40
            writer.write(bytes((0xFF, 0xFD, option, 0xFF, 0xFB, option)))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1024), 0.02)

    device.servers.append(await fakes._serve(device.address, 23, behaviour))


HELLO_REQUEST = b"\x16\x03\x03\x00\x04\x00\x00\x00\x00"  # TLS HelloRequest: "renegotiate"


async def tls_renegotiation(device: Device) -> None:
    """TLS that never finishes a handshake: HelloRequest after HelloRequest, every 20 ms."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        await reader.read(4096)
        while not writer.is_closing():
            writer.write(HELLO_REQUEST)
            await writer.drain()
            await asyncio.sleep(0.02)

    device.servers.append(await fakes._serve(device.address, 443, behaviour))


# ------------------------------------------------------------------------------ memory

async def endless_http(device: Device) -> None:
    """A web page that never ends (chunked, as fast as the scanner reads)."""

    async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: text/html\r\n\r\n1c\r\n<html><title>endless</title>\r\n")
        await _stream(device, writer, b"%x\r\n%s\r\n" % (CHUNK, b"A" * CHUNK))

    await _web(device, 80, handle)


async def huge_length_http(device: Device) -> None:
    """Claims a 2 GB body (and streams it); on 8080 headers never end."""

    async def claims(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n"
                     b"Content-Type: application/json\r\n\r\n{\"fw\": \"")
        await _stream(device, writer, b"9" * CHUNK)

    async def endless_headers(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await _stream(device, writer, b"X-Padding: " + b"a" * 1000 + b"\r\n")

    await _web(device, 80, claims)
    await _web(device, 8080, endless_headers)


async def mqtt_giant(device: Device) -> None:
    """Accepts anyone, then sends a PUBLISH that claims 256 MB and streams it."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        if not await reader.read(1024):
            return
        writer.write(b"\x20\x02\x00\x00")  # CONNACK: accepted
        await writer.drain()
        await reader.read(1024)  # SUBSCRIBE, or DISCONNECT
        writer.write(b"\x90\x03\x00\x01\x00" + b"\x30\xff\xff\xff\x7f\x00\x01t")
        await _stream(device, writer, b"\x00" * CHUNK)

    device.servers.append(await fakes._serve(device.address, 1883, behaviour))


# ------------------------------------------------------------------------------ parsers

async def ssh_hostile(device: Device) -> None:
    """A valid SSH banner, then a packet claiming 4 GB, then garbage for ever."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        writer.write(b"SSH-2.0-OpenSSH_7.4\r\n\xff\xff\xff\xf0\x04")
        await _stream(device, writer, b"\xfe" * 4096)

    device.servers.append(await fakes._serve(device.address, 22, behaviour))


SYS_DESCR_REPLY = (b"\x30\x29\x02\x01\x01\x04\x06public\xa2\x1c\x02\x02\x16\x2e\x02\x01\x00"
                   b"\x02\x01\x00\x30\x10\x30\x0e\x06\x08\x2b\x06\x01\x02\x01\x01\x01\x00"
                   b"\x04\x02hi")
MALFORMED_BER = (
    b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01",  # a SEQUENCE claiming 2 GB
    b"\x30\x80" * 2000,  # deep indefinite-length nesting
    SYS_DESCR_REPLY[:-3] + b"\x84\x7f\xff\xff\xffhi",  # the value claims 2 GB
    SYS_DESCR_REPLY[:-4] + b"\xff",  # cut inside a varbind
)


async def snmp_malformed(device: Device) -> None:
    """An SNMP agent that answers its first request properly (so it is identified) and every
    later one with malformed BER, in turn."""
    answered = Counter[str]()

    def answer(data: bytes) -> list[bytes]:
        answered["requests"] += 1
        if answered["requests"] == 1:
            return [SYS_DESCR_REPLY]
        return [MALFORMED_BER[answered["requests"] % len(MALFORMED_BER)]]

    await _udp(device, 161, answer)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
               for n in range(1, 10))
    + b'<!ENTITY xxe SYSTEM "http://127.134.0.1/xxe">]>'
    b'<root xmlns="urn:schemas-upnp-org:device-1-0"><device><friendlyName>&lol9;&xxe;'
    b"</friendlyName></device></root>")


async def xml_bomb(device: Device) -> None:
    """SSDP names a description that is a billion-laughs bomb with an external entity."""
    await _udp(device, 1900, _ssdp(device, f"http://{device.address}:49152/desc.xml"))

    async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_http("200 OK", BILLION_LAUGHS, "Content-Type: text/xml\r\n"))

    await _web(device, 49152, handle)


# ------------------------------------------------------------------------------ scope

def _escaping_description() -> bytes:
    outside = f"http://{OUTSIDE}:49152"
    return (
        '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>'
        "<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>"
        "<friendlyName>escape</friendlyName><manufacturer>Hostile</manufacturer>"
        f"<presentationURL>http://{OUTSIDE}/</presentationURL>"
        f"<modelURL>http://{OUTSIDE}/firmware/update.bin</modelURL><serviceList><service>"
        "<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
        f"<controlURL>{outside}/ctl/IPConn</controlURL><SCPDURL>{outside}/scpd.xml</SCPDURL>"
        "</service></serviceList></device></root>").encode()


async def scope_escape(device: Device) -> None:
    """Every link points outside the scope: a redirect, the UPnP presentation and control URLs,
    an update URL in its JSON info API (Shelly's /shelly) and in its UPnP description."""
    await _udp(device, 1900, _ssdp(device, f"http://{device.address}:49152/desc.xml"))
    description = _escaping_description()
    info = json.dumps({"type": "SHSW-1", "fw": "20230913-112003/v1.14.0",
                       "update_url": f"http://{OUTSIDE}/firmware/update.bin",
                       "ota": f"http://{OUTSIDE}:49152/ota/firmware.zip"}).encode()

    async def upnp(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_http("200 OK", description, "Content-Type: text/xml\r\n"))

    async def web(head: bytes, writer: asyncio.StreamWriter) -> None:
        if head.startswith(b"GET /shelly "):
            writer.write(_http("200 OK", info, "Content-Type: application/json\r\n"))
        else:
            writer.write(_http("302 Found", b"", f"Location: http://{OUTSIDE}/login\r\n"))

    await _web(device, 49152, upnp)
    await _web(device, 80, web)


async def ssdp_outside(device: Device) -> None:
    """SSDP whose LOCATION itself is outside the scope (and a web page to make it a device)."""
    await _udp(device, 1900, _ssdp(device, f"http://{OUTSIDE}:49152/desc.xml"))

    async def web(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_http("301 Moved Permanently", b"", f"Location: https://{OUTSIDE}/\r\n"))

    await _web(device, 80, web)


# ------------------------------------------------------------------------------ output

async def output_attack(device: Device) -> None:
    """Device strings that attack every report format: the telnet banner, the web title and
    Server header, an SSH version string."""
    device.servers.append(await fakes.banner(
        device.address, 23, b"\xff\xfb\x01" + HUGE_ATTACK + b"\r\nlogin: "))
    device.servers.append(await fakes.banner(
        device.address, 22, b"SSH-2.0-" + ATTACK.replace(b"\r", b"").replace(b"\n", b"")[:200]
        + b"\r\n"))
    title = b"<html><title>" + ATTACK + b"</title>" + ATTACK + b"</html>"

    async def web(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_http("200 OK", title, "Server: =HYPERLINK(\"http://x\")"
                           + ATTACK.decode("latin-1") + "\r\n"))

    await _web(device, 80, web)


# ------------------------------------------------------------------------------ harm

def _basic_user(head: bytes) -> tuple[str, str] | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization" and value.strip().lower().startswith(b"basic"):
            raw = base64.b64decode(value.strip()[5:].strip() + b"==", validate=False)
            user, _, password = raw.decode("latin-1").partition(":")
            return user, password
    return None


def _basic_login(device: Device, accepts: tuple[str, str] | None) -> Handler:
    """Basic auth that counts attempts per account and locks one after LOCKOUT_AFTER failures;
    ``accepts`` is the one login it takes (None: none)."""

    async def handle(head: bytes, writer: asyncio.StreamWriter) -> None:
        login = _basic_user(head)
        if login is None:
            writer.write(_http("401 Unauthorized", b"login",
                               'WWW-Authenticate: Basic realm="hostile"\r\n'))
            return
        user = login[0]
        if device.seen.logins[user] >= LOCKOUT_AFTER:
            device.seen.locked.add(user)
        device.seen.logins[user] += 1
        if login == accepts and user not in device.seen.locked:
            writer.write(_http("200 OK", b"<html>Logout | Reboot | Firmware upgrade</html>"))
        else:
            writer.write(_http("401 Unauthorized", b"denied",
                               'WWW-Authenticate: Basic realm="hostile"\r\n'))

    return handle


async def lockout(device: Device) -> None:
    """A web login that locks an account after three failures and never accepts anything."""
    await _web(device, 80, _basic_login(device, None))


async def weak_password(device: Device) -> None:
    """A web login that accepts a factory login (for redaction checks); locks like lockout."""
    await _web(device, 80, _basic_login(device, DEFAULT_LOGIN))


async def rate_meter(device: Device) -> None:
    """Every swept port open; records each connection's start and how many are open at once,
    holding each until the scanner hangs up (or a second has passed)."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = device.seen
        seen.connections += 1
        seen.starts.append(time.monotonic())
        seen.active += 1
        seen.peak = max(seen.peak, seen.active)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fakes._discard(reader), 1.0)
        finally:
            seen.active -= 1

    for port in TCP_PORTS:
        device.servers.append(await fakes._serve(device.address, port, behaviour))


async def print_port(device: Device) -> None:
    """A raw print port (JetDirect 9100) that prints whatever arrives: it must get nothing."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        device.seen.connections += 1
        while chunk := await reader.read(CHUNK):
            device.seen.print_bytes += len(chunk)

    device.servers.append(await fakes._serve(device.address, 9100, behaviour))


KINDS: dict[str, Callable[[Device], Awaitable[None]]] = {
    "silent": silent, "drip": drip, "iac-storm": iac_storm,
    "tls-renegotiation": tls_renegotiation, "endless-http": endless_http,
    "huge-length-http": huge_length_http, "mqtt-giant": mqtt_giant, "ssh-hostile": ssh_hostile,
    "snmp-malformed": snmp_malformed, "xml-bomb": xml_bomb, "scope-escape": scope_escape,
    "ssdp-outside": ssdp_outside, "output-attack": output_attack, "lockout": lockout,
    "weak-password": weak_password, "rate-meter": rate_meter, "print-port": print_port,
}


async def start(kind: str, address: str) -> Device:
    device = Device(kind, address)
    try:
        await KINDS[kind](device)
    except BaseException:
        await device.close()
        raise
    return device


@dataclass
class Lab:
    devices: list[Device]
    outside: list[fakes.FakeServer]

    @property
    def addresses(self) -> list[str]:
        return [device.address for device in self.devices]

    def of(self, kind: str) -> list[Device]:
        return [device for device in self.devices if device.kind == kind]

    @property
    def outside_connections(self) -> int:
        return sum(server.connections for server in self.outside)

    async def close(self) -> None:
        for device in self.devices:
            await device.close()
        for server in self.outside:
            await server.close()


async def start_lab(kinds: list[str], subnet: str = "127.133.0", first: int = 1,
                    outside: str = OUTSIDE) -> Lab:
    """One device per entry of ``kinds`` at subnet.first, subnet.first+1, …, and the
    out-of-scope listener (which counts every connection it gets)."""
    lab = Lab([], [])
    try:
        for port in OUTSIDE_PORTS:
            lab.outside.append(await fakes.banner(outside, port, _http("200 OK", b"outside")))
        for offset, kind in enumerate(kinds):
            lab.devices.append(await start(kind, f"{subnet}.{first + offset}"))
    except BaseException:
        await lab.close()
        raise
    return lab
