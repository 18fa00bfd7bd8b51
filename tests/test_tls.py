"""The TLS first-flight builder/parser and the TLS checks, against Python's own ssl servers and
hostile fakes on 127.110.0.0/16.

Safety: every server binds a 127.110.x address on a kernel-chosen port (never 2024), every
server and every wait is bounded in time, and the scope of each scan is the one address."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from probes.api import (
    Facts,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeSettings,
    SharedCollections,
    Target,
)
from probes.tls import (
    HttpsHstsMissing,
    TlsCertificateExpired,
    TlsCertificateNameMismatch,
    TlsCertificateUntrusted,
    TlsCertificateWeakKey,
    TlsCheck,
    TlsLegacyProtocols,
    TlsSharedCertificate,
    TlsWeakCipherSuites,
    starttls_for,
    tls_data,
)
from scanner.models import Device, Service, Severity
from scanner.net import Limits, Network, Transcript
from scanner.protocols import tls
from tests import fakes
from tests.helpers import safe_scope
from tests.tls_certs import CertFiles, ca_signed, weak_self_signed

pytestmark = pytest.mark.timeout(60)

TEST_LIMITS = Limits(connect_timeout=1.0, read_timeout=1.0, probe_budget=20.0, rate=1000.0,
                     per_host=4)
HOLD = 10.0  # longest a hostile fake here serves one connection
TLS_CHECKS: list[TlsCheck] = [TlsLegacyProtocols(), TlsWeakCipherSuites(),
                              TlsCertificateExpired(), TlsCertificateUntrusted(),
                              TlsCertificateNameMismatch(), TlsCertificateWeakKey()]


def target(address: str, port: int, *, protocol: str = "tls", hostnames: tuple[str, ...] = (),
           model: str | None = None, tls: bool = True) -> Target:
    service = Service(port=port, transport="tcp", protocol=protocol, tls=tls)
    return Target(Device(address=address, services=[service], hostnames=list(hostnames),
                         model=model), service)


@contextlib.asynccontextmanager
async def tls_server(address: str, context: ssl.SSLContext,
                     reply: bytes = b"") -> AsyncIterator[asyncio.Server]:
    """A Python ssl server: completes the handshake, sends ``reply``, closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(HOLD):
                if reply:
                    await reader.read(4096)
                    writer.write(reply)
                    await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(serve, address, 0, ssl=context,
                                        ssl_handshake_timeout=HOLD)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def server_context(files: CertFiles, *, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion,
                   ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = minimum, maximum
    if ciphers:
        context.set_ciphers(ciphers)
    context.load_cert_chain(files.cert, files.key)
    return context


def weak_context(files: CertFiles) -> ssl.SSLContext:
    """TLS 1.0-1.2, every suite this OpenSSL has (NULL, anonymous, static RSA included)."""
    with warnings.catch_warnings():  # the deprecation is the point of this server
        warnings.simplefilter("ignore", DeprecationWarning)
        return server_context(files, minimum=ssl.TLSVersion.TLSv1,
                              maximum=ssl.TLSVersion.TLSv1_2,
                              ciphers="ALL:COMPLEMENTOFALL:@SECLEVEL=0")


def strong_context(files: CertFiles) -> ssl.SSLContext:
    return server_context(files, minimum=ssl.TLSVersion.TLSv1_2,
                          maximum=ssl.TLSVersion.TLSv1_3, ciphers="ECDHE+AESGCM:ECDHE+CHACHA20")


async def first_flight(address: str, port: int, version: int,
                       suites: list[int] | None = None, timeout: float = 2.0,
                       ) -> tls.ServerFlight:
    network = Network(safe_scope(address), TEST_LIMITS)
    offered = suites or ([*sorted(tls.TLS13_SUITES)] if version == tls.TLS1_3 else
                         [c for c in tls_data().suites if c not in tls.TLS13_SUITES])
    async with await network.open_tcp(address, port) as conn:
        return await tls.exchange_hello(conn, tls.client_hello(version, offered), timeout)


async def scan(checks: list[Probe], tgt: Target, settings: ProbeSettings | None = None,
               ) -> tuple[dict[str, list[Observation]], Facts, Transcript]:
    """Every check through one SharedCollections, as the engine runs them on one service."""
    network = Network(safe_scope(tgt.address), TEST_LIMITS)
    shared = SharedCollections()
    results: dict[str, list[Observation]] = {}
    transcript = Transcript()
    facts: Facts = {}
    try:
        for check in checks:
            transcript = Transcript()
            ctx = ProbeContext(tgt, network, transcript, settings, shared=shared)
            facts = await check.collect(ctx)
            results[check.metadata.check_id] = check.evaluate(tgt, facts)
    finally:
        shared.close()
        network.close()
    return results, facts, transcript


@pytest.fixture(scope="module")
def weak_files(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return weak_self_signed(tmp_path_factory.mktemp("weak"), "127.110.0.2")


@pytest.fixture(scope="module")
def strong_files(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return ca_signed(tmp_path_factory.mktemp("strong"), ["127.110.0.3"])


# ================================================================ builder and parser


async def test_tls12_first_flight_round_trip(strong_files: CertFiles) -> None:
    context = server_context(strong_files, minimum=ssl.TLSVersion.TLSv1_2,
                             maximum=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    async with tls_server("127.110.0.1", context) as server:
        flight = await first_flight("127.110.0.1", port_of(server), tls.TLS1_2)
    assert flight.version == tls.TLS1_2 and flight.hello_done and flight.alert is None
    assert tls_data().suite_name(flight.cipher_suite or 0) == \
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    leaf = x509.load_pem_x509_certificate(strong_files.cert.read_bytes())
    assert flight.certificates[0] == leaf.public_bytes(Encoding.DER)


async def test_tls13_hello_and_version_refusal(strong_files: CertFiles) -> None:
    context = server_context(strong_files, minimum=ssl.TLSVersion.TLSv1_3,
                             maximum=ssl.TLSVersion.TLSv1_3)
    async with tls_server("127.110.0.1", context) as server:
        modern = await first_flight("127.110.0.1", port_of(server), tls.TLS1_3)
        legacy = await first_flight("127.110.0.1", port_of(server), tls.TLS1_2)
    assert modern.version == tls.TLS1_3 and modern.cipher_suite in tls.TLS13_SUITES
    assert modern.complete and modern.certificates == []  # encrypted in 1.3
    assert legacy.version is None  # asyncio's ssl server closes rather than sending an alert


async def test_sslv3_hello_is_refused_not_misread(strong_files: CertFiles) -> None:
    async with tls_server("127.110.0.1", strong_context(strong_files)) as server:
        flight = await first_flight("127.110.0.1", port_of(server), tls.SSL3)
    assert flight.version is None and (flight.alert is not None or flight.received == 0)


def test_client_hello_layout() -> None:
    hello = tls.client_hello(tls.TLS1_3, [0x1301], hostname="cam.example")
    content_type, record_version, length = struct.unpack("!BHH", hello[:5])
    assert (content_type, record_version, length) == (22, tls.TLS1_0, len(hello) - 5)
    assert hello[5] == 1 and hello[9:11] == b"\x03\x03"  # ClientHello, legacy version 1.2
    assert b"cam.example" in hello and b"\x00\x2b\x00\x03\x02\x03\x04" in hello
    ssl3 = tls.client_hello(tls.SSL3, [0x000A], hostname="cam.example")
    assert ssl3[1:3] == b"\x03\x00" and b"cam.example" not in ssl3  # no extensions
    assert b"127.0.0.1" not in tls.client_hello(tls.TLS1_2, [0x000A], hostname="127.0.0.1")
    with pytest.raises(ValueError):
        tls.client_hello(0x0200, [0x000A])


def _record(content_type: int, body: bytes, version: int = tls.TLS1_2) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def _server_hello(version: int = tls.TLS1_2, suite: int = 0xC02F) -> bytes:
    body = struct.pack("!H", version) + b"\x11" * 32 + b"\x00" + struct.pack("!H", suite) + b"\x00"
    return _record(22, b"\x02" + len(body).to_bytes(3, "big") + body)


def test_parser_reassembles_handshake_split_across_records() -> None:
    certificate = b"\x30\x03\x02\x01\x01"
    certs = len(certificate).to_bytes(3, "big") + certificate
    message = b"\x0b" + (len(certs) + 3).to_bytes(3, "big") + (len(certs)).to_bytes(3, "big") \
        + certs + b"\x0e\x00\x00\x00"
    data = _server_hello() + _record(22, message[:4]) + _record(22, message[4:])
    flight = tls.parse_flight(data)
    assert flight.hello_done and flight.certificates == [certificate]
    assert not tls.parse_flight(data[:-3]).hello_done  # a partial record waits for more


@pytest.mark.parametrize("data", [
    b"SSH-2.0-OpenSSH_9.2\r\n",  # another protocol
    b"\x16\x03\x03\xff\xff" + b"\x00" * 16,  # record longer than any version allows
    _record(22, b"\x02\xff\xff\xff"),  # handshake message claiming 16 MiB
    _record(22, b"\x0b\x00\x00\x00"),  # Certificate before ServerHello
    _record(22, b"\x02\x00\x00\x04\x03\x03\x00\x00"),  # ServerHello cut short
    _record(21, b"\x02"),  # one-byte alert
])
def test_parser_rejects_what_is_not_tls(data: bytes) -> None:
    with pytest.raises(ValueError):
        tls.parse_flight(data)


async def _hostile(address: str, behaviour: Callable[[asyncio.StreamReader,
                                                      asyncio.StreamWriter], Awaitable[None]],
                   ) -> fakes.FakeServer:
    return await fakes._serve(address, 0, behaviour)


async def _drip_record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x16\x03\x03\x01\x00")  # a record header announcing 256 bytes
    for _ in range(40):
        await writer.drain()
        await asyncio.sleep(0.25)
        writer.write(b"\x02")


async def _endless_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_server_hello())
    filler = _record(22, b"\x63\x00\x03\xfc" + b"\x00" * 1020)  # unknown message type 99
    for _ in range(4096):
        writer.write(filler)
        await writer.drain()


async def _alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(_record(21, b"\x02\x28"))
    await writer.drain()


async def _truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(_server_hello()[:20])
    await writer.drain()


@pytest.mark.parametrize(("name", "start", "outcome"), [
    ("garbage", fakes.garbage, ValueError),
    ("silent", fakes.silent, TimeoutError),
    ("reset", fakes.reset, "empty"),
    ("drip", lambda a, p: _hostile(a, _drip_record), "empty"),
    ("endless", lambda a, p: _hostile(a, _endless_handshake), "capped"),
    ("alert", lambda a, p: _hostile(a, _alert), "alert"),
    ("truncated", lambda a, p: _hostile(a, _truncated), "empty"),
])
async def test_hostile_replies_end_quickly(name: str, start: Any, outcome: Any) -> None:
    fake = await start("127.110.0.9", 0)
    started = time.monotonic()
    try:
        if isinstance(outcome, type):
            with pytest.raises((outcome, ConnectionError)):
                await first_flight("127.110.0.9", fake.port, tls.TLS1_2, timeout=1.5)
            return
        try:
            flight = await first_flight("127.110.0.9", fake.port, tls.TLS1_2, timeout=1.5)
        except ConnectionResetError:
            assert name == "reset"
            return
        assert flight.version is None or outcome == "capped"
        if outcome == "alert":
            assert flight.alert_name == "handshake_failure"
        if outcome == "capped":
            assert flight.received <= tls.MAX_FLIGHT_BYTES and not flight.hello_done
    finally:
        assert time.monotonic() - started < 4.0, name
        await fake.close()


# ================================================================ the checks, end to end


async def test_weak_server_fails_every_check(weak_files: CertFiles) -> None:
    async with tls_server("127.110.0.2", weak_context(weak_files)) as server:
        results, facts, transcript = await scan(
            list(TLS_CHECKS), target("127.110.0.2", port_of(server), hostnames=("cam.local",)))
    assert facts["accepted_versions"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    legacy = {o.key: o for o in results["tls-legacy-protocols"]}
    assert set(legacy) == {"TLSv1.0", "TLSv1.1"}
    assert legacy["TLSv1.0"].severity is Severity.MEDIUM
    weak = {o.key for o in results["tls-weak-cipher-suites"]}
    assert {"NULL", "no-forward-secrecy", "anonymous"} <= weak
    assert "TLS_RSA_WITH_NULL_SHA" in facts["versions"]["TLSv1.0"]["suites"]
    assert [o.key for o in results["tls-certificate-expired"]] == ["expired"]
    [untrusted] = results["tls-certificate-untrusted"]
    assert "self-signed" in untrusted.summary and untrusted.facts["self_signed"] == "true"
    [mismatch] = results["tls-certificate-name-mismatch"]
    assert "CN=127.110.0.2" in mismatch.summary  # CN is ignored... and the address is no DNS
    assert {o.key for o in results["tls-certificate-weak-key"]} == {"key", "signature"}
    # Evidence: the shared scan's version probes and notes reach the last check's transcript.
    evidence = "\n".join(e.data for e in transcript.exchanges)
    assert "TLSv1.0: accepted" in evidence and "verifying handshake failed" in evidence


async def test_strong_server_passes_every_check(strong_files: CertFiles) -> None:
    settings = ProbeSettings(trusted_ca_files=(str(strong_files.ca),))
    async with tls_server("127.110.0.3", strong_context(strong_files)) as server:
        results, facts, _ = await scan(list(TLS_CHECKS),
                                       target("127.110.0.3", port_of(server)), settings)
    assert facts["accepted_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert facts["trust"]["verdict"] == "trusted"
    assert results == {check.metadata.check_id: [] for check in TLS_CHECKS}
    assert set(facts["versions"]["TLSv1.3"]["suites"]) >= {"TLS_AES_128_GCM_SHA256",
                                                            "TLS_AES_256_GCM_SHA384"}


async def test_strong_server_without_its_ca_is_untrusted(strong_files: CertFiles) -> None:
    async with tls_server("127.110.0.3", strong_context(strong_files)) as server:
        results, _, _ = await scan([TlsCertificateUntrusted()],
                                   target("127.110.0.3", port_of(server)))
    [finding] = results["tls-certificate-untrusted"]
    assert "not issued by a trusted CA" in finding.summary
    assert "unable to get local issuer" in finding.facts["verify_message"]


async def test_tls13_only_server_certificate_comes_from_local_openssl(
        strong_files: CertFiles) -> None:
    context = server_context(strong_files, minimum=ssl.TLSVersion.TLSv1_3,
                             maximum=ssl.TLSVersion.TLSv1_3)
    async with tls_server("127.110.0.4", context) as server:
        results, facts, _ = await scan([TlsCertificateNameMismatch(), TlsLegacyProtocols()],
                                       target("127.110.0.4", port_of(server)))
    assert facts["accepted_versions"] == ["TLSv1.3"]
    assert facts["certificates"][0]["ip_addresses"] == ["127.110.0.3"]
    assert [o.key for o in results["tls-certificate-name-mismatch"]] == ["name-mismatch"]
    assert results["tls-legacy-protocols"] == []


async def test_checks_share_one_scan(weak_files: CertFiles) -> None:
    connections = 0

    def count(*_: Any) -> None:
        nonlocal connections
        connections += 1

    context = weak_context(weak_files)
    context.sni_callback = lambda *args: count()
    async with tls_server("127.110.0.5", context) as server:
        await scan([TlsLegacyProtocols()], target("127.110.0.5", port_of(server),
                                                  hostnames=("cam.local",)))
        single = connections
        connections = 0
        await scan(list(TLS_CHECKS), target("127.110.0.5", port_of(server),
                                            hostnames=("cam.local",)))
    assert single > 3 and connections == single  # six checks, one scan's worth of hellos


async def test_scan_stops_at_the_round_cap(weak_files: CertFiles,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import probes.tls as tls_probes
    monkeypatch.setattr(tls_probes, "MAX_ROUNDS", 3)
    async with tls_server("127.110.0.6", weak_context(weak_files)) as server:
        _, facts, transcript = await scan([TlsWeakCipherSuites()],
                                          target("127.110.0.6", port_of(server)))
    assert facts["rounds"] == 3
    assert "stopped early (round cap)" in "\n".join(e.data for e in transcript.exchanges)


async def test_non_tls_service_is_a_clean_error() -> None:
    fake = await fakes.garbage("127.110.0.7", 0)
    try:
        with pytest.raises(ValueError, match="not a TLS record"):
            await scan([TlsLegacyProtocols()], target("127.110.0.7", fake.port))
    finally:
        await fake.close()


# ================================================================ pure evaluation


@pytest.mark.parametrize(("name", "dns", "ips", "cns", "expected"), [
    ("cam.example.com", ["*.example.com"], [], [], True),
    ("a.b.example.com", ["*.example.com"], [], [], False),  # one label only
    ("example.com", ["*.example.com"], [], [], False),
    ("cam.com", ["*.com"], [], [], False),  # no wildcard over a bare suffix
    ("cam.example.com", ["c*.example.com"], [], [], False),  # partial wildcards refused
    ("cam.example.com", [], [], ["cam.example.com"], True),  # CN when there is no SAN
    ("cam.example.com", ["other.example.com"], [], ["cam.example.com"], False),  # SAN wins
    ("192.0.2.1", [], ["192.0.2.1"], [], True),
    ("192.0.2.1", ["192.0.2.1"], [], ["192.0.2.1"], False),  # an address only by IP SAN
    ("2001:db8::1", [], ["2001:db8:0::1"], [], True),
])
def test_name_matching(name: str, dns: list[str], ips: list[str], cns: list[str],
                       expected: bool) -> None:
    assert tls.names_match(name, dns, ips, cns) is expected


def _facts(**leaf: Any) -> Facts:
    base = {"subject": "CN=x", "issuer": "CN=x", "not_before": "2025-01-01T00:00:00+00:00",
            "not_after": "2027-01-01T00:00:00+00:00", "sha256": "00", "spki_sha256": "ab" * 32,
            "signature_hash": "sha256", "self_signed": False, "dns_names": [],
            "ip_addresses": ["192.0.2.1"], "common_names": [], "key_type": "RSA",
            "key_bits": 2048}
    return {"checked_at": "2026-06-01T00:00:00+00:00", "certificates": [{**base, **leaf}],
            "versions": {}, "accepted_versions": [], "trust": {"verdict": "trusted"}}


def test_only_legacy_versions_is_its_own_finding() -> None:
    facts = _facts()
    facts["versions"] = {"SSLv3": {"accepted": True, "suites": ["TLS_RSA_WITH_RC4_128_SHA"]}}
    facts["accepted_versions"] = ["SSLv3"]
    found = {o.key: o for o in TlsLegacyProtocols().evaluate(target("192.0.2.1", 443), facts)}
    assert set(found) == {"SSLv3", "no-modern-version"}
    assert found["SSLv3"].severity is found["no-modern-version"].severity is Severity.HIGH
    rc4 = TlsWeakCipherSuites().evaluate(target("192.0.2.1", 443), facts)
    assert {o.key for o in rc4} == {"RC4", "no-forward-secrecy"}


@pytest.mark.parametrize(("leaf", "keys"), [
    ({}, set()),
    ({"key_bits": 1024}, {"key"}),
    ({"key_type": "EC", "key_bits": 256, "curve": "secp256r1"}, set()),
    ({"key_type": "EC", "key_bits": 256, "curve": "brainpoolP256r1"}, {"key"}),
    ({"key_type": "EC", "key_bits": 192, "curve": "secp192r1"}, {"key"}),
    ({"key_type": "Ed25519", "key_bits": 256}, set()),
    ({"signature_hash": "md5"}, {"signature"}),
])
def test_weak_key_rules(leaf: dict[str, Any], keys: set[str]) -> None:
    found = TlsCertificateWeakKey().evaluate(target("192.0.2.1", 443), _facts(**leaf))
    assert {o.key for o in found} == keys


def test_validity_window() -> None:
    check, tgt = TlsCertificateExpired(), target("192.0.2.1", 443)
    assert check.evaluate(tgt, _facts()) == []
    assert [o.key for o in check.evaluate(tgt, _facts(not_after="2026-05-01T00:00:00+00:00"))] \
        == ["expired"]
    assert [o.key for o in check.evaluate(tgt, _facts(not_before="2026-07-01T00:00:00+00:00"))] \
        == ["not-yet-valid"]


def test_shared_key_across_devices_is_a_fleet_finding() -> None:
    shared, own = _facts(), _facts(spki_sha256="cd" * 32)
    samples = [(target("192.0.2.1", 443, model="Cam-1"), shared),
               (target("192.0.2.1", 8443, model="Cam-1"), shared),  # same device twice: not
               (target("192.0.2.2", 443, model="Cam-1"), shared),
               (target("192.0.2.3", 443), own)]
    found = TlsSharedCertificate().evaluate_fleet(samples)
    assert sorted((t.address, t.port) for t, _ in found) == [
        ("192.0.2.1", 443), ("192.0.2.1", 8443), ("192.0.2.2", 443)]
    assert all(o.key == "ab" * 32 and "model Cam-1" in o.summary for _, o in found)
    assert TlsSharedCertificate().evaluate_fleet(samples[:2] + samples[3:]) == []
    assert TlsSharedCertificate.reads == TlsCertificateUntrusted.metadata.check_id


def test_tls_data_is_complete() -> None:
    data = tls_data()
    assert len(data.suites) >= 340
    for name in ("TLS_RSA_EXPORT_WITH_RC4_40_MD5", "TLS_RSA_WITH_IDEA_CBC_SHA",
                 "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5", "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA",
                 "TLS_RSA_WITH_DES_CBC_SHA", "TLS_AES_128_GCM_SHA256"):
        assert name in data.suites.values(), name
    assert [r.category for r in data.categories("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")] == []
    assert [r.category for r in data.categories("TLS_AES_256_GCM_SHA384")] == []
    assert {r.category for r in data.categories("TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA")} == \
        {"EXPORT", "anonymous", "DES-3DES"}


def test_applies_only_to_tls_services() -> None:
    plain = Service(port=80, transport="tcp", protocol="http")
    assert not TlsLegacyProtocols().applies_to(Target(Device(address="192.0.2.1"), plain))
    assert TlsLegacyProtocols().applies_to(target("192.0.2.1", 8883, protocol="mqtt"))
    assert not HttpsHstsMissing().applies_to(target("192.0.2.1", 8883, protocol="mqtt"))
    assert HttpsHstsMissing().applies_to(target("192.0.2.1", 443, protocol="http"))


# ================================================================ HSTS


@pytest.mark.parametrize(("headers", "finding"), [
    ({"Strict-Transport-Security": "max-age=31536000; includeSubDomains"}, False),
    ({"Strict-Transport-Security": "max-age=0"}, True),
    ({}, True),
])
async def test_hsts(strong_files: CertFiles, headers: dict[str, str], finding: bool) -> None:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text="camera", headers=headers)

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.110.0.8", 0, ssl_context=strong_context(strong_files))
    await site.start()
    try:
        port = runner.addresses[0][1]
        tgt = target("127.110.0.8", port, protocol="http")
        network = Network(safe_scope("127.110.0.8"), TEST_LIMITS)
        probe = HttpsHstsMissing()
        facts = await probe.collect(ProbeContext(tgt, network, Transcript()))
        network.close()
    finally:
        await runner.cleanup()
    assert facts["status"] == 200
    assert bool(probe.evaluate(tgt, facts)) is finding


# ================================================================ explicit TLS (AUTH TLS, STARTTLS)

FTP_GREETING = b"220 IoT-DVR FTP server ready\r\n"
FTP_AUTH_TLS = {b"AUTH TLS": b"234 Proceed with negotiation.\r\n"}
SMTP_GREETING = b"220 cam.local ESMTP\r\n"
SMTP_STARTTLS = {b"EHLO": b"250-cam.local\r\n250-SIZE 1000\r\n250 STARTTLS\r\n",
                 b"STARTTLS": b"220 2.0.0 Ready to start TLS\r\n"}


def upgrading(greeting: bytes, answers: dict[bytes, bytes],
              then: ssl.SSLContext | bytes) -> fakes.Behaviour:
    """A cleartext service: greets, answers the commands it knows (502 to others) and, after
    the last one, speaks TLS through ``then`` — or, when ``then`` is bytes, sends those to the
    ClientHello instead."""
    upgrade_command = list(answers)[-1] if answers else None

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        for _ in range(len(answers) + 2):
            line = (await reader.readline()).upper()
            if not line:
                return
            command = next((c for c in answers if line.startswith(c)), None)
            writer.write(answers[command] if command else b"502 Command not implemented\r\n")
            await writer.drain()
            if command is not None and command == upgrade_command:
                break
        else:
            return
        if isinstance(then, bytes):
            await reader.read(4096)
            writer.write(then)
            await writer.drain()
        else:
            await writer.start_tls(then)
        await reader.read(4096)  # until the scanner hangs up

    return behaviour


@contextlib.asynccontextmanager
async def upgrading_server(address: str, greeting: bytes, answers: dict[bytes, bytes],
                           then: ssl.SSLContext | bytes) -> AsyncIterator[fakes.FakeServer]:
    fake = await fakes._serve(address, 0, upgrading(greeting, answers, then))
    try:
        yield fake
    finally:
        await fake.close()


async def test_ftp_auth_tls_weak_server_fails_every_check(weak_files: CertFiles) -> None:
    async with upgrading_server("127.110.0.20", FTP_GREETING, FTP_AUTH_TLS,
                                weak_context(weak_files)) as fake:
        tgt = target("127.110.0.20", fake.port, protocol="ftp", tls=False)
        results, facts, transcript = await scan(list(TLS_CHECKS), tgt)
    assert facts["accepted_versions"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert set(facts["versions"]["TLSv1.2"]["suites"]) >= {"TLS_RSA_WITH_NULL_SHA"}
    assert {o.key for o in results["tls-legacy-protocols"]} == {"TLSv1.0", "TLSv1.1"}
    assert {"NULL", "anonymous"} <= {o.key for o in results["tls-weak-cipher-suites"]}
    assert [o.key for o in results["tls-certificate-expired"]] == ["expired"]
    assert results["tls-certificate-untrusted"][0].facts["self_signed"] == "true"
    assert {o.key for o in results["tls-certificate-weak-key"]} == {"key", "signature"}
    # Evidence: the upgrade dialogue precedes the recorded ClientHellos.
    sent = [e.data for e in transcript.exchanges if e.direction == "sent"]
    assert sent[0].startswith("AUTH TLS") and sent[1].startswith("\\x16\\x03")
    received = "\n".join(e.data for e in transcript.exchanges if e.direction == "received")
    assert "234 Proceed" in received and "verifying handshake failed" in "\n".join(
        e.data for e in transcript.exchanges)


async def test_smtp_starttls_strong_server_passes_every_check(strong_files: CertFiles) -> None:
    settings = ProbeSettings(trusted_ca_files=(str(strong_files.ca),))
    async with upgrading_server("127.110.0.3", SMTP_GREETING, SMTP_STARTTLS,
                                strong_context(strong_files)) as fake:
        tgt = target("127.110.0.3", fake.port, protocol="smtp", tls=False)
        results, facts, transcript = await scan(list(TLS_CHECKS), tgt, settings)
    assert facts["accepted_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert facts["trust"] == {"verdict": "trusted", "method": "verifying handshake"}
    assert results == {check.metadata.check_id: [] for check in TLS_CHECKS}
    assert "EHLO iotbaseline.invalid" in "\n".join(e.data for e in transcript.exchanges)


async def test_ftp_tls13_only_certificate_comes_through_the_upgrade(
        strong_files: CertFiles) -> None:
    context = server_context(strong_files, minimum=ssl.TLSVersion.TLSv1_3,
                             maximum=ssl.TLSVersion.TLSv1_3)
    async with upgrading_server("127.110.0.22", FTP_GREETING, FTP_AUTH_TLS, context) as fake:
        tgt = target("127.110.0.22", fake.port, protocol="ftp", tls=False)
        results, facts, _ = await scan([TlsCertificateNameMismatch()], tgt)
    assert facts["accepted_versions"] == ["TLSv1.3"]
    assert facts["certificates"][0]["ip_addresses"] == ["127.110.0.3"]
    assert [o.key for o in results["tls-certificate-name-mismatch"]] == ["name-mismatch"]


async def test_refused_auth_tls_leaves_every_tls_check_out() -> None:
    """No AUTH TLS: cleartext FTP is ftp-cleartext-login's finding, not a TLS one."""
    async with upgrading_server("127.110.0.23", FTP_GREETING, {}, b"") as fake:
        tgt = target("127.110.0.23", fake.port, protocol="ftp", tls=False)
        network = Network(safe_scope(tgt.address), TEST_LIMITS)
        shared = SharedCollections()
        try:
            for check in TLS_CHECKS:
                with pytest.raises(NotApplicable, match="AUTH TLS answered 502"):
                    await check.collect(ProbeContext(tgt, network, Transcript(),
                                                     shared=shared))
        finally:
            shared.close()
            network.close()
        assert fake.connections == 1  # one refused dialogue, shared by the six checks


@pytest.mark.parametrize(("name", "greeting", "then", "error"), [
    ("234 then garbage", FTP_GREETING, b"HTTP/1.0 400 Bad Request\r\n\r\n" * 8,
     "not a TLS record"),
    ("234 then a huge record", FTP_GREETING, b"\x16\x03\x03\xff\xff" + b"\x00" * 64,
     "exceeds"),
    ("234 then silence", FTP_GREETING, b"", "no TLS reply"),
    ("garbage greeting", b"\x00\xff" * 2000, b"", "not an FTP reply"),
    ("busy greeting", b"421 Too many users\r\n", b"", "refused the session"),
])
async def test_hostile_upgrades_end_in_clean_errors(name: str, greeting: bytes, then: bytes,
                                                    error: str) -> None:
    async with upgrading_server("127.110.0.24", greeting, FTP_AUTH_TLS, then) as fake:
        tgt = target("127.110.0.24", fake.port, protocol="ftp", tls=False)
        started = time.monotonic()
        with pytest.raises((ValueError, ConnectionError, TimeoutError), match=error):
            await scan([TlsLegacyProtocols()], tgt)
    assert time.monotonic() - started < 5.0, name


def test_explicit_tls_applies_to_plain_ftp_and_smtp_only() -> None:
    for protocol in ("ftp", "smtp"):
        plain = target("192.0.2.1", 21, protocol=protocol, tls=False)
        assert TlsLegacyProtocols().applies_to(plain)
        assert starttls_for(plain.service) is not None
    implicit = target("192.0.2.1", 990, protocol="ftp")  # FTPS: TLS from the first byte
    assert starttls_for(implicit.service) is None
    assert TlsLegacyProtocols().applies_to(implicit)
    for protocol in ("telnet", "http", "rtsp"):
        assert not TlsLegacyProtocols().applies_to(
            target("192.0.2.1", 23, protocol=protocol, tls=False))
