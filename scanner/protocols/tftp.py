"""TFTP packets (RFC 1350): enough to ask for a file, read it block by block and stop."""

from __future__ import annotations

import struct
from dataclasses import dataclass

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR = 1, 2, 3, 4, 5
BLOCK_SIZE = 512

ERROR_NAMES = {0: "not defined", 1: "file not found", 2: "access violation", 3: "disk full",
               4: "illegal operation", 5: "unknown transfer id", 6: "file exists",
               7: "no such user", 8: "option refused"}


def read_request(name: str, mode: str = "octet") -> bytes:
    return struct.pack("!H", OP_RRQ) + name.encode() + b"\0" + mode.encode() + b"\0"


def ack(block: int) -> bytes:
    return struct.pack("!HH", OP_ACK, block & 0xFFFF)


def error_packet(code: int, message: str) -> bytes:
    return struct.pack("!HH", OP_ERROR, code) + message.encode() + b"\0"


@dataclass(frozen=True)
class Packet:
    opcode: int
    block: int = 0  # DATA/ACK block number, or the ERROR code
    payload: bytes = b""  # DATA bytes, or the ERROR message


def parse_packet(data: bytes) -> Packet | None:
    """A DATA, ACK or ERROR packet; None for anything a TFTP server would not send."""
    if len(data) < 4:
        return None
    opcode, number = struct.unpack("!HH", data[:4])
    if opcode in (OP_DATA, OP_ACK):
        return Packet(opcode, number, data[4:])
    if opcode == OP_ERROR:
        return Packet(opcode, number, data[4:].split(b"\0", 1)[0][:200])
    return None


def looks_like_tftp(data: bytes) -> bool:
    """What a TFTP server answers to a read request: ERROR with a known code, or DATA block 1."""
    packet = parse_packet(data)
    if packet is None:
        return False
    if packet.opcode == OP_ERROR:
        return packet.block <= 8
    return packet.opcode == OP_DATA and packet.block == 1 and len(packet.payload) <= BLOCK_SIZE
