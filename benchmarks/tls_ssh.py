"""TLS and SSH quality checks: our speed and verdicts against testssl.sh, sslscan, ssh-audit.

TLS part: a child process serves N TLS endpoints (Python ssl servers, one per loopback address
127.110.1.1 onwards, port 4433), alternately *weak* (TLS 1.0-1.2, every suite this OpenSSL
has, an expired self-signed RSA-1024 SHA-1 certificate) and *strong* (TLS 1.2-1.3, ECDHE-AEAD
only, a test-CA certificate). Per endpoint, ONE AT A TIME for every tool (nothing else running
against the farm): the six TLS checks (one shared scan), ``testssl --quiet --color 0 -p -s -S``
(on the first ``--testssl`` endpoints: it takes tens of seconds each) and
``sslscan --xml=-``; the verdicts compared are the accepted versions, whether NULL, anonymous
or EXPORT suites are accepted, certificate expired, self-signed. Then our checks on all N at
once (one network gate, as a scan runs them) for throughput.

SSH part: benchmarks/ssh_bench.py (N fakes on 127.111.1.x, ours vs ``ssh-audit``, also one
endpoint at a time, then ours on all at once).

Safety: only 127.110.1.0/24 and 127.111.1.0/24 are bound and scanned, never port 2024; at most
200 endpoints each, every connection at most HOLD seconds, every tool run bounded by a timeout;
the TLS child stops when stdin closes or after ``--max-seconds``; the parent stops only that
child, by its pid.

    .venv/bin/python benchmarks/tls_ssh.py --endpoints 50 --testssl 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ssh_bench import ssh_benchmark  # noqa: E402  (beside this file)

from probes.api import Facts, ProbeContext, ProbeSettings, SharedCollections, Target  # noqa: E402
from probes.tls import (  # noqa: E402
    TlsCertificateExpired,
    TlsCertificateNameMismatch,
    TlsCertificateUntrusted,
    TlsCertificateWeakKey,
    TlsCheck,
    TlsLegacyProtocols,
    TlsWeakCipherSuites,
    tls_data,
)
from scanner.models import Device, Service  # noqa: E402
from scanner.net import Limits, Network, Transcript  # noqa: E402
from scanner.targets import build_scope  # noqa: E402
from tests.tls_certs import ca_signed, weak_self_signed  # noqa: E402

BLOCK = "127.110.1.0/24"
PORT = 4433
MAX_ENDPOINTS = 200
HOLD = 10.0  # seconds any one connection is served
CHECKS: list[TlsCheck] = [TlsLegacyProtocols(), TlsWeakCipherSuites(), TlsCertificateExpired(),
                          TlsCertificateUntrusted(), TlsCertificateNameMismatch(),
                          TlsCertificateWeakKey()]
TESTSSL_TIMEOUT = 600.0
SSLSCAN_TIMEOUT = 300.0
TESTSSL_VERSIONS = {"SSLv3": "SSLv3", "TLS1": "TLSv1.0", "TLS1_1": "TLSv1.1",
                    "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}
TESTSSL_CATEGORIES = {"cipherlist_NULL": "NULL", "cipherlist_aNULL": "anonymous",
                      "cipherlist_EXPORT": "EXPORT"}
COMPARED_CATEGORIES = ("NULL", "anonymous", "EXPORT")


def address(index: int) -> str:
    return f"127.110.1.{index + 1}"


def weak(index: int) -> bool:
    return index % 2 == 0


# ----------------------------------------------------------------------------- the child


def _contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, Path]:
    weak_files = weak_self_signed(directory, address(0), stem="bench-weak")
    strong_files = ca_signed(directory, [address(i) for i in range(MAX_ENDPOINTS)],
                             stem="bench-strong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        weak_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        weak_context.minimum_version = ssl.TLSVersion.TLSv1
        weak_context.maximum_version = ssl.TLSVersion.TLSv1_2
    weak_context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    weak_context.load_cert_chain(weak_files.cert, weak_files.key)
    strong_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    strong_context.minimum_version = ssl.TLSVersion.TLSv1_2
    strong_context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    strong_context.load_cert_chain(strong_files.cert, strong_files.key)
    assert strong_files.ca is not None
    return weak_context, strong_context, strong_files.ca


async def _serve(count: int, directory: Path, max_seconds: float) -> None:
    weak_context, strong_context, ca_file = _contexts(directory)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(HOLD):
                if await reader.read(4096):
                    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    await writer.drain()
        writer.transport.abort()

    servers = [await asyncio.start_server(handle, address(i), PORT,
                                          ssl=weak_context if weak(i) else strong_context,
                                          ssl_handshake_timeout=HOLD)
               for i in range(count)]
    print(json.dumps({"ready": count, "ca_file": str(ca_file)}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stdin_closed, max_seconds)
    for server in servers:
        server.close()


# ----------------------------------------------------------------------------- the parent


async def _scan_one(network: Network, index: int, settings: ProbeSettings) -> tuple[Facts, dict[
        str, list[str]], float]:
    service = Service(port=PORT, transport="tcp", protocol="tls", tls=True)
    target = Target(Device(address=address(index), services=[service]), service)
    shared = SharedCollections()
    started = time.monotonic()
    verdicts: dict[str, list[str]] = {}
    facts: Facts = {}
    try:
        for check in CHECKS:
            ctx = ProbeContext(target, network, Transcript(), settings, shared=shared)
            facts = await check.collect(ctx)
            verdicts[check.metadata.check_id] = [o.key for o in check.evaluate(target, facts)]
    finally:
        shared.close()
    return facts, verdicts, time.monotonic() - started


def _network() -> Network:
    return Network(build_scope([BLOCK], excluded_ports=(2024,)),
                   Limits(connect_timeout=2, read_timeout=3, probe_budget=60, rate=200.0,
                          per_host=4, concurrency=256))


async def run_ours(count: int, ca_file: str, *, at_once: bool,
                   ) -> tuple[list[tuple[Facts, dict[str, list[str]], float]], float]:
    """Our checks on every endpoint: one at a time (each with a fresh gate, as a one-device
    scan) or all at once through one gate (a scan of the whole farm). Returns the per-endpoint
    results and the wall seconds."""
    settings = ProbeSettings(trusted_ca_files=(ca_file,))
    started = time.monotonic()
    if at_once:
        network = _network()
        try:
            results = await asyncio.gather(*(_scan_one(network, i, settings)
                                             for i in range(count)))
        finally:
            network.close()
        return list(results), time.monotonic() - started
    sequential = []
    for index in range(count):
        network = _network()
        try:
            sequential.append(await _scan_one(network, index, settings))
        finally:
            network.close()
    return sequential, time.monotonic() - started


def our_verdict(facts: Facts) -> dict[str, Any]:
    data = tls_data()
    suites = {s for r in facts["versions"].values() for s in r.get("suites", [])}
    categories = {rule.category for s in suites for rule in data.categories(s)}
    leaf = facts["certificates"][0] if facts["certificates"] else {}
    expired = bool(leaf) and leaf["not_after"] < facts["checked_at"]
    return {"versions": sorted(facts["accepted_versions"]),
            "categories": sorted(c for c in categories if c in COMPARED_CATEGORIES),
            "expired": expired, "self_signed": bool(leaf.get("self_signed"))}


def run_testssl(index: int, directory: Path) -> tuple[dict[str, Any], float]:
    out = directory / f"testssl-{index}.json"
    argv = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-S",
            "--jsonfile", str(out), f"{address(index)}:{PORT}"]
    started = time.monotonic()
    subprocess.run(argv, capture_output=True, timeout=TESTSSL_TIMEOUT, check=False,
                   stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    entries = json.loads(out.read_text()) if out.exists() else []
    by_id = {entry["id"]: str(entry.get("finding", "")) for entry in entries}
    versions = sorted(name for key, name in TESTSSL_VERSIONS.items()
                      if by_id.get(key, "").startswith("offered"))
    categories = sorted(category for key, category in TESTSSL_CATEGORIES.items()
                        if by_id.get(key, "").startswith("offered"))
    return {"versions": versions, "categories": categories,
            "expired": by_id.get("cert_expirationStatus", "").startswith("expired"),
            "self_signed": "self signed" in by_id.get("cert_chain_of_trust", "")}, seconds


def run_sslscan(index: int) -> tuple[dict[str, Any], float]:
    """sslscan's verdicts on one endpoint: it enumerates every suite, as we do."""
    started = time.monotonic()
    done = subprocess.run(["sslscan", "--no-colour", "--xml=-", f"{address(index)}:{PORT}"],
                          capture_output=True, text=True, timeout=SSLSCAN_TIMEOUT, check=False,
                          stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    document = ElementTree.fromstring(done.stdout)
    versions = sorted(f"{'SSLv' if p.get('type') == 'ssl' else 'TLSv'}{p.get('version')}"
                      for p in document.iter("protocol") if p.get("enabled") == "1")
    data = tls_data()
    suites = {data.suite_name(int(str(c.get("id")), 16)) for c in document.iter("cipher")}
    categories = {rule.category for suite in suites for rule in data.categories(suite)}
    return {"versions": versions,
            "categories": sorted(c for c in categories if c in COMPARED_CATEGORIES),
            "expired": document.findtext(".//certificate/expired") == "true",
            "self_signed": document.findtext(".//certificate/self-signed") == "true"}, seconds


def _compare(tool: str, index: int, ours: dict[str, Any], theirs: dict[str, Any],
             seconds: float, our_seconds: float) -> bool:
    agree = ours == theirs
    print(f"  {address(index)} ({'weak' if weak(index) else 'strong'}): {tool} {seconds:.2f} s, "
          f"ours {our_seconds:.2f} s, agree={agree}"
          + ("" if agree else f"\n    ours  {ours}\n    {tool} {theirs}"))
    return agree


def _tool_summary(tool: str, seconds: list[float], agreements: list[bool],
                  our_seconds: list[float]) -> dict[str, Any]:
    """Median seconds per endpoint for the tool and for us on the same endpoints (the median:
    the first run of each pays one-off start-up costs)."""
    theirs, ours = statistics.median(seconds), statistics.median(our_seconds)
    return {"tool": tool, "endpoints": len(seconds), "tool_s": round(theirs, 3),
            "ours_s": round(ours, 3), "ratio": round(theirs / ours, 1),
            "agree": f"{sum(agreements)}/{len(agreements)}"}


def tls_section(args: argparse.Namespace) -> dict[str, Any]:
    count = min(args.endpoints, MAX_ENDPOINTS)
    with tempfile.TemporaryDirectory(prefix="iotb-tls-bench-") as tmp:
        directory = Path(tmp)
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(count), "--dir", str(directory),
             "--max-seconds", str(args.max_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert child.stdout is not None
            ready = json.loads(child.stdout.readline() or "{}")
            if ready.get("ready") != count:
                raise RuntimeError(f"endpoint server did not start: {ready}")
            results, single_wall = asyncio.run(run_ours(count, ready["ca_file"],
                                                        at_once=False))
            _, wall = asyncio.run(run_ours(count, ready["ca_file"], at_once=True))
            print(f"ours: {count} endpoints one at a time in {single_wall:.2f} s "
                  f"({single_wall / count:.3f} s each); all at once in {wall:.2f} s wall")
            comparisons = []
            runs = [("testssl", run_testssl, 0 if args.skip_testssl else args.testssl),
                    ("sslscan", lambda i, _: run_sslscan(i), 0 if args.skip_sslscan else count)]
            for tool, run, endpoints in runs:
                if not endpoints or not shutil.which(tool):
                    continue
                seconds, agreements, our_seconds = [], [], []
                for index in range(min(endpoints, count)):
                    theirs, took = run(index, directory)
                    ours = our_verdict(results[index][0])
                    agreements.append(_compare(tool, index, ours, theirs, took,
                                               results[index][2]))
                    seconds.append(took)
                    our_seconds.append(results[index][2])
                comparisons.append(_tool_summary(tool, seconds, agreements, our_seconds))
        finally:
            if child.stdin is not None:
                child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
    return {"endpoints": count, "ours_one_at_a_time_s": round(single_wall / count, 3),
            "ours_all_at_once_wall_s": round(wall, 2), "comparisons": comparisons}


def ssh_section(args: argparse.Namespace) -> dict[str, Any]:
    found, wall = asyncio.run(ssh_benchmark(args.ssh_endpoints or args.endpoints,
                                            not args.skip_audit))
    audited = [e for e in found if e.audit_fail is not None]
    summary: dict[str, Any] = {"endpoints": len(found),
                               "ours_one_at_a_time_s": round(statistics.median(
                                   e.ours_seconds for e in found), 4),
                               "ours_all_at_once_wall_s": round(wall, 2), "comparisons": []}
    if audited:
        summary["comparisons"].append(_tool_summary(
            "ssh-audit", [e.audit_seconds for e in audited],
            [e.audit_fail == e.ours_fail for e in audited], [e.ours_seconds for e in audited]))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """One table: per endpoint, one at a time, mean seconds of each tool and of ours on the
    same endpoints, the ratio and verdict agreement; then our throughput."""
    print("\nmedian seconds per endpoint, each tool and ours one endpoint at a time:")
    print(f"{'part':<5} {'tool':<10} {'endpoints':>9} {'tool s/ep':>10} {'ours s/ep':>10} "
          f"{'ratio':>7} {'verdicts agree':>15}")
    for part, section in summary.items():
        for row in section["comparisons"]:
            print(f"{part:<5} {row['tool']:<10} {row['endpoints']:>9} {row['tool_s']:>10.3f} "
                  f"{row['ours_s']:>10.3f} {row['ratio']:>6.1f}x {row['agree']:>15}")
    for part, section in summary.items():
        print(f"{part}: ours on all {section['endpoints']} endpoints at once: "
              f"{section['ours_all_at_once_wall_s']:.2f} s wall "
              f"({section['ours_all_at_once_wall_s'] / section['endpoints']:.3f} s per endpoint)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--testssl", type=int, default=10,
                        help="endpoints testssl also scans (the first ones: weak, strong, …)")
    parser.add_argument("--skip-testssl", action="store_true")
    parser.add_argument("--skip-sslscan", action="store_true")
    parser.add_argument("--skip-audit", action="store_true", help="do not run ssh-audit")
    parser.add_argument("--skip-ssh", action="store_true", help="TLS part only")
    parser.add_argument("--skip-tls", action="store_true", help="SSH part only")
    parser.add_argument("--ssh-endpoints", type=int, help="default: --endpoints")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(min(args.serve, MAX_ENDPOINTS), args.dir, args.max_seconds))
        return 0
    summary = {}
    if not args.skip_tls:
        summary["tls"] = tls_section(args)
    if not args.skip_ssh:
        summary["ssh"] = ssh_section(args)
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
