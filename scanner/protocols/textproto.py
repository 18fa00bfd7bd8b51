"""HTTP-style messages (HTTP, RTSP, SSDP share the syntax): building requests, parsing heads.

Parsing is forgiving of what devices send but never unbounded: callers pass capped buffers.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from scanner import __version__

USER_AGENT = f"iotbaseline/{__version__} (+authorised security audit)"
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_STATUS = re.compile(r"^(HTTP|RTSP)/(\d\.\d)\s+(\d{3})\s*(.*)$")


@dataclass(frozen=True)
class Head:
    protocol: str  # "HTTP" or "RTSP"
    version: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last one wins
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def build_request(method: str, target: str, headers: dict[str, str],
                  protocol: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {protocol}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_complete(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data


def response_complete(data: bytes, body_cap: int = 16384) -> bool:
    """Head received and enough body to identify the page, so we need not wait for EOF."""
    if not head_complete(data):
        return False
    head = parse_head(data)
    if head is None:
        return True
    length = head.header("content-length")
    if length.isdigit():
        return len(head.body) >= min(int(length), body_cap)
    return b"</title" in head.body.lower() or len(head.body) >= body_cap


def parse_head(data: bytes) -> Head | None:
    """Status line and headers of an HTTP/RTSP response, or None if it is not one."""
    separator = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    head, _, body = data.partition(separator)
    lines = head.decode("latin-1").splitlines()
    if not lines:
        return None
    match = _STATUS.match(lines[0].strip())
    if not match:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:200]:
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers[name.strip().lower()] = value.strip()[:2048]
    return Head(match.group(1), match.group(2), int(match.group(3)), match.group(4)[:200],
                headers, body)


def html_title(body: bytes) -> str:
    match = _TITLE.search(body[:65536])
    if not match:
        return ""
    text = match.group(1).decode("utf-8", "replace")
    return " ".join(html.unescape(text).split())[:200]


def auth_scheme(head: Head) -> str:
    """"basic", "digest", … from WWW-Authenticate, or ""."""
    value = head.header("www-authenticate")
    return value.split(" ", 1)[0].lower() if value else ""
