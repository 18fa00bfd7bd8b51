"""MAC address -> hardware vendor, from the IEEE registry snapshot shipped in scanner/data.

The table is built by tools/build_oui.py; shipping it keeps scans offline and reproducible.
"""

from __future__ import annotations

import functools
import gzip
import re
from importlib.resources import files

# Colon or hyphen separated octets (one separator kind throughout), Cisco dotted
# triplets, or twelve bare hex digits.
_MAC_RE = re.compile(
    r"[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"
    r"|[0-9A-Fa-f]{12}"
)
# Assignment sizes in hex digits, longest first: MA-S (36 bit), MA-M (28 bit), MA-L (24 bit).
# MA-M and MA-S blocks sit inside MA-L blocks registered to the IEEE itself, so the
# longest match is the actual vendor.
_PREFIX_DIGITS = (9, 7, 6)
_LOCALLY_ADMINISTERED = 0x02


def normalize_mac(mac: str) -> str | None:
    """Return ``mac`` as lowercase ``aa:bb:cc:dd:ee:ff``, or None if it is not a MAC.

    Different tools (ARP tables, nmap, Cisco CLIs) print MACs differently; one canonical
    form lets the scanner compare and key on them.
    """
    mac = mac.strip()
    if not _MAC_RE.fullmatch(mac):
        return None
    digits = re.sub(r"[:.-]", "", mac).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@functools.cache
def _table() -> dict[str, str]:
    """Hex prefix (uppercase) -> organisation; read once, on first lookup, not at import."""
    resource = files("scanner") / "data" / "oui.tsv.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        return dict(line.rstrip("\n").split("\t", 1) for line in text if not line.startswith("#"))


def lookup_vendor(mac: str) -> str | None:
    """Return the registered organisation for ``mac``, or None if it cannot be known.

    Locally administered addresses (bit 0x02 of the first octet) are assigned by software,
    not by a vendor; phones and laptops use them as randomised privacy MACs. Their prefix
    is not an IEEE assignment, so any name it happened to match would be wrong: None.
    """
    normalized = normalize_mac(mac)
    if normalized is None or int(normalized[:2], 16) & _LOCALLY_ADMINISTERED:
        return None
    digits = normalized.replace(":", "").upper()
    table = _table()
    for length in _PREFIX_DIGITS:
        vendor = table.get(digits[:length])
        if vendor is not None:
            return vendor
    return None
