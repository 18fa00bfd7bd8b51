"""A packet capture of the scan's own traffic, for the evidence bundle.

``capture_traffic`` is an async context manager: while its block runs (the scan), scapy's
``AsyncSniffer`` listens on the interfaces that route to the in-scope hosts (``lo`` for a
loopback lab) and streams matching packets to a pcap file. Only traffic to or from in-scope
hosts is kept: a BPF filter ``host A or host B …`` when there are few hosts (and libpcap can
compile it), otherwise every packet is checked in Python against the host set. The capture is
bounded in packets and bytes; past either bound it stops and says so.

Capturing needs raw sockets (root or CAP_NET_RAW). Without them, or without scapy, the block
still runs and the yielded :class:`Capture` has ``path`` None and a ``reason`` that the
evidence bundle records.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.targets import Scope

MAX_PACKETS = 200_000
MAX_BYTES = 200 * 1024 * 1024
MAX_FILTER_HOSTS = 64  # more in-scope hosts than this: no BPF, filter in Python
START_TIMEOUT = 5.0
SETTLE_SECONDS = 0.2  # let the last packets of the scan arrive before stopping


@dataclass
class Capture:
    """What the capture produced; ``path`` is None when no capture was made (see ``reason``)."""

    path: Path | None
    reason: str = ""  # why there is no capture, or why it is incomplete
    interfaces: list[str] = field(default_factory=list)
    bpf: str = ""  # the kernel filter used ("" when filtering in Python)
    packets: int = 0
    bytes: int = 0
    truncated: bool = False

    def details(self) -> dict[str, object]:
        """For the evidence manifest."""
        return {"interfaces": self.interfaces, "bpf": self.bpf, "packets": self.packets,
                "bytes": self.bytes, "truncated": self.truncated}


def capture_unavailable() -> str | None:
    """Why this process cannot capture packets, or None when it can."""
    try:
        import scapy.sendrecv  # noqa: F401
    except Exception as exc:  # scapy missing or broken: no capture, the scan goes on
        return f"packet capture needs scapy: {type(exc).__name__}: {exc}"
    family = getattr(socket, "AF_PACKET", None)
    if family is None:
        return "packet capture is implemented for Linux only (no AF_PACKET sockets here)"
    try:
        probe = socket.socket(family, socket.SOCK_RAW, socket.htons(0x0003))
    except PermissionError:
        return "packet capture needs raw sockets: run as root or grant CAP_NET_RAW"
    except OSError as exc:
        return f"packet capture is not possible here: {exc.strerror or exc}"
    probe.close()
    return None


def interfaces_for(hosts: Iterable[str]) -> list[str]:
    """The interfaces the kernel routes the hosts through (``lo`` for 127.0.0.0/8)."""
    from scapy.config import conf

    found: dict[str, None] = {}
    for host in hosts:
        address = ipaddress.ip_address(host)
        if address.is_loopback:
            found[str(conf.loopback_name)] = None
            continue
        routes = conf.route6 if address.version == 6 else conf.route
        iface = routes.route(str(address))[0]
        found[str(iface)] = None
    return list(found)


def bpf_for(hosts: list[str], limit: int = MAX_FILTER_HOSTS) -> str | None:
    """``host A or host B …`` for up to ``limit`` hosts; None when there are more."""
    if not hosts or len(hosts) > limit:
        return None
    return " or ".join(f"host {ipaddress.ip_address(host)}" for host in hosts)


def _addresses(packet: Any) -> tuple[str, ...]:
    for layer in ("IP", "IPv6"):
        if packet.haslayer(layer):
            ip = packet.getlayer(layer)
            return str(ip.src), str(ip.dst)
    if packet.haslayer("ARP"):
        arp = packet.getlayer("ARP")
        return str(arp.psrc), str(arp.pdst)
    return ()


def _bpf_compiles(bpf: str, iface: str) -> bool:
    from scapy.arch.common import compile_filter

    try:
        compile_filter(bpf, iface=iface)
    except Exception:  # no libpcap or tcpdump to compile with: filter in Python instead
        return False
    return True


def _open_private(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    return os.fdopen(fd, "wb")


def capture_scope(scope: Scope, path: Path, **options: Any
                  ) -> contextlib.AbstractAsyncContextManager[Capture]:
    """``capture_traffic`` for a scan scope of any size: small scopes get a BPF host list,
    large ones are filtered in Python with the scope's own membership test; the interfaces are
    those routing to the first and last address of each target range."""
    limit = int(options.get("max_filter_hosts", MAX_FILTER_HOSTS))
    hosts = list(itertools.islice(scope.addresses(), limit + 1))
    ends = list(dict.fromkeys(
        str(ipaddress.IPv4Address(value) if interval.version == 4
            else ipaddress.IPv6Address(value))
        for interval in scope.intervals for value in (interval.first, interval.last)))
    if "interfaces" not in options and ends and capture_unavailable() is None:
        options["interfaces"] = interfaces_for(ends)
    return capture_traffic(hosts, path, contains=scope.allows if len(hosts) > limit else None,
                           **options)


@contextlib.asynccontextmanager
async def capture_traffic(hosts: Iterable[str], path: Path, *,
                          contains: Callable[[str], bool] | None = None,
                          interfaces: list[str] | None = None,
                          max_packets: int = MAX_PACKETS, max_bytes: int = MAX_BYTES,
                          max_filter_hosts: int = MAX_FILTER_HOSTS) -> AsyncIterator[Capture]:
    """Capture traffic to or from ``hosts`` into ``path`` (a new file, owner-only) while the
    block runs. ``contains``, when given, decides membership instead of the host list (for
    scopes too large to list)."""
    wanted = sorted({str(ipaddress.ip_address(host)) for host in hosts})
    reason = capture_unavailable()
    if reason is None and not wanted:
        reason = "no in-scope host to capture traffic for"
    if reason is not None:
        yield Capture(None, reason)
        return

    # the layers register the link types (Ethernet, loopback) so packets dissect to IP/ARP
    import scapy.layers.inet
    import scapy.layers.inet6
    import scapy.layers.l2  # noqa: F401
    from scapy.sendrecv import AsyncSniffer
    from scapy.utils import PcapWriter

    ifaces = interfaces or interfaces_for(wanted)
    bpf = bpf_for(wanted, max_filter_hosts) if contains is None else None
    if bpf is not None and not all(_bpf_compiles(bpf, iface) for iface in ifaces):
        bpf = None
    in_scope = set(wanted)
    member = contains or in_scope.__contains__
    capture = Capture(path, interfaces=ifaces, bpf=bpf or "")
    handle = _open_private(path)
    writer = PcapWriter(handle, sync=False)
    started = threading.Event()

    def keep(packet: Any) -> bool:
        return any(member(address) for address in _addresses(packet))

    def write(packet: Any) -> None:  # runs in the sniffer thread
        if capture.truncated:
            return
        size = len(packet)
        if capture.packets + 1 > max_packets or capture.bytes + size > max_bytes:
            capture.truncated = True
            capture.reason = (f"capture stopped at its bound ({max_packets} packets or "
                              f"{max_bytes} bytes); later traffic is not in the file")
            return
        writer.write(packet)
        capture.packets += 1
        capture.bytes += size

    sniffer = AsyncSniffer(iface=ifaces, filter=bpf, lfilter=None if bpf else keep, prn=write,
                           store=False, stop_filter=lambda _packet: capture.truncated,
                           started_callback=started.set)
    sniffer.start()
    if not await asyncio.to_thread(started.wait, START_TIMEOUT):
        error = getattr(sniffer, "exception", None)
        with contextlib.suppress(Exception):
            if sniffer.running:
                sniffer.stop()
        writer.close()
        path.unlink(missing_ok=True)
        yield Capture(None, f"packet capture could not start: {error or 'timed out'}")
        return
    try:
        yield capture
    finally:
        await asyncio.sleep(SETTLE_SECONDS)
        if sniffer.running:
            await asyncio.to_thread(sniffer.stop)
        elif sniffer.thread is not None:
            await asyncio.to_thread(sniffer.thread.join, START_TIMEOUT)
        writer.close()
        error = getattr(sniffer, "exception", None)
        if error is not None and not capture.reason:
            capture.reason = f"capture ended early: {type(error).__name__}: {error}"
