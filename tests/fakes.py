"""Misbehaving devices: TCP servers that break the scanner's assumptions in one way each.

Every fake is bounded in time (HOLD seconds at most per connection) and is meant for loopback
addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable

HOLD = 60.0  # longest any fake keeps a connection
CHUNK = 64 * 1024

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeServer:
    """A running fake: `.connections` counts accepted connections, `await .close()` ends all."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def active(self) -> int:
        """Connections still being served: lets a test check the scanner hung up."""
        return len(self._open)

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = list(self._open)
        for task, writer in self._open.items():
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)


async def _serve(host: str, port: int, behaviour: Behaviour) -> FakeServer:
    fake = FakeServer()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fake.connections += 1
        task = asyncio.current_task()
        assert task is not None
        fake._open[task] = writer
        try:
            async with asyncio.timeout(HOLD):
                await behaviour(reader, writer)
            writer.close()
        # Client gone, HOLD expired, or close() cancelled us (a cancelled connection task makes
        # Python 3.11's start_server log a traceback): abort, never wait to flush anything.
        except (Exception, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            fake._open.pop(task, None)

    fake.server = await asyncio.start_server(on_connect, host, port)
    return fake


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(CHUNK):
        pass


async def silent(host: str, port: int) -> FakeServer:
    """Accepts and never sends: banner waits must time out, not hang."""
    return await _serve(host, port, lambda reader, writer: _discard(reader))


async def garbage(host: str, port: int) -> FakeServer:
    """4 KiB of random bytes, always including NUL and 0xFF, then a clean close."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\xff" + os.urandom(4094))
        await writer.drain()

    return await _serve(host, port, behaviour)


async def reset(host: str, port: int) -> FakeServer:
    """Accepts, then closes with RST (SO_LINGER on, timeout 0) instead of FIN."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return await _serve(host, port, behaviour)


async def endless(host: str, port: int) -> FakeServer:
    """Streams as fast as the client reads until it goes away (or HOLD): tests read caps.

    drain() blocks while the client's window is full and raises once it has gone, so the loop
    never spins on a dead connection.
    """

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"\x00\xffA" * (CHUNK // 3)
        while not writer.is_closing():
            writer.write(chunk)
            await writer.drain()

    return await _serve(host, port, behaviour)


async def drip(host: str, port: int) -> FakeServer:
    """One byte now and then every 2 s: tests that timeouts are totals, not per-read."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not writer.is_closing():
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(2)

    return await _serve(host, port, behaviour)


async def banner(host: str, port: int, data: bytes) -> FakeServer:
    """Sends `data` on connect, then reads and discards input."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        await _discard(reader)

    return await _serve(host, port, behaviour)
