"""TLS (and, later, SSH) quality checks: our speed and verdicts against testssl.sh.

TLS part: a child process serves N TLS endpoints (Python ssl servers, one per loopback address
127.110.1.1 onwards, port 4433), alternately *weak* (TLS 1.0-1.2, every suite this OpenSSL
has, an expired self-signed RSA-1024 SHA-1 certificate) and *strong* (TLS 1.2-1.3, ECDHE-AEAD
only, a test-CA certificate). We run the six TLS checks (one shared scan per endpoint) over all
of them, then ``testssl --quiet --color 0 -p -s -S`` on a subset, one endpoint at a time, and
print per-endpoint seconds, the ratio, and whether the verdicts agree on the subset: accepted
versions, NULL/anonymous/EXPORT/RC4 suites offered, certificate expired, self-signed.

SSH part: left for the SSH helper (a function ``ssh_section(args)`` to be added beside
``tls_section``).

Safety: only 127.110.1.0/24 is bound and scanned, never port 2024; the child serves at most
``--endpoints`` (≤ 200) servers, every connection at most HOLD seconds, and stops when stdin
closes or after ``--max-seconds``; the parent stops only that child, by its pid.

    python benchmarks/tls_ssh.py --endpoints 50 --testssl 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


async def run_ours(count: int, ca_file: str) -> tuple[list[tuple[Facts, dict[str, list[str]],
                                                                float]], float]:
    network = Network(build_scope([BLOCK], excluded_ports=(2024,)),
                      Limits(connect_timeout=2, read_timeout=3, probe_budget=60, rate=200.0,
                             per_host=4, concurrency=256))
    settings = ProbeSettings(trusted_ca_files=(ca_file,))
    started = time.monotonic()
    try:
        results = await asyncio.gather(*(_scan_one(network, i, settings) for i in range(count)))
    finally:
        network.close()
    return list(results), time.monotonic() - started


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
            results, wall = asyncio.run(run_ours(count, ready["ca_file"]))
            ours_per_endpoint = wall / count
            print(f"ours: {count} endpoints in {wall:.2f} s wall "
                  f"({ours_per_endpoint:.3f} s per endpoint; mean single-endpoint "
                  f"{sum(r[2] for r in results) / count:.2f} s)")
            subset = list(range(min(args.testssl, count))) if shutil.which("testssl") else []
            agreements, testssl_seconds = [], []
            for index in subset:
                theirs, seconds = run_testssl(index, directory)
                ours = our_verdict(results[index][0])
                testssl_seconds.append(seconds)
                agreements.append(ours == theirs)
                print(f"  {address(index)} ({'weak' if weak(index) else 'strong'}): "
                      f"testssl {seconds:.1f} s, ours {results[index][2]:.2f} s, "
                      f"agree={ours == theirs}" + ("" if ours == theirs else
                                                   f"\n    ours   {ours}\n    testssl {theirs}"))
        finally:
            if child.stdin is not None:
                child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)
    summary: dict[str, Any] = {"endpoints": count, "ours_wall_s": round(wall, 2),
                               "ours_per_endpoint_s": round(ours_per_endpoint, 3)}
    if testssl_seconds:
        per_endpoint = sum(testssl_seconds) / len(testssl_seconds)
        summary.update(testssl_per_endpoint_s=round(per_endpoint, 2),
                       speedup=round(per_endpoint / ours_per_endpoint, 1),
                       verdicts_agree=f"{sum(agreements)}/{len(agreements)}")
        print(f"testssl: {per_endpoint:.1f} s per endpoint; ours is "
              f"{per_endpoint / ours_per_endpoint:.0f}x faster per endpoint "
              f"({per_endpoint / (sum(r[2] for r in results) / count):.0f}x endpoint for "
              f"endpoint); verdicts agree on {sum(agreements)}/{len(agreements)}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--testssl", type=int, default=5, help="endpoints testssl also scans")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's role
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(min(args.serve, MAX_ENDPOINTS), args.dir, args.max_seconds))
        return 0
    summary = {"tls": tls_section(args)}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
