"""Just enough MQTT (3.1.1 and 5.0) to identify a broker and read its CONNACK."""

from __future__ import annotations

import os

CONNACK = 0x20
CONNACK_REASONS_V311 = {
    0: "accepted", 1: "unacceptable protocol version", 2: "identifier rejected",
    3: "server unavailable", 4: "bad user name or password", 5: "not authorised",
}


def encode_string(value: bytes) -> bytes:
    """A length-prefixed MQTT string."""
    return len(value).to_bytes(2, "big") + value


def encode_varint(length: int) -> bytes:
    """MQTT's variable-length integer (remaining length, property lengths)."""
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect_packet(level: int = 4, client_id: str | None = None,
                   username: str | None = None, password: str | None = None) -> bytes:
    """CONNECT with clean session; level 4 is MQTT 3.1.1, level 5 is MQTT 5.0."""
    flags = 0x02
    payload = encode_string((client_id or f"iotb-{os.urandom(4).hex()}").encode())
    if username is not None:
        flags |= 0x80
        payload += encode_string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += encode_string(password.encode())
    variable = encode_string(b"MQTT") + bytes((level, flags)) + (30).to_bytes(2, "big")
    if level == 5:
        variable += b"\x00"  # no properties
    body = variable + payload
    return bytes((0x10,)) + encode_varint(len(body)) + body


def parse_connack(data: bytes) -> int | None:
    """The CONNACK return/reason code, or None when the reply is not a CONNACK."""
    if len(data) < 4 or data[0] != CONNACK or data[1] & 0x80:
        return None
    length = data[1]
    if length < 2 or len(data) < 2 + length:
        return None
    return data[3]
