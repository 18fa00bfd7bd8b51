"""The TLS checks against REAL daemons (tests/daemons: stunnel-weak, stunnel-strong, and
vsftpd-ftps for explicit TLS after FTP AUTH TLS), and the same scan compared with sslscan's
verdicts on all three.

stunnel-weak is a legacy device (TLS 1.0-1.2, NULL/anonymous/static-RSA suites, an expired
self-signed RSA-1024 SHA-1 certificate); stunnel-strong is the hardened negative control
(TLS 1.2+, ECDHE-AEAD only, a test-CA certificate naming its address, HSTS) and must pass.
vsftpd-ftps upgrades its control connection on AUTH TLS (RFC 4217) to weak TLS (static-RSA
suites, TLS 1.0/1.1, the same kind of certificate) and refuses cleartext logins."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from collections import defaultdict

import pytest

from probes.api import (
    Facts,
    Observation,
    Probe,
    ProbeContext,
    ProbeSettings,
    SharedCollections,
    Target,
)
from probes.cleartext import FtpCleartextLogin
from probes.tls import HttpsHstsMissing, TlsCheck, tls_data
from scanner.discovery.fingerprint import identify_tcp
from scanner.models import Device
from scanner.net import Limits, Network, Transcript
from tests.daemons import Daemon, daemon_fixture
from tests.helpers import safe_scope
from tests.test_tls import TLS_CHECKS

pytestmark = pytest.mark.timeout(180)

stunnel_weak = daemon_fixture("stunnel-weak", scope="module")
stunnel_strong = daemon_fixture("stunnel-strong", scope="module")
vsftpd_ftps = daemon_fixture("vsftpd-ftps", scope="module")
LIMITS = Limits(connect_timeout=2, read_timeout=4, probe_budget=60, rate=500.0, per_host=4)
SSLSCAN_TIMEOUT = 120.0


async def run_all(daemon: Daemon, settings: ProbeSettings | None = None,
                  extra: tuple[Probe, ...] = (HttpsHstsMissing(),),
                  ) -> tuple[dict[str, list[Observation]], Facts]:
    """Identify the service as discovery would, then every TLS check on one shared scan (and
    the ``extra`` checks)."""
    network = Network(safe_scope(daemon.address), LIMITS)
    shared = SharedCollections()
    try:
        service = await identify_tcp(network, daemon.address, daemon.port)
        target = Target(Device(address=daemon.address, services=[service]), service)
        results: dict[str, list[Observation]] = {}
        facts: Facts = {}
        for check in [*TLS_CHECKS, *extra]:
            assert check.applies_to(target), (check.metadata.check_id, service)
            ctx = ProbeContext(target, network, Transcript(), settings, shared=shared)
            check_facts = await check.collect(ctx)
            if isinstance(check, TlsCheck):
                facts = check_facts
            results[check.metadata.check_id] = check.evaluate(target, check_facts)
    finally:
        shared.close()
        network.close()
    return results, facts


def keys(observations: list[Observation]) -> set[str]:
    return {observation.key for observation in observations}


async def test_weak_stunnel_fails(stunnel_weak: Daemon) -> None:
    results, facts = await run_all(stunnel_weak)
    assert facts["accepted_versions"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert keys(results["tls-legacy-protocols"]) == {"TLSv1.0", "TLSv1.1"}
    assert {"NULL", "anonymous", "no-forward-secrecy"} <= keys(results["tls-weak-cipher-suites"])
    assert keys(results["tls-certificate-expired"]) == {"expired"}
    [untrusted] = results["tls-certificate-untrusted"]
    assert untrusted.facts["self_signed"] == "true"
    assert keys(results["tls-certificate-name-mismatch"]) == {"name-mismatch"}
    assert keys(results["tls-certificate-weak-key"]) == {"key", "signature"}
    assert keys(results["https-hsts-missing"]) == {"hsts"}


async def test_strong_stunnel_passes(stunnel_strong: Daemon) -> None:
    settings = ProbeSettings(trusted_ca_files=(stunnel_strong.extra["ca_file"],))
    results, facts = await run_all(stunnel_strong, settings)
    assert facts["accepted_versions"] == ["TLSv1.2", "TLSv1.3"]
    assert facts["trust"]["verdict"] == "trusted"
    assert all(not found for found in results.values()), results


async def test_vsftpd_auth_tls_is_scanned_after_the_upgrade(vsftpd_ftps: Daemon) -> None:
    results, facts = await run_all(vsftpd_ftps, extra=(FtpCleartextLogin(),))
    assert facts["accepted_versions"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    assert keys(results["tls-legacy-protocols"]) == {"TLSv1.0", "TLSv1.1"}
    assert "no-forward-secrecy" in keys(results["tls-weak-cipher-suites"])
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" in facts["versions"]["TLSv1.2"]["suites"]
    assert keys(results["tls-certificate-expired"]) == {"expired"}
    assert results["tls-certificate-untrusted"][0].facts["self_signed"] == "true"
    assert keys(results["tls-certificate-weak-key"]) == {"key", "signature"}
    # TLS is required before a login, so the cleartext check passes: the two are complementary.
    assert results["ftp-cleartext-login"] == []


# ================================================================ against sslscan


def sslscan(daemon: Daemon) -> tuple[list[str], dict[str, set[str]]]:
    """sslscan's accepted versions and, per version, accepted suites as IANA names."""
    starttls = ["--starttls-ftp"] if daemon.name == "vsftpd-ftps" else []
    done = subprocess.run(["sslscan", "--no-colour", "--xml=-", *starttls,
                           f"{daemon.address}:{daemon.port}"],
                          capture_output=True, text=True, timeout=SSLSCAN_TIMEOUT, check=True)
    document = ElementTree.fromstring(done.stdout)
    versions = [f"{'SSLv' if p.get('type') == 'ssl' else 'TLSv'}{p.get('version')}"
                for p in document.iter("protocol") if p.get("enabled") == "1"]
    suites: dict[str, set[str]] = defaultdict(set)
    for cipher in document.iter("cipher"):
        suites[str(cipher.get("sslversion"))].add(
            tls_data().suite_name(int(str(cipher.get("id")), 16)))
    return versions, dict(suites)


def categories(suites: set[str]) -> set[str]:
    return {rule.category for suite in suites for rule in tls_data().categories(suite)}


@pytest.mark.parametrize("name", ["stunnel-weak", "stunnel-strong", "vsftpd-ftps"])
async def test_same_verdicts_as_sslscan(name: str, request: pytest.FixtureRequest) -> None:
    if not shutil.which("sslscan"):
        pytest.skip("sslscan not installed (Debian package sslscan)")
    daemon: Daemon = request.getfixturevalue(name.replace("-", "_"))
    _, facts = await run_all(daemon, extra=())
    their_versions, their_suites = sslscan(daemon)
    assert facts["accepted_versions"] == their_versions
    ours = {version: set(result["suites"]) for version, result in facts["versions"].items()
            if result["accepted"]}
    assert ours == their_suites
    for version in ours:
        assert categories(ours[version]) == categories(their_suites[version])
