"""ADB over TCP: the Android Debug Bridge accepting hosts without the RSA key handshake.

An adbd that answers CNXN with CNXN trusts any host that connects: the next message could open
a root or shell stream, install packages or read data. The probe sends only the CNXN handshake
the adb client itself sends, reads the reply header (and a capped banner), and hangs up. It
never sends OPEN, so no service, shell or stream is ever started.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.models import Confidence, Intrusiveness, Severity

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_STLS = 0x534C5453  # Android 11+ wireless debugging: TLS first
A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_SYNC = 0x4E45504F, 0x59414B4F, 0x45534C43, 0x45545257, \
    0x434E5953
COMMAND_NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_STLS: "STLS", A_OPEN: "OPEN", A_OKAY: "OKAY",
                 A_CLSE: "CLSE", A_WRTE: "WRTE", A_SYNC: "SYNC"}
A_VERSION = 0x01000000  # the original protocol version: every adbd accepts it
MAX_PAYLOAD = 256 * 1024  # what we say we can receive
HEADER = struct.Struct("<6I")
MAX_BANNER = 4096  # bytes of the device banner we read, whatever length it announces
REPLY_WAIT = 5.0  # or the profile's read timeout, if shorter
BANNER_KEYS = ("ro.product.name", "ro.product.model", "ro.product.device", "features")


def message(command: int, arg0: int, arg1: int, payload: bytes) -> bytes:
    """An ADB message: 24-byte little-endian header (with the byte-sum checksum old adbd
    verifies and the magic ``command ^ 0xffffffff``) followed by the payload."""
    return HEADER.pack(command, arg0, arg1, len(payload), sum(payload) & 0xFFFFFFFF,
                       command ^ 0xFFFFFFFF) + payload


def connect_message() -> bytes:
    return message(A_CNXN, A_VERSION, MAX_PAYLOAD, b"host::\0")


@dataclass(frozen=True)
class Header:
    command: int
    arg0: int
    arg1: int
    length: int
    checksum: int

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")


def parse_header(data: bytes) -> Header | None:
    """The first 24 bytes as an ADB header, or None when the magic does not match."""
    if len(data) < HEADER.size:
        return None
    command, arg0, arg1, length, checksum, magic = HEADER.unpack(data[:HEADER.size])
    if magic != command ^ 0xFFFFFFFF or command not in COMMAND_NAMES:
        return None
    return Header(command, arg0, arg1, length, checksum)


def parse_banner(payload: bytes) -> dict[str, str]:
    """``<system type>:<serial>:<key=value;…>`` (e.g. ``device::ro.product.name=x;…``)."""
    text = payload.split(b"\0", 1)[0][:MAX_BANNER].decode("utf-8", "replace")
    system_type, _, rest = text.partition(":")
    serial, _, properties = rest.partition(":")
    found = {"state": system_type[:32]}
    if serial:
        found["serial"] = serial[:64]
    for item in properties.split(";")[:64]:
        key, sep, value = item.partition("=")
        if sep and key.strip() in BANNER_KEYS:
            found[key.strip()] = value.strip()[:256]
    return found


class AdbExposed(Probe):
    metadata = ProbeMetadata(
        check_id="adb-exposed",
        title="ADB does not accept connections without authorisation",
        description="The Android Debug Bridge gives a shell, file access and package "
                    "installation. Exposed on TCP without the RSA authorisation handshake, it "
                    "lets anyone on the network take over the device; botnets (Trinity, "
                    "ADB.Miner) scan port 5555 for exactly this.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("adb",),
        remediation="Disable ADB over TCP (`adb usb`, or unset service.adb.tcp.port) on "
                    "production devices; keep ro.adb.secure=1 so every host must be authorised "
                    "on the device, and use wireless debugging pairing only when needed.",
        references=("https://android.googlesource.com/platform/packages/modules/adb/+/"
                    "refs/heads/main/protocol.txt",
                    "https://android.googlesource.com/platform/packages/modules/adb/+/"
                    "refs/heads/main/docs/dev/overview.md"),
        max_connections=1,
        categories=("unauthenticated-access", "debug-interface"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        wait = min(REPLY_WAIT, ctx.network.limits.read_timeout)
        async with await ctx.connect() as conn:
            await conn.send(connect_message())
            started = time.monotonic()
            head = await conn.recv_until(lambda data: len(data) >= HEADER.size,
                                         max_bytes=HEADER.size, timeout=wait)
            if not head:
                if time.monotonic() - started >= wait * 0.9:
                    raise TimeoutError(f"no ADB reply within {wait:.1f} s")
                raise ConnectionError("closed without an ADB reply")
            header = parse_header(head)
            if header is None:
                return {"reply": "not-adb", "first_bytes": head[:24].hex()}
            facts: dict[str, Any] = {"reply": header.name.lower(), "version": f"{header.arg0:#x}",
                                     "announced_length": header.length}
            if header.command == A_CNXN:
                want = min(header.length, MAX_BANNER)
                payload = b""
                if want:
                    payload = await conn.recv_until(lambda data: len(data) >= want,
                                                    max_bytes=want, timeout=wait)
                facts["max_data"] = header.arg1
                facts["banner"] = payload.split(b"\0", 1)[0].decode("utf-8", "replace")[:512]
                facts["device"] = parse_banner(payload)
            elif header.command == A_AUTH:
                facts["auth_type"] = header.arg0  # 1: the device sent a token to sign
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("reply") != "cnxn":
            return []
        device: dict[str, str] = facts.get("device") or {}
        name = device.get("ro.product.model") or device.get("ro.product.name") or "the device"
        observation_facts = {
            "state": device.get("state", ""),
            "product": device.get("ro.product.name", ""),
            "model": device.get("ro.product.model", ""),
            "device": device.get("ro.product.device", ""),
            "version": str(facts.get("version", "")),
            "banner": str(facts.get("banner", ""))[:256],
        }
        return [Observation(
            summary=f"ADB on port {target.port} completed the connection handshake without "
                    f"authorisation: anyone on the network can open a shell on {name}.",
            confidence=Confidence.CONFIRMED, key="adb-exposed",
            facts={k: v for k, v in observation_facts.items() if v})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        reply = str(facts.get("reply", ""))
        meaning = {"cnxn": "connected without authorisation",
                   "auth": "authentication required (RSA key challenge)",
                   "stls": "TLS required (wireless debugging)",
                   "not-adb": "not an ADB reply"}.get(reply, f"unexpected ADB message {reply}")
        return {"adb": meaning}
