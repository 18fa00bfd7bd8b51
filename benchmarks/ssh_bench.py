"""SSH algorithm checks: our speed and verdicts against ssh-audit on the same endpoints.

``ssh_benchmark`` starts N simulated SSH servers in this process (the fakes of
tests/ssh_fakes.py, one per loopback address 127.111.1.1 onwards, port 2200), alternately
*weak* (diffie-hellman-group1-sha1, ssh-rsa with a 1024-bit key, 3des-cbc, hmac-md5) and
*hardened* (curve25519-sha256, Ed25519, aes256-gcm, hmac-sha2-256-etm). It then runs our six
SSH algorithm checks (one shared collection per endpoint) and ``ssh-audit -b -n`` on each
endpoint, one at a time, and prints per-endpoint seconds for both, the ratio, and whether the
verdicts agree (ssh-audit: exit code 3 means a failure; ours: any failing algorithm or key);
then ours on every endpoint at once, for throughput. benchmarks/tls_ssh.py runs it beside the
TLS part.

Safety: only 127.111.1.0/24 is bound and scanned, never port 2024; at most 200 endpoints, every
connection at most HOLD seconds, every ssh-audit run at most AUDIT_TIMEOUT seconds.

    .venv/bin/python benchmarks/ssh_bench.py --endpoints 50
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probes.api import ProbeContext, Target
from probes.ssh_crypto import (
    SshProtocol1,
    SshTerrapin,
    SshWeakCipher,
    SshWeakHostKey,
    SshWeakKex,
    SshWeakMac,
)
from scanner.models import Device, Service
from scanner.net import Limits, Network, Transcript
from scanner.targets import build_scope
from tests.ssh_fakes import FAKE_PORT, ed25519_blob, rsa_blob, serve, weak_server

NETWORK = "127.111.1.0/24"
PORT = FAKE_PORT
MAX_ENDPOINTS = 200
AUDIT_TIMEOUT = 30.0
CHECKS = (SshWeakKex, SshWeakHostKey, SshWeakCipher, SshWeakMac, SshProtocol1, SshTerrapin)
PROFILES = {  # kex, ciphers, macs; the host key is made per endpoint
    "weak": ("diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,curve25519-sha256",
             "3des-cbc,aes128-ctr", "hmac-md5,hmac-sha2-256"),
    "hardened": ("curve25519-sha256", "aes256-gcm@openssh.com",
                 "hmac-sha2-256-etm@openssh.com"),
}


@dataclass
class Endpoint:
    address: str
    kind: str  # "weak" or "hardened"
    ours_seconds: float = 0.0
    ours_fail: bool = False
    audit_seconds: float = 0.0
    audit_fail: bool | None = None  # None: ssh-audit not run


@asynccontextmanager
async def endpoints(count: int) -> AsyncIterator[list[Endpoint]]:
    """``count`` fakes (tests/ssh_fakes.py), alternately weak (RSA-1024) and hardened."""
    found = []
    async with AsyncExitStack() as stack:
        for n in range(min(count, MAX_ENDPOINTS)):
            kind = "weak" if n % 2 == 0 else "hardened"
            keys = {"ssh-rsa": rsa_blob(1024)} if kind == "weak" else \
                {"ssh-ed25519": ed25519_blob()}
            kex, ciphers, macs = PROFILES[kind]
            address = f"127.111.1.{n + 1}"
            await stack.enter_async_context(
                serve(address, weak_server(kex, keys, ciphers, macs,
                                           f"SSH-2.0-BenchIoT_{kind}\r\n".encode()), PORT))
            found.append(Endpoint(address, kind))
        yield found


def _network() -> Network:
    return Network(build_scope([NETWORK], excluded_ports=(2024,)),
                   Limits(connect_timeout=2.0, read_timeout=4.0, rate=1000.0))


async def ours(endpoint: Endpoint, network: Network | None = None) -> None:
    """The six checks on one endpoint (one shared collection), timed; a fresh network gate
    unless one is given (the throughput run shares one, as a scan does)."""
    service = Service(port=PORT, transport="tcp", protocol="ssh")
    target = Target(Device(address=endpoint.address, services=[service]), service)
    gate = network or _network()
    ctx = ProbeContext(target, gate, Transcript())
    started = time.monotonic()
    fail = False
    try:
        for cls in CHECKS:
            probe = cls()
            observations = probe.evaluate(target, await probe.collect(ctx))
            fail |= any(o.key in ("weak", "ssh-1") for o in observations)
    finally:
        if network is None:
            gate.close()
    endpoint.ours_seconds = time.monotonic() - started
    endpoint.ours_fail = fail


async def ssh_audit(endpoint: Endpoint) -> None:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "ssh-audit", "-b", "-n", "-t", "5", "-p", str(PORT), endpoint.address,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        code = await asyncio.wait_for(process.wait(), AUDIT_TIMEOUT)
    except TimeoutError:
        process.kill()  # our own child, by its handle
        await process.wait()
        return
    endpoint.audit_seconds = time.monotonic() - started
    endpoint.audit_fail = code == 3


async def ssh_benchmark(count: int = 50, run_audit: bool = True,
                        ) -> tuple[list[Endpoint], float]:
    """Start ``count`` endpoints; time ours and ssh-audit on each, one endpoint at a time
    (the per-endpoint comparison), then ours on all at once (throughput: the wall seconds);
    print the table."""
    run_audit = run_audit and shutil.which("ssh-audit") is not None
    async with endpoints(count) as found:
        for endpoint in found:
            await ours(endpoint)
            if run_audit:
                await ssh_audit(endpoint)
        shared = [Endpoint(e.address, e.kind) for e in found]
        network = _network()
        started = time.monotonic()
        try:
            await asyncio.gather(*(ours(e, network) for e in shared))
        finally:
            network.close()
        wall = time.monotonic() - started
    print(f"{'endpoint':<16} {'kind':<9} {'ours s':>8} {'ssh-audit s':>12} {'ratio':>7}  verdicts")
    for e in found:
        ratio = f"{e.audit_seconds / e.ours_seconds:7.1f}" if e.audit_fail is not None \
            else f"{'-':>7}"
        agree = "-" if e.audit_fail is None else ("agree" if e.audit_fail == e.ours_fail
                                                  else "DIFFER")
        print(f"{e.address:<16} {e.kind:<9} {e.ours_seconds:8.3f} {e.audit_seconds:12.3f} "
              f"{ratio}  ours={'fail' if e.ours_fail else 'pass'} {agree}")
    audited = [e for e in found if e.audit_fail is not None]
    print(f"median seconds: ours {statistics.median(e.ours_seconds for e in found):.3f}", end="")
    if audited:
        print(f", ssh-audit {statistics.median(e.audit_seconds for e in audited):.3f}; "
              f"verdicts agree on {sum(e.audit_fail == e.ours_fail for e in audited)}"
              f"/{len(audited)}")
    else:
        print("; ssh-audit not run (not installed or --skip-audit)")
    print(f"throughput: ours on all {len(found)} at once in {wall:.2f} s wall")
    return found, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--skip-audit", action="store_true")
    args = parser.parse_args()
    asyncio.run(ssh_benchmark(args.endpoints, not args.skip_audit))


if __name__ == "__main__":
    main()
