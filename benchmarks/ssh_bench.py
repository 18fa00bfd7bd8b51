"""SSH algorithm checks: our speed and verdicts against ssh-audit on the same endpoints.

``ssh_benchmark`` starts N simulated SSH servers in this process (asyncio, one per loopback
address 127.111.1.1 onwards, port 2200), alternately *weak* (diffie-hellman-group1-sha1,
ssh-rsa with a 1024-bit key, 3des-cbc, hmac-md5) and *hardened* (curve25519-sha256, Ed25519,
aes256-gcm, hmac-sha2-256-etm). Each sends its banner and KEXINIT and answers any KEXDH/ECDH
init with the host key the client asked for. It then runs our six SSH algorithm checks (one
shared collection per endpoint) and ``ssh-audit -b -n`` on each endpoint, one at a time, and
prints per-endpoint seconds for both, the ratio, and whether the verdicts agree (ssh-audit:
exit code 3 means a failure; ours: any failing algorithm or key).

Safety: only 127.111.1.0/24 is bound and scanned, never port 2024; at most 200 endpoints, every
connection at most HOLD seconds, every ssh-audit run at most AUDIT_TIMEOUT seconds.

    .venv/bin/python benchmarks/ssh_bench.py --endpoints 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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
from scanner.protocols.sshwire import frame, parse_kexinit, ssh_mpint, ssh_string
from scanner.targets import build_scope

NETWORK = "127.111.1.0/24"
PORT = 2200
MAX_ENDPOINTS = 200
HOLD = 30.0
AUDIT_TIMEOUT = 30.0
CHECKS = (SshWeakKex, SshWeakHostKey, SshWeakCipher, SshWeakMac, SshProtocol1, SshTerrapin)
PROFILES = {
    "weak": ("diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,curve25519-sha256",
             "ssh-rsa", "3des-cbc,aes128-ctr", "hmac-md5,hmac-sha2-256"),
    "hardened": ("curve25519-sha256", "ssh-ed25519", "aes256-gcm@openssh.com",
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


def host_key_blob(kind: str) -> bytes:
    if kind == "weak":
        numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
        return ssh_string(b"ssh-rsa") + ssh_mpint(numbers.e) + ssh_mpint(numbers.n)
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                         PublicFormat.Raw)
    return ssh_string(b"ssh-ed25519") + ssh_string(raw)


def kexinit(kind: str) -> bytes:
    kex, keys, ciphers, macs = PROFILES[kind]
    lists = (kex, keys, ciphers, ciphers, macs, macs, "none", "none", "", "")
    return bytes([20]) + bytes(16) + b"".join(ssh_string(n.encode()) for n in lists) + bytes(5)


async def _packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(5)
    length = struct.unpack(">I", head[:4])[0]
    if not 5 <= length <= 35000:
        raise ValueError("bad packet length")
    body = await reader.readexactly(length - 1)
    return body[:length - 1 - head[4]]


def handler(kind: str, blob: bytes,
            ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Banner and KEXINIT, then a KEXDH/ECDH reply (dummy f and signature) to every init."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HOLD):
                writer.write(f"SSH-2.0-BenchIoT_{kind}\r\n".encode() + frame(kexinit(kind)))
                await writer.drain()
                await reader.readuntil(b"\n")
                parse_kexinit(await _packet(reader))
                for _ in range(8):
                    message = await _packet(reader)
                    if message[0] == 30:
                        writer.write(frame(bytes([31]) + ssh_string(blob) + ssh_string(bytes(32))
                                           + ssh_string(b"sig")))
                        await writer.drain()
        except (Exception, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    return serve


@contextlib.asynccontextmanager
async def endpoints(count: int) -> AsyncIterator[list[Endpoint]]:
    count = min(count, MAX_ENDPOINTS)
    servers, found = [], []
    try:
        for n in range(count):
            kind = "weak" if n % 2 == 0 else "hardened"
            address = f"127.111.1.{n + 1}"
            servers.append(await asyncio.start_server(handler(kind, host_key_blob(kind)),
                                                      address, PORT))
            found.append(Endpoint(address, kind))
        yield found
    finally:
        for server in servers:
            server.close()


async def ours(endpoint: Endpoint) -> None:
    service = Service(port=PORT, transport="tcp", protocol="ssh")
    target = Target(Device(address=endpoint.address, services=[service]), service)
    network = Network(build_scope([NETWORK], excluded_ports=(2024,)),
                      Limits(connect_timeout=2.0, read_timeout=4.0, rate=1000.0))
    ctx = ProbeContext(target, network, Transcript())
    started = time.monotonic()
    try:
        for cls in CHECKS:
            probe = cls()
            observations = probe.evaluate(target, await probe.collect(ctx))
            endpoint.ours_fail |= any(o.key in ("weak", "ssh-1") for o in observations)
    finally:
        network.close()
    endpoint.ours_seconds = time.monotonic() - started


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


async def ssh_benchmark(count: int = 50, run_audit: bool = True) -> list[Endpoint]:
    """Start ``count`` endpoints, time ours and ssh-audit on each, print the table."""
    run_audit = run_audit and shutil.which("ssh-audit") is not None
    async with endpoints(count) as found:
        for endpoint in found:
            await ours(endpoint)
            if run_audit:
                await ssh_audit(endpoint)
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
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--skip-audit", action="store_true")
    args = parser.parse_args()
    asyncio.run(ssh_benchmark(args.endpoints, not args.skip_audit))


if __name__ == "__main__":
    main()
