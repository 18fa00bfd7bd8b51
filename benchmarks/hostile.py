"""Scan a lab of hostile devices and measure what they cost: wall time and peak memory.

Starts ``--devices`` hostile fakes (tests/hostile.py, every kind in turn) on 127.133.1.1 onwards
plus the out-of-scope listener on 127.134.0.2, scans them in-process with the safe profile at
test-speed timing, and prints the wall time, the process's peak RSS (``ru_maxrss``), the
tracemalloc peak (``--tracemalloc``: slower, so off by default) and, per device kind, the
outcome of its check runs and errors. Exit status 1 when the peak RSS passes ``--max-rss-mb``
(default 300), a crash-kind error occurs, or the out-of-scope listener was contacted.

Safety: loopback only (127.133.1.0/24 and 127.134.0.2), port 2024 never scanned, every fake
bounded in time (tests/fakes.py HOLD). Run from the repository root:
``.venv/bin/python benchmarks/hostile.py --devices 102``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probes.registry import load_probes
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import ScanResult
from scanner.storage import ResultStore
from tests import hostile
from tests.helpers import NEVER_TOUCH_PORTS, fast_profile, safe_scope

SUBNET = "127.133.1"
OUTSIDE = "127.134.0.2"  # not the test suite's listener, so both can run at once


def _outcomes(lab: hostile.Lab, result: ScanResult) -> dict[str, Counter[str]]:
    """Per device kind: check-run statuses and error kinds, summed over its devices."""
    kind_of = {device.address: device.kind for device in lab.devices}
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for run in result.check_runs:
        if run.device in kind_of:
            table[kind_of[run.device]][run.status.value.lower()] += 1
    for error in result.errors:
        if error.device in kind_of:
            table[kind_of[error.device]][f"error:{error.kind}"] += 1
    for device in lab.devices:
        table[device.kind]["devices"] += 1
    return table


async def run(devices: int, probe_budget: float, host_budget: float, trace: bool,
              max_rss_mb: float) -> int:
    os.environ["IOTBASELINE_EXCLUDE_PORTS"] = ",".join(map(str, NEVER_TOUCH_PORTS))
    kinds = [list(hostile.KINDS)[n % len(hostile.KINDS)] for n in range(devices)]
    lab = await hostile.start_lab(kinds, subnet=SUBNET, outside=OUTSIDE)
    profile = fast_profile(timing={"probe_budget": probe_budget, "host_budget": host_budget})
    plan = ScanPlan.build(safe_scope(*lab.addresses), profile, load_probes()[0],
                          ports={"tcp": hostile.TCP_PORTS, "udp": hostile.UDP_PORTS})
    if trace:
        tracemalloc.start()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="iotb-hostile-") as folder:
            result = await ScanEngine(plan, ResultStore(Path(folder) / "report")).run()
    finally:
        wall = time.monotonic() - started
        traced = tracemalloc.get_traced_memory()[1] if trace else None
        await lab.close()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"devices {devices}  kinds {len(hostile.KINDS)}  complete {result.meta.complete}")
    print(f"wall {wall:.1f} s  (probe budget {probe_budget} s, host budget {host_budget} s)")
    print(f"peak RSS {peak_rss_mb:.0f} MiB" + (f"  tracemalloc peak {traced / 2**20:.0f} MiB"
                                                if traced is not None else ""))
    print(f"out-of-scope connections {lab.outside_connections}")
    print(f"{'kind':<20} outcomes")
    for kind, counts in sorted(_outcomes(lab, result).items()):
        print(f"{kind:<20} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    crashes = [e for e in result.errors if e.kind == "plugin"]
    for crash in crashes[:10]:
        print(f"CRASH {crash.device}:{crash.port} {crash.check_id}: {crash.reason}")
    return int(bool(crashes) or lab.outside_connections > 0 or peak_rss_mb > max_rss_mb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=102, help="hostile devices (max 250)")
    parser.add_argument("--probe-budget", type=float, default=6.0)
    parser.add_argument("--host-budget", type=float, default=60.0)
    parser.add_argument("--max-rss-mb", type=float, default=300.0)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations")
    args = parser.parse_args()
    if not 1 <= args.devices <= 250:
        parser.error("--devices must be 1 to 250 (one /24 of loopback addresses)")
    return asyncio.run(run(args.devices, args.probe_budget, args.host_budget, args.tracemalloc,
                           args.max_rss_mb))


if __name__ == "__main__":
    sys.exit(main())
