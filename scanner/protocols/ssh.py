"""SSH identification strings (RFC 4253 section 4.2)."""

from __future__ import annotations

import re

_PRODUCT = re.compile(r"^([A-Za-z][A-Za-z0-9.+-]*?)[_-]v?(\d[\w.-]*)")


def parse_banner(line: str) -> tuple[str, str, str] | None:
    """"SSH-2.0-OpenSSH_9.6 Debian" -> ("2.0", "OpenSSH", "9.6"); None when not SSH."""
    if not line.startswith("SSH-"):
        return None
    parts = line.strip().split("-", 2)
    if len(parts) < 3:
        return None
    protocol, software = parts[1], parts[2].split(" ", 1)[0]
    match = _PRODUCT.match(software)
    if match:
        return protocol, match.group(1), match.group(2)
    return protocol, software, ""
