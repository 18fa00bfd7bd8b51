"""The gate's cheap paths stay correct: per-host admission (and its high-water mark), one read
timer per connection, the escaping fast path and transcripts built on first read.

Loopback only, in this file's block: 127.141.0.0/16.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from scanner.models import Exchange, utc_now
from scanner.net import _ESCAPES, Limits, Network, Transcript, escape_bytes
from scanner.targets import build_scope

HOST = "127.141.0.1"
HOLD = 0.05  # how long the counting server keeps each connection


class CountingServer:
    """Holds every connection HOLD seconds and counts how many are open at once. It counts a
    connection as gone before it says goodbye, so a client that waits for the goodbye before
    releasing its slot can never be counted twice."""

    def __init__(self) -> None:
        self.open = 0
        self.most_open = 0
        self.port = 0

    async def on_connect(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        await asyncio.sleep(HOLD)
        self.open -= 1
        writer.write(b"bye\n")
        writer.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A server on HOST for the duration; yields its port."""
    server = await asyncio.start_server(handler, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 2)


@pytest.fixture
async def counting_server() -> AsyncIterator[CountingServer]:
    counting = CountingServer()
    async with serving(counting.on_connect) as port:
        counting.port = port
        yield counting


def _network(**limits: float) -> Network:
    return Network(build_scope([f"{HOST}/32"]), Limits(**limits))  # type: ignore[arg-type]


async def _visit(network: Network, port: int) -> None:
    async with await network.open_tcp(HOST, port) as conn:
        await conn.recv_until(lambda data: b"\n" in data, timeout=2.0)


@pytest.mark.parametrize("per_host", [1, 2, 3])
async def test_the_gate_never_lets_per_host_plus_one_connections_be_open(
        counting_server: CountingServer, per_host: int) -> None:
    """Eight clients at once: the device sees exactly ``per_host`` at its busiest, and the
    gate's own high-water mark says the same (3 shows the count can rise above 2)."""
    network = _network(per_host=per_host, rate=0.0)
    await asyncio.wait_for(asyncio.gather(*(_visit(network, counting_server.port)
                                            for _ in range(8))), 10)
    assert counting_server.most_open == per_host
    assert network.peak_open_per_host == per_host
    assert network.connections_opened == 8


async def test_a_silent_read_times_out_and_the_connection_stays_usable() -> None:
    """A read times out at its own deadline, even after a read with a later one armed the
    connection's timer, and a later read on the same connection still gets its data."""
    talk = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await asyncio.wait_for(talk.wait(), 5)
        await asyncio.sleep(0.3)
        writer.write(b"late\n")
        await asyncio.sleep(1)
        writer.close()

    network = _network()
    async with serving(on_connect) as port, \
            await network.open_tcp(HOST, port, transcript=Transcript()) as conn:
        assert await conn.recv(timeout=5.0) == b"hello\n"  # arms the timer 5 s ahead
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await conn.recv(timeout=0.2)  # earlier: the timer must move
        assert 0.15 < time.monotonic() - started < 1.0
        started = time.monotonic()
        assert await conn.recv_until(lambda data: False, timeout=0.2) == b""
        assert 0.15 < time.monotonic() - started < 1.0
        talk.set()
        assert await conn.recv(timeout=2.0) == b"late\n"  # later than the last timer


async def test_a_cancelled_read_stays_a_cancellation_not_a_timeout() -> None:
    """Cancelling the reader from outside (a probe budget) must not turn into TimeoutError,
    and the connection's timer must not cancel anything after the read has gone."""
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1)
        writer.close()

    network = _network()
    async with serving(on_connect) as port:
        conn = await network.open_tcp(HOST, port)
        reading = asyncio.create_task(conn.recv(timeout=0.1))
        await asyncio.sleep(0.02)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await asyncio.sleep(0.15)  # past the cancelled read's deadline: nothing happens
        task = asyncio.current_task()
        assert task is not None and not task.cancelling()
        await conn.close()
    assert network.peak_open_per_host == 1


def test_escaping_fast_path_matches_the_byte_table() -> None:
    samples = [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"a\\b\r\n\t", b"\xff\xfb\x01login: ",
               bytes(range(256))]
    generator = random.Random(7)
    samples += [bytes(generator.choice(b"ab\\\r\n\t \x00\x7f\xff") for _ in range(40))
                for _ in range(200)]
    for data in samples:
        assert escape_bytes(data) == "".join(_ESCAPES[byte] for byte in data)


def test_transcript_keeps_order_cap_and_redaction_when_built_late() -> None:
    transcript = Transcript()
    transcript.add_secret("hunter2")
    transcript.record("sent", "tcp://h:1", b"pass hunter2\r\n")
    elsewhere = Exchange(at=utc_now(), direction="event", endpoint="e", data="shared")
    transcript.append(elsewhere)
    transcript.record("received", "tcp://h:1", "ok")
    assert [e.data for e in transcript.exchanges] == ["pass «redacted»\\r\n", "shared", "ok"]
    for _ in range(Transcript.MAX_ENTRIES):
        transcript.record("received", "tcp://h:1", b"x")
    assert len(transcript.exchanges) == Transcript.MAX_ENTRIES
    assert transcript.dropped == 3


async def test_a_second_concurrent_read_does_not_disarm_the_first() -> None:
    """Two reads at once on one connection are a caller's bug (the stream refuses the second);
    the first must still end at its own deadline, not wait for ever."""
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)  # silent
        writer.close()

    network = _network()
    async with serving(on_connect) as port, await network.open_tcp(HOST, port) as conn:
        first = asyncio.create_task(conn.recv(timeout=0.3))
        await asyncio.sleep(0.02)
        with pytest.raises(RuntimeError):
            await conn.recv(timeout=5.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first, 2)
        assert time.monotonic() - started < 0.5


async def test_a_connect_cancelled_in_its_last_turn_leaves_no_socket_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled in the loop turn after the connect (a host budget, Ctrl-C): the socket is
    aborted before its slot is released, so the device never holds more than per_host."""
    hung_up = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(1)  # EOF or a reset: the scanner let go
        hung_up.set()
        writer.close()

    async def cancelled(delay: float) -> None:
        raise asyncio.CancelledError

    kept: list[asyncio.StreamWriter] = []  # so only the gate, not garbage collection, can close
    real_open = asyncio.open_connection

    async def open_and_keep(*args: Any, **kwargs: Any
                            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await real_open(*args, **kwargs)
        kept.append(writer)
        return reader, writer

    network = _network(per_host=1)
    async with serving(on_connect) as port:
        monkeypatch.setattr("scanner.net.asyncio.open_connection", open_and_keep)
        monkeypatch.setattr("scanner.net.asyncio.sleep", cancelled)
        with pytest.raises(asyncio.CancelledError):
            await network.open_tcp(HOST, port)
        monkeypatch.undo()
        assert kept and kept[0].transport.is_closing()
        await asyncio.wait_for(hung_up.wait(), 2)
        # The slot came back with the socket: the one per-host slot is free again at once.
        async with await asyncio.wait_for(network.open_tcp(HOST, port), 1):
            pass
