"""Scan agents: jobs routed to their segment's workers over a real Redis, a worker killed
mid-scan losing nothing, and the in-process default (Redis on 127.139.0.1, fakes on
127.139.1.x; workers are ``iotbaseline worker`` subprocesses, stopped by their own pid)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scanner.agents import SCAN_TASK, celery_app, dispatch, segment_queue
from scanner.jobs import ScanJob
from scanner.storage import REPORT_NAME
from scanner.store import ScanStore
from scanner.targets import TargetError, build_scope
from tests import fakes
from tests.redis_server import RedisServer, redis_server, start_worker, stop_worker

TELNET = b"\xff\xfb\x01\r\nlogin: "
RESULT_WAIT_S = 60
VISIBILITY_S = 3  # short in tests so a killed worker's job comes back quickly
AGENT_SCOPE = "127.139.1.0/24"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'central.sqlite'}"
    with ScanStore(url):  # created once here, not raced by the first workers
        pass
    return url


class Workers:
    """The worker agents a test started; all stopped at its end."""

    def __init__(self, broker: str, store: str, root: Path) -> None:
        self.broker, self.store, self.root = broker, store, root
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, segment: str, name: str) -> subprocess.Popen[bytes]:
        try:
            process = start_worker(self.broker, self.store, segment, name, self.root,
                                   VISIBILITY_S)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                stop_worker(process)


@pytest.fixture
def workers(redis: RedisServer, store_url: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Workers]:
    """Agents authorised for 127.139.1.0/24 only, never touching port 2024 (the environment
    they inherit, as ``--authorised`` and ``--exclude-ports`` default from it)."""
    monkeypatch.setenv("IOTBASELINE_AUTHORISED", AGENT_SCOPE)
    monkeypatch.setenv("IOTBASELINE_EXCLUDE_PORTS", "2024")
    pool = Workers(redis.url(), store_url, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
async def telnet_devices() -> AsyncIterator[list[fakes.FakeServer]]:
    devices = [await fakes.banner(f"127.139.1.{n}", 2323, TELNET) for n in (1, 2)]
    try:
        yield devices
    finally:
        for device in devices:
            await device.close()


def _job(target: str, segment: str, profile: str = "quick") -> ScanJob:
    return ScanJob(targets=[target], ports="2323", profile=profile, segment=segment,
                   excluded_ports=[2024], formats=["json"])


async def _outcome(broker: str, job_id: str) -> dict[str, object]:
    result = celery_app(broker).AsyncResult(job_id)
    outcome: dict[str, object] = await asyncio.to_thread(result.get, timeout=RESULT_WAIT_S)
    return outcome


async def test_without_a_broker_the_job_runs_in_process(
        tmp_path: Path, store_url: str, telnet_devices: list[fakes.FakeServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTBASELINE_BROKER", raising=False)
    job = _job("127.139.1.1", "lab-a")
    dispatched = await dispatch(job, store_url=store_url, out_root=tmp_path / "out")
    assert dispatched.queue is None and dispatched.result is not None
    assert any(f.check_id == "telnet-exposed" for f in dispatched.result.findings)
    assert (tmp_path / "out" / job.job_id / REPORT_NAME).is_file()
    with ScanStore(store_url) as store:
        assert [(s.id, s.complete) for s in store.list_scans()] == [(job.job_id, True)]


async def test_a_job_outside_the_authorised_scope_never_reaches_a_queue(
        tmp_path: Path) -> None:
    unreachable = "redis://127.139.0.1:1/0"  # nothing listens: a publish would fail loudly
    with pytest.raises(TargetError, match="authorised scope"):
        await dispatch(_job("127.139.2.1", "lab-a"), broker_url=unreachable,
                       authorised=build_scope(["127.139.1.0/24"]))


async def test_a_queued_job_outside_the_agents_scope_fails_untouched(
        redis: RedisServer, workers: Workers) -> None:
    """Whoever can write to the queue cannot make an agent scan outside its --authorised."""
    outside = await fakes.banner("127.139.2.1", 2323, TELNET)
    try:
        await asyncio.to_thread(workers.start, "lab-a", "agent-a")
        job = _job("127.139.2.1", "lab-a")
        await dispatch(job, broker_url=redis.url())  # no coordinator check: straight to Redis
        with pytest.raises(Exception, match="authorised scope"):
            await _outcome(redis.url(), job.job_id)
    finally:
        await outside.close()
    assert outside.connections == 0


async def test_a_queued_job_carries_the_coordinators_excluded_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.agents as agents

    published: list[ScanJob] = []
    monkeypatch.setattr(agents, "_publish", lambda _broker, job, _queue: published.append(job))
    job = ScanJob(targets=["127.139.1.1"], excluded_ports=[9100], segment="lab-a")
    await dispatch(job, broker_url="redis://127.139.0.1:1/0",
                   authorised=build_scope([AGENT_SCOPE], excluded_ports=[2024]))
    assert published[0].excluded_ports == [2024, 9100]


async def test_jobs_run_on_their_segments_workers_only(
        redis: RedisServer, store_url: str, workers: Workers, tmp_path: Path,
        telnet_devices: list[fakes.FakeServer]) -> None:
    await asyncio.to_thread(workers.start, "lab-a", "agent-a")
    await asyncio.to_thread(workers.start, "lab-b", "agent-b")
    jobs = {"lab-a": _job("127.139.1.1", "lab-a"), "lab-b": _job("127.139.1.2", "lab-b")}
    for job in [*jobs.values(), _job("127.139.1.1", "lab-a")]:
        dispatched = await dispatch(job, broker_url=redis.url())
        assert dispatched.queue == segment_queue(job.segment) and dispatched.result is None
    outcomes = {segment: await _outcome(redis.url(), job.job_id)
                for segment, job in jobs.items()}
    assert outcomes["lab-a"]["worker"] == "agent-a@test"
    assert outcomes["lab-b"]["worker"] == "agent-b@test"
    for segment, job in jobs.items():  # each report only in its own agent's folder
        own, other = ("agent-a", "agent-b") if segment == "lab-a" else ("agent-b", "agent-a")
        assert (tmp_path / own / job.job_id / REPORT_NAME).is_file()
        assert not (tmp_path / other / job.job_id).exists()
    with ScanStore(store_url) as store:
        saved = {s.id: s for s in store.list_scans()}
        for job in jobs.values():
            assert saved[job.job_id].complete
            assert any(f.check_id == "telnet-exposed"
                       for f in store.get_scan(job.job_id).findings)


async def test_a_job_for_a_segment_with_no_worker_waits_in_its_queue(
        redis: RedisServer, workers: Workers) -> None:
    await asyncio.to_thread(workers.start, "lab-a", "agent-a")
    job = _job("127.139.1.1", "lab-c")
    await dispatch(job, broker_url=redis.url())
    await asyncio.sleep(2)
    assert celery_app(redis.url()).AsyncResult(job.job_id).state == "PENDING"
    import redis as redis_client

    with redis_client.Redis.from_url(redis.url(), socket_timeout=5) as client:
        assert client.llen(segment_queue("lab-c")) == 1


async def test_a_worker_killed_mid_scan_loses_nothing_and_the_scan_is_stored_once(
        redis: RedisServer, store_url: str, workers: Workers, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stalled = asyncio.Event()
    stalled.set()
    connections = 0

    async def stall_then_answer(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        """Says nothing while the first worker scans (a slow device); answers afterwards."""
        nonlocal connections
        connections += 1
        while stalled.is_set() and not reader.at_eof():
            await asyncio.sleep(0.05)
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(TELNET)
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 10)
        writer.close()

    device = await asyncio.start_server(stall_then_answer, "127.139.1.3", 2323)
    profiles = tmp_path / "profiles"  # the agents' profile folder: a job names, never a path
    profiles.mkdir()
    (profiles / "slow.yaml").write_text("name: slow\nextends: quick\ntiming:\n"
                                        "  read_timeout: 60\n  probe_budget: 120\n")
    monkeypatch.setenv("IOTBASELINE_PROFILES", str(profiles))
    job = _job("127.139.1.3", "lab-a", profile="slow")
    try:
        first = await asyncio.to_thread(workers.start, "lab-a", "agent-1")
        await dispatch(job, broker_url=redis.url())
        deadline = time.monotonic() + RESULT_WAIT_S
        while connections == 0:  # the scan is under way on the first worker
            assert time.monotonic() < deadline, "the first worker never reached the device"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(stop_worker, first, signal.SIGKILL)
        stalled.clear()
        await asyncio.to_thread(workers.start, "lab-a", "agent-2")
        outcome = await _outcome(redis.url(), job.job_id)
    finally:
        device.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(device.wait_closed(), 5)
    assert outcome == {"scan_id": job.job_id, "complete": True, "worker": "agent-2@test",
                       "segment": "lab-a"}
    with ScanStore(store_url) as store:
        assert [(s.id, s.complete) for s in store.list_scans()] == [(job.job_id, True)]
        assert any(f.check_id == "telnet-exposed" for f in store.get_scan(job.job_id).findings)
    assert not (tmp_path / "agent-1" / job.job_id / REPORT_NAME).exists()  # never finished


def test_the_scan_task_name_is_what_the_coordinator_sends(redis: RedisServer) -> None:
    assert SCAN_TASK in celery_app(redis.url()).tasks


def test_a_worker_without_a_store_or_a_scope_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"IOTBASELINE_STORE", "IOTBASELINE_BROKER", "IOTBASELINE_AUTHORISED"}}
    done = subprocess.run([sys.executable, "-m", "scanner", "worker", "--segment", "lab-a",
                           "--broker", "redis://127.139.0.1:1/0"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2 and "needs --store" in done.stderr
    unscoped = subprocess.run([sys.executable, "-m", "scanner", "worker", "--segment", "lab-a",
                               "--broker", "redis://127.139.0.1:1/0", "--store",
                               f"sqlite:///{tmp_path / 'store.sqlite'}"],
                              capture_output=True, text=True, env=env, timeout=60, check=False)
    assert unscoped.returncode == 2 and "needs --authorised" in unscoped.stderr
    bad = subprocess.run([sys.executable, "-m", "scanner", "worker", "--segment", "Lab A"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "not a segment name" in bad.stderr
