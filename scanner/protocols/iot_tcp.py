"""Safe recognisers for binary or terse TCP services that IoT devices expose on odd ports.

Each is the first request the vendor's own client sends and asks only for identification (TP-Link
get_sysinfo, Cisco's Smart Install discovery probe that Cisco's own checker uses, Redis PING,
memcached version). ``complete`` says when the reply is whole; ``recognise`` returns what it
learnt or None, reading only within the bytes it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from scanner.protocols.udp import tplink_decrypt, tplink_encrypt, tplink_sysinfo_facts

TPLINK_SYSINFO = b'{"system":{"get_sysinfo":{}}}'
MAX_TPLINK_REPLY = 16384
# Cisco Smart Install: the probe of Cisco's smi_check (Talos, 2018) and the director's answer
SMART_INSTALL_PROBE = bytes.fromhex("000000010000000100000004000000080000000100000000")
SMART_INSTALL_REPLY = bytes.fromhex("000000040000000000000003000000080000000100000000")


@dataclass(frozen=True)
class TcpProtocol:
    request: bytes
    complete: Callable[[bytes], bool]
    recognise: Callable[[bytes], dict[str, str] | None]
    max_reply: int = 4096


def _tplink_complete(data: bytes) -> bool:
    return len(data) >= 4 and len(data) >= 4 + struct.unpack("!I", data[:4])[0]


def _tplink_recognise(data: bytes) -> dict[str, str] | None:
    if len(data) < 4:
        return None
    length = struct.unpack("!I", data[:4])[0]
    if length > MAX_TPLINK_REPLY or len(data) < 4 + length:
        return None
    return tplink_sysinfo_facts(tplink_decrypt(data[4:4 + length]))


def _smart_install_recognise(data: bytes) -> dict[str, str] | None:
    return {"reply": "smart install director answer"} if data[:24] == SMART_INSTALL_REPLY \
        else None


def _line(data: bytes) -> bool:
    return b"\n" in data


def _redis_recognise(data: bytes) -> dict[str, str] | None:
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]
    if line == "+PONG":
        return {"authentication": "none (PING answered)"}
    if line.startswith(("-NOAUTH", "-DENIED", "-ERR operation not permitted")):
        return {"authentication": "required", "reply": line}
    return None


def _memcached_recognise(data: bytes) -> dict[str, str] | None:
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:200]
    return {"version": line[8:]} if line.startswith("VERSION ") else None


PROTOCOLS: dict[str, TcpProtocol] = {
    "tplink": TcpProtocol(struct.pack("!I", len(TPLINK_SYSINFO)) + tplink_encrypt(TPLINK_SYSINFO),
                          _tplink_complete, _tplink_recognise, 4 + MAX_TPLINK_REPLY),
    "smart-install": TcpProtocol(SMART_INSTALL_PROBE, lambda data: len(data) >= 24,
                                 _smart_install_recognise, 24),
    "redis": TcpProtocol(b"PING\r\n", _line, _redis_recognise, 512),
    "memcached": TcpProtocol(b"version\r\n", _line, _memcached_recognise, 512),
}
