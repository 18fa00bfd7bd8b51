"""A private PostgreSQL server for tests, from Debian's ``postgresql`` package.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user (the server refuses root) in a fresh
temporary folder; the server listens on 127.135.0.1 only (this suite's address block) and on a
Unix socket in that folder, and is stopped by its pid at the end. Without the binaries the tests
that need it are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_ADDRESS = "127.135.0.1"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class PostgresServer:
    port: int
    pid: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{PG_ADDRESS}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database on this server: its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host=PG_ADDRESS, port=self.port, user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _binaries() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda path: int(path.parent.parent.name)
                      if path.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((PG_ADDRESS, 0))
        return int(probe.getsockname()[1])


def _as_postgres(*command: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)],
                          capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    binaries = _binaries()
    if binaries is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting PostgreSQL as the postgres user needs root and runuser")
    try:
        postgres = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (installed with Debian's postgresql package)")
    home = Path(tempfile.mkdtemp(prefix="iotbaseline-pg-"))
    os.chown(home, postgres.pw_uid, postgres.pw_gid)
    data = home / "data"
    pid = 0
    try:
        init = _as_postgres(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust",
                            "--no-sync", "-E", "UTF8", timeout=START_TIMEOUT_S)
        if init.returncode:
            pytest.fail(f"initdb failed: {init.stderr.strip()[-500:]}")
        port = _free_port()
        options = (f"-c listen_addresses={PG_ADDRESS} -p {port} -k {home} -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off")
        start = _as_postgres(binaries / "pg_ctl", "-D", data, "-l", home / "server.log", "-w",
                             "-t", str(START_TIMEOUT_S), "-o", options, "start",
                             timeout=START_TIMEOUT_S + 10)
        if start.returncode:
            log = (home / "server.log").read_text(errors="replace")[-800:]
            pytest.fail(f"PostgreSQL did not start: {start.stderr.strip()} {log}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield PostgresServer(port=port, pid=pid)
    finally:
        if pid:
            _stop(pid)
        shutil.rmtree(home, ignore_errors=True)


def _stop(pid: int) -> None:
    """Fast shutdown by pid (SIGINT), waiting a bounded time; SIGKILL as the last resort."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
