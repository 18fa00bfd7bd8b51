"""The network gate: the only way any part of the scanner opens a socket.

Every connection passes the scope check, takes a global and a per-host slot, waits for the
per-host rate limit, and gets connect/read timeouts and a byte cap on every read. Exchanges are
recorded into a transcript so findings carry reproducible evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from scanner.models import Exchange, utc_now
from scanner.targets import Scope

T = TypeVar("T")

REDACTED = "«redacted»"
WATCHDOG_SLACK = 0.001  # seconds a read's timeout may fire late, to keep one timer per connection


class ScopeViolation(ConnectionError):
    """A probe or a device reply tried to reach an address the user did not authorise."""


class ReadLimitExceeded(ConnectionError):
    """A device sent more than the byte cap allows for one read."""


@dataclass(frozen=True)
class Limits:
    """Politeness and safety limits; a scan profile sets them, CLI flags override."""

    concurrency: int = 256  # connections in flight across the whole scan
    per_host: int = 2  # connections in flight to one device (IoT devices are fragile)
    rate: float = 25.0  # new connections per second to one device
    connect_timeout: float = 2.0
    read_timeout: float = 4.0
    max_read_bytes: int = 256 * 1024  # cap on any single read
    probe_budget: float = 30.0  # total seconds one probe may spend on one service
    blocking_workers: int = 8  # threads for blocking libraries (paramiko)


def _escape_table() -> tuple[str, ...]:
    table = []
    for byte in range(256):
        if byte == 0x5C:
            table.append("\\\\")
        elif 0x20 <= byte < 0x7F or byte in (0x0A, 0x09):
            table.append(chr(byte))
        elif byte == 0x0D:
            table.append("\\r")
        else:
            table.append(f"\\x{byte:02x}")
    return tuple(table)


_ESCAPES = _escape_table()
# Bytes that escape to themselves, or (CR, backslash) to a fixed pair: most exchanges (HTTP,
# Telnet text) hold nothing else, and take a path that stays in C.
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\r"


def escape_bytes(data: bytes) -> str:
    """Readable and reversible: printable ASCII, newlines and tabs kept, the rest as \\xNN."""
    if data.translate(None, _TEXT_BYTES):
        return "".join(_ESCAPES[byte] for byte in data)
    text = data.decode("ascii")
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    return text.replace("\r", "\\r") if "\r" in text else text


class Transcript:
    """What was sent and seen, capped in entries and bytes, with secrets redacted."""

    MAX_ENTRIES = 200
    MAX_BYTES_PER_ENTRY = 4096

    def __init__(self, show_secrets: bool = False) -> None:
        self._exchanges: list[Exchange] = []
        self._unbuilt: list[tuple[datetime, str, str, str, bool]] = []
        self._secrets: list[str] = []  # kept escaped, as they appear in recorded text
        self._show_secrets = show_secrets
        self.dropped = 0

    def add_secret(self, secret: str | bytes) -> None:
        value = secret.encode() if isinstance(secret, str) else secret
        escaped = escape_bytes(value)
        if value and not self._show_secrets and escaped not in self._secrets:
            self._secrets.append(escaped)
            # Longest first: a short secret ("YWRtaW46", admin:"") must not cut into a longer
            # one ("YWRtaW46MTIzNDU=") and leave the rest of it readable.
            self._secrets.sort(key=len, reverse=True)

    @property
    def exchanges(self) -> list[Exchange]:
        """What was recorded, in order. Built when first read: most transcripts are never read
        (a passing login check's), and validating a model per read and write was a third of
        the time spent in Transcript in the credential benchmark."""
        if self._unbuilt:
            self._exchanges.extend(
                Exchange(at=at, direction=direction, endpoint=endpoint, data=data,
                         truncated=truncated)
                for at, direction, endpoint, data, truncated in self._unbuilt)
            self._unbuilt.clear()
        return self._exchanges

    def _full(self) -> bool:
        if len(self._exchanges) + len(self._unbuilt) < self.MAX_ENTRIES:
            return False
        self.dropped += 1
        return True

    def record(self, direction: str, endpoint: str, data: bytes | str) -> None:
        if self._full():
            return
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
        truncated = len(raw) > self.MAX_BYTES_PER_ENTRY
        text = escape_bytes(raw[: self.MAX_BYTES_PER_ENTRY])
        for secret in self._secrets:  # the endpoint too: a GET login carries it in the URL
            text = text.replace(secret, REDACTED)
            endpoint = endpoint.replace(secret, REDACTED)
        self._unbuilt.append((utc_now(), direction, endpoint, text, truncated))

    def append(self, exchange: Exchange) -> None:
        """An exchange recorded elsewhere (a shared collection), within this transcript's cap."""
        if not self._full():
            self.exchanges.append(exchange)


class _HostGate:
    """Concurrency slots and a start-rate limit for one device."""

    def __init__(self, per_host: int, rate: float) -> None:
        self.slots = asyncio.Semaphore(per_host)
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_start = 0.0
        self.users = 0  # waiting for a slot or holding one
        self.open = 0  # holding one

    async def pace(self) -> None:
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class Connection:
    """A TCP (optionally TLS) stream with bounded reads and a transcript.

    Read deadlines share one timer per connection (a watchdog) instead of one per read: a
    login attempt makes about ten reads that each end in microseconds, and a timer per read
    (``asyncio.timeout``) was a tenth of the scanner's CPU time in the credential benchmark.
    The watchdog moves only when a read needs an earlier deadline; when it fires for a read
    that has already ended, it re-arms for the read then waiting, or stays off until the next.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 endpoint: str, limits: Limits, transcript: Transcript | None,
                 release: Callable[[], None]) -> None:
        self.reader = reader
        self.writer = writer
        self.endpoint = endpoint
        self.limits = limits
        self.transcript = transcript
        self._release = release
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self._reading: asyncio.Task[Any] | None = None  # the task in a read, if one is
        self._read_deadline = 0.0
        self._expired = False

    @property
    def peer_certificate_der(self) -> bytes | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object else None

    @property
    def tls_version(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.version() if ssl_object else None

    def _record(self, direction: str, data: bytes) -> None:
        if self.transcript is not None and data:
            self.transcript.record(direction, self.endpoint, data)

    async def send(self, data: bytes) -> None:
        self._record("sent", data)
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size():  # only then can drain() wait
            async with asyncio.timeout(self.limits.read_timeout):
                await self.writer.drain()
        else:
            await self.writer.drain()  # raises at once if the peer reset the connection

    def _arm(self, deadline: float) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            # Within a millisecond is close enough: callers that pass "deadline - now" as a
            # timeout arrive a float rounding earlier, and would move the timer every read.
            if watchdog.when() <= deadline + WATCHDOG_SLACK:
                return
            watchdog.cancel()
        self._watchdog = self._loop.call_at(deadline, self._on_watchdog, deadline)

    def _on_watchdog(self, when: float) -> None:
        self._watchdog = None
        if self._reading is None:
            return
        if self._read_deadline <= when:
            self._expired = True
            self._reading.cancel()
        else:
            self._arm(self._read_deadline)

    async def _read(self, cap: int, deadline: float) -> bytes:
        """One read of up to ``cap`` bytes; TimeoutError at ``deadline`` (loop time)."""
        task = asyncio.current_task()
        assert task is not None
        if self._reading is not None:  # as StreamReader would, but before touching the timer
            raise RuntimeError(f"{self.endpoint}: a read is already waiting on this connection")
        cancelling = task.cancelling()
        self._reading, self._read_deadline, self._expired = task, deadline, False
        self._arm(deadline)
        try:
            return await self.reader.read(cap)
        except asyncio.CancelledError:
            # As asyncio.timeout does: ours if we cancelled and nobody else did meanwhile.
            if self._expired and task.uncancel() <= cancelling:
                raise TimeoutError(f"no data from {self.endpoint} in time") from None
            raise
        finally:
            self._reading = None

    def _deadline(self, timeout: float | None) -> float:
        return self._loop.time() + (timeout if timeout is not None
                                    else self.limits.read_timeout)

    async def recv(self, max_bytes: int | None = None, timeout: float | None = None, *,
                   record: bool = True) -> bytes:
        """Whatever arrives first (b"" at EOF); raises TimeoutError when nothing does.

        ``record=False`` keeps the bytes out of the transcript (payloads that may be personal
        data); the caller records a summary instead."""
        cap = min(max_bytes or self.limits.max_read_bytes, self.limits.max_read_bytes)
        data = await self._read(cap, self._deadline(timeout))
        if record:
            self._record("received", data)
        return data

    async def recv_until(self, done: Callable[[bytes], bool], max_bytes: int | None = None,
                         timeout: float | None = None) -> bytes:
        """Read until ``done(buffer)``, EOF, the byte cap or the deadline; returns what came.

        Running out of time or bytes is not an error here: the caller judges what it got.
        """
        cap = min(max_bytes or self.limits.max_read_bytes, self.limits.max_read_bytes)
        deadline = self._deadline(timeout)
        buffer = bytearray()
        while len(buffer) < cap and not done(bytes(buffer)):
            if self._loop.time() >= deadline:
                break
            try:
                chunk = await self._read(cap - len(buffer), deadline)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer.extend(chunk)
        self._record("received", bytes(buffer))
        return bytes(buffer)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        try:
            self.writer.close()
            async with asyncio.timeout(1.0):  # (wait_for would cost a task per connection)
                await self.writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            # A TLS peer that never answers close_notify keeps the socket open: cut it, so the
            # device never has more of our connections than the slots say.
            self.writer.transport.abort()
        finally:
            self._release()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class BoundedSocket:
    """A blocking socket for a library that cannot be bounded itself (paramiko, as client in
    probes and as server in the lab): reads end (EOF) at the byte cap, at the deadline or once
    shut down, and writes fail then, so the library's thread always ends on its own.

    paramiko reads an SSH identification line with no length limit and loops on timeouts, so
    the limits must sit under it. Only the methods paramiko's Transport and Packetizer use
    exist."""

    def __init__(self, sock: socket.socket, deadline: float, cap: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self._cap = cap
        self.received = 0
        self.stopped = ""  # why reads ended early: "byte cap", "deadline", "aborted"
        self._closed = False  # paramiko's stop_thread() reads this attribute

    def _refuse(self) -> bool:
        if self._closed:
            self.stopped = self.stopped or "aborted"
        elif self.received >= self._cap:
            self.stopped = "byte cap"
        elif time.monotonic() >= self._deadline:
            self.stopped = "deadline"
        else:
            return False
        return True

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def recv(self, size: int) -> bytes:
        if self._refuse():
            return b""
        data = self._sock.recv(max(1, min(size, self._cap - self.received)))
        self.received += len(data)
        return data

    def send(self, data: bytes) -> int:
        if self._refuse():
            raise ConnectionAbortedError(f"connection stopped ({self.stopped})")
        return self._sock.send(data)

    def sendall(self, data: bytes) -> None:
        if self._refuse():
            raise ConnectionAbortedError(f"connection stopped ({self.stopped})")
        self._sock.sendall(data)

    def shutdown(self) -> None:
        """Wake a blocked read at once (safe from any thread)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._sock.close()


@functools.cache
def insecure_tls_context() -> ssl.SSLContext:
    """Accept any certificate and the widest protocol range: we observe, we do not trust.

    One shared context: building one costs more CPU than a whole login attempt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):  # a build without SECLEVEL keeps its default
        context.set_ciphers("ALL:@SECLEVEL=0")
    return context


NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: expiry is judged on its own check


@functools.lru_cache(maxsize=16)
def verifying_tls_context(ca_files: tuple[str, ...], *,
                          chain_only: bool = False) -> ssl.SSLContext:
    """The system store plus a profile's CA files, built once per set: loading the store
    costs more than a handshake, and every TLS service and update URL asks for it.

    By default it verifies as a device should (chain, host name, dates, modern protocols).
    ``chain_only`` judges the chain alone: every version and suite, no host name and no dates,
    for checks that report those on their own."""
    if chain_only:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_default_certs()
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with contextlib.suppress(ssl.SSLError):
            context.set_ciphers("ALL:@SECLEVEL=0")
        context.verify_flags |= NO_CHECK_TIME
    else:
        context = ssl.create_default_context()
    for path in ca_files:
        context.load_verify_locations(cafile=path)
    return context


class UdpSession(asyncio.DatagramProtocol):
    """A datagram conversation with one host whose replies may come from any of its ports.

    Some protocols answer from a fresh port: a TFTP server sends DATA from a new transfer id,
    not from port 69, so the connected socket of ``udp_exchange`` would never see it. A session
    uses one unconnected socket and accepts datagrams from the target HOST on any port; every
    datagram from another host is dropped (and counted), every send is scope-checked with its
    port, each datagram is capped at ``max_read_bytes``, at most ``MAX_QUEUED`` wait unread and
    at most ``max_datagrams`` are accepted in the session's life.
    """

    MAX_QUEUED = 64

    def __init__(self, network: Network, host: str, port: int, transcript: Transcript | None,
                 max_datagrams: int) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.transcript = transcript
        self.max_datagrams = max_datagrams
        self.accepted = 0  # datagrams taken from the host
        self.dropped_foreign = 0  # datagrams from any other host: never read
        self.dropped_overflow = 0  # from the host, but the queue or the session cap was full
        self._address = _comparable_address(host)
        self._queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue(self.MAX_QUEUED)
        self._error: Exception | None = None
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # selector's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if _comparable_address(str(addr[0])) != self._address:
            self.dropped_foreign += 1
            return
        if self.accepted >= self.max_datagrams or self._queue.full():
            self.dropped_overflow += 1
            return
        self.accepted += 1
        self._queue.put_nowait((data[: self.network.limits.max_read_bytes], int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        self._error = exc

    def _endpoint(self, port: int) -> str:
        return f"udp://{host_for_url(self.host)}:{port}"

    def send(self, payload: bytes, port: int | None = None, *, record: bool = True) -> None:
        """Send one datagram to the host: the service port, or ``port`` (a transfer id)."""
        destination = self.port if port is None else port
        self.network.check_scope(self.host, destination)  # an excluded port stays untouched
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("UDP session is closed")
        if record and self.transcript is not None:
            self.transcript.record("sent", self._endpoint(destination), payload)
        self._transport.sendto(payload, (self.host, destination))

    async def recv(self, timeout: float | None = None, *,
                   record_bytes: int | None = None) -> tuple[bytes, int]:
        """The next datagram from the host and the port it came from; TimeoutError when none.

        ``record_bytes`` limits what the transcript keeps of it (0: nothing), for payloads that
        may hold secrets."""
        if self._queue.empty() and self._error is not None:
            error, self._error = self._error, None
            raise ConnectionError(f"UDP error from {self.host}: {error}")
        if self._queue.empty() and self.accepted >= self.max_datagrams:
            raise ReadLimitExceeded(f"more than {self.max_datagrams} datagrams from {self.host}")
        data, port = await asyncio.wait_for(
            self._queue.get(), timeout if timeout is not None else self.network.limits.read_timeout)
        if self.transcript is not None and record_bytes != 0:
            kept = data if record_bytes is None else data[:record_bytes]
            self.transcript.record("received", self._endpoint(port), kept)
        return data, port


@dataclass
class Network:
    """Scope-checked, rate-limited access to the network, shared by discovery and probes."""

    scope: Scope
    limits: Limits = field(default_factory=Limits)
    _global: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _hosts: dict[str, _HostGate] = field(default_factory=dict, init=False, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    connections_opened: int = field(default=0, init=False)
    scope_refusals: list[str] = field(default_factory=list, init=False)
    _peak_open_per_host: int = field(default=0, init=False, repr=False)

    @property
    def peak_open_per_host(self) -> int:
        """The most slots one host held at once in this network's life: TCP connections, UDP
        exchanges and sessions, and library sockets (``slot``) alike, since each is a socket
        the device serves. Evidence that ``per_host`` held, read from the gate itself."""
        return self._peak_open_per_host

    def check_scope(self, host: str, port: int | None = None) -> None:
        if not self.scope.allows(host, port):
            note = f"{host}:{port}" if port is not None else host
            if len(self.scope_refusals) < 1000:
                self.scope_refusals.append(note)
            raise ScopeViolation(f"{note} is outside the authorised scope; not contacted")

    async def _acquire(self, host: str) -> Callable[[], None]:
        """Take the host's slot, wait for its pace, then a global slot; returns the release.

        Pacing happens before the global slot is taken, so a slow host holds none of the
        scan-wide capacity while it waits."""
        if self._global is None:
            self._global = asyncio.Semaphore(self.limits.concurrency)
        global_slots = self._global
        gate = self._hosts.get(host)
        if gate is None:
            gate = self._hosts[host] = _HostGate(self.limits.per_host, self.limits.rate)
        gate.users += 1
        try:
            await gate.slots.acquire()
        except BaseException:
            self._forget(host, gate)
            raise
        try:
            await gate.pace()
            await global_slots.acquire()
        except BaseException:
            gate.slots.release()
            self._forget(host, gate)
            raise
        self.connections_opened += 1
        gate.open += 1
        self._peak_open_per_host = max(self._peak_open_per_host, gate.open)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                gate.open -= 1
                global_slots.release()
                gate.slots.release()
                self._forget(host, gate)

        return release

    def _forget(self, host: str, gate: _HostGate) -> None:
        """Drop an idle host's gate once its pacing interval has passed, so state stays
        proportional to the hosts in flight, not to the scope."""
        gate.users -= 1
        if gate.users:
            return
        delay = max(0.0, gate.next_start - time.monotonic())

        def drop() -> None:
            if gate.users == 0 and self._hosts.get(host) is gate:
                del self._hosts[host]

        if delay:
            asyncio.get_running_loop().call_later(delay, drop)
        else:
            drop()

    async def slot(self, host: str, port: int | None = None) -> Callable[[], None]:
        """Hold a connection slot for I/O done by a library (aiohttp, paramiko, zeroconf)."""
        self.check_scope(host, port)
        return await self._acquire(host)

    async def open_tcp(self, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                       server_hostname: str | None = None, transcript: Transcript | None = None,
                       timeout: float | None = None) -> Connection:
        self.check_scope(host, port)
        release = await self._acquire(host)
        scheme = "tls" if tls else "tcp"
        endpoint = f"{scheme}://{host_for_url(host)}:{port}"
        try:
            async with asyncio.timeout(timeout if timeout is not None
                                       else self.limits.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=(server_hostname or "") if tls else None,
                    limit=self.limits.max_read_bytes)
        except BaseException:
            release()
            raise
        try:
            # One loop turn before anyone speaks: a device that sends a banner and hangs up
            # has its bytes read first, which talk-first probes (RTSP) rely on (our bytes would
            # meet a RST that drops the banner). A yield, not a task per connect (wait_for).
            await asyncio.sleep(0)
        except BaseException:  # cancelled in that turn: the socket must not outlive its slot
            writer.transport.abort()
            release()
            raise
        if transcript is not None:
            transcript.record("event", endpoint, "connected")
        return Connection(reader, writer, endpoint, self.limits, transcript, release)

    async def udp_exchange(self, host: str, port: int, payload: bytes, *,
                           transcript: Transcript | None = None, timeout: float | None = None,
                           max_replies: int = 1) -> list[bytes]:
        """Send one datagram and collect up to ``max_replies`` answers from that host:port."""
        self.check_scope(host, port)
        release = await self._acquire(host)
        endpoint = f"udp://{host_for_url(host)}:{port}"
        loop = asyncio.get_running_loop()
        replies: list[bytes] = []
        arrived = asyncio.Event()
        cap = self.limits.max_read_bytes

        class _Collector(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                if len(replies) < max_replies:
                    replies.append(data[:cap])
                    if len(replies) >= max_replies:
                        arrived.set()

            def error_received(self, exc: Exception) -> None:
                arrived.set()  # ICMP port unreachable: closed, no need to wait

        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        transport = None
        try:
            # Connected, so the kernel filters other senders and reports ICMP unreachable.
            transport, _ = await loop.create_datagram_endpoint(
                _Collector, family=family, remote_addr=(host, port))
            if transcript is not None:
                transcript.record("sent", endpoint, payload)
            transport.sendto(payload)
            with contextlib.suppress(TimeoutError):  # silence is an answer too
                await asyncio.wait_for(arrived.wait(),
                                       timeout if timeout is not None
                                       else self.limits.read_timeout)
        finally:
            if transport is not None:
                transport.close()
            release()
        if transcript is not None:
            for reply in replies:
                transcript.record("received", endpoint, reply)
        return replies

    @contextlib.asynccontextmanager
    async def udp_session(self, host: str, port: int, *, transcript: Transcript | None = None,
                          max_datagrams: int = 4096) -> AsyncIterator[UdpSession]:
        """A :class:`UdpSession` with ``host``: replies accepted from any of its ports (TFTP
        answers from a new transfer id), never from another host. Holds one per-host slot."""
        self.check_scope(host, port)
        release = await self._acquire(host)
        session = UdpSession(self, host, port, transcript, max_datagrams)
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        transport = None
        try:
            # Unconnected on purpose (replies come from new ports); the kernel picks our port.
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: session, family=family)
            yield session
        finally:
            if transport is not None:
                transport.close()
            release()

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking library call in the bounded thread pool."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.limits.blocking_workers,
                                                thread_name_prefix="iotb-blocking")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _comparable_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address in comparable form (zone id dropped, IPv4-mapped IPv6 folded); None if not
    an address."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_for_url(host: str) -> str:
    """An address as it stands in a URL or Host header (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def any_in_scope(scope: Scope, addresses: Iterable[str]) -> list[str]:
    return [address for address in addresses if scope.allows(address)]
