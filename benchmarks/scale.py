"""Scale benchmark (issue 10): discovery and the safe audit at N = 256 … 4,096 devices, against
nmap, nmap NSE, hydra and a bare asyncio connect sweep, on one simulated farm per size/latency.

    .venv/bin/python benchmarks/scale.py --sizes 256,1024 --latency-ms 0,50 --json out.json

Every tool runs as a child process, so its wall time, CPU time (``wait4``) and peak RSS are
its own. The peak is the child's VmHWM, sampled every 20 ms (``ru_maxrss`` would include this
process's RSS from before the child's exec); hydra forks, so its figure is the summed PSS of
its process tree, as in credentials.py. Per size and latency the farm (benchmarks/farm.py,
its own process) serves:

* ``floor``      a minimal asyncio connect sweep of every address × farm port (this file)
* ``sweep``      our engine's liveness and port sweep alone (ScanEngine, no fingerprinting)
* ``discovery``  our engine with no checks: sweep and service fingerprinting
* ``audit``      our safe audit: sweep, fingerprinting and the four credential checks
* ``nmap-sT``    nmap -sT with its fastest settings that stay correct here
* ``nmap-sV``    nmap -sT -sV (service detection)
* ``nse-*``      nmap -sV with telnet-brute (2323), http-brute (8080), mqtt-subscribe (1883):
                 one run per service, since ``brute.credfile`` is one list for every script
* ``hydra-*``    hydra on Telnet and HTTP with the same pair list (credentials.run_hydra)
* ``peer: …``    the peer pipelines, nmap -sV + hydra and nmap -sV + NSE, as sums of their runs

Each row is scored against the farm's truth (open ports; default credentials: recall and false
positives) and carries the most connections one device had open at once, as the farm saw it.
Figures only: nothing here asserts a speed.

Safety: only the farm's addresses (127.100.0.0/16) and ports are ever contacted (checked before
each run), never port 2024; every child has a hard timeout and is killed by its own process
group id; nothing else is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import ipaddress
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from credentials import (
    ALL_CHECKS,
    FarmProcess,
    load_average,
    machine,
    our_findings,
    our_profile,
    proc_status_kib,
    run_hydra,
    score,
    table,
)
from farm import FARM_PORTS, FORBIDDEN_PORTS, PROTOCOL_BY_PORT, budgeted_candidates

HERE = Path(__file__).resolve().parent
FARM_NETWORK = ipaddress.IPv4Network("127.100.0.0/16")
OUR_TOOLS = ("floor", "sweep", "discovery", "audit")
HYDRA_PROTOCOLS = ("telnet", "http")
# run -> (port, NSE script, the check its findings answer)
NSE_RUNS = {"nse-telnet": (2323, "telnet-brute", "telnet-default-credentials"),
            "nse-http": (8080, "http-brute", "http-default-credentials"),
            "nse-mqtt": (1883, "mqtt-subscribe", "mqtt-anonymous")}
NMAP_TOOLS = ("nmap-sT", "nmap-sV", *NSE_RUNS)
PEER_PIPELINES = {"peer: nmap-sV+hydra": ("nmap-sV", "hydra-telnet", "hydra-http"),
                  "peer: nmap-sV+NSE": ("nmap-sV", *NSE_RUNS)}
NSE_VALID = re.compile(r"^\s*(.*?):(.*) - Valid credentials\s*$", re.MULTILINE)
CONNECT_TIMEOUT = 2.0  # the safe profile's connect timeout, for the floor too
KILL_WAIT = 10.0
SAMPLE_EVERY = 0.02
MQTT_ANONYMOUS = ("Every topic filter was rejected", "Topics and their most recent payloads")


# --- child processes -------------------------------------------------------------------------


def farm_addresses(addresses: Iterable[str]) -> list[str]:
    """The addresses, each checked to be inside the farm's block (nothing else is scanned)."""
    checked = []
    for address in addresses:
        if ipaddress.IPv4Address(address) not in FARM_NETWORK:
            raise ValueError(f"{address} is outside the farm's {FARM_NETWORK}")
        checked.append(address)
    return checked


def run_child(command: list[str], timeout: float, stdout: Path, stderr: Path) -> dict[str, Any]:
    """Run ``command`` in its own session: wall and CPU from ``wait4``, peak RSS from VmHWM
    samples. After ``timeout`` s its process group (ours alone) is killed."""
    started = time.perf_counter()
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
    waited: list[tuple[int, Any]] = []
    waiter = threading.Thread(target=lambda: waited.append(os.wait4(proc.pid, 0)[1:]),
                              daemon=True)
    waiter.start()
    peak_kib, deadline = 0, started + timeout
    while waiter.is_alive() and time.perf_counter() < deadline:
        peak_kib = max(peak_kib, proc_status_kib(proc.pid, "VmHWM"))  # 0 once it has exited
        waiter.join(SAMPLE_EVERY)
    timed_out = waiter.is_alive()
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the session we started for this child
        waiter.join(KILL_WAIT)
    wall = time.perf_counter() - started
    status, usage = waited[0] if waited else (-1, None)
    exit_code = os.waitstatus_to_exitcode(status) if waited else None
    proc.returncode = -9 if exit_code is None else exit_code  # reaped by wait4: Popen must not
    return {"wall_s": wall, "timed_out": timed_out, "exit": exit_code,
            "cpu_s": usage.ru_utime + usage.ru_stime if usage else None,
            "peak_rss_mib": peak_kib / 1024}


def tcp_time_wait() -> int:
    """Sockets in TIME_WAIT on this host (/proc/net/sockstat), to show what a run leaves."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return -1


# --- our tools (run in a child: ``scale.py worker MODE ...``) ----------------------------------


async def floor_sweep(addresses: list[str], ports: list[int], concurrency: int
                      ) -> dict[str, list[int]]:
    """The least a connect sweep can do: open and close every address × port, ``concurrency``
    at once, no pacing and no per-host limit."""
    slots = asyncio.Semaphore(concurrency)

    async def attempt(address: str, port: int) -> tuple[str, int] | None:
        async with slots:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    _, writer = await asyncio.open_connection(address, port)
            except (OSError, TimeoutError):
                return None
            writer.close()
            return address, port

    opened: dict[str, list[int]] = {}
    for hit in await asyncio.gather(*(attempt(a, p) for a in addresses for p in ports)):
        if hit is not None:
            opened.setdefault(hit[0], []).append(hit[1])
    return opened


async def engine_run(mode: str, addresses: list[str], ports: list[int],
                     args: argparse.Namespace) -> dict[str, Any]:
    """Our ScanEngine on the farm: ``sweep`` (liveness and ports only), ``discovery`` (no
    checks) or ``audit`` (the four credential checks)."""
    from probes.registry import load_probes
    from scanner.engine import ScanEngine, ScanPlan
    from scanner.storage import ResultStore
    from scanner.targets import build_scope

    profile = our_profile(ports, ALL_CHECKS, args.spacing, args)
    scope = build_scope(addresses, excluded_ports=sorted(FORBIDDEN_PORTS))
    probes = load_probes()[0] if mode == "audit" else []
    plan = ScanPlan.build(scope, profile, probes, ports={"tcp": ports, "udp": []},
                          show_secrets=True, command_line=["benchmarks/scale.py", mode])
    engine = ScanEngine(plan, ResultStore(args.out))
    swept: dict[str, list[int]] = {}
    if mode == "sweep":  # the engine's own workers, limits and liveness logic, nothing after
        async def sweep_only(address: str) -> None:
            swept[address] = sorted((await engine.sweep(address, identify=False))[1])

        engine._scan_host = sweep_only  # type: ignore[method-assign,unused-ignore]
    stopper = asyncio.get_running_loop().call_later(args.timeout, engine.stop)
    try:  # as the CLI runs it: the results stay on disk, read back one record at a time
        stored = await engine.execute()
    finally:
        stopper.cancel()
    opened = swept or {d.address: [s.port for s in d.services if s.transport == "tcp"]
                       for d in stored.devices()}
    return {"open": opened, "found": our_findings(stored.findings()),
            "errors": len(stored.error_spans), "complete": stored.meta.complete,
            "engine_max_conn": engine.network.peak_open_per_host}


def worker(args: argparse.Namespace) -> int:
    addresses = farm_addresses(args.targets.read_text().split())
    ports = [int(p) for p in args.ports.split(",")]
    if set(ports) & FORBIDDEN_PORTS:
        raise SystemExit("refusing a forbidden port")
    started = time.perf_counter()
    if args.mode == "floor":
        answer: dict[str, Any] = {"open": asyncio.run(floor_sweep(addresses, ports,
                                                                  args.concurrency))}
    else:
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler:
            profiler.enable()
        answer = asyncio.run(engine_run(args.mode, addresses, ports, args))
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
    answer["work_s"] = time.perf_counter() - started
    print(json.dumps(answer, default=str))
    return 0


# --- nmap ------------------------------------------------------------------------------------


def nmap_command(tool: str, ports: list[int], targets: Path, xml: Path, folder: Path,
                 per_host: int) -> list[str]:
    """The nmap command line of one run; only ``ports`` of the addresses in ``targets``."""
    if tool in NSE_RUNS:
        ports = [NSE_RUNS[tool][0]]
    if set(ports) & FORBIDDEN_PORTS:
        raise ValueError("refusing a forbidden port")
    common = ["nmap", "-n", "-Pn", "-sT", "-T5", "-p", ",".join(map(str, ports)),
              "-iL", str(targets), "-oX", str(xml)]
    if tool == "nmap-sT":
        return [*common, "--min-rate", "5000", "--max-retries", "1"]
    if tool == "nmap-sV":
        return [*common, "-sV"]
    _, script, _ = NSE_RUNS[tool]
    if script == "mqtt-subscribe":  # anonymous access: the only MQTT login check nmap has
        return [*common, "-sV", "--script", script]
    # Same pairs (as a credfile) and per-device threads as ours; a service stops at its first.
    protocol = PROTOCOL_BY_PORT[ports[0]]
    creds = folder / f"{tool}-creds.txt"
    creds.write_text("".join(f"{user}/{password}\n" for user, password in
                             budgeted_candidates(protocol, ports[0]) if "/" not in user))
    return [*common, "-sV", "--script", script, "--script-args",
            f"brute.mode=creds,brute.credfile={creds},brute.firstonly=true,"
            f"brute.threads={per_host},brute.start={per_host},http-brute.path=/"]


def nmap_results(xml: Path) -> tuple[dict[str, list[int]], list[tuple[str, int, str, Any]]]:
    """Open ports and the credential findings of NSE scripts, from nmap's XML (python-nmap)."""
    import nmap  # python-nmap, as scanner/discovery/nmap_scan.py uses

    try:
        parsed = nmap.PortScanner().analyse_nmap_xml_scan(xml.read_text())
    except (OSError, nmap.PortScannerError):
        return {}, []
    opened: dict[str, list[int]] = {}
    found: list[tuple[str, int, str, Any]] = []
    for address, host in parsed.get("scan", {}).items():
        for port, info in host.get("tcp", {}).items():
            if info.get("state") != "open":
                continue
            opened.setdefault(address, []).append(int(port))
            checks = {script: check for _, script, check in NSE_RUNS.values()}
            for script, output in info.get("script", {}).items():
                if script in ("telnet-brute", "http-brute"):
                    found += [(address, int(port), checks[script],
                               (user, "" if password == "<empty>" else password))
                              for user, password in NSE_VALID.findall(output)]
                elif script == "mqtt-subscribe" and any(m in output for m in MQTT_ANONYMOUS):
                    found.append((address, int(port), "mqtt-anonymous", "anonymous"))
    return opened, found


# --- one farm, every tool --------------------------------------------------------------------


def port_score(truth_open: set[tuple[str, int]], opened: dict[str, list[int]]) -> dict[str, Any]:
    seen = {(address, int(port)) for address, ports in opened.items() for port in ports}
    hits = len(seen & truth_open)
    return {"open_found": len(seen), "open_recall": hits / len(truth_open) if truth_open else 1.0,
            "open_fp": len(seen - truth_open)}


def as_found(rows: list[list[Any]]) -> list[tuple[str, int, str, Any]]:
    """JSON lists back into the (address, port, check, value) tuples credentials.score reads."""
    return [(a, int(p), c, tuple(v) if isinstance(v, list) else v) for a, p, c, v in rows]


def bench_farm(size: int, latency_ms: float, args: argparse.Namespace, out: Path,
               notes: list[str]) -> list[dict[str, Any]]:
    """Every selected tool, one after another, against one farm of ``size`` devices."""
    folder = out / f"n{size}-l{latency_ms:g}"
    folder.mkdir(parents=True, exist_ok=True)
    farm_args = argparse.Namespace(devices=size, seed=args.seed, latency_ms=latency_ms,
                                   telnet_tries=1, max_seconds=args.max_seconds)
    farm = FarmProcess(farm_args, folder / "truth.json", folder / "farm.log")
    rows: list[dict[str, Any]] = []
    try:
        document = json.loads((folder / "truth.json").read_text())
        truth, inventory = document["entries"], document["inventory"]
        addresses = farm_addresses(d["address"] for d in inventory)
        truth_open = {(d["address"], s["port"]) for d in inventory for s in d["services"]}
        ports = sorted(FARM_PORTS)
        assert not set(ports) & FORBIDDEN_PORTS
        targets = folder / "targets.txt"
        targets.write_text("".join(a + "\n" for a in addresses))
        print(f"farm N={size} latency {latency_ms:g} ms: {farm.ready['servers']} servers "
              f"started in {farm.ready['start_s']} s", flush=True)

        def measured(tool: str, command: list[str]) -> dict[str, Any]:
            farm.ask("reset")
            tw_before = tcp_time_wait()
            child = run_child(command, args.timeout, folder / f"{tool}.out",
                              folder / f"{tool}.err")
            stats = farm.ask("stats", timeout=120)
            row = {"tool": tool, "devices": size, "latency_ms": latency_ms, **child,
                   "farm": stats, "time_wait_before": tw_before,
                   "time_wait_after": tcp_time_wait(), "max_conn_per_device":
                   stats["max_concurrent_per_device"], "attempts": stats["attempts"],
                   "max_attempts_per_account": stats["max_attempts_per_account"]}
            if child["timed_out"]:
                notes.append(f"N={size} {latency_ms:g} ms: {tool} killed after {args.timeout} s")
            print(f"  {tool}: {child['wall_s']:.2f} s, peak {child['peak_rss_mib'] or 0:.0f} "
                  f"MiB", flush=True)
            return row

        for tool in args.tools:
            if tool in OUR_TOOLS:
                worker_command = [sys.executable, str(HERE / "scale.py"), "worker", tool,
                                  "--targets", str(targets), "--ports",
                                  ",".join(map(str, ports)), "--out", str(folder / tool),
                                  "--per-host", str(args.per_host), "--concurrency",
                                  str(args.concurrency), "--spacing", str(args.spacing),
                                  "--timeout", str(args.timeout)]
                row = measured(tool, worker_command)
                answer = _last_json(folder / f"{tool}.out")
                row.update(port_score(truth_open, answer.get("open", {})),
                           work_s=answer.get("work_s"), errors=answer.get("errors", 0),
                           engine_max_conn=answer.get("engine_max_conn"))
                if tool == "audit":
                    row["score"] = score(truth, ALL_CHECKS, as_found(answer.get("found", [])),
                                         set(addresses))
                rows.append(row)
                if tool == "audit" and args.cprofile:
                    prof = folder / "audit.prof"
                    profiled = measured("audit-cprofile", [*worker_command, "--cprofile",
                                                           str(prof)])
                    rows.append(profiled)
                    if prof.exists():
                        hot_spots(prof, folder / "audit-hotspots.txt")
            elif tool in NMAP_TOOLS:
                xml = folder / f"{tool}.xml"
                row = measured(tool, nmap_command(tool, ports, targets, xml, folder,
                                                  args.per_host))
                opened, found = nmap_results(xml)
                if tool in NSE_RUNS:
                    row.update(found=found, score=score(truth, (NSE_RUNS[tool][2],), found,
                                                        set(addresses)))
                else:
                    row.update(port_score(truth_open, opened))
                rows.append(row)
            elif tool.startswith("hydra-"):
                protocol = tool.removeprefix("hydra-")
                hydra_args = argparse.Namespace(per_host=args.per_host, hydra_tasks=256,
                                                hydra_wait=4, timeout=args.timeout)
                with_service = [d["address"] for d in inventory
                                if any(s["protocol"] == protocol for s in d["services"])]
                tw_before = tcp_time_wait()
                hydra = run_hydra(protocol, with_service, farm, truth, hydra_args, folder)
                rows.append({"tool": tool, "devices": size, "latency_ms": latency_ms,
                             "wall_s": hydra["wall_s"], "cpu_s": hydra["cpu_s"],
                             "peak_rss_mib": hydra["peak_rss_mib"],
                             "timed_out": not hydra["complete"], "farm": hydra["farm"],
                             "found": hydra["found"], "score": hydra["score"],
                             "errors": hydra["errors"],
                             "time_wait_before": tw_before, "time_wait_after": tcp_time_wait(),
                             "max_conn_per_device": hydra["farm"]["max_concurrent_per_device"],
                             "attempts": hydra["farm"]["attempts"],
                             "max_attempts_per_account":
                                 hydra["farm"]["max_attempts_per_account"]})
                print(f"  {tool}: {hydra['wall_s']:.2f} s", flush=True)
    finally:
        farm.close()
    peer_pipelines(rows, truth, set(addresses))
    return rows


def _last_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError, IndexError):
        answer: dict[str, Any] = json.loads(path.read_text().strip().splitlines()[-1])
        return answer
    return {}


def peer_pipelines(rows: list[dict[str, Any]], truth: list[dict[str, Any]],
                   addresses: set[str]) -> None:
    """Add each peer pipeline whose runs all happened as one row: walls and CPU add up (the
    runs follow each other), the peak is the largest, findings are pooled and scored on every
    credential check, open ports are nmap -sV's."""
    parts = {r["tool"]: r for r in rows}
    for name, tools in PEER_PIPELINES.items():
        if not all(tool in parts for tool in tools):
            continue
        chosen = [parts[tool] for tool in tools]
        found = [f for part in chosen for f in part.get("found", [])]
        rows.append({"tool": name, "devices": chosen[0]["devices"],
                     "latency_ms": chosen[0]["latency_ms"],
                     "wall_s": sum(p["wall_s"] for p in chosen),
                     "cpu_s": sum(p["cpu_s"] or 0 for p in chosen),
                     "peak_rss_mib": max(p["peak_rss_mib"] or 0 for p in chosen),
                     "max_conn_per_device": max(p["max_conn_per_device"] for p in chosen),
                     "max_attempts_per_account": max(p["max_attempts_per_account"]
                                                     for p in chosen),
                     "open_recall": chosen[0].get("open_recall"),
                     "open_fp": chosen[0].get("open_fp"),
                     "timed_out": any(p.get("timed_out") for p in chosen),
                     "score": score(truth, ALL_CHECKS, found, addresses)})


def hot_spots(prof: Path, text: Path, count: int = 30) -> None:
    """The functions with the most cumulative time, for the engine work."""
    with text.open("w") as out:
        pstats.Stats(str(prof), stream=out).sort_stats("cumulative").print_stats(count)
    print(f"  cProfile hot spots: {text}", flush=True)


# --- report ----------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]]) -> str:
    """Per size and latency, every tool side by side with its ratio to the asyncio floor (on
    the time after interpreter start-up, "work s", where a tool has one) and, for credential
    tools, to our audit's wall."""
    lines = []
    for size, latency in dict.fromkeys((r["devices"], r["latency_ms"]) for r in rows):
        group = [r for r in rows if (r["devices"], r["latency_ms"]) == (size, latency)]
        walls = {r["tool"]: r["wall_s"] for r in group}
        floor = next((r.get("work_s") for r in group if r["tool"] == "floor"), None)
        audit = walls.get("audit")
        lines.append(f"\nN={size}, latency {latency:g} ms")
        lines.append(table(
            ["tool", "wall s", "work s", "x floor", "x audit", "CPU s", "peak MiB", "open rec",
             "open FP", "cred found", "cred recall", "cred FP", "max conn/dev",
             "engine max conn/dev", "max/acct", "TIME_WAIT", "errors", ""],
            [[r["tool"], r["wall_s"], r.get("work_s"),
              (r.get("work_s") or r["wall_s"]) / floor if floor else None,
              r["wall_s"] / audit if audit and "score" in r else None,
              r.get("cpu_s"), r.get("peak_rss_mib"), r.get("open_recall"), r.get("open_fp"),
              r["score"]["found"] if "score" in r else None,
              r["score"]["recall"] if "score" in r else None,
              r["score"]["false_positives"] if "score" in r else None,
              r.get("max_conn_per_device"), r.get("engine_max_conn"),
              r.get("max_attempts_per_account"),
              r.get("time_wait_after"), r.get("errors"),
              "TIMEOUT" if r.get("timed_out") else ""] for r in group]))
    return "\n".join(lines)


def growth(rows: list[dict[str, Any]], small: int, large: int) -> list[str]:
    """Peak RSS of our tools at ``large`` devices over ``small`` (target < 1.3)."""
    out = []
    for tool in OUR_TOOLS:
        for latency in dict.fromkeys(r["latency_ms"] for r in rows):
            peak = {r["devices"]: r["peak_rss_mib"] for r in rows
                    if r["tool"] == tool and r["latency_ms"] == latency}
            if peak.get(small) and peak.get(large):
                out.append(f"peak RSS {tool} ({latency:g} ms) N={large} / N={small}: "
                           f"{peak[large] / peak[small]:.2f}")
    return out


def parse_list(text: str, kind: type[int] | type[float]) -> list[Any]:
    try:
        return [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        parser = argparse.ArgumentParser(prog="scale.py worker",
                                         description="one of our tools, run by scale.py")
        parser.add_argument("worker")
        parser.add_argument("mode", choices=OUR_TOOLS)
        parser.add_argument("--targets", type=Path, required=True)
        parser.add_argument("--ports", required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--per-host", type=int, default=2)
        parser.add_argument("--concurrency", type=int, default=256)
        parser.add_argument("--rate", type=float, default=None)
        parser.add_argument("--spacing", type=float, default=0.0)
        parser.add_argument("--timeout", type=float, default=600.0)
        parser.add_argument("--cprofile", type=Path)
        return worker(parser.parse_args(argv))

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda t: parse_list(t, int), default=[256, 1024],
                        help="farm sizes, e.g. 256,1024,4096")
    parser.add_argument("--latency-ms", type=lambda t: parse_list(t, float), default=[0.0, 50.0],
                        help="farm latencies before each connection's first byte, e.g. 0,50")
    parser.add_argument("--skip-nmap", action="store_true")
    parser.add_argument("--skip-hydra", action="store_true")
    parser.add_argument("--skip-ours", default="",
                        help=f"comma-separated tools of ours to leave out ({','.join(OUR_TOOLS)})")
    parser.add_argument("--nmap-max-devices", type=int, default=1024,
                        help="run the nmap tools and hydra only up to this farm size")
    parser.add_argument("--per-host", type=int, default=2,
                        help="our per_host, hydra -t and the NSE brute threads per device")
    parser.add_argument("--concurrency", type=int, default=256, help="our global limit")
    parser.add_argument("--spacing", type=float, default=0.0,
                        help="our spacing between login attempts (0, as hydra; the safe "
                             "profile's default is 0.5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="hard limit per tool run, seconds (the child is killed)")
    parser.add_argument("--max-seconds", type=float, default=7200.0,
                        help="each farm stops by itself after this long")
    parser.add_argument("--cprofile", action="store_true",
                        help="also run the audit under cProfile and write its hot spots")
    parser.add_argument("--out", type=Path, help="folder for logs, reports, truth files")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if not args.sizes or not all(1 <= n <= 16000 for n in args.sizes):
        parser.error("--sizes must be within 1-16000")
    if not all(0 <= ms <= 5000 for ms in args.latency_ms):
        parser.error("--latency-ms must be within 0-5000")
    if not 1 <= args.timeout <= 7200:
        parser.error("--timeout must be within 1-7200 s")
    skipped_ours = {t for t in args.skip_ours.split(",") if t}
    if skipped_ours - set(OUR_TOOLS):
        parser.error(f"--skip-ours: unknown tool(s) {sorted(skipped_ours - set(OUR_TOOLS))}")

    out = args.out or Path(tempfile.mkdtemp(prefix="iotb-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if not args.skip_nmap and not shutil.which("nmap"):
        notes.append("nmap is not installed: no nmap rows (Debian: apt-get install nmap)")
    if not args.skip_hydra and not shutil.which("hydra"):
        notes.append("hydra is not installed: no hydra rows (Debian: apt-get install hydra)")
    print(f"machine: {machine()}; load average {load_average()}; output in {out}", flush=True)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        for latency in args.latency_ms:
            tools = [t for t in OUR_TOOLS if t not in skipped_ours]
            peers = size <= args.nmap_max_devices
            if peers and not args.skip_nmap and shutil.which("nmap"):
                tools += NMAP_TOOLS
            if peers and not args.skip_hydra and shutil.which("hydra"):
                tools += [f"hydra-{p}" for p in HYDRA_PROTOCOLS]
            args.tools = tools
            rows += bench_farm(size, latency, args, out, notes)
    print(f"\nload average at the end {load_average()}")
    print(report(rows))
    sizes = sorted(args.sizes)
    for line in growth(rows, sizes[0], sizes[-1]) if len(sizes) > 1 else []:
        print(line)
    if any(r["tool"].startswith(("hydra-", "nse-")) for r in rows):
        notes.append("hydra 9.4 has no MQTT module and nmap 7.93 no MQTT brute script: the peer "
                     "pipelines miss MQTT default credentials (NSE checks anonymous MQTT only)")
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": {
            k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
