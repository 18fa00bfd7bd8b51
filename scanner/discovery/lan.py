"""Link-local discovery: ARP, mDNS/DNS-SD and SSDP/UPnP.

Multicast and broadcast only ever go out of an interface whose own subnet holds in-scope targets
(a loopback-only or routed scope sends none); answers about addresses outside the scope are
dropped, and UPnP description URLs are fetched only when their host is in scope.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from scanner.discovery.oui import lookup_vendor, normalize_mac
from scanner.http import request as http_request
from scanner.net import Network, ScopeViolation
from scanner.protocols.udp import (
    SSDP_MULTICAST_V4,
    SSDP_PORT,
    parse_ssdp_reply,
    ssdp_msearch,
)
from scanner.protocols.upnp import DescriptionError, parse_description
from scanner.targets import Scope

log = logging.getLogger("iotbaseline.discovery")

MAX_ARP_ADDRESSES = 4096
MAX_MDNS_TYPES = 64
MAX_MDNS_INSTANCES = 256
MAX_DESCRIPTION_BYTES = 256 * 1024


@dataclass
class LanFacts:
    """What link-local discovery learnt about one address."""

    mac: str | None = None
    vendor: str | None = None
    hostnames: set[str] = field(default_factory=set)
    mdns_services: set[str] = field(default_factory=set)
    properties: dict[str, str] = field(default_factory=dict)  # model, firmware, … from TXT
    upnp: dict[str, str] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)

    def merge(self, other: LanFacts) -> None:
        self.mac = self.mac or other.mac
        self.vendor = self.vendor or other.vendor
        self.hostnames |= other.hostnames
        self.mdns_services |= other.mdns_services
        self.properties.update(other.properties)
        self.upnp.update(other.upnp)
        self.sources |= other.sources


@dataclass(frozen=True)
class LocalLink:
    interface: str
    source: str  # our address on that link
    network: ipaddress.IPv4Network


def local_links(scope: Scope) -> list[LocalLink]:
    """Non-loopback IPv4 interfaces whose directly attached subnet overlaps the scope."""
    import scapy.route  # noqa: F401  (populates conf.route)
    from scapy.config import conf

    links = []
    for net, mask, gateway, interface, source, _metric in conf.route.routes:
        name = getattr(interface, "name", interface)
        if gateway != "0.0.0.0" or name == "lo" or not mask or source in ("0.0.0.0", ""):
            continue
        network = ipaddress.IPv4Network((net, bin(mask).count("1")), strict=False)
        if network.prefixlen == 32 or network.is_loopback or network.is_multicast:
            continue
        first, last = int(network.network_address) + 1, int(network.broadcast_address) - 1
        if any(i.version == 4 and i.first <= last and first <= i.last for i in scope.intervals):
            links.append(LocalLink(str(name), source, network))
    return links


def can_use_raw_sockets() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        return True
    except (PermissionError, OSError, AttributeError):
        return False


def _arp_blocking(link: LocalLink, addresses: list[str], timeout: float) -> dict[str, str]:
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    answered, _ = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=addresses), iface=link.interface,
                      timeout=timeout, verbose=0, retry=1)
    return {reply.psrc: reply.hwsrc for _, reply in answered}


async def arp_sweep(network: Network, link: LocalLink, timeout: float) -> dict[str, str]:
    addresses = [a for a in (str(ip) for ip in link.network.hosts())
                 if network.scope.allows(a)][:MAX_ARP_ADDRESSES]
    if not addresses:
        return {}
    answers = await network.run_blocking(_arp_blocking, link, addresses, timeout)
    return {ip: mac for ip, mac in answers.items() if network.scope.allows(ip)}


async def mdns_browse(scope: Scope, link: LocalLink, wait: float) -> dict[str, LanFacts]:
    """Browse DNS-SD service types, then instances, on one link; keep in-scope answers."""
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    found: dict[str, LanFacts] = {}
    types: set[str] = set()
    instances: set[tuple[str, str]] = set()

    def on_change(zeroconf: object, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Added:
            return
        if service_type == "_services._dns-sd._udp.local.":
            types.add(name)
        elif len(instances) < MAX_MDNS_INSTANCES:
            instances.add((service_type, name))

    zc = AsyncZeroconf(interfaces=[link.source], ip_version=IPVersion.V4Only)
    browsers = []
    try:
        browsers.append(AsyncServiceBrowser(zc.zeroconf, ["_services._dns-sd._udp.local."],
                                            handlers=[on_change]))
        await asyncio.sleep(wait / 2)
        for service_type in sorted(types)[:MAX_MDNS_TYPES]:
            browsers.append(AsyncServiceBrowser(zc.zeroconf, [service_type],
                                                handlers=[on_change]))
        await asyncio.sleep(wait / 2)
        resolving = asyncio.Semaphore(16)

        async def resolve(service_type: str, name: str) -> AsyncServiceInfo | None:
            info = AsyncServiceInfo(service_type, name)
            async with resolving:
                return info if await info.async_request(zc.zeroconf, 1000) else None

        resolved = await asyncio.gather(*(resolve(t, n) for t, n in sorted(instances)),
                                        return_exceptions=True)
        for info in resolved:
            if not isinstance(info, AsyncServiceInfo):
                continue
            service_type = info.type
            for address in info.parsed_addresses(IPVersion.V4Only):
                if not scope.allows(address):
                    continue
                facts = found.setdefault(address, LanFacts())
                facts.sources.add("mdns")
                facts.mdns_services.add(service_type.removesuffix(".local."))
                if info.server:
                    facts.hostnames.add(info.server.rstrip("."))
                for key, value in (info.properties or {}).items():
                    if key and value is not None and len(facts.properties) < 64:
                        facts.properties[key.decode("utf-8", "replace")[:64]] = \
                            value.decode("utf-8", "replace")[:256]
    finally:
        for browser in browsers:
            await browser.async_cancel()
        await zc.async_close()
    return found


class _SsdpCollector(asyncio.DatagramProtocol):
    def __init__(self, limit: int) -> None:
        self.replies: list[tuple[str, bytes]] = []
        self.limit = limit

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.replies) < self.limit:
            self.replies.append((addr[0], data[:8192]))


async def ssdp_multicast(scope: Scope, link: LocalLink, wait: float) -> list[tuple[str, bytes]]:
    """One M-SEARCH to the SSDP group from our address on the link; in-scope replies only."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(link.source))
    sock.bind((link.source, 0))
    transport, protocol = await loop.create_datagram_endpoint(lambda: _SsdpCollector(1024),
                                                              sock=sock)
    try:
        transport.sendto(ssdp_msearch(SSDP_MULTICAST_V4, mx=max(1, int(wait))),
                         (SSDP_MULTICAST_V4, SSDP_PORT))
        await asyncio.sleep(wait)
    finally:
        transport.close()
    return [(host, data) for host, data in protocol.replies if scope.allows(host)]


async def fetch_description(network: Network, location: str) -> dict[str, str]:
    """GET a UPnP description over HTTP(S); the gate refuses a LOCATION outside the scope."""
    try:
        response = await http_request(network, "GET", location, transcript=None,
                                      follow_redirects=False, max_body=MAX_DESCRIPTION_BYTES)
    except ValueError as exc:  # a malformed URL from the device
        raise DescriptionError(f"unusable LOCATION {location[:200]!r}: {exc}") from None
    if response.status != 200:
        raise DescriptionError(f"description fetch answered HTTP {response.status}")
    return parse_description(response.body)


async def upnp_from_replies(network: Network,
                            replies: list[tuple[str, bytes]]) -> dict[str, LanFacts]:
    """Turn SSDP replies into device facts, fetching each distinct in-scope LOCATION once."""
    found: dict[str, LanFacts] = {}
    fetched: set[str] = set()
    for host, data in replies:
        reply = parse_ssdp_reply(data)
        if reply is None:
            continue
        facts = found.setdefault(host, LanFacts())
        facts.sources.add("ssdp")
        if reply.server:
            facts.upnp.setdefault("server", reply.server[:256])
        if not reply.location or reply.location in fetched or len(fetched) >= 64:
            continue
        fetched.add(reply.location)
        facts.upnp["location"] = reply.location[:512]
        try:
            facts.upnp.update(await fetch_description(network, reply.location))
        except ScopeViolation:
            facts.upnp["location_note"] = "LOCATION points outside the scope; not fetched"
        except Exception as exc:  # whatever a device's reply provokes costs only this fact
            facts.upnp["location_note"] = f"description not read: {type(exc).__name__}: " \
                                          f"{exc}"[:256]
    return found


async def ssdp_unicast(network: Network, host: str, wait: float) -> dict[str, LanFacts]:
    """UPnP 1.1 unicast M-SEARCH to one device: works off-link and on loopback labs."""
    replies = await network.udp_exchange(host, SSDP_PORT, ssdp_msearch(host), timeout=wait)
    return await upnp_from_replies(network, [(host, reply) for reply in replies])


async def discover_links(network: Network, *, arp: bool, mdns: bool, ssdp: bool,
                         wait: float) -> tuple[dict[str, LanFacts], list[str]]:
    """Run the link-local methods the profile allows; return facts and notes on what was skipped."""
    notes: list[str] = []
    facts: dict[str, LanFacts] = {}
    if not (arp or mdns or ssdp):
        return facts, notes
    links = local_links(network.scope)
    if not links:
        notes.append("ARP, mDNS and multicast SSDP skipped: no target is on a directly "
                     "attached subnet")
        return facts, notes

    def merge(found: dict[str, LanFacts]) -> None:
        for address, new in found.items():
            facts.setdefault(address, LanFacts()).merge(new)

    raw = can_use_raw_sockets()
    if arp and not raw:
        notes.append("ARP skipped: raw sockets need root or CAP_NET_RAW")
    for link in links:
        tasks: list[tuple[str, Coroutine[Any, Any, Any]]] = []
        if arp and raw:
            tasks.append(("arp", arp_sweep(network, link, wait)))
        if mdns:
            tasks.append(("mdns", mdns_browse(network.scope, link, wait)))
        if ssdp:
            tasks.append(("ssdp", ssdp_multicast(network.scope, link, wait)))
        results = await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
        for (name, _), result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException):
                notes.append(f"{name} on {link.interface} failed: "
                             f"{type(result).__name__}: {result}"[:300])
            elif name == "arp":
                merge({ip: LanFacts(mac=normalize_mac(mac), vendor=lookup_vendor(mac),
                                    sources={"arp"}) for ip, mac in result.items()})
            elif name == "mdns":
                merge(result)
            else:
                merge(await upnp_from_replies(network, result))
        log.info("link %s (%s): %d addresses answered", link.interface, link.network,
                 len(facts))
    return facts, notes
