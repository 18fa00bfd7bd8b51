"""SSH algorithm checks: the wire parser (and hostile input), evaluate(), fake servers on
127.111.0.0/16, real OpenSSH (weak and hardened) and Dropbear daemons, and ssh-audit's verdicts
on the same daemons.

Safety: fakes bind 127.111.x addresses only, daemons live at fixed 127.95.0.x addresses, no
scope includes port 2024, and every fake, wait and subprocess is bounded in time.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from probes.api import Facts, Observation, Probe, ProbeContext, Target
from probes.ssh_crypto import (
    SshCryptoCheck,
    SshPasswordAuth,
    SshProtocol1,
    SshSharedHostKey,
    SshTerrapin,
    SshWeakCipher,
    SshWeakHostKey,
    SshWeakKex,
    SshWeakMac,
    grade,
    ratings,
)
from scanner.models import Device, Service, Severity
from scanner.net import Limits, Network, Transcript
from scanner.protocols import sshwire
from scanner.protocols.sshwire import (
    MAX_PACKET,
    SshProtocolError,
    frame,
    name_list,
    parse_host_key,
    parse_kexinit,
    parse_packet,
    ssh_string,
)
from scanner.targets import build_scope
from tests import fakes
from tests.daemons import Daemon, daemon_fixture
from tests.helpers import NEVER_TOUCH_PORTS
from tests.ssh_fakes import (
    FAKE_PORT,
    HOLD,
    dsa_blob,
    ed25519_blob,
    rsa_blob,
    serve,
    server_kexinit,
    weak_server,
)

BLOCK = "127.111.0.0/16"
assert FAKE_PORT not in NEVER_TOUCH_PORTS
TEST_LIMITS = Limits(connect_timeout=1.0, read_timeout=1.0, probe_budget=10.0, rate=1000.0)
CHECKS: tuple[type[SshCryptoCheck], ...] = (SshWeakKex, SshWeakHostKey, SshWeakCipher,
                                            SshWeakMac, SshProtocol1, SshTerrapin)

openssh_weak = daemon_fixture("openssh-weak", scope="module")
openssh_hardened = daemon_fixture("openssh-hardened", scope="module")
dropbear = daemon_fixture("dropbear", scope="module")


def _target(address: str, port: int, model: str | None = None) -> Target:
    service = Service(port=port, transport="tcp", protocol="ssh")
    return Target(Device(address=address, services=[service], model=model), service)


def _context(target: Target, scope: str = BLOCK) -> ProbeContext:
    network = Network(build_scope([scope], excluded_ports=NEVER_TOUCH_PORTS), TEST_LIMITS)
    return ProbeContext(target, network, Transcript())


@dataclass
class Results:
    facts: Facts
    observations: dict[str, list[Observation]]
    evidence: str
    seconds: float


async def run_checks(target: Target, scope: str = BLOCK,
                     probes: tuple[type[Probe], ...] = CHECKS) -> Results:
    """Every check through one context (so one shared collection), then the pure evaluate."""
    ctx = _context(target, scope)
    started = time.monotonic()
    observations: dict[str, list[Observation]] = {}
    facts: Facts = {}
    try:
        async with asyncio.timeout(TEST_LIMITS.probe_budget):
            for cls in probes:
                probe = cls()
                collected = await probe.collect(ctx)
                observations[cls.metadata.check_id] = probe.evaluate(target, collected)
                if issubclass(cls, SshCryptoCheck):
                    facts = collected
    finally:
        ctx.network.close()
    evidence = "\n".join(exchange.data for exchange in ctx.transcript.exchanges)
    return Results(facts, observations, evidence, time.monotonic() - started)


# ----------------------------------------------------------------------------- parser


def test_frame_round_trips_and_pads_to_the_block_size() -> None:
    for size in (1, 7, 100, 1000):
        packet = frame(b"\x05" * size)
        assert len(packet) % 8 == 0
        assert parse_packet(packet + b"rest") == (b"\x05" * size, len(packet))
        assert parse_packet(packet[:-1]) is None  # incomplete: wait for more


@pytest.mark.parametrize("header, problem", [
    (struct.pack(">IB", 0x7FFFFFF0, 4), "packet length"),  # giant length
    (struct.pack(">IB", MAX_PACKET + 4, 4), "packet length"),
    (struct.pack(">IB", 12, 2), "padding length"),  # padding below 4
    (struct.pack(">IB", 12, 200), "padding length"),  # padding longer than the packet
    (struct.pack(">IB", 13, 4), "multiple of 8"),
    (struct.pack(">IB", 1, 4), "packet length"),
])
def test_hostile_packet_headers_are_protocol_errors(header: bytes, problem: str) -> None:
    with pytest.raises(SshProtocolError, match=problem):
        parse_packet(header + b"\x00" * 64)


def test_kexinit_name_lists_parse_and_truncation_is_an_error() -> None:
    payload = server_kexinit("curve25519-sha256,diffie-hellman-group1-sha1", "ssh-ed25519",
                             "aes128-ctr,3des-cbc", "hmac-sha2-256")
    parsed = parse_kexinit(payload)
    assert parsed.kex == ("curve25519-sha256", "diffie-hellman-group1-sha1")
    assert parsed.ciphers_s2c == ("aes128-ctr", "3des-cbc")
    assert parsed.compression_c2s == ("none",)
    for cut in (1, 10, 17, 30, len(payload) - 1):
        with pytest.raises(SshProtocolError):
            parse_kexinit(payload[:cut])
    with pytest.raises(SshProtocolError, match="KEXINIT"):
        parse_kexinit(b"\x15" + payload[1:])
    huge = bytes([20]) + b"\0" * 16 + struct.pack(">I", 0xFFFFFFFF) + b"x" * 10
    with pytest.raises(SshProtocolError, match="truncated"):
        parse_kexinit(huge)
    binary = bytes([20]) + b"\0" * 16 + ssh_string(b"aes\xff\x00") + b"\0" * 40
    with pytest.raises(SshProtocolError, match="ASCII"):
        parse_kexinit(binary)


def test_name_lists_are_capped() -> None:
    many = ",".join(f"alg{n}" for n in range(1000))
    payload = bytes([20]) + b"\0" * 16 + ssh_string(many.encode()) + \
        b"".join(name_list(()) for _ in range(9)) + b"\0\0\0\0\0"
    assert len(parse_kexinit(payload).kex) == sshwire.MAX_NAMES


def test_host_key_sizes_and_fingerprints_match_ssh_keygen(tmp_path: Path) -> None:
    assert parse_host_key(rsa_blob(1024)).bits == 1024
    assert parse_host_key(dsa_blob()).bits == 1024
    assert parse_host_key(ed25519_blob()).bits == 256
    with pytest.raises(SshProtocolError):
        parse_host_key(ssh_string(b"ssh-rsa") + b"\x00\x00")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed (Debian package openssh-client)")
    key_file = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(key_file)],
                   check=True, timeout=20)
    text = key_file.with_suffix(".pub").read_text().split()
    parsed = parse_host_key(base64.b64decode(text[1]))
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key_file.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True, timeout=20).stdout
    assert parsed.fingerprint == listed.split()[1]
    assert (parsed.key_type, parsed.bits) == ("ecdsa-sha2-nistp256", 256)


def test_every_rating_names_a_known_status_and_reference() -> None:
    table = ratings()
    for category, entries in table.categories.items():
        assert entries, category
        for name, rating in entries.items():
            assert rating.status in ("fail", "warn", "ok", "info"), name
            assert rating.reason and rating.reference, name
    assert table.rate("kex", "gss-group1-sha1-toWM5Slw5Ew8Mqkay+al2g==").status == "fail"
    assert table.rate("cipher", "brand-new-cipher@example.com").status == "unknown"
    assert table.rate("cipher", "none").severity == Severity.HIGH


# ----------------------------------------------------------------------------- evaluate

WEAK_FACTS: Facts = {
    "banner": "SSH-2.0-Fake_1.0", "protocol": "2.0", "ssh1": False, "ssh2": True,
    "kex": ["diffie-hellman-group1-sha1", "ecdh-sha2-nistp256", "curve25519-sha256"],
    "host_key_algorithms": ["ssh-rsa", "rsa-sha2-256"],
    "ciphers_c2s": ["chacha20-poly1305@openssh.com", "3des-cbc"], "ciphers_s2c": ["none"],
    "macs_c2s": ["hmac-md5", "hmac-sha1"], "macs_s2c": ["hmac-sha2-256-etm@openssh.com"],
    "host_keys": [{"algorithm": "ssh-rsa", "type": "ssh-rsa", "bits": 1024,
                   "fingerprint": "SHA256:weak"}],
}
STRONG_FACTS: Facts = {
    "banner": "SSH-2.0-OpenSSH_9.9", "protocol": "2.0", "ssh1": False, "ssh2": True,
    "kex": ["mlkem768x25519-sha256", "curve25519-sha256", "kex-strict-s-v00@openssh.com"],
    "host_key_algorithms": ["ssh-ed25519", "rsa-sha2-512"],
    "ciphers_c2s": ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"],
    "ciphers_s2c": ["aes128-ctr"],
    "macs_c2s": ["hmac-sha2-512-etm@openssh.com"], "macs_s2c": ["umac-128-etm@openssh.com"],
    "host_keys": [{"algorithm": "ssh-ed25519", "type": "ssh-ed25519", "bits": 256,
                   "fingerprint": "SHA256:a"},
                  {"algorithm": "rsa-sha2-512", "type": "ssh-rsa", "bits": 3072,
                   "fingerprint": "SHA256:b"}],
    "allowed_methods": ["publickey"],
}


def test_evaluate_flags_each_weak_family_with_reasons() -> None:
    target = _target("127.111.0.1", 22)
    kex = SshWeakKex().evaluate(target, WEAK_FACTS)
    assert [o.key for o in kex] == ["weak", "deprecated"]
    assert "Logjam" in kex[0].facts["diffie-hellman-group1-sha1"]
    assert kex[1].severity == Severity.LOW and "ecdh-sha2-nistp256" in kex[1].facts
    cipher = SshWeakCipher().evaluate(target, WEAK_FACTS)
    assert cipher[0].severity == Severity.HIGH  # "none" outranks the check's MEDIUM
    assert {"3des-cbc", "none"} <= set(cipher[0].facts)
    mac = SshWeakMac().evaluate(target, WEAK_FACTS)
    assert "hmac-md5" in mac[0].facts and "hmac-sha1" in mac[1].facts
    host = SshWeakHostKey().evaluate(target, WEAK_FACTS)
    assert "ssh-rsa" in host[0].facts
    assert any("1024-bit key" in name for name in host[0].facts)
    terrapin = SshTerrapin().evaluate(target, WEAK_FACTS)
    assert terrapin and "chacha20-poly1305@openssh.com" in terrapin[0].facts["algorithms"]


def test_evaluate_passes_a_hardened_server() -> None:
    target = _target("127.111.0.1", 22)
    probes: tuple[Probe, ...] = (*(cls() for cls in CHECKS), SshPasswordAuth())
    for probe in probes:
        assert probe.evaluate(target, STRONG_FACTS) == [], probe.metadata.check_id
        assert probe.summarize(STRONG_FACTS)["server"] == "SSH-2.0-OpenSSH_9.9"


def test_terrapin_needs_cbc_with_etm_or_chacha_and_no_strict_kex() -> None:
    target = _target("127.111.0.1", 22)
    base = {"kex": ["curve25519-sha256"], "ciphers_c2s": ["aes128-cbc"],
            "macs_c2s": ["hmac-sha2-256"]}
    assert SshTerrapin().evaluate(target, base) == []
    cbc_etm = {**base, "macs_c2s": ["hmac-sha2-256-etm@openssh.com"]}
    assert SshTerrapin().evaluate(target, cbc_etm)
    strict = {**cbc_etm, "kex": ["curve25519-sha256", "kex-strict-s-v00@openssh.com"]}
    assert SshTerrapin().evaluate(target, strict) == []


def test_protocol_1_and_password_logins() -> None:
    target = _target("127.111.0.1", 22)
    only1 = {"banner": "SSH-1.5-Cisco", "protocol": "1.5", "ssh1": True, "ssh2": False}
    assert SshProtocol1().evaluate(target, only1)[0].summary.endswith("nothing else.")
    both = {"banner": "SSH-1.99-x", "protocol": "1.99", "ssh1": True, "ssh2": True}
    assert "nothing else" not in SshProtocol1().evaluate(target, both)[0].summary
    assert SshWeakKex().evaluate(target, only1) == []
    assert SshWeakKex().summarize(only1)["key exchange methods"] == "none (SSH-1 only)"
    password = SshPasswordAuth().evaluate(target, {"allowed_methods": ["password"]})
    assert password[0].severity == Severity.MEDIUM  # no keys at all
    both_methods = {"allowed_methods": ["publickey", "keyboard-interactive"]}
    assert SshPasswordAuth().evaluate(target, both_methods)[0].severity == Severity.LOW
    assert SshPasswordAuth().evaluate(target, {"allowed_methods": None}) == []


def test_shared_host_key_across_devices_not_across_ports() -> None:
    key = {"algorithm": "ssh-ed25519", "type": "ssh-ed25519", "bits": 256,
           "fingerprint": "SHA256:same"}
    own = {"algorithm": "ssh-ed25519", "type": "ssh-ed25519", "bits": 256,
           "fingerprint": "SHA256:own"}
    samples = [
        (_target("127.111.1.1", 22, model="Cam X"), {"host_keys": [key]}),
        (_target("127.111.1.2", 22, model="Cam X"), {"host_keys": [key]}),
        (_target("127.111.1.3", 22), {"host_keys": [own]}),
        (_target("127.111.1.3", 2222), {"host_keys": [own]}),  # same device, two ports
    ]
    found = SshSharedHostKey().evaluate_fleet(samples)
    assert sorted(target.address for target, _ in found) == ["127.111.1.1", "127.111.1.2"]
    observation = found[0][1]
    assert observation.key == "SHA256:same" and "Cam X" in observation.facts["shared with"]
    assert SshSharedHostKey().evaluate_fleet(samples[2:]) == []


# ------------------------------------------------------------ fakes (from tests/ssh_fakes.py)


@pytest.mark.parametrize("kex", ["diffie-hellman-group1-sha1",
                                 "diffie-hellman-group-exchange-sha1",
                                 "ecdh-sha2-nistp256", "curve25519-sha256"])
async def test_fake_weak_server_every_key_exchange_path(kex: str) -> None:
    keys = {"ssh-rsa": rsa_blob(1024), "ssh-dss": dsa_blob()}
    handler = weak_server(kex, keys, "chacha20-poly1305@openssh.com,3des-cbc,arcfour",
                          "hmac-md5,hmac-sha1-96")
    async with serve("127.111.0.10", handler) as count:
        results = await run_checks(_target("127.111.0.10", FAKE_PORT))
    facts = results.facts
    assert facts["kex_used"] == kex
    assert {(k["type"], k["bits"]) for k in facts["host_keys"]} == {("ssh-rsa", 1024),
                                                                    ("ssh-dss", 1024)}
    assert count[0] == 2  # one connection per host key, shared by all six checks
    flagged = results.observations
    assert {"3des-cbc", "arcfour"} <= set(flagged["ssh-weak-cipher"][0].facts)
    assert {"hmac-md5", "hmac-sha1-96"} <= set(flagged["ssh-weak-mac"][0].facts)
    assert {"ssh-rsa", "ssh-dss"} <= set(flagged["ssh-weak-host-key"][0].facts)
    assert flagged["ssh-terrapin"] and flagged["ssh-protocol-1"] == []
    if kex.startswith("diffie-hellman"):
        assert kex in flagged["ssh-weak-kex"][0].facts
    assert "SSH-2.0-FakeIoT_1.0" in results.evidence
    assert facts["host_keys"][0]["fingerprint"] in results.evidence  # the note


async def test_ssh1_only_server_is_left_after_the_banner() -> None:
    async with serve("127.111.0.11", lambda r, w: _send(w, b"SSH-1.5-OldCam\r\n")) as count:
        results = await run_checks(_target("127.111.0.11", FAKE_PORT))
    assert results.facts["ssh1"] and not results.facts["ssh2"]
    assert results.observations["ssh-protocol-1"][0].severity is None  # the check's HIGH
    assert count[0] == 1


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(HOLD)


@pytest.mark.parametrize("data, error", [
    (b"hello\r\n" * 100, "identification"),  # banner flood
    (b"A" * 5000, "bytes without"),  # one endless line
    (b"SSH-2.0-x\r\n" + struct.pack(">IB", 0x7FFFFFF0, 4), "packet length"),
    (b"SSH-2.0-x\r\n" + struct.pack(">IB", 12, 1) + b"\0" * 11, "padding"),
    (b"SSH-2.0-x\r\n" + frame(b"\x63garbage"), "unexpected message"),
    (b"SSH-2.0-x\r\n" + frame(b"\x01\0\0\0\x02" + ssh_string(b"go away")), "go away"),
])
async def test_hostile_servers_give_clean_errors(data: bytes, error: str) -> None:
    async with serve("127.111.0.12", lambda r, w: _send(w, data)):
        started = time.monotonic()
        with pytest.raises((SshProtocolError, ConnectionError, TimeoutError), match=error):
            await run_checks(_target("127.111.0.12", FAKE_PORT), probes=(SshWeakKex,))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("fake, error", [(fakes.drip, TimeoutError),
                                         (fakes.silent, TimeoutError),
                                         (fakes.garbage, SshProtocolError),
                                         (fakes.endless, SshProtocolError),
                                         (fakes.reset, ConnectionError)])
async def test_misbehaving_peers_end_within_the_read_budget(
        fake: Callable[[str, int], Awaitable[fakes.FakeServer]], error: type[Exception]) -> None:
    server = await fake("127.111.0.13", FAKE_PORT)
    try:
        started = time.monotonic()
        with pytest.raises(error):
            await run_checks(_target("127.111.0.13", FAKE_PORT), probes=(SshWeakKex,))
        # connect + 3 reads of 1 s each, never the probe budget
        assert time.monotonic() - started < TEST_LIMITS.connect_timeout + 3.5
    finally:
        await server.close()


async def test_closing_after_kexinit_records_the_host_key_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-x\r\n" + frame(server_kexinit(
            "curve25519-sha256", "ssh-ed25519", "aes128-ctr", "hmac-sha2-256")))
        await writer.drain()
        await reader.readuntil(b"\n")

    async with serve("127.111.0.14", handler):
        results = await run_checks(_target("127.111.0.14", FAKE_PORT))
    assert results.facts["host_keys"] == []
    assert "closed" in results.facts["host_key_errors"][0]
    assert results.observations["ssh-weak-kex"] == []


async def test_out_of_scope_is_never_contacted() -> None:
    async with serve("127.111.0.15", weak_server("curve25519-sha256",
                                                 {"ssh-ed25519": ed25519_blob()},
                                                 "aes128-ctr", "hmac-sha2-256")) as count:
        with pytest.raises(ConnectionError, match="outside"):
            await run_checks(_target("127.111.0.15", FAKE_PORT), scope="127.111.9.0/24",
                             probes=(SshWeakKex,))
    assert count[0] == 0


# ----------------------------------------------------------------------------- real daemons

AUDIT_LINE = re.compile(r"^\((kex|key|enc|mac)\) (\S+)(?: \(\d+-bit\))? -- \[fail\]", re.M)
AUDIT_FINGERPRINT = re.compile(r"^\(fin\) (\S+): (SHA256:\S+)", re.M)
CATEGORY = {"kex": SshWeakKex, "key": SshWeakHostKey, "enc": SshWeakCipher, "mac": SshWeakMac}


def ssh_audit(daemon: Daemon) -> tuple[int, str]:
    """ssh-audit 2.5.0's batch output (its JSON carries no ratings) and exit code."""
    if shutil.which("ssh-audit") is None:
        pytest.skip("ssh-audit not installed (Debian package ssh-audit)")
    done = subprocess.run(["ssh-audit", "-b", "-n", "-t", "5", "-p", str(daemon.port),
                           daemon.address], capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode, done.stdout


def flagged_names(results: Results) -> dict[str, set[str]]:
    """Per ssh-audit category, the algorithm names we report (fail or deprecated); a host key
    algorithm also counts when the key it names was reported too small."""
    flagged = {}
    for category, cls in CATEGORY.items():
        names = set()
        for observation in results.observations[cls.metadata.check_id]:
            names |= set(observation.facts)
        flagged[category] = names
    small = {key["algorithm"] for key in results.facts["host_keys"]
             if any(key["fingerprint"] in name for name in flagged["key"])}
    families = {sshwire.HOST_KEY_FAMILIES[name] for name in small}
    flagged["key"] |= {name for name in results.facts["host_key_algorithms"]
                       if sshwire.HOST_KEY_FAMILIES.get(name) in families}
    return flagged


async def test_openssh_weak_is_flagged_everywhere_and_agrees_with_ssh_audit(
        openssh_weak: Daemon) -> None:
    target = _target(openssh_weak.address, openssh_weak.port)
    results = await run_checks(target, scope=f"{openssh_weak.address}/32",
                               probes=(*CHECKS, SshPasswordAuth))
    got = results.observations
    assert "diffie-hellman-group1-sha1" in got["ssh-weak-kex"][0].facts
    assert {"aes128-cbc", "3des-cbc"} <= set(got["ssh-weak-cipher"][0].facts)
    assert {"hmac-md5", "hmac-sha1-96"} <= set(got["ssh-weak-mac"][0].facts)
    assert {(k["type"], k["bits"]) for k in results.facts["host_keys"]} == {
        ("ssh-rsa", 1024), ("ssh-dss", 1024)}
    assert got["ssh-password-auth"] and got["ssh-terrapin"] == []  # Debian backports strict kex
    code, audit = ssh_audit(openssh_weak)
    assert code == 3, audit  # ssh-audit: failures
    flagged = flagged_names(results)
    for category, name in AUDIT_LINE.findall(audit):
        assert name in flagged[category], f"ssh-audit fails {category} {name}; we did not"
    fingerprints = {k["fingerprint"] for k in results.facts["host_keys"]}
    assert set(dict(AUDIT_FINGERPRINT.findall(audit)).values()) <= fingerprints


async def test_openssh_hardened_passes_here_and_in_ssh_audit(openssh_hardened: Daemon) -> None:
    target = _target(openssh_hardened.address, openssh_hardened.port)
    results = await run_checks(target, scope=f"{openssh_hardened.address}/32",
                               probes=(*CHECKS, SshPasswordAuth))
    assert all(found == [] for found in results.observations.values()), results.observations
    assert [(k["type"], k["bits"]) for k in results.facts["host_keys"]] == [("ssh-ed25519", 256)]
    assert not [item for item in grade("kex", results.facts["kex"])
                if item.rating.status == "unknown"]
    code, audit = ssh_audit(openssh_hardened)
    assert code != 3 and not AUDIT_LINE.findall(audit), audit
    assert dict(AUDIT_FINGERPRINT.findall(audit))["ssh-ed25519"] == \
        results.facts["host_keys"][0]["fingerprint"]


async def test_dropbear_is_read_and_matches_ssh_audit(dropbear: Daemon) -> None:
    target = _target(dropbear.address, dropbear.port)
    results = await run_checks(target, scope=f"{dropbear.address}/32",
                               probes=(*CHECKS, SshPasswordAuth))
    assert results.facts["banner"].startswith("SSH-2.0-dropbear")
    assert "ssh-rsa" in results.observations["ssh-weak-host-key"][0].facts
    assert results.observations["ssh-password-auth"]  # admin/admin logins
    _, audit = ssh_audit(dropbear)
    flagged = flagged_names(results)
    for category, name in AUDIT_LINE.findall(audit):
        assert name in flagged[category], f"ssh-audit fails {category} {name}; we did not"
    ours = {k["fingerprint"] for k in results.facts["host_keys"]}
    assert set(dict(AUDIT_FINGERPRINT.findall(audit)).values()) <= ours
