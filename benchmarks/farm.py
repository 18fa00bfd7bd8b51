"""A simulated farm of N IoT-like devices in one process, for credential-probe benchmarks.

Every device is a set of asyncio servers on its own loopback address (127.100.0.1 onwards, one
``asyncio.start_server`` per address and port), so thousands of servers share one event loop:

* cameras   HTTP Basic on 8080 (``Boa``) and a BusyBox-style Telnet login on 2323
* routers   HTTP Basic on 8080 (``mini_httpd``), a Telnet login on 2323 and an SSH banner on
            2222 (``dropbear``: banner only, no key exchange and no logins)
* hubs      an MQTT 3.1.1/5.0 broker on 1883: anonymous allowed or not, one user account
* hardened  all three services, every login refused, anonymous MQTT refused

A seeded subset of the camera, router and hub services accepts one default credential drawn
from the credential data shipped with iotbaseline (``profiles/credentials``), and only among
the pairs the safe budget reaches: the first ``max_per_service`` (15) candidates in iotbaseline's
order after skipping a user name once it has had ``max_per_account`` (3) tries — exactly what
``probes.authflow.run_attempts`` tries on a device with no vendor match, and what hydra tries
when given the same list as a ``-C`` file. Pairs with an empty user name are never chosen (an
empty MQTT user name is anonymous in all but name; hydra's Telnet module cannot send one).
Every other account on every device has a random 20-character password nobody tries.

Each server counts login attempts per account (device, port, user name) and the farm tracks
the most connections any one device had open at once, so a benchmark can show the budget and
the per-device politeness held. An optional latency (e.g. 50 ms) delays every connection
before its first byte. ``truth`` describes what a perfect scanner reports.

Safety: only 127.0.0.0/8 addresses are ever bound (checked), port 2024 is never used, every
read is bounded in bytes and time, and every connection in a bounded number of exchanges.

Run alone: ``python benchmarks/farm.py --devices 64 --truth truth.json --serve`` serves until
stdin closes (or ``--max-seconds``); commands on stdin, one per line, each answered with one
JSON line on stdout: ``stats``, ``reset`` (zero the counters), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import ipaddress
import json
import random
import re
import resource
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.protocols.telnet import split_negotiation

FORBIDDEN_PORTS = frozenset({2024})  # an unrelated service listens there: never bind or probe
FIRST_ADDRESS = ipaddress.IPv4Address("127.100.0.1")
TELNET_PORT, HTTP_PORT, MQTT_PORT, SSH_PORT = 2323, 8080, 1883, 2222
FARM_PORTS = (MQTT_PORT, SSH_PORT, TELNET_PORT, HTTP_PORT)
CHECKS = {
    "telnet": ("telnet-default-credentials",),
    "http": ("http-default-credentials",),
    "mqtt": ("mqtt-anonymous", "mqtt-default-credentials"),
}
KIND_SHARES = (("camera", 0.35), ("router", 0.25), ("hub", 0.25), ("hardened", 0.15))
VULNERABLE_SHARE = 0.5  # of camera/router/hub credential services
ANONYMOUS_SHARE = 0.4  # of hubs

IDLE_TIMEOUT = 10.0  # longest wait for a client's next line or packet
LOGIN_DELAY = 0.05  # telnetd -> login(1) start-up: the prompt follows negotiation this late
MAX_HEAD = 8192
MAX_LINE = 256
MAX_FAILURES = 3  # per Telnet connection, like login(1)
MAX_SHELL_COMMANDS = 8
MAX_MQTT_PACKET = 4096
MAX_MQTT_PACKETS = 8
STOP_TIMEOUT = 3.0

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ECHO, SUPPRESS_GO_AHEAD, NAWS = 1, 3, 31
NEGOTIATION = bytes((IAC, WILL, ECHO, IAC, WILL, SUPPRESS_GO_AHEAD, IAC, DO, NAWS))
EOL = re.compile(rb"\r\n|\r\x00|\r|\n")
ARITHMETIC = re.compile(r"\$\(\((\d{1,6})\*(\d{1,6})\)\)")

# What each kind shows the network. None of it names a vendor in the credential data, so
# iotbaseline orders candidates the same way on every device (the benchmark verifies this).
TELNET_PROMPT = {"camera": b"\r\ncamera login: ", "router": b"\r\nrouter login: ",
                 "hardened": b"\r\nlogin: "}
SHELL_BANNER = b"\r\nBusyBox v1.24.1 built-in shell (ash)\r\n\r\n"
HTTP_SERVER = {"camera": "Boa/0.94.14rc21", "router": "mini_httpd/1.30",
               "hardened": "nginx"}
UNAUTHORIZED_BODY = b"<html><body><h1>401 Unauthorized</h1></body></html>"
HTTP_REALM = {"camera": "Camera", "router": "Router", "hardened": "Administration"}
SSH_BANNER = b"SSH-2.0-dropbear_2019.78\r\n"


# --- data ------------------------------------------------------------------------------------

Pair = tuple[str, str]


@functools.cache
def _store() -> Any:
    from profiles.credentials import CredentialStore  # iotbaseline's own data and ordering

    return CredentialStore.load()


def budgeted_candidates(protocol: str, port: int, fingerprint: str = "",
                        max_per_account: int = 3, max_per_service: int = 15) -> list[Pair]:
    """The pairs iotbaseline tries on one service, in order (probes/authflow.run_attempts)."""
    per_account: Counter[str] = Counter()
    chosen: list[Pair] = []
    for credential in _store().candidates(protocol, fingerprint, port):
        if len(chosen) >= max_per_service:
            break
        if per_account[credential.username] >= max_per_account:
            continue
        per_account[credential.username] += 1
        chosen.append((credential.username, credential.password))
    return chosen


def choosable(protocol: str, pair: Pair) -> bool:
    """Pairs a server may accept as its default: a real user name that hydra can send too."""
    user, password = pair
    return bool(user) and ":" not in user and "\n" not in user + password \
        and not (protocol == "telnet" and any(c in user for c in "/>%$#"))


@dataclass
class FarmService:
    protocol: str  # "telnet" | "http" | "mqtt"
    port: int
    accepts: Pair | None  # the default credential it accepts, or None
    secret: Pair | None  # the owner's strong credential (never in any list); None: no logins
    anonymous: bool = False  # MQTT only


@dataclass
class FarmDevice:
    address: str
    kind: str
    services: list[FarmService]


def farm_address(index: int) -> str:
    """Consecutive loopback addresses from 127.100.0.1, skipping .0 and .255 last octets."""
    block, offset = divmod(index, 254)
    address = ipaddress.IPv4Address(int(FIRST_ADDRESS) - 1 + block * 256 + offset + 1)
    if address not in ipaddress.IPv4Network("127.0.0.0/8") or int(address) < int(FIRST_ADDRESS):
        raise ValueError(f"device {index} would leave 127.100.0.0-127.255.255.254")
    return str(address)


def build_devices(count: int, seed: int = 1) -> list[FarmDevice]:
    """``count`` devices, kinds in fixed shares, vulnerabilities chosen by a seeded RNG."""
    if not 1 <= count <= 250_000:
        raise ValueError("between 1 and 250000 devices")
    rng = random.Random(seed)
    kinds: list[str] = []
    for kind, share in KIND_SHARES:
        kinds += [kind] * round(count * share)
    kinds = (kinds + ["camera"] * count)[:count]
    rng.shuffle(kinds)
    pools = {protocol: [p for p in budgeted_candidates(protocol, port) if choosable(protocol, p)]
             for protocol, port in (("telnet", TELNET_PORT), ("http", HTTP_PORT),
                                    ("mqtt", MQTT_PORT))}

    def strong(user: str = "admin") -> Pair:
        return user, "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(20))

    def service(protocol: str, port: int, vulnerable: bool, **extra: Any) -> FarmService:
        accepts = rng.choice(pools[protocol]) if vulnerable else None
        return FarmService(protocol, port, accepts, strong(), **extra)

    devices = []
    for index, kind in enumerate(kinds):
        if kind in ("camera", "router"):
            services = [service("http", HTTP_PORT, rng.random() < VULNERABLE_SHARE),
                        service("telnet", TELNET_PORT, rng.random() < VULNERABLE_SHARE)]
            if kind == "router":  # outside the RNG, so the credential layout of a seed stays put
                services.append(FarmService("ssh", SSH_PORT, None, None))
        elif kind == "hub":
            services = [service("mqtt", MQTT_PORT, rng.random() < VULNERABLE_SHARE,
                                anonymous=rng.random() < ANONYMOUS_SHARE)]
        else:
            services = [service("http", HTTP_PORT, False), service("telnet", TELNET_PORT, False),
                        service("mqtt", MQTT_PORT, False)]
        devices.append(FarmDevice(farm_address(index), kind, services))
    return devices


def truth(devices: list[FarmDevice]) -> list[dict[str, Any]]:
    """One entry per (device, service, check): the finding a perfect scanner reports, or None."""
    entries = []
    for device in devices:
        for svc in device.services:
            for check in CHECKS.get(svc.protocol, ()):
                expected: Any = None
                if check == "mqtt-anonymous":
                    expected = "anonymous" if svc.anonymous else None
                elif svc.accepts is not None:
                    expected = {"username": svc.accepts[0], "password": svc.accepts[1]}
                entries.append({"address": device.address, "kind": device.kind,
                                "protocol": svc.protocol, "port": svc.port, "check": check,
                                "expected": expected})
    return entries


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB (Linux)."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


# --- counters --------------------------------------------------------------------------------


@dataclass
class Counters:
    attempts: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # per protocol
    accepted_at: set[str] = field(default_factory=set)  # "address:port" that let a login in
    anonymous: int = 0  # MQTT CONNECTs without a user name
    connections: Counter[str] = field(default_factory=Counter)  # per protocol
    open_now: Counter[str] = field(default_factory=Counter)  # per device
    max_open: dict[str, int] = field(default_factory=dict)  # per device, server's view
    # per device: (accepted, closed-or-client-EOF) times, for the client's view of concurrency
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    cpu_at_reset: float = field(default_factory=lambda: cpu_seconds())

    def summary(self) -> dict[str, Any]:
        per_protocol: dict[str, dict[str, Any]] = {}
        for (address, port, user), count in self.attempts.items():
            protocol = PROTOCOL_BY_PORT[port]
            entry = per_protocol.setdefault(protocol, {"attempts": 0, "accounts": 0,
                                                       "max_per_account": 0, "worst": None})
            entry["attempts"] += count
            entry["accounts"] += 1
            if count > entry["max_per_account"]:
                entry["max_per_account"] = count
                entry["worst"] = f"{address}:{port} user {user!r}"
        busiest = max(((address, peak_overlap(spans)) for address, spans in
                       self.intervals.items()), key=lambda item: item[1], default=("", 0))
        server_view = max(self.max_open.values(), default=0)
        return {
            "seconds": round(time.monotonic() - self.started, 3),
            "attempts": sum(self.attempts.values()),
            "max_attempts_per_account": max(self.attempts.values(), default=0),
            "per_protocol": per_protocol,
            "accepted": dict(self.accepted),
            "accepted_at": sorted(self.accepted_at),
            "anonymous_mqtt_connects": self.anonymous,
            "connections": dict(self.connections),
            "max_concurrent_per_device": busiest[1],
            "busiest_device": busiest[0],
            "max_concurrent_per_device_server_view": server_view,
            "handler_errors": dict(self.errors),
            "farm_rss_kib": rss_kib(),
            "farm_cpu_s": round(cpu_seconds() - self.cpu_at_reset, 3),
        }


PROTOCOL_BY_PORT = {TELNET_PORT: "telnet", HTTP_PORT: "http", MQTT_PORT: "mqtt",
                    SSH_PORT: "ssh"}


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an interval ending when another starts does not
    overlap it)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


# --- protocol handlers -----------------------------------------------------------------------


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)


class TelnetLines:
    """Client input as lines, option negotiation removed (bounded line length)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.pending = b""
        self.text = bytearray()

    def feed(self, data: bytes) -> None:
        text, _, pending = split_negotiation(self.pending + data)
        self.text += text
        self.pending = pending[:MAX_LINE]

    async def readline(self) -> str:
        async with asyncio.timeout(IDLE_TIMEOUT):
            while (match := EOL.search(self.text)) is None or \
                    (match.group() == b"\r" and match.end() == len(self.text)):
                if len(self.text) > MAX_LINE:
                    raise ValueError("telnet line too long")
                chunk = await self.reader.read(MAX_LINE)
                if not chunk:
                    raise EOFError("client closed")
                self.feed(chunk)
        line = bytes(self.text[:match.start()])
        del self.text[:match.end()]
        return line.decode("utf-8", "replace").strip()


class Farm:
    """Starts and stops every device's servers and keeps the counters."""

    def __init__(self, devices: list[FarmDevice], latency: float = 0.0,
                 telnet_tries: int = MAX_FAILURES) -> None:
        for device in devices:
            if not ipaddress.ip_address(device.address).is_loopback:
                raise ValueError(f"{device.address} is not a loopback address")
            for svc in device.services:
                if svc.port in FORBIDDEN_PORTS:
                    raise ValueError(f"port {svc.port} is reserved for another service")
        self.devices = devices
        self.latency = latency
        self.telnet_tries = max(1, min(telnet_tries, 10))
        self.counters = Counters()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        open_now = self.counters.open_now
        self.counters = Counters(open_now=open_now)

    async def start(self) -> None:
        listeners = sum(len(d.services) for d in self.devices)
        raise_fd_limit(listeners + 4096)
        try:
            for device in self.devices:
                for svc in device.services:
                    handler = {"telnet": self._telnet, "http": self._http,
                               "mqtt": self._mqtt, "ssh": self._ssh}[svc.protocol]
                    server = await asyncio.start_server(
                        self._tracked(device, svc, handler), device.address, svc.port,
                        limit=MAX_HEAD, backlog=256, reuse_address=True)
                    self._servers.append(server)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT)
        self._servers.clear()

    def _tracked(self, device: FarmDevice, svc: FarmService,
                 handler: Callable[[FarmDevice, FarmService, asyncio.StreamReader,
                                    asyncio.StreamWriter], Awaitable[None]]
                 ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            counters = self.counters
            address = device.address
            opened, client_gone = time.monotonic(), [0.0]
            # When the client closes first, its slot is free from that moment, even while this
            # handler still sleeps out its latency: remember when the EOF (or reset) arrived.
            feed_eof, set_exception = reader.feed_eof, reader.set_exception

            def eof() -> None:
                client_gone[0] = client_gone[0] or time.monotonic()
                feed_eof()

            def reset(exc: Exception) -> None:
                client_gone[0] = client_gone[0] or time.monotonic()
                set_exception(exc)

            reader.feed_eof = eof  # type: ignore[method-assign]
            reader.set_exception = reset  # type: ignore[method-assign]
            counters.connections[svc.protocol] += 1
            counters.open_now[address] += 1
            if counters.open_now[address] > counters.max_open.get(address, 0):
                counters.max_open[address] = counters.open_now[address]
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                await handler(device, svc, reader, writer)
                writer.close()
            except (Exception, asyncio.CancelledError) as exc:
                if not isinstance(exc, (EOFError, ConnectionError, TimeoutError,
                                        asyncio.CancelledError, asyncio.IncompleteReadError)):
                    self.counters.errors[type(exc).__name__] += 1
                writer.transport.abort()
            finally:
                self.counters.open_now[address] -= 1
                closed = time.monotonic()
                self.counters.intervals.setdefault(address, []).append(
                    (opened, min(closed, client_gone[0] or closed)))
                if task is not None:
                    self._tasks.discard(task)

        return on_connect

    def _attempt(self, device: FarmDevice, svc: FarmService, user: str, password: str) -> bool:
        self.counters.attempts[(device.address, svc.port, user)] += 1
        ok = (user, password) in (svc.accepts, svc.secret)
        if ok:
            self.counters.accepted[svc.protocol] += 1
            self.counters.accepted_at.add(f"{device.address}:{svc.port}")
        return ok

    async def _telnet(self, device: FarmDevice, svc: FarmService, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """BusyBox telnetd + login(1): negotiation, then the prompt once the client answers
        (or after login's start-up delay), three tries per connection."""
        await _send(writer, NEGOTIATION)
        lines = TelnetLines(reader)
        with contextlib.suppress(TimeoutError):
            first = await asyncio.wait_for(reader.read(MAX_LINE), LOGIN_DELAY)
            if not first:
                return
            lines.feed(first)
        prompt = TELNET_PROMPT.get(device.kind, TELNET_PROMPT["hardened"])
        for _ in range(self.telnet_tries):
            await _send(writer, prompt)
            user = await lines.readline()
            await _send(writer, user.encode()[:64] + b"\r\nPassword: ")  # we said WILL ECHO
            password = await lines.readline()
            if self._attempt(device, svc, user, password):
                await _send(writer, SHELL_BANNER + b"# ")
                for _ in range(MAX_SHELL_COMMANDS):
                    command = await lines.readline()
                    if command == "exit":
                        return
                    if command.startswith("echo "):
                        reply = ARITHMETIC.sub(lambda m: str(int(m[1]) * int(m[2])),
                                               command[5:]) + "\r\n"
                    else:
                        reply = f"-sh: {command.split()[0]}: not found\r\n" if command else ""
                    await _send(writer, reply.encode() + b"# ")
                return
            await _send(writer, b"\r\nLogin incorrect\r\n")

    async def _http(self, device: FarmDevice, svc: FarmService, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """One request per connection, Basic authentication on every path."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        request_line, *fields = head.decode("latin-1").split("\r\n")
        method = request_line.split(" ", 1)[0]
        authorization = ""
        for line in fields:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                authorization = value.strip()
        ok = False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "\x00invalid", ""
            ok = self._attempt(device, svc, user, password)
        if ok:
            status, body = "200 OK", (
                b"<!DOCTYPE html><html><head><title>Administration</title></head><body>"
                b"<h1>Status</h1><a href='/reboot'>Reboot</a> <a href='/logout'>Log out</a>"
                b"</body></html>")
            extra = ""
        else:
            status, body = "401 Unauthorized", UNAUTHORIZED_BODY
            extra = f'WWW-Authenticate: Basic realm="{HTTP_REALM.get(device.kind, "Login")}"\r\n'
        response = (f"HTTP/1.1 {status}\r\nServer: {HTTP_SERVER.get(device.kind, 'httpd')}\r\n"
                    f"{extra}Content-Type: text/html\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode("latin-1")
        await _send(writer, response + (body if method != "HEAD" else b""))

    async def _ssh(self, device: FarmDevice, svc: FarmService, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        """dropbear's identification line; the client's is read (bounded) and the connection
        closed, which is all a port sweep or a banner fingerprint needs."""
        await _send(writer, SSH_BANNER)
        await asyncio.wait_for(reader.read(MAX_LINE), IDLE_TIMEOUT)

    async def _mqtt(self, device: FarmDevice, svc: FarmService, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """A mosquitto-like broker: a CONNECT with a user name is checked against the accounts
        (whatever the anonymous setting); one without is anonymous."""
        kind, body = await read_mqtt_packet(reader)
        if kind != 1:
            return
        connect = parse_connect(body)
        v5 = connect["level"] == 5
        if connect["level"] not in (3, 4, 5):
            await _send(writer, b"\x20\x02\x00\x01")
            return
        if connect["username"] is None:
            self.counters.anonymous += 1
            code = 0 if svc.anonymous else (0x87 if v5 else 0x05)
        elif self._attempt(device, svc, connect["username"], connect["password"] or ""):
            code = 0
        else:
            code = 0x86 if v5 else 0x04
        await _send(writer, bytes((0x20, 3 if v5 else 2, 0, code)) + (b"\x00" if v5 else b""))
        if code:
            return
        for _ in range(MAX_MQTT_PACKETS):
            kind, body = await read_mqtt_packet(reader)
            if kind == 14:  # DISCONNECT
                return
            if kind == 12:  # PINGREQ
                await _send(writer, b"\xd0\x00")
            elif kind == 8 and len(body) >= 2:  # SUBSCRIBE: refused (0x80) by the ACL
                await _send(writer, b"\x90\x03" + body[:2] + b"\x80")


async def read_mqtt_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    async with asyncio.timeout(IDLE_TIMEOUT):
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        for _ in range(4):
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise ValueError("MQTT length longer than 4 bytes")
        if length > MAX_MQTT_PACKET:
            raise ValueError("MQTT packet too large")
        return first >> 4, await reader.readexactly(length)


def parse_connect(body: bytes) -> dict[str, Any]:
    """Protocol level, user name and password of a CONNECT (3.1, 3.1.1 or 5.0)."""
    offset = 0

    def string() -> bytes:
        nonlocal offset
        (size,) = struct.unpack_from("!H", body, offset)
        value = body[offset + 2:offset + 2 + size]
        if len(value) != size:
            raise ValueError("truncated CONNECT")
        offset += 2 + size
        return value

    def varint() -> int:
        nonlocal offset
        value = 0
        for index in range(4):
            byte = body[offset]
            offset += 1
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                return value
        raise ValueError("bad varint")

    string()  # protocol name
    level, flags = body[offset], body[offset + 1]
    offset += 4  # level, flags, keep-alive
    if level == 5:
        offset += varint()  # properties
    string()  # client identifier
    if flags & 0x04:  # will
        if level == 5:
            offset += varint()
        string()
        string()
    username = string().decode("utf-8", "replace") if flags & 0x80 else None
    password = string().decode("utf-8", "replace") if flags & 0x40 else None
    return {"level": level, "username": username, "password": password}


# --- command line ----------------------------------------------------------------------------


def write_truth(path: Path, devices: list[FarmDevice], seed: int, latency: float) -> None:
    document = {
        "seed": seed, "devices": len(devices), "latency_ms": round(latency * 1000),
        "ports": list(FARM_PORTS),
        "budget": {"max_per_account": 3, "max_per_service": 15},
        "candidates": {protocol: budgeted_candidates(protocol, port) for protocol, port in
                       (("telnet", TELNET_PORT), ("http", HTTP_PORT), ("mqtt", MQTT_PORT))},
        "inventory": [{"address": d.address, "kind": d.kind,
                       "services": [{"protocol": s.protocol, "port": s.port} for s in d.services]}
                      for d in devices],
        "entries": truth(devices),
    }
    path.write_text(json.dumps(document, indent=1))


async def serve(args: argparse.Namespace) -> None:
    devices = build_devices(args.devices, args.seed)
    if args.truth:
        write_truth(Path(args.truth), devices, args.seed, args.latency_ms / 1000)
    farm = Farm(devices, args.latency_ms / 1000, args.telnet_tries)
    started = time.monotonic()
    await farm.start()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "devices": len(devices), "servers": len(farm._servers),
                          "first": devices[0].address, "last": devices[-1].address,
                          "start_s": round(time.monotonic() - started, 3)}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024)
    if args.serve:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(args.max_seconds):
            while True:
                if not args.serve:
                    await asyncio.sleep(3600)
                    continue
                line = (await reader.readline()).decode().strip()
                if not line or line == "quit":
                    break
                if line == "stats":
                    answer = farm.counters.summary()
                elif line == "reset":
                    farm.reset()
                    answer = {"ok": True}
                else:
                    answer = {"error": f"unknown command {line[:40]!r}"}
                out.write(json.dumps(answer) + "\n")
                out.flush()
    except TimeoutError:
        pass
    finally:
        await farm.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay before each connection's first byte (e.g. 0 or 50)")
    parser.add_argument("--telnet-tries", type=int, default=MAX_FAILURES,
                        help="login tries per Telnet connection before it is closed (default 3, "
                             "as login(1))")
    parser.add_argument("--truth", help="write the truth file (JSON) here")
    parser.add_argument("--serve", action="store_true",
                        help="take commands on stdin (stats, reset, quit); stop at EOF")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop serving after this long whatever happens (default 3600)")
    args = parser.parse_args(argv)
    if not 0 <= args.latency_ms <= 5000:
        parser.error("--latency-ms must be within 0-5000")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
