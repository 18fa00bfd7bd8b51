"""Scan-agent throughput (issue 8): N scan jobs of M farm devices each, run by one in-process
scanner one job after another (what a coordinator without a broker does) and by 4 local
``iotbaseline worker`` agents over a real Redis, then scans/min and the speed-up.

    .venv/bin/python benchmarks/agents.py --jobs 16 --devices-per-job 8 --json out.json

The farm (benchmarks/farm.py, its own process) serves N×M devices on 127.100.x; Redis listens
on 127.139.0.1 (the agents' test block); each mode saves to its own SQLite store, and every
stored scan is checked complete with M devices, so a fast but wrong run cannot look good.
The agents' clock starts when the workers are ready (their start-up is reported apart) and stops
when the last job's result is back. Figures only: nothing here asserts a speed.

Run it alone: it refuses while another ``farm.py`` runs (benchmarks share 127.100.x and CPU).

Safety: only the farm's addresses and ports are scanned, never port 2024; every child (farm,
redis-server, workers) is ours, bounded in time and stopped by its own pid or process group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.redis_server: the Redis and worker helpers

from credentials import FarmProcess  # noqa: E402  (benchmarks/ is not a package)
from farm import FARM_PORTS, farm_address  # noqa: E402

from scanner.agents import celery_app, dispatch  # noqa: E402
from scanner.jobs import ScanJob, run_job  # noqa: E402
from scanner.store import ScanStore  # noqa: E402
from tests.redis_server import redis_server, start_worker, stop_worker  # noqa: E402

WORKERS = 4
SEGMENT = "bench"
VISIBILITY_S = 3600  # no redelivery during a run: every job is acknowledged well before


def other_farms() -> list[str]:
    """Farm processes already running (another benchmark): ``pgrep -f farm.py``."""
    found = subprocess.run(["pgrep", "-af", "farm.py"], capture_output=True, text=True,
                           timeout=10, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def build_jobs(count: int, per_job: int, profile: str) -> list[ScanJob]:
    ports = ",".join(map(str, FARM_PORTS))
    return [ScanJob(targets=[f"{farm_address(i * per_job)}-{farm_address((i + 1) * per_job - 1)}"],
                    ports=ports, profile=profile, segment=SEGMENT, excluded_ports=[2024],
                    formats=["json"], requested_by="benchmark")
            for i in range(count)]


def check_stored(store_url: str, jobs: list[ScanJob], per_job: int) -> None:
    with ScanStore(store_url) as store:
        scans = {scan.id: scan for scan in store.list_scans(limit=len(jobs) + 10)}
    for job in jobs:
        scan = scans.get(job.job_id)
        if scan is None or not scan.complete or scan.devices != per_job:
            raise RuntimeError(f"job {job.job_id}: stored {scan!r}, expected a complete scan of "
                               f"{per_job} devices")
    if len(scans) != len(jobs):
        raise RuntimeError(f"{len(scans)} scans stored for {len(jobs)} jobs")


async def in_process(jobs: list[ScanJob], per_job: int, folder: Path, timeout: float) -> float:
    store = f"sqlite:///{folder / 'in-process.sqlite'}"
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        for job in jobs:
            await run_job(job, folder / "in-process", store)
    wall = time.perf_counter() - started
    check_stored(store, jobs, per_job)
    return wall


async def with_agents(jobs: list[ScanJob], per_job: int, folder: Path,
                      timeout: float) -> dict[str, float]:
    store = f"sqlite:///{folder / 'agents.sqlite'}"
    with ScanStore(store):
        pass
    with redis_server() as redis:
        broker = redis.url()
        ready_at = time.perf_counter()
        workers = []
        try:
            for n in range(WORKERS):
                workers.append(await asyncio.to_thread(start_worker, broker, store, SEGMENT,
                                                       f"agent-{n}", folder, VISIBILITY_S))
            startup = time.perf_counter() - ready_at
            started = time.perf_counter()
            for job in jobs:
                await dispatch(job, broker_url=broker)
            app = celery_app(broker)
            for job in jobs:
                remaining = max(1.0, timeout - (time.perf_counter() - started))
                await asyncio.to_thread(app.AsyncResult(job.job_id).get, timeout=remaining)
            wall = time.perf_counter() - started
        finally:
            for worker in workers:
                await asyncio.to_thread(stop_worker, worker)
    check_stored(store, jobs, per_job)
    return {"wall": wall, "startup": startup}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="iotbaseline-agents-bench-"))
    farm_args = argparse.Namespace(devices=args.jobs * args.devices_per_job, seed=1,
                                   latency_ms=args.latency_ms, telnet_tries=3,
                                   max_seconds=args.timeout * 3)
    farm = FarmProcess(farm_args, folder / "truth.json", folder / "farm.log")
    try:
        per_job = args.devices_per_job
        serial = await in_process(build_jobs(args.jobs, per_job, args.profile), per_job,
                                  folder, args.timeout)
        agents = await with_agents(build_jobs(args.jobs, per_job, args.profile), per_job,
                                   folder, args.timeout)
    finally:
        farm.close()
    per_min = {"in-process": 60 * args.jobs / serial, "agents": 60 * args.jobs / agents["wall"]}
    return {"jobs": args.jobs, "devices_per_job": args.devices_per_job, "workers": WORKERS,
            "profile": args.profile, "latency_ms": args.latency_ms, "cpus": os.cpu_count(),
            "in_process_s": round(serial, 2), "agents_s": round(agents["wall"], 2),
            "agents_startup_s": round(agents["startup"], 2),
            "scans_per_min": {k: round(v, 1) for k, v in per_min.items()},
            "speed_up": round(per_min["agents"] / per_min["in-process"], 2),
            "out": str(folder)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--devices-per-job", type=int, default=8)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="longest wait for either mode's jobs, seconds (default 900)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    # The workers it starts inherit these: only the farm's block, never port 2024.
    os.environ["IOTBASELINE_AUTHORISED"] = "127.100.0.0/16"
    os.environ["IOTBASELINE_EXCLUDE_PORTS"] = "2024"
    if not (1 <= args.jobs <= 256 and 1 <= args.devices_per_job <= 256):
        parser.error("--jobs and --devices-per-job must be within 1-256")
    if running := other_farms():
        parser.error(f"another benchmark's farm is running, try later: {running[0][:120]}")
    figures = asyncio.run(run(args))
    text = json.dumps(figures, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
