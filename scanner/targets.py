"""Targets and scope: what the user authorised, and the one check every socket goes through.

Targets are kept as address intervals, never expanded into lists, so a /16 costs a few integers
and addresses are produced lazily as the engine asks for them.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ADDRESSES_WITHOUT_FORCE = 65_536
MAX_TARGET_FILE_BYTES = 4 * 1024 * 1024


class TargetError(ValueError):
    """A target or exclusion the user gave cannot be used; the message is shown as is."""


# Blocks that are not globally routable; a target must lie wholly inside one of them unless the
# user passes --allow-public. Derived from the IANA special-purpose registries.
_NON_GLOBAL_BLOCKS = [
    ipaddress.ip_network(block)
    for block in (
        "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
        "::1/128", "::/128", "fc00::/7", "fe80::/10", "2001:db8::/32", "100::/64",
    )
]


@dataclass(frozen=True, order=True)
class AddressInterval:
    """Inclusive interval of addresses of one IP version."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def addresses(self) -> Iterator[str]:
        for value in range(self.first, self.last + 1):
            yield str(_address(self.version, value))

    def is_public(self) -> bool:
        mapped = ipaddress.IPv6Network("::ffff:0:0/96")
        if self.version == 6 and int(mapped.network_address) <= self.first and \
                self.last <= int(mapped.broadcast_address):
            low = self.first - int(mapped.network_address)
            return AddressInterval(4, low, self.last - int(mapped.network_address)).is_public()
        for block in _NON_GLOBAL_BLOCKS:
            if block.version != self.version:
                continue
            lo, hi = int(block.network_address), int(block.broadcast_address)
            if lo <= self.first and self.last <= hi:
                return False
        return True

    def is_multicast(self) -> bool:
        return any(_address(self.version, v).is_multicast for v in (self.first, self.last))

    def is_this_host_alias(self) -> bool:
        """0.0.0.0/8 and :: mean "this host" to the kernel, not a device on the network."""
        return (self.version == 4 and self.first < 1 << 24) or \
            _address(self.version, self.first).is_unspecified


def _address(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _interval(first: IPAddress, last: IPAddress) -> AddressInterval:
    if first.version != last.version:
        raise TargetError(f"range mixes IPv4 and IPv6: {first}-{last}")
    if int(last) < int(first):
        raise TargetError(f"range ends before it starts: {first}-{last}")
    return AddressInterval(first.version, int(first), int(last))


def _parse_range(spec: str) -> AddressInterval:
    start_text, _, end_text = spec.partition("-")
    try:
        start = ipaddress.ip_address(start_text.strip())
    except ValueError:
        raise TargetError(f"not an address range: {spec!r}") from None
    end_text = end_text.strip()
    end: IPAddress
    if start.version == 4 and end_text.isdigit():  # 10.0.0.5-40: last octet
        if int(end_text) > 255:
            raise TargetError(f"range end {end_text} is not an octet in {spec!r}")
        end = ipaddress.IPv4Address((int(start) & ~0xFF) | int(end_text))
    else:
        try:
            end = ipaddress.ip_address(end_text)
        except ValueError:
            raise TargetError(f"not an address range: {spec!r}") from None
    return _interval(start, end)


def _parse_network(spec: str) -> AddressInterval:
    try:
        network = ipaddress.ip_network(spec, strict=False)
    except ValueError as exc:
        raise TargetError(f"not a network: {spec!r} ({exc})") from None
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4 and network.prefixlen <= 30:
        first, last = first + 1, last - 1  # network and broadcast addresses are not devices
    return AddressInterval(network.version, first, last)


def _resolve(hostname: str) -> list[AddressInterval]:
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise TargetError(f"cannot resolve host name {hostname!r}") from None
    addresses = sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos},
                       key=lambda a: (a.version, int(a)))
    return [_interval(address, address) for address in addresses]


def _looks_like_hostname(spec: str) -> bool:
    labels = spec.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and not label.startswith("-")
        for label in labels
    ) and not spec.replace(".", "").isdigit()


def parse_target(spec: str) -> tuple[list[AddressInterval], dict[str, str]]:
    """One target spec -> intervals, plus a map of address -> host name for named targets."""
    spec = spec.strip()
    if not spec:
        raise TargetError("empty target")
    if spec.startswith("@"):
        return _parse_target_file(Path(spec[1:]))
    if "/" in spec:
        return [_parse_network(spec)], {}
    if "-" in spec and (":" in spec or spec.split("-")[0].replace(".", "").isdigit()):
        return [_parse_range(spec)], {}
    try:
        address = ipaddress.ip_address(spec.split("%")[0])
        return [_interval(address, address)], {}
    except ValueError:
        pass
    if _looks_like_hostname(spec):
        intervals = _resolve(spec)
        return intervals, {str(_address(i.version, i.first)): spec for i in intervals}
    raise TargetError(f"not an address, network, range or host name: {spec!r}")


def _parse_target_file(path: Path) -> tuple[list[AddressInterval], dict[str, str]]:
    try:
        if path.stat().st_size > MAX_TARGET_FILE_BYTES:
            raise TargetError(f"target file {path} is larger than {MAX_TARGET_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"cannot read target file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TargetError(f"target file {path} is not UTF-8 text") from None
    intervals: list[AddressInterval] = []
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.startswith("@"):
            raise TargetError(f"{path}:{number}: target files cannot include other files")
        try:
            found, found_names = parse_target(entry)
        except TargetError as exc:
            raise TargetError(f"{path}:{number}: {exc}") from None
        intervals.extend(found)
        names.update(found_names)
    return intervals, names


def _merge(intervals: Iterable[AddressInterval]) -> list[AddressInterval]:
    merged: list[AddressInterval] = []
    for item in sorted(intervals):
        if merged and merged[-1].version == item.version and item.first <= merged[-1].last + 1:
            last = merged[-1]
            merged[-1] = AddressInterval(last.version, last.first, max(last.last, item.last))
        else:
            merged.append(item)
    return merged


def _subtract(included: list[AddressInterval],
              excluded: list[AddressInterval]) -> list[AddressInterval]:
    result: list[AddressInterval] = []
    for inc in included:
        pieces = [inc]
        for exc in excluded:
            if exc.version != inc.version:
                continue
            next_pieces = []
            for piece in pieces:
                if exc.last < piece.first or exc.first > piece.last:
                    next_pieces.append(piece)
                    continue
                if piece.first < exc.first:
                    next_pieces.append(AddressInterval(piece.version, piece.first, exc.first - 1))
                if exc.last < piece.last:
                    next_pieces.append(AddressInterval(piece.version, exc.last + 1, piece.last))
            pieces = next_pieces
        result.extend(pieces)
    return result


@dataclass(frozen=True)
class Scope:
    """The authorised address set. ``allows`` is the single gate every connection passes."""

    intervals: tuple[AddressInterval, ...]
    target_specs: tuple[str, ...] = ()
    exclude_specs: tuple[str, ...] = ()
    hostnames: dict[str, str] = field(default_factory=dict)
    excluded_ports: frozenset[int] = frozenset()
    _starts: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple((i.version, i.first) for i in self.intervals))

    @property
    def size(self) -> int:
        return sum(interval.size for interval in self.intervals)

    def allows(self, address: str, port: int | None = None) -> bool:
        if port is not None and port in self.excluded_ports:
            return False
        key = _address_number(address)
        if key is None:
            return False
        index = bisect.bisect_right(self._starts, key) - 1
        if index < 0:
            return False
        interval = self.intervals[index]
        version, number = key
        return interval.version == version and interval.first <= number <= interval.last

    def addresses(self) -> Iterator[str]:
        for interval in self.intervals:
            yield from interval.addresses()


@functools.lru_cache(maxsize=4096)
def _address_number(address: str) -> tuple[int, int] | None:
    """(IP version, integer) of an address; cached because every socket to a host asks again,
    and parsing was a tenth of the gate's time in a sweep. Bounded: hosts in flight, not the
    scope."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None
    return ip.version, int(ip)


def build_scope(targets: list[str], excludes: list[str] | None = None, *,
                allow_public: bool = False, force: bool = False,
                excluded_ports: Iterable[int] = ()) -> Scope:
    """Parse, merge and vet the user's targets; raises TargetError with a one-line reason."""
    if not targets:
        raise TargetError("no targets given")
    included: list[AddressInterval] = []
    names: dict[str, str] = {}
    for spec in targets:
        found, found_names = parse_target(spec)
        included.extend(found)
        names.update(found_names)
    excluded: list[AddressInterval] = []
    for spec in excludes or []:
        excluded.extend(parse_target(spec)[0])
    intervals = _merge(_subtract(_merge(included), _merge(excluded)))
    if not intervals:
        raise TargetError("every target is excluded; nothing to scan")
    for interval in intervals:
        if interval.is_multicast():
            raise TargetError("multicast addresses are not devices; remove them from the targets")
        if interval.is_this_host_alias():
            raise TargetError("0.0.0.0/8 and :: mean this machine, not a device; remove them")
        if interval.is_public() and not allow_public:
            first = next(interval.addresses())
            raise TargetError(
                f"{first} is a globally routable address; scan it only if you are authorised, "
                "with --allow-public"
            )
    scope = Scope(tuple(intervals), tuple(targets), tuple(excludes or []), names,
                  frozenset(excluded_ports))
    if scope.size > MAX_ADDRESSES_WITHOUT_FORCE and not force:
        raise TargetError(
            f"{scope.size} addresses in scope (more than {MAX_ADDRESSES_WITHOUT_FORCE}); "
            "narrow the targets or pass --force"
        )
    return scope


def parse_ports(spec: str) -> dict[str, list[int]]:
    """``22,80,8000-8010,U:161,T:23`` -> {"tcp": [...], "udp": [...]}; bare numbers are TCP."""
    ports: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    transport = "tcp"
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if item[:2].upper() in ("T:", "U:"):
            transport = "tcp" if item[0].upper() == "T" else "udp"
            item = item[2:]
        low_text, _, high_text = item.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if high_text else low
        except ValueError:
            raise TargetError(f"not a port or port range: {raw.strip()!r}") from None
        if not (1 <= low <= high <= 65535):
            raise TargetError(f"port out of range 1-65535: {raw.strip()!r}")
        ports[transport].update(range(low, high + 1))
    if not ports["tcp"] and not ports["udp"]:
        raise TargetError(f"no ports in {spec!r}")
    return {name: sorted(values) for name, values in ports.items()}
