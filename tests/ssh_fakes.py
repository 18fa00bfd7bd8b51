"""Simulated SSH servers for the SSH algorithm checks: the tests and benchmarks/ssh_bench.py
use the same ones, so a fix to the fake serves both.

A fake sends its banner and a KEXINIT offering what it is told, then answers ONE key exchange
(DH group, group exchange, ECDH/curve25519) with the host key blob the client asked for and a
dummy exchange value and signature: a scanner that only reads the offer and the host key never
checks them. Every connection lives at most HOLD seconds; every packet length is bounded.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scanner.protocols.sshwire import MAX_PACKET, frame, parse_kexinit, ssh_mpint, ssh_string

FAKE_PORT = 2200  # never 2024
HOLD = 15.0  # longest any fake connection lives

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def rsa_blob(bits: int) -> bytes:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return ssh_string(b"ssh-rsa") + ssh_mpint(numbers.e) + ssh_mpint(numbers.n)


def dsa_blob() -> bytes:
    numbers = dsa.generate_private_key(1024).public_key().public_numbers()
    params = numbers.parameter_numbers
    return ssh_string(b"ssh-dss") + b"".join(ssh_mpint(v) for v in
                                             (params.p, params.q, params.g, numbers.y))


def ed25519_blob() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return ssh_string(b"ssh-ed25519") + ssh_string(key.public_bytes(Encoding.Raw,
                                                                    PublicFormat.Raw))


def server_kexinit(kex: str, host_keys: str, ciphers: str, macs: str) -> bytes:
    lists = (kex, host_keys, ciphers, ciphers, macs, macs, "none", "none", "", "")
    return bytes([20]) + b"\x11" * 16 + b"".join(
        ssh_string(names.encode()) for names in lists) + b"\x00" + b"\x00" * 4


@asynccontextmanager
async def serve(address: str, handler: Handler,
                port: int = FAKE_PORT) -> AsyncIterator[list[int]]:
    """A fake on ``address``:``port``; yields a one-item list counting connections."""
    count = [0]
    writers: set[asyncio.StreamWriter] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        writers.add(writer)
        try:
            async with asyncio.timeout(HOLD):
                await handler(reader, writer)
        except (Exception, asyncio.CancelledError):
            pass
        finally:
            writers.discard(writer)
            writer.transport.abort()

    server = await asyncio.start_server(on_connect, address, port)
    try:
        yield count
    finally:
        server.close()
        for writer in list(writers):  # Python 3.11 has no Server.close_clients()
            writer.transport.abort()
        await asyncio.wait_for(server.wait_closed(), 2)


async def read_packet(reader: asyncio.StreamReader) -> bytes:
    """One unencrypted packet's payload; a length no client sends ends the connection."""
    head = await reader.readexactly(5)
    length = struct.unpack(">I", head[:4])[0]
    if not 5 <= length <= MAX_PACKET:
        raise ValueError(f"packet length {length}")
    body = await reader.readexactly(length - 1)
    return body[:length - 1 - head[4]]


def weak_server(kex: str, keys: dict[str, bytes], ciphers: str, macs: str,
                banner: bytes = b"SSH-2.0-FakeIoT_1.0\r\n") -> Handler:
    """A server that offers what it is told and answers one key exchange with the host key
    the client asked for (dummy f and signature: the client never checks them)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner + frame(server_kexinit(kex, ",".join(keys), ciphers, macs)))
        await writer.drain()
        await reader.readuntil(b"\n")
        asked = parse_kexinit(await read_packet(reader)).host_key[0]
        message = await read_packet(reader)
        if message[0] == 34:  # group exchange: a 2048-bit "group", then the init
            writer.write(frame(bytes([31]) + ssh_mpint((1 << 2047) + 1) + ssh_mpint(2)))
            await writer.drain()
            message = await read_packet(reader)
        reply = 33 if message[0] == 32 else 31
        writer.write(frame(bytes([reply]) + ssh_string(keys[asked]) + ssh_mpint(5)
                           + ssh_string(b"sig")))
        await writer.drain()
        await reader.read(1)

    return handler
