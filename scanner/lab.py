"""A simulated IoT lab on loopback addresses, started by `iotbaseline demo` and by the tests.

Each device is a set of in-process asyncio servers on its own 127.x.y.z address, on ports >= 1024
so the lab runs without root. The behaviours are deliberately small but byte-accurate where a
scanner looks (banners, option negotiation, MQTT packets, SSDP headers), so the scanner can be
exercised end to end without touching a real network. The SSH devices are real SSH servers
(paramiko's server side: accepted in asyncio, then one paramiko thread per connection).

Every read is bounded in bytes and time, and an exception in a handler closes that connection
only: the lab must survive the scanner's probes, including malformed ones.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import io
import ipaddress
import json
import logging
import re
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Self, cast

import paramiko
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from scanner.net import BoundedSocket
from scanner.protocols.telnet import split_negotiation

__all__ = ["Lab", "LabDevice", "LabService", "default_devices"]

IDLE_TIMEOUT = 30.0  # longest wait for a client's next line or packet
SSH_TIMEOUT = 10.0  # longest wait for an SSH client's identification line, then its key exchange
HANDSHAKE_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0
MAX_HEAD = 16 * 1024  # StreamReader limit: bounds request heads and RTSP/HTTP lines
MAX_BODY = 4096
MAX_REQUESTS = 50  # per connection, for the protocols that keep a connection open
MQTT_MAX_PACKET = 64 * 1024
TELNET_MAX_LINE = 256


@dataclass(frozen=True)
class LabService:
    port: int
    transport: str  # "tcp" | "udp"
    protocol: str  # "telnet", "http", "https", "rtsp", "ssh", "ssdp", "mqtt"


@dataclass(frozen=True)
class LabDevice:
    name: str
    address: str
    kind: str  # selects the behaviour: "camera", "router", "hub", "thermostat"
    services: tuple[LabService, ...]


def default_devices(prefix: str = "127.77.0") -> list[LabDevice]:
    """The demo lab: a weak camera, a weak router, an open MQTT hub and a hardened thermostat."""

    def tcp(port: int, protocol: str) -> LabService:
        return LabService(port, "tcp", protocol)

    return [
        LabDevice(
            "camera",
            f"{prefix}.11",
            "camera",
            (tcp(2323, "telnet"), tcp(8080, "http"), tcp(8554, "rtsp")),
        ),
        LabDevice(
            "router",
            f"{prefix}.12",
            "router",
            (
                tcp(2222, "ssh"),
                LabService(1900, "udp", "ssdp"),
                tcp(8080, "http"),
                tcp(49152, "http"),
            ),
        ),
        LabDevice("hub", f"{prefix}.13", "hub", (tcp(1883, "mqtt"), tcp(8080, "http"))),
        LabDevice("hardened", f"{prefix}.14", "thermostat", (tcp(2222, "ssh"), tcp(8443, "https"))),
    ]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write with a bounded drain, so a client that stops reading cannot pin the handler."""
    writer.write(data)
    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)


def _authorized(headers: Mapping[str, str], credentials: tuple[str, str]) -> bool:
    """Basic authentication check shared by the camera's HTTP and RTSP servers."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, password) == credentials


# --- Telnet ---------------------------------------------------------------------------------

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SUPPRESS_GO_AHEAD, NAWS = 1, 3, 31
_EOL = re.compile(rb"\r\n|\r\x00|\n")


class _TelnetInput:
    """Client input as lines with option negotiation removed: real clients answer our WILL/DO
    offers (and send a NAWS subnegotiation) interleaved with what the user types."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._pending = b""  # an IAC sequence split across reads
        self._text = bytearray()

    async def readline(self) -> str:
        async with asyncio.timeout(IDLE_TIMEOUT):
            while (match := _EOL.search(self._text)) is None:
                if len(self._text) + len(self._pending) > TELNET_MAX_LINE:
                    raise ValueError("telnet line too long")
                chunk = await self._reader.read(TELNET_MAX_LINE)
                if not chunk:
                    raise EOFError("telnet client closed")
                self._feed(chunk)
        line = bytes(self._text[: match.start()])
        del self._text[: match.end()]
        return line.decode("utf-8", "replace").strip()

    def _feed(self, data: bytes) -> None:
        text, _, self._pending = split_negotiation(self._pending + data)
        self._text += text


async def _serve_telnet(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    prompt: bytes,
    credentials: tuple[str, str],
    banner: bytes,
    max_failures: int = 3,
) -> None:
    """BusyBox-style telnetd + login: the shape default-credential probes expect."""
    await _send(writer, bytes((IAC, WILL, ECHO, IAC, WILL, SUPPRESS_GO_AHEAD, IAC, DO, NAWS)))
    lines = _TelnetInput(reader)
    for _attempt in range(1, max_failures + 1):
        await _send(writer, prompt)
        user = await lines.readline()
        # We offered WILL ECHO, so the client expects us to echo the user name (not the password).
        await _send(writer, user.encode() + b"\r\nPassword: ")
        password = await lines.readline()
        if (user, password) == credentials:
            await _send(writer, b"\r\n" + banner + b"# ")
            await _busybox_shell(lines, writer)
            return
        await _send(writer, b"\r\nLogin incorrect\r\n")
    # Falls through after max_failures: the connection is closed like login(1) does.


_ARITHMETIC = re.compile(r"\$\(\((\d{1,6})\*(\d{1,6})\)\)")


async def _busybox_shell(lines: _TelnetInput, writer: asyncio.StreamWriter) -> None:
    """Just enough of a root shell for a scanner to confirm the login worked, then `exit`."""
    for _ in range(MAX_REQUESTS):
        command = await lines.readline()
        if command == "exit":
            return
        if command.startswith("echo "):  # with $((a*b)) expansion, as ash does
            text = _ARITHMETIC.sub(lambda m: str(int(m[1]) * int(m[2])), command[5:])
            reply = f"{text}\r\n"
        else:
            reply = f"-sh: {command.split()[0]}: not found\r\n" if command else ""
        await _send(writer, reply.encode() + b"# ")


# --- HTTP and RTSP --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/html"
    headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""  # for RTSP codes that http.HTTPStatus does not know


App = Callable[[str, str, Mapping[str, str]], _Reply]  # (method, path, headers) -> reply
_NOT_FOUND_BODY = b"<html><head><title>404 Not Found</title></head><body>Not Found</body></html>"


HSTS = (("Strict-Transport-Security", "max-age=31536000"),)


def _security_txt() -> bytes:
    """RFC 9116 contact for the hardened device, valid for half a year from now."""
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=180)
    return (f"Contact: mailto:psirt@thermostat.lab.example\n"
            f"Expires: {expires.replace(microsecond=0).isoformat()}\n"
            "Policy: https://thermostat.lab.example/security-policy\n").encode()


def _page(title: str, body: str = "") -> _Reply:
    html = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>{body}</body></html>\n"
    return _Reply(200, html.encode())


def _site(
    routes: Mapping[str, _Reply], auth: tuple[str, str] | None = None, realm: str = ""
) -> App:
    """A static web app, optionally behind Basic authentication (as cheap camera firmware does)."""

    def app(method: str, path: str, headers: Mapping[str, str]) -> _Reply:
        if auth is not None and not _authorized(headers, auth):
            challenge = (("WWW-Authenticate", f'Basic realm="{realm}"'),)
            return _Reply(
                401, b"<html><body><h1>401 Unauthorized</h1></body></html>", headers=challenge
            )
        return routes.get(path, _Reply(404, _NOT_FOUND_BODY))

    return app


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """Request line and lower-cased headers; the StreamReader limit bounds the size."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    request_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, sep, value = field.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return request_line, headers


def _encode_reply(
    protocol: str, reply: _Reply, fields: list[tuple[str, str]], with_body: bool = True
) -> bytes:
    fields = [*fields, *reply.headers]
    if reply.body:
        fields.append(("Content-Type", reply.content_type))
    fields.append(("Content-Length", str(len(reply.body))))
    reason = reply.reason or HTTPStatus(reply.status).phrase
    head = f"{protocol} {reply.status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    return head.encode("latin-1") + (reply.body if with_body else b"")


async def _serve_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, server: str, app: App
) -> None:
    """One request per connection (Connection: close) keeps the server trivially bounded."""
    request_line, headers = await _read_head(reader)
    method, target, _version = request_line.split(" ", 2)
    reply = app(method, target.split("?", 1)[0], headers)
    fields = [("Server", server), ("Date", formatdate(usegmt=True)), ("Connection", "close")]
    await _send(writer, _encode_reply("HTTP/1.1", reply, fields, with_body=method != "HEAD"))


_RTSP_PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"


async def _serve_rtsp(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    server: str,
    realm: str,
    credentials: tuple[str, str],
) -> None:
    """RTSP control channel: OPTIONS open to all, everything else behind Basic auth.

    No media is served; authenticated SETUP/PLAY get 455 so a scanner learns the credentials work.
    """
    for _ in range(MAX_REQUESTS):
        request_line, headers = await _read_head(reader)
        method, url, _version = request_line.split(" ", 2)
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY:
            raise ValueError("RTSP body too large")
        await asyncio.wait_for(reader.readexactly(length), IDLE_TIMEOUT)
        fields = [("CSeq", headers.get("cseq", "0")), ("Server", server)]
        if method == "OPTIONS":
            reply = _Reply(200, headers=(("Public", _RTSP_PUBLIC),))
        elif method not in _RTSP_PUBLIC.split(", "):
            reply = _Reply(501)
        elif not _authorized(headers, credentials):
            reply = _Reply(401, headers=(("WWW-Authenticate", f'Basic realm="{realm}"'),))
        elif method == "DESCRIBE":
            host = writer.get_extra_info("sockname")[0]
            sdp = (
                f"v=0\r\no=- 0 0 IN IP4 {host}\r\ns={server}\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:track1\r\n"
            )
            reply = _Reply(200, sdp.encode(), "application/sdp", (("Content-Base", url),))
        else:
            reply = _Reply(455, reason="Method Not Valid in This State")
        await _send(writer, _encode_reply("RTSP/1.0", reply, fields))


# --- SSH ------------------------------------------------------------------------------------

SSH_SESSION_TIMEOUT = 60.0  # whole SSH connection, first byte to last authentication attempt
SSH_MAX_BYTES = 256 * 1024  # a handshake plus a few authentication attempts is a few KiB
SSH_MAX_SESSIONS = 32  # live SSH connections per lab; more are closed at once (sshd MaxStartups)
SSH_ACCEPT_RETRY = 0.1  # pause after a failed accept() (out of file descriptors, say)
LAB_SSH_LOG_CHANNEL = "iotbaseline.lab.ssh"
LAB_THREAD_PREFIX = "iotbaseline-lab-ssh"

# paramiko logs every client that goes away mid-handshake at ERROR with a traceback; a scanner's
# probes do exactly that, so the lab's server transports log to a channel that stays quiet.
_lab_ssh_log = logging.getLogger(LAB_SSH_LOG_CHANNEL)
_lab_ssh_log.propagate = False
_lab_ssh_log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class _SshProfile:
    """What one simulated SSH server offers; names are paramiko's (it must implement them)."""

    version: str
    kex: tuple[str, ...]
    host_keys: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    host_key: Callable[[], paramiko.PKey]  # generated when the lab starts
    password: tuple[str, str] | None  # the one accepted login; None: public keys only
    strict_kex: bool  # advertise kex-strict-s-v00@openssh.com (the Terrapin countermeasure)


def _ed25519_key() -> paramiko.PKey:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return paramiko.Ed25519Key(file_obj=io.StringIO(pem.decode()))


def _rsa_1024_key() -> paramiko.PKey:
    return paramiko.RSAKey.generate(1024)  # weak on purpose: a simulated 2017 router


# paramiko 5 no longer implements SHA-1 key exchange, ssh-rsa (SHA-1) signatures or DSA, so the
# router offers the weakest algorithms it still has; its cipher and MAC lists are the real
# Dropbear 2017 ones that paramiko's client can still negotiate (aes128-ctr, hmac-sha1).
DROPBEAR_2017 = _SshProfile(
    version="SSH-2.0-dropbear_2017.75",
    kex=("diffie-hellman-group14-sha256",),
    host_keys=("rsa-sha2-256", "rsa-sha2-512"),
    ciphers=("aes128-cbc", "3des-cbc", "aes128-ctr"),
    macs=("hmac-md5", "hmac-sha1"),
    host_key=_rsa_1024_key,
    password=("admin", "admin"),
    strict_kex=False,  # Dropbear 2017 predates the Terrapin countermeasure
)
OPENSSH_9_6 = _SshProfile(
    version="SSH-2.0-OpenSSH_9.6",
    kex=("curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512"),
    host_keys=("ssh-ed25519",),
    ciphers=("aes256-gcm@openssh.com", "aes128-gcm@openssh.com"),
    macs=("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
    host_key=_ed25519_key,
    password=None,
    strict_kex=True,
)


def _ssh_profile(device: LabDevice) -> _SshProfile:
    match device.kind:
        case "router":
            return DROPBEAR_2017
        case "thermostat":
            return OPENSSH_9_6
    raise ValueError(f"no lab SSH server for {device.kind}")



_AUTH_SUCCESSFUL: int = paramiko.AUTH_SUCCESSFUL
_AUTH_FAILED: int = paramiko.AUTH_FAILED
_CHANNEL_PROHIBITED: int = paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _SshServer(paramiko.ServerInterface):  # type: ignore[misc]
    """Authentication policy; no channel opens for anyone, so a login can do nothing."""

    def __init__(self, password: tuple[str, str] | None) -> None:
        self._password = password

    def get_allowed_auths(self, username: str) -> str:
        return "publickey" if self._password is None else "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if self._password is not None and (username, password) == self._password:
            return _AUTH_SUCCESSFUL
        return _AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return _AUTH_FAILED  # no authorized keys

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return _CHANNEL_PROHIBITED


@dataclass(eq=False)
class _SshSession:
    """One accepted SSH connection, served by paramiko's own (daemon) thread."""

    sock: BoundedSocket
    transport: paramiko.Transport

    def stop(self) -> None:
        """Non-blocking: the shut-down socket ends paramiko's thread at its next read or write
        (it never blocks longer than paramiko's 0.1 s socket timeout)."""
        self.sock.shutdown()
        with contextlib.suppress(Exception):
            self.transport.close()


def _start_ssh_session(
    conn: socket.socket, profile: _SshProfile, host_key: paramiko.PKey, name: str
) -> _SshSession:
    """Hand an accepted connection to a paramiko server Transport; returns without blocking."""
    conn.setblocking(True)  # paramiko sets its own short timeout
    sock = BoundedSocket(conn, time.monotonic() + SSH_SESSION_TIMEOUT, SSH_MAX_BYTES)
    transport = paramiko.Transport(sock)
    session = _SshSession(sock, transport)
    try:
        transport.name = name
        transport.set_log_channel(LAB_SSH_LOG_CHANNEL)
        transport.local_version = profile.version
        transport.advertise_strict_kex = profile.strict_kex
        transport.banner_timeout = SSH_TIMEOUT
        transport.handshake_timeout = SSH_TIMEOUT
        options = transport.get_security_options()
        options.kex = profile.kex
        options.key_types = profile.host_keys
        options.ciphers = profile.ciphers
        options.digests = profile.macs
        transport.add_server_key(host_key)
        # With an event, start_server() starts the thread and returns at once.
        transport.start_server(event=threading.Event(), server=_SshServer(profile.password))
    except BaseException:
        sock.close()  # no thread was started
        raise
    return session


# --- MQTT -----------------------------------------------------------------------------------

MQTT_CONNECT, MQTT_SUBSCRIBE, MQTT_PINGREQ, MQTT_DISCONNECT = 1, 8, 12, 14
MQTT_MAX_KEEPALIVE_WAIT = 120.0


def _decode_varint(data: bytes | bytearray, offset: int) -> tuple[int, int]:
    """MQTT variable byte integer (at most 4 bytes) -> (value, offset after it)."""
    value = 0
    for i in range(4):
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset + i + 1
    raise ValueError("MQTT variable byte integer longer than 4 bytes")


def _mqtt_packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes((first_byte,)) + bytes(encoded) + body


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


async def _read_mqtt_packet(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """(packet type, body); refuses remaining lengths over MQTT_MAX_PACKET before reading them."""
    async with asyncio.timeout(timeout):
        first = (await reader.readexactly(1))[0]
        header = bytearray()
        while not header or (header[-1] & 0x80 and len(header) < 4):
            header += await reader.readexactly(1)
        length, _ = _decode_varint(header, 0)
        if length > MQTT_MAX_PACKET:
            raise ValueError("MQTT packet too large")
        return first >> 4, await reader.readexactly(length)


def _topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with `+` and `#` wildcards."""
    levels, topic_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or level not in ("+", topic_levels[i]):
            return False
    return len(levels) == len(topic_levels)


def _subscription(body: bytes, v5: bool) -> tuple[bytes, list[str]]:
    """SUBSCRIBE variable header and payload -> (packet identifier, topic filters)."""
    packet_id, offset = body[:2], 2
    if v5:
        properties_length, offset = _decode_varint(body, offset)
        offset += properties_length
    filters = []
    while offset < len(body):  # each filter consumes at least 3 bytes
        (size,) = struct.unpack_from("!H", body, offset)
        if offset + 3 + size > len(body):
            raise ValueError("truncated SUBSCRIBE")
        filters.append(body[offset + 2 : offset + 2 + size].decode())
        offset += 3 + size  # skip the subscription options byte
    if len(packet_id) != 2 or not filters:
        raise ValueError("malformed SUBSCRIBE")
    return packet_id, filters


async def _serve_mqtt(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    retained: tuple[tuple[str, str], ...],
) -> None:
    """An open MQTT 3.1/3.1.1/5.0 broker: accepts anyone and leaks retained sensor data."""
    packet_type, body = await _read_mqtt_packet(reader, IDLE_TIMEOUT)
    if packet_type != MQTT_CONNECT:
        return
    (name_size,) = struct.unpack_from("!H", body)
    if body[2 : 2 + name_size] not in (b"MQTT", b"MQIsdp"):
        return
    level, _flags, keepalive = struct.unpack_from("!BBH", body, 2 + name_size)
    if level not in (3, 4, 5):
        await _send(writer, _mqtt_packet(0x20, b"\x00\x01"))  # unacceptable protocol version
        return
    v5 = level == 5
    properties = b"\x00" if v5 else b""  # MQTT 5 packets carry an (empty) properties length
    # Connection accepted regardless of credentials: that is the finding this device exists for.
    await _send(writer, _mqtt_packet(0x20, b"\x00\x00" + properties))
    wait = min(keepalive * 1.5, MQTT_MAX_KEEPALIVE_WAIT) or IDLE_TIMEOUT
    for _ in range(MAX_REQUESTS):
        packet_type, body = await _read_mqtt_packet(reader, wait)
        if packet_type == MQTT_DISCONNECT:
            return
        if packet_type == MQTT_PINGREQ:
            await _send(writer, _mqtt_packet(0xD0, b""))
        elif packet_type == MQTT_SUBSCRIBE:
            packet_id, filters = _subscription(body, v5)
            # One "granted QoS 0" code per filter.
            await _send(writer, _mqtt_packet(0x90, packet_id + properties + bytes(len(filters))))
            for topic, payload in retained:
                if any(_topic_matches(f, topic) for f in filters):
                    publish = _mqtt_string(topic) + properties + payload.encode()
                    await _send(writer, _mqtt_packet(0x31, publish))  # PUBLISH, QoS 0, RETAIN


# --- SSDP / UPnP ----------------------------------------------------------------------------

MINIUPNPD = "Linux/3.4 UPnP/1.0 MiniUPnPd/1.9"
ROUTER_UUID = "uuid:5b3c2f1e-8d4a-4c6b-9e21-4a21b3c00f9e"
IGD_TYPE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WANIP_TYPE = "urn:schemas-upnp-org:service:WANIPConnection:1"
MAX_DATAGRAM = 2048


def _upnp_port(device: LabDevice) -> int:
    """MiniUPnPd takes its own high port apart from the web UI: the device's highest HTTP port."""
    return max(s.port for s in device.services if s.protocol == "http")


def _root_description() -> bytes:
    return f"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <device>
    <deviceType>{IGD_TYPE}</deviceType>
    <friendlyName>NETGEAR R7000 Nighthawk</friendlyName>
    <manufacturer>NETGEAR</manufacturer>
    <manufacturerURL>https://www.netgear.com</manufacturerURL>
    <modelDescription>NETGEAR Nighthawk AC1900 Smart WiFi Router</modelDescription>
    <modelName>R7000</modelName>
    <modelNumber>R7000</modelNumber>
    <serialNumber>4A21B3C00F9E</serialNumber>
    <UDN>{ROUTER_UUID}</UDN>
    <serviceList>
      <service>
        <serviceType>{WANIP_TYPE}</serviceType>
        <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
        <SCPDURL>/WANIPCn.xml</SCPDURL>
        <controlURL>/ctl/IPConn</controlURL>
        <eventSubURL>/evt/IPConn</eventSubURL>
      </service>
    </serviceList>
  </device>
</root>
""".encode()


class _SsdpResponder(asyncio.DatagramProtocol):
    """Answers unicast M-SEARCH like MiniUPnPd; NOTIFY and multicast are out of scope."""

    def __init__(self, location: str) -> None:
        self._location = location
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is None or len(data) > MAX_DATAGRAM:
            return
        if not data.startswith(b"M-SEARCH * HTTP/1.1"):
            return
        headers = {}
        for line in data.decode("latin-1").splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        st = headers.get("st", "")
        if st in ("ssdp:all", "upnp:rootdevice"):
            st, usn = "upnp:rootdevice", f"{ROUTER_UUID}::upnp:rootdevice"
        elif st == ROUTER_UUID:
            usn = ROUTER_UUID
        elif st in (IGD_TYPE, WANIP_TYPE):
            usn = f"{ROUTER_UUID}::{st}"
        else:
            return
        reply = (
            f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: {st}\r\nUSN: {usn}\r\n"
            f"EXT:\r\nSERVER: {MINIUPNPD}\r\nLOCATION: {self._location}\r\n\r\n"
        )
        self._transport.sendto(reply.encode(), addr)


# --- TLS ------------------------------------------------------------------------------------


class LabCertificateAuthority:
    """The lab's own CA: the hardened thermostat's certificate chains to it, and the demo trusts
    it through its profile (tls.ca_files), as a site trusts its device vendor's CA."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                   "iotbaseline demo lab CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def server_context(self, common_name: str, address: str) -> ssl.SSLContext:
        """A fresh EC P-256 certificate for the device's name and address, signed by the CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address(address))]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain only reads files; the key lives on disk only for this call.
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "server.pem"
            path.write_bytes(pem)
            context.load_cert_chain(path)
        return context


async def _serve_tls(
    context: ssl.SSLContext,
    handler: Handler,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """TLS inside the tracked connection rather than start_server(ssl=...), so a client stalled
    in the handshake is counted, time-limited and closed by Lab.stop() like any other."""
    await writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    await handler(reader, writer)


# --- Devices --------------------------------------------------------------------------------

CAMERA_BANNER = (
    b"\r\nBusyBox v1.20.2 (2016-03-14 18:04:53 CST) built-in shell (ash)\r\n"
    b"Enter 'help' for a list of built-in commands.\r\n\r\n"
)
ROUTER_LOGIN_FORM = (
    '<form method="post" action="/login.cgi">'
    '<input type="text" name="username"><input type="password" name="password">'
    '<input type="submit" value="Log In"></form>'
)
HUB_INFO = json.dumps({"model": "SmartHub 2", "firmware": "1.4.2", "vendor": "Acme"}).encode()
HUB_RETAINED = (("home/livingroom/temperature", "21.5"), ("home/frontdoor/lock", "locked"))


def _behaviour(device: LabDevice, service: LabService,
               ca: LabCertificateAuthority) -> Handler:
    """The TCP handler for one service of one device kind."""
    match device.kind, service.protocol:
        case "camera", "telnet":
            return partial(
                _serve_telnet,
                prompt=b"\r\nipcam login: ",
                credentials=("admin", "admin"),
                banner=CAMERA_BANNER,
            )
        case "camera", "http":
            app = _site(
                {"/": _page("Network Camera", "<h1>Live View</h1>")},
                auth=("admin", "12345"),
                realm="IPCamera",
            )
            return partial(_serve_http, server="Boa/0.94.13", app=app)
        case "camera", "rtsp":
            return partial(
                _serve_rtsp,
                server="Hipcam RealServer/V1.0",
                realm="IPCamera",
                credentials=("admin", "12345"),
            )
        case "router", "http" if service.port == _upnp_port(device):
            description = _Reply(200, _root_description(), 'text/xml; charset="utf-8"')
            return partial(_serve_http, server=MINIUPNPD, app=_site({"/rootDesc.xml": description}))
        case "router", "http":
            app = _site({"/": _page("Router Login", ROUTER_LOGIN_FORM)})
            return partial(_serve_http, server="httpd", app=app)
        case "hub", "mqtt":
            return partial(_serve_mqtt, retained=HUB_RETAINED)
        case "hub", "http":
            routes = {
                "/": _page("SmartHub"),
                "/api/info": _Reply(200, HUB_INFO, "application/json"),
            }
            return partial(_serve_http, server="lighttpd/1.4.45", app=_site(routes))
        case "thermostat", "https":
            return partial(
                _serve_tls,
                ca.server_context(f"{device.kind}.lab", device.address),
                partial(_serve_http, server="nginx", app=_site({
                    "/": replace(_page("Thermostat"), headers=HSTS),
                    "/.well-known/security.txt": _Reply(200, _security_txt(), "text/plain",
                                                        headers=HSTS)})),
            )
    raise ValueError(f"no lab behaviour for {device.kind}/{service.protocol}/{service.transport}")


class Lab:
    """Starts and stops every device's servers; `async with Lab() as lab:` in tests and demo."""

    def __init__(self, devices: list[LabDevice] | None = None) -> None:
        self.devices: tuple[LabDevice, ...] = tuple(
            default_devices() if devices is None else devices
        )
        for device in self.devices:
            # The lab must never become reachable from (or answer to) a real network.
            if not ipaddress.ip_address(device.address).is_loopback:
                raise ValueError(f"lab address {device.address} is not a loopback address")
        self.ca = LabCertificateAuthority()
        self.connection_counts: dict[tuple[str, int], int] = {}
        self._servers: list[asyncio.Server] = []
        self._datagrams: list[asyncio.DatagramTransport] = []
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ssh_listeners: list[socket.socket] = []
        self._ssh_accepters: list[asyncio.Task[None]] = []
        self._ssh_sessions: set[_SshSession] = set()
        self._accepting = False

    @property
    def addresses(self) -> list[str]:
        return [device.address for device in self.devices]

    @property
    def tcp_ports(self) -> list[int]:
        return self._ports("tcp")

    @property
    def udp_ports(self) -> list[int]:
        return self._ports("udp")

    def _ports(self, transport: str) -> list[int]:
        return sorted(
            {s.port for d in self.devices for s in d.services if s.transport == transport}
        )

    async def start(self) -> None:
        if self._servers or self._datagrams or self._ssh_listeners:
            raise RuntimeError("lab already started")
        self._accepting = True
        loop = asyncio.get_running_loop()
        try:
            for device in self.devices:
                for service in device.services:
                    if (device.kind, service.transport, service.protocol) == (
                        "router",
                        "udp",
                        "ssdp",
                    ):
                        location = f"http://{device.address}:{_upnp_port(device)}/rootDesc.xml"
                        transport, _ = await loop.create_datagram_endpoint(
                            partial(_SsdpResponder, location),
                            local_addr=(device.address, service.port),
                        )
                        self._datagrams.append(transport)
                        continue
                    if service.transport != "tcp":
                        raise ValueError(f"unsupported lab service {service}")
                    if service.protocol == "ssh":
                        self._listen_ssh(device, service)
                        continue
                    server = await asyncio.start_server(
                        self._tracked(device.address, service.port,
                                      _behaviour(device, service, self.ca)),
                        device.address,
                        service.port,
                        limit=MAX_HEAD,
                    )
                    self._servers.append(server)
        except BaseException:
            await self.stop()
            raise

    def _tracked(self, address: str, port: int, handler: Handler) -> Handler:
        """Counts connections and keeps them closable by stop(): in Python 3.11,
        Server.close() leaves already-accepted connections open."""

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not self._accepting:  # accepted just before stop(), its task started after
                writer.transport.abort()
                return
            key = (address, port)
            self.connection_counts[key] = self.connection_counts.get(key, 0) + 1
            task = asyncio.current_task()
            assert task is not None
            self._connections[task] = writer
            try:
                await handler(reader, writer)
                writer.close()
            # A misbehaving client costs only its own connection. CancelledError (from stop())
            # ends the task normally too: Python 3.11's start_server logs a traceback for a
            # connection task that ends cancelled.
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()
            finally:
                self._connections.pop(task, None)

        return on_connect

    def _listen_ssh(self, device: LabDevice, service: LabService) -> None:
        """A listening socket whose connections an asyncio task accepts and hands to paramiko."""
        profile = _ssh_profile(device)
        version = ipaddress.ip_address(device.address).version
        listener = socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET)
        self._ssh_listeners.append(listener)  # stop() closes it, even if bind() fails
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((device.address, service.port))
        listener.listen(100)
        listener.setblocking(False)
        accepter = self._accept_ssh(
            listener, (device.address, service.port), profile, profile.host_key()
        )
        self._ssh_accepters.append(asyncio.create_task(accepter))

    async def _accept_ssh(
        self,
        listener: socket.socket,
        key: tuple[str, int],
        profile: _SshProfile,
        host_key: paramiko.PKey,
    ) -> None:
        loop = asyncio.get_running_loop()
        name = f"{LAB_THREAD_PREFIX} {key[0]}:{key[1]}"
        while self._accepting:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError:  # as asyncio's own servers do
                await asyncio.sleep(SSH_ACCEPT_RETRY)
                continue
            self.connection_counts[key] = self.connection_counts.get(key, 0) + 1
            self._ssh_sessions = {s for s in self._ssh_sessions if s.transport.is_alive()}
            if not self._accepting or len(self._ssh_sessions) >= SSH_MAX_SESSIONS:
                conn.close()
                continue
            try:
                self._ssh_sessions.add(_start_ssh_session(conn, profile, host_key, name))
            except Exception:  # costs this connection only (it is closed already)
                continue

    async def _stop_ssh(self) -> None:
        """Stop accepting, then end every paramiko thread: each sees its socket shut down at
        once, and the wait for them is bounded (they are daemon threads anyway)."""
        for task in self._ssh_accepters:
            task.cancel()
        if self._ssh_accepters:
            await asyncio.wait(self._ssh_accepters, timeout=STOP_TIMEOUT)
        for listener in self._ssh_listeners:
            listener.close()
        sessions = list(self._ssh_sessions)
        for session in sessions:
            session.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        while any(s.transport.is_alive() for s in sessions) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._ssh_accepters.clear()
        self._ssh_listeners.clear()
        self._ssh_sessions.clear()

    async def stop(self) -> None:
        self._accepting = False
        await self._stop_ssh()
        for server in self._servers:
            server.close()
        for transport in self._datagrams:
            transport.close()
        tasks = list(self._connections)
        for task, writer in self._connections.items():
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)
        self._servers.clear()
        self._datagrams.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
