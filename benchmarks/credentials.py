"""Credential-probe benchmark: iotbaseline's login probes against hydra, on a simulated farm.

    .venv/bin/python benchmarks/credentials.py --devices 256 [--latency-ms 0|50] [--skip-hydra]

The farm (benchmarks/farm.py) runs in a child process, so it does not share this process's event
loop or CPU time slice with the scanner. iotbaseline runs in this process through ScanEngine
with a profile that keeps only the TCP sweep of the farm's ports and the credential checks
(telnet-default-credentials, http-default-credentials, mqtt-anonymous, mqtt-default-credentials).
hydra, when installed, gets the SAME candidate pairs in the same order (a -C file built from
iotbaseline's credential data under the same budget: 3 per account, 15 per service) and the same
per-device parallelism (-t = per-host connections). Figures only: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from farm import (
    CHECKS,
    FARM_PORTS,
    FORBIDDEN_PORTS,
    HTTP_PORT,
    MQTT_PORT,
    TELNET_PORT,
    budgeted_candidates,
    raise_fd_limit,
)

from probes.registry import load_probes
from profiles import ScanProfile, load_profile
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import Finding, ScanResult
from scanner.net import REDACTED
from scanner.storage import ResultStore
from scanner.targets import build_scope

HERE = Path(__file__).resolve().parent
PORTS = {"telnet": TELNET_PORT, "http": HTTP_PORT, "mqtt": MQTT_PORT}
CREDENTIAL_CHECK = {"telnet": "telnet-default-credentials", "http": "http-default-credentials",
                    "mqtt": "mqtt-default-credentials"}
HYDRA_MODULE: dict[str, list[str] | None] = {"telnet": ["telnet"], "http": ["http-get", "/"],
                                             "mqtt": None}
HYDRA_MAX_TASKS = 64  # hydra's MAXTASKS: a larger -T is reduced to this
ALL_CHECKS = tuple(check for checks in CHECKS.values() for check in checks)
HYDRA_FOUND = re.compile(r"^\[(\d+)\]\[[\w-]+\] host: (\S+)\s+login: (.*?)(?:\s+password: (.*))?$")
Found = tuple[str, int, str, Any]  # address, port, check id, value


# --- the farm child --------------------------------------------------------------------------


class FarmProcess:
    """benchmarks/farm.py --serve in a child process, driven by one-line commands."""

    def __init__(self, args: argparse.Namespace, truth_path: Path, log_path: Path) -> None:
        command = [sys.executable, str(HERE / "farm.py"), "--serve", "--devices",
                   str(args.devices), "--seed", str(args.seed), "--latency-ms",
                   str(args.latency_ms), "--telnet-tries", str(args.telnet_tries),
                   "--truth", str(truth_path), "--max-seconds", str(args.max_seconds)]
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1,
                                     start_new_session=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._next(timeout=120)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"the farm did not answer within {timeout:.0f} s") from None
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session only
            self.proc.wait(timeout=10)
        self._log.close()


# --- memory ----------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0), so each run reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children_cpu() -> float:
    """CPU seconds of waited-for children (hydra and the processes it forked and reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_status_kib(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return proc_status_kib(pid, "VmRSS")


def tree_pss_kib(pid: int) -> int:
    """Memory of a process and all its descendants (forking tools such as hydra), as the sum
    of their proportional set sizes, so libraries shared after fork count once."""
    total, stack = 0, [pid]
    seen: set[int] = set()
    while stack and len(seen) < 4096:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        total += pss_kib(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    stack += [int(c) for c in (task / "children").read_text().split()]
    return total


# --- scoring ---------------------------------------------------------------------------------


def score(truth: list[dict[str, Any]], checks: tuple[str, ...], found: list[Found],
          addresses: set[str] | None = None) -> dict[str, Any]:
    """Recall and precision of ``found`` against the truth entries for ``checks``."""
    expected = {(e["address"], e["port"], e["check"]): e["expected"] for e in truth
                if e["check"] in checks and (addresses is None or e["address"] in addresses)}
    positives = sum(1 for value in expected.values() if value is not None)
    hits, false = set(), []
    for address, port, check, value in found:
        if check not in checks:
            continue
        want = expected.get((address, port, check))
        if isinstance(want, dict) and isinstance(value, tuple) and value[1] is None:
            ok = value[0] == want["username"]  # --redacted: the password is not shown
        elif isinstance(want, dict):
            ok = value == (want["username"], want["password"])
        else:
            ok = want is not None and value == want
        if ok:
            hits.add((address, port, check))
        else:
            false.append({"address": address, "port": port, "check": check,
                          "reported": value, "truth": want})
    tp = len(hits)
    reported = tp + len(false)
    return {"positives": positives, "found": reported, "true_positives": tp,
            "false_positives": len(false), "false_examples": false[:5],
            "recall": tp / positives if positives else 1.0,
            "precision": tp / reported if reported else 1.0}


def our_findings(findings: Iterable[Finding]) -> list[Found]:
    found: list[Found] = []
    for finding in findings:
        kind = finding.facts.get("kind", "")
        if kind == "default-credential":
            password = finding.facts.get("password")
            shown = {REDACTED: None, "(empty)": ""}.get(password or "", password)
            value: Any = (finding.facts.get("username"), shown)
        elif kind == "mqtt-anonymous":
            value = "anonymous"
        else:
            value = kind or finding.check_id
        found.append((finding.device, finding.port or 0, finding.check_id, value))
    return found


# --- iotbaseline -----------------------------------------------------------------------------


def our_profile(ports: list[int], checks: tuple[str, ...], spacing: float | None,
                args: argparse.Namespace) -> ScanProfile:
    """safe, minus link-local discovery and nmap, sweeping only the farm's ports."""
    base = load_profile("safe").model_dump()
    base["name"] = "bench-credentials"
    base["ports"] = {"tcp": ports, "udp": []}
    base["discovery"].update(arp=False, mdns=False, ssdp=False, lan_wait=0.0, nmap=False,
                             liveness_ports=ports)
    base["checks"] = {"include": list(checks), "exclude": []}
    if spacing is not None:
        base["authentication"]["spacing"] = spacing
    base["timing"].update(per_host=args.per_host, concurrency=args.concurrency)
    if args.rate:
        base["timing"]["rate"] = args.rate
    return ScanProfile.model_validate(base)


async def _scan(addresses: list[str], ports: list[int], profile: ScanProfile, out_dir: Path,
                timeout: float, show_secrets: bool, lag: list[float],
                outcome: list[tuple[ScanResult, int]]) -> None:
    """Appends the scan's result and the most connections the engine's gate let one device
    have at once (its own count, beside the farm's).

    Handed back in ``outcome``, not returned: when ``asyncio.run`` restores the SIGINT handler
    it formats its main task, result included (CPython 3.11, signal.getsignal), and the repr
    of a whole ScanResult is about 70 ms at N=256, timed as if it were the scan's."""
    scope = build_scope(addresses, excluded_ports=sorted(FORBIDDEN_PORTS))
    probes, _ = load_probes()
    plan = ScanPlan.build(scope, profile, probes, ports={"tcp": ports, "udp": []},
                          show_secrets=show_secrets, command_line=["benchmarks/credentials.py"])
    engine = ScanEngine(plan, ResultStore(out_dir))
    stopper = asyncio.get_running_loop().call_later(timeout, engine.stop)  # partial report
    monitor = asyncio.create_task(_watch_loop(lag))
    try:
        result = await asyncio.wait_for(engine.run(), timeout + 60)
        outcome.append((result, engine.network.peak_open_per_host))
    finally:
        stopper.cancel()
        monitor.cancel()


async def _watch_loop(lag: list[float], tick: float = 0.01) -> None:
    """The longest time the event loop was late for a 10 ms timer: a stall that every
    in-flight probe sees as a slow answer."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(tick)
        lag[0] = max(lag[0], time.perf_counter() - before - tick)


def run_ours(name: str, protocols: tuple[str, ...], checks: tuple[str, ...],
             spacing: float | None, addresses: list[str], farm: FarmProcess,
             truth: list[dict[str, Any]], args: argparse.Namespace, out: Path, tag: str = ""
             ) -> tuple[dict[str, Any], ScanResult]:
    ports = sorted(PORTS[p] for p in protocols)
    assert not set(ports) & FORBIDDEN_PORTS
    profile = our_profile(ports, checks, spacing, args)
    farm.ask("reset")
    measured_peak = reset_peak_rss()
    cpu = time.process_time()
    started = time.perf_counter()
    lag = [0.0]
    outcome: list[tuple[ScanResult, int]] = []
    asyncio.run(_scan(addresses, ports, profile, out / (name + tag), args.timeout,
                      show_secrets=not args.redacted, lag=lag, outcome=outcome))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    result, engine_max_conn = outcome[0]
    stats = farm.ask("stats")
    found = our_findings(result.findings)
    stopped = Counter(run.details["stopped"].split(":")[0] for run in result.check_runs
                      if "stopped" in run.details)
    row = {"tool": "iotbaseline", "cpu_s": cpu, "max_loop_lag_s": lag[0],
           "backed_off": sum(stopped.values()), "back_off_reasons": dict(stopped),
           "run": name, "protocol": "+".join(protocols),
           "devices": len(addresses), "wall_s": wall, "complete": result.meta.complete,
           "spacing_s": profile.authentication.spacing,
           "peak_rss_mib": proc_status_kib("self", "VmHWM") / 1024 if measured_peak else None,
           "errors": len(result.errors), "farm": stats, "engine_max_conn": engine_max_conn,
           "found": found,
           "score": score(truth, checks, found, set(addresses)),
           "per_check": {check: score(truth, (check,), found, set(addresses))
                         for check in checks}}
    return row, result


# --- hydra -----------------------------------------------------------------------------------


def hydra_version() -> str:
    try:
        text = subprocess.run(["hydra", "-h"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"Hydra (v[\d.]+)", text)
    return match.group(1) if match else "unknown"


def hydra_findings(protocol: str, json_path: Path, output: str) -> list[Found]:
    check, rows = CREDENTIAL_CHECK[protocol], []
    try:
        rows = json.loads(json_path.read_text()).get("results", [])
        return [(r["host"], int(r["port"]), check, (r.get("login", ""), r.get("password", "")))
                for r in rows]
    except (OSError, ValueError, KeyError, TypeError):  # killed mid-write: read the log
        found: list[Found] = []
        for line in output.splitlines():
            match = HYDRA_FOUND.match(line.strip())
            if match:
                found.append((match[2], int(match[1]), check, (match[3], match[4] or "")))
        return found


def run_hydra(protocol: str, addresses: list[str], farm: FarmProcess,
              truth: list[dict[str, Any]], args: argparse.Namespace, out: Path,
              tag: str = "") -> dict[str, Any]:
    """hydra with the same targets and pairs; hydra caps -T at 64 (MAXTASKS), so a wider
    parallelism is reached the way people mass-scan with it: several hydra processes at once,
    each on its share of the targets (at most 64 tasks each)."""
    port = PORTS[protocol]
    assert port not in FORBIDDEN_PORTS
    module = HYDRA_MODULE[protocol]
    assert module is not None
    candidates = budgeted_candidates(protocol, port)
    tasks = min(args.hydra_tasks, len(addresses) * args.per_host)
    shards = max(1, -(-tasks // HYDRA_MAX_TASKS))
    workdirs, commands = [], []
    for index in range(shards):
        share = addresses[index::shards]
        workdir = out / f"hydra-{protocol}{tag}" / f"shard{index}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "targets.txt").write_text("".join(f"{a}:{port}\n" for a in share))
        (workdir / "combos.txt").write_text("".join(f"{u}:{p}\n" for u, p in candidates))
        share_tasks = min(HYDRA_MAX_TASKS, -(-tasks // shards), len(share) * args.per_host)
        workdirs.append(workdir)
        commands.append(["hydra", "-I", "-f", "-t", str(args.per_host), "-T", str(share_tasks),
                         "-w", str(args.hydra_wait), "-C", "combos.txt", "-M", "targets.txt",
                         "-o", "found.json", "-b", "json", *module])
    farm.ask("reset")
    peak = [0]
    cpu = children_cpu()
    started = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for command, workdir in zip(commands, workdirs, strict=True)]

    def sample() -> None:
        while any(proc.poll() is None for proc in procs):
            peak[0] = max(peak[0], sum(tree_pss_kib(proc.pid) for proc in procs
                                       if proc.poll() is None))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timed_out = False
    outputs = []
    deadline = time.monotonic() + args.timeout
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # a hydra we started, and its children
            output, _ = proc.communicate(timeout=30)
        outputs.append(output)
    wall = time.perf_counter() - started
    sampler.join(timeout=5)
    cpu = children_cpu() - cpu
    stats = farm.ask("stats")
    found: list[Found] = []
    for workdir, output in zip(workdirs, outputs, strict=True):
        (workdir / "hydra.log").write_text(output)
        found += hydra_findings(protocol, workdir / "found.json", output)
    checks = (CREDENTIAL_CHECK[protocol],)
    text = "\n".join(outputs)
    return {"tool": "hydra", "cpu_s": cpu, "run": f"hydra-{protocol}", "protocol": protocol,
            "devices": len(addresses), "wall_s": wall, "complete": not timed_out,
            "peak_rss_mib": peak[0] / 1024, "commands": [" ".join(c) for c in commands],
            "shards": shards, "errors": text.count("[ERROR]"),
            "nonsense_restarts": text.count("sent nonsense data"), "farm": stats,
            "found": found, "score": score(truth, checks, found, set(addresses))}


# --- report ----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                      enumerate(zip(row, widths, strict=True))) for row in cells]
    return "\n".join(out)


def protocol_stats(row: dict[str, Any], protocol: str) -> dict[str, Any]:
    farm = row["farm"]
    per = farm["per_protocol"].get(protocol, {})
    return {"max_per_account": per.get("max_per_account", 0), "attempts": per.get("attempts", 0)}


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run name, the row with the median wall time (all walls kept in "walls")."""
    chosen = []
    for name in dict.fromkeys(r["run"] for r in rows):
        same = sorted((r for r in rows if r["run"] == name), key=lambda r: r["wall_s"])
        median = dict(same[(len(same) - 1) // 2])
        median["walls"] = [r["wall_s"] for r in same]
        chosen.append(median)
    return chosen


def spread(row: dict[str, Any]) -> str:
    walls = row.get("walls", [])
    return f"{min(walls):.2f}-{max(walls):.2f}" if len(walls) > 1 else ""


def comparison_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for protocol in ("telnet", "http", "mqtt"):
        ours = next((r for r in rows if r["run"] == f"ours-{protocol}"), None)
        theirs = next((r for r in rows if r["run"] == f"hydra-{protocol}"), None)
        for row in (ours, theirs):
            if row is None:
                continue
            s = row["score"]
            ratio = None
            if row is ours and theirs is not None and theirs["wall_s"]:
                ratio = ours["wall_s"] / theirs["wall_s"]
            out.append([row["tool"], protocol, row["devices"], row["wall_s"], spread(row),
                        row["devices"] / row["wall_s"] if row["wall_s"] else None,
                        s["found"], s["recall"], s["false_positives"],
                        protocol_stats(row, protocol)["max_per_account"],
                        protocol_stats(row, protocol)["attempts"],
                        row["farm"]["max_concurrent_per_device"], row.get("engine_max_conn"),
                        row["peak_rss_mib"],
                        row["cpu_s"], row["farm"]["farm_cpu_s"], row["errors"],
                        "" if row["complete"] else "TIMEOUT", ratio])
    return out


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} CPU(s) {model}; Linux {platform.release()}; "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="farm latency before each connection's first byte (0 or 50)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-hydra", action="store_true")
    parser.add_argument("--telnet-tries", type=int, default=1,
                        help="login tries per farm Telnet connection (default 1; 3 is login(1), "
                             "which hydra 9.4's telnet module mishandles: see README)")
    parser.add_argument("--per-host", type=int, default=2,
                        help="connections per device at once: our per_host and hydra -t")
    parser.add_argument("--concurrency", type=int, default=256,
                        help="our global connection limit")
    parser.add_argument("--rate", type=float, default=None,
                        help="our new connections per second per device (profile default 25)")
    parser.add_argument("--hydra-tasks", type=int, default=256, help="hydra -T (overall tasks)")
    parser.add_argument("--hydra-wait", type=int, default=4,
                        help="hydra -w, seconds (our read timeout is 4)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="global time limit per tool run, seconds")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="the farm stops by itself after this long")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything this many times; tables show the median run")
    parser.add_argument("--no-default-spacing", action="store_true",
                        help="skip the run with the profile's default spacing (0.5 s)")
    parser.add_argument("--protocols", nargs="+", choices=list(PORTS), default=list(PORTS),
                        help="per-protocol runs to do (default: all); for profiling one path")
    parser.add_argument("--skip-whole", action="store_true",
                        help="skip the whole-scan runs (all checks on every device)")
    parser.add_argument("--redacted", action="store_true",
                        help="run our scans with secrets redacted (the product default); "
                             "default-credential findings then match on the user name only")
    parser.add_argument("--out", type=Path, help="folder for reports and logs (default: temp)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 60000:
        parser.error("--devices must be within 1-60000")
    if not 0 <= args.latency_ms <= 5000:
        parser.error("--latency-ms must be within 0-5000")
    if not 1 <= args.hydra_tasks <= 1024:
        parser.error("--hydra-tasks must be within 1-1024")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be within 1-10")
    if not 1 <= args.timeout <= 7200:
        parser.error("--timeout must be within 1-7200 s")
    assert not set(FARM_PORTS) & FORBIDDEN_PORTS

    out = args.out or Path(tempfile.mkdtemp(prefix="iotb-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit(args.concurrency * 4 + 4096)
    print(f"machine: {machine()}; load average at start {load_average()}")
    print(f"farm: {args.devices} devices, latency {args.latency_ms:g} ms, seed {args.seed}, "
          f"telnet tries per connection {args.telnet_tries}; output in {out}", flush=True)

    farm = FarmProcess(args, out / "truth.json", out / "farm.log")
    rows: list[dict[str, Any]] = []
    try:
        document = json.loads((out / "truth.json").read_text())
        truth = document["entries"]
        inventory = document["inventory"]
        everyone = [d["address"] for d in inventory]
        with_service = {p: [d["address"] for d in inventory
                            if any(s["protocol"] == p for s in d["services"])] for p in PORTS}
        print(f"farm ready: {farm.ready['servers']} servers in {farm.ready['start_s']} s "
              f"({farm.ready['first']} - {farm.ready['last']})", flush=True)

        notes = []
        version = hydra_version() if shutil.which("hydra") else ""
        use_hydra = not args.skip_hydra and bool(version)
        if args.skip_hydra:
            notes.append("hydra skipped (--skip-hydra)")
        elif not version:
            notes.append("hydra is not installed: no comparison (Debian: apt-get install hydra)")
        for protocol in PORTS:
            if use_hydra and HYDRA_MODULE[protocol] is None:
                notes.append(f"hydra {version} has no {protocol} module: no comparison")
        for round_no in range(args.repeat):
            tag = f"-r{round_no + 1}" if args.repeat > 1 else ""
            if not args.skip_whole:
                row, result = run_ours("ours-all-spacing0", tuple(PORTS), ALL_CHECKS, 0.0,
                                       everyone, farm, truth, args, out, tag)
                rows.append(row)
            if round_no == 0 and not args.skip_whole:
                mismatched = sum(
                    1 for device in result.devices for service in device.services
                    if service.port in PORTS.values() and service.protocol in PORTS
                    and budgeted_candidates(service.protocol, service.port,
                                            device.fingerprint_text())
                    != budgeted_candidates(service.protocol, service.port))
                print(f"candidate order differs from the hydra list on {mismatched} "
                      "service(s)", flush=True)
            for protocol in args.protocols:  # ours and hydra alternate, so drift hits both alike
                row, _ = run_ours(f"ours-{protocol}", (protocol,),
                                  (CREDENTIAL_CHECK[protocol],), 0.0, with_service[protocol],
                                  farm, truth, args, out, tag)
                rows.append(row)
                print(f"  {row['run']}{tag}: {row['wall_s']:.2f} s", flush=True)
                if use_hydra and HYDRA_MODULE[protocol] is not None:
                    row = run_hydra(protocol, with_service[protocol], farm, truth, args, out,
                                    tag)
                    rows.append(row)
                    print(f"  {row['run']}{tag}: {row['wall_s']:.2f} s", flush=True)
            if not (args.no_default_spacing or args.skip_whole):
                row, _ = run_ours("ours-all-default-spacing", tuple(PORTS), ALL_CHECKS, None,
                                  everyone, farm, truth, args, out, tag)
                rows.append(row)
    finally:
        farm.close()

    runs = rows
    rows = median_rows(rows)
    print(f"\nload average at the end {load_average()} (other work on the machine skews walls)")
    print()
    print(f"Per protocol, same targets and candidate list (spacing 0; per-device parallelism "
          f"{args.per_host}; latency {args.latency_ms:g} ms):")
    print(table(["tool", "protocol", "devices", "wall s", "min-max", "dev/s", "found", "recall",
                 "FP", "max/acct", "attempts", "max conn/dev", "engine max conn/dev", "peak MiB",
                 "CPU s", "farm CPU s", "errors", "", "wall ours/hydra"], comparison_rows(rows)))
    print()
    print("Whole scan, all four credential checks on every device:")
    whole = [r for r in rows if r["run"].startswith("ours-all")]
    print(table(["run", "spacing s", "devices", "wall s", "min-max", "dev/s", "found", "recall",
                 "precision", "FP", "max/acct", "max conn/dev", "engine max conn/dev",
                 "peak MiB", "CPU s",
                 "farm CPU s", "errors", "loop stall s", "backed off"],
                [[r["run"], r["spacing_s"], r["devices"], r["wall_s"], spread(r),
                  r["devices"] / r["wall_s"], r["score"]["found"], r["score"]["recall"],
                  r["score"]["precision"], r["score"]["false_positives"],
                  r["farm"]["max_attempts_per_account"], r["farm"]["max_concurrent_per_device"],
                  r["engine_max_conn"], r["peak_rss_mib"], r["cpu_s"], r["farm"]["farm_cpu_s"],
                  r["errors"],
                  r["max_loop_lag_s"], r["backed_off"]] for r in whole]))
    for r in whole:
        parts = [f"{check} {s['true_positives']}/{s['positives']}"
                 + (f" (+{s['false_positives']} FP)" if s["false_positives"] else "")
                 for check, s in r["per_check"].items()]
        print(f"  {r['run']}: " + ", ".join(parts))
    for r in rows:
        if r["tool"] == "hydra":
            print(f"hydra {r['protocol']}: {r['shards']} process(es) at once "
                  f"({r['commands'][0]} ...); {r['nonsense_restarts']} 'child sent nonsense "
                  f"data' restarts")
    for note in notes:
        print(f"note: {note}")
    for r in rows:
        reported = {f"{a}:{p}" for a, p, _, v in r["found"] if isinstance(v, tuple)}
        silent = sorted(set(r["farm"]["accepted_at"]) - reported)
        if silent:
            print(f"note ({r['run']}): the farm let {len(silent)} login(s) in that the tool did "
                  f"not report, e.g. {', '.join(silent[:3])}")
        for example in r["score"]["false_examples"][:3]:
            print(f"false positive ({r['run']}): {example}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": {
            k: str(v) for k, v in vars(args).items()}, "rows": rows, "all_runs": runs}, indent=1,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
