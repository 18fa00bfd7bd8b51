"""A private Redis server for tests and benchmarks, from Debian's ``redis-server`` package,
and ``iotbaseline worker`` agents using it.

The server listens on 127.139.0.1 only (this suite's address block) on a free port, keeps nothing on
disk (no RDB snapshots, no append-only file) and is stopped by its pid at the end. Without the
binary the tests that need it are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REDIS_ADDRESS = "127.139.0.1"
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 10
WORKER_START_S = 30


@dataclass(frozen=True)
class RedisServer:
    port: int
    pid: int

    def url(self, database: int = 0) -> str:
        return f"redis://{REDIS_ADDRESS}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((REDIS_ADDRESS, 0))
        return int(probe.getsockname()[1])


def _answers_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((REDIS_ADDRESS, port), 1) as conn:
        conn.settimeout(1)
        conn.sendall(b"PING\r\n")
        return conn.recv(64).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    home = Path(tempfile.mkdtemp(prefix="iotbaseline-redis-"))
    port = _free_port()
    log = home / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, "--bind", REDIS_ADDRESS, "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(home), "--daemonize", "no",
             "--protected-mode", "no", "--logfile", ""],
            stdout=output, stderr=subprocess.STDOUT, cwd=home)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start: {log.read_text(errors='replace')[-800:]}")
            time.sleep(0.1)
        yield RedisServer(port=port, pid=process.pid)
    finally:
        _stop(process)
        shutil.rmtree(home, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, a bounded wait, SIGKILL as the last resort."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)


def start_worker(broker: str, store: str, segment: str, name: str, folder: Path,
                 visibility_timeout_s: int) -> subprocess.Popen[bytes]:
    """``iotbaseline worker`` in its own session (so it and its pool children stop together by
    its process group id), reports in ``folder/name``, log in ``folder/name.log``; returns once
    it consumes, or raises RuntimeError with the log's tail."""
    log = folder / f"{name}.log"
    env = {**os.environ, "IOTBASELINE_VISIBILITY_TIMEOUT": str(visibility_timeout_s)}
    env.pop("IOTBASELINE_BROKER", None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "scanner", "worker", "--segment", segment, "--broker", broker,
             "--store", store, "--out", str(folder / name), "--name", f"{name}@test"],
            stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + WORKER_START_S
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_worker(process, signal.SIGKILL)
            raise RuntimeError(f"worker {name} did not start: "
                               f"{log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.2)
    return process


def stop_worker(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the worker's own process group; SIGTERM lets a running scan finish, bounded."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(STOP_TIMEOUT_S if sig == signal.SIGKILL else 3 * STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)
