"""Where a webhook created through the API may point.

A token holder who could aim a schedule's webhook anywhere would turn the service into a
port scanner of its own network (the delivery log says what answered). So the API refuses
hosts that are this machine (loopback, unspecified), link-local (cloud metadata lives there),
multicast, or inside the scope the service scans, unless the administrator allowed their
network with ``serve --webhook-allow``. Host names are resolved once, here; every address
they name must pass. The CLI, run by the administrator, is not restricted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from scanner.targets import Scope

RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refusal(address: IPAddress, authorised: Scope, allowed: Scope | None) -> str | None:
    """Why a webhook may not be delivered to ``address``; None when it may."""
    if allowed is not None and allowed.allows(str(address)):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return "is this machine"
    if address.is_link_local:
        return "is link-local"
    if address.is_multicast:
        return "is multicast"
    if authorised.allows(str(address)):
        return "lies inside the authorised scan scope"
    return None


async def check_webhook_url(url: str, authorised: Scope, allowed: Scope | None,
                            timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
    """A one-line ValueError when ``url``'s host, or any address it resolves to, is refused."""
    host = urlsplit(url).hostname
    if not host:
        raise ValueError(f"webhook {url[:200]!r} names no host")
    addresses: Sequence[IPAddress]
    try:
        addresses = [ipaddress.ip_address(host.split("%")[0])]
    except ValueError:
        addresses = await _resolve(host, timeout_s)
    for address in addresses:
        why = refusal(address, authorised, allowed)
        if why is not None:
            raise ValueError(f"webhook host {host[:100]} ({address}) {why}; an administrator "
                             "can allow its network with `serve --webhook-allow`")


async def _resolve(host: str, timeout_s: float) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, TimeoutError):
        raise ValueError(f"webhook host {host[:100]} does not resolve") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
