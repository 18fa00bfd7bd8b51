"""Credential and access probes against REAL daemons (tests/daemons: dropbear, busybox telnetd,
lighttpd, vsftpd, mosquitto, snmpd, openssh), started in private mount namespaces by fixtures.

Each probe must find what the daemon is configured to expose, with a refused negative control,
and must stay silent against the hardened configuration (openssh with keys only, mosquitto
without anonymous access)."""

from __future__ import annotations

from typing import Any

import pytest

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeSettings, Target
from probes.ftp import FtpAnonymous, FtpDefaultCredentials
from probes.http import HttpDefaultCredentials
from probes.mqtt import MqttAnonymous, MqttDefaultCredentials
from probes.snmp import SnmpDefaultCommunity
from probes.ssh import SshBruteForceProtection, SshDefaultCredentials, SshNoneAuth
from probes.telnet import TelnetDefaultCredentials, TelnetUnauthenticatedShell
from profiles import Authentication
from profiles.credentials import CredentialEntry, CredentialStore
from scanner.discovery.fingerprint import identify_all_udp, identify_tcp
from scanner.models import Device, Service
from scanner.net import Limits, Network, Transcript
from tests.daemons import Daemon, daemon_fixture
from tests.helpers import safe_scope

pytestmark = pytest.mark.timeout(120)

dropbear = daemon_fixture("dropbear", scope="module")
openssh_keyonly = daemon_fixture("openssh-keyonly", scope="module")
vsftpd = daemon_fixture("vsftpd", scope="module")
telnetd_login = daemon_fixture("telnetd-login", scope="module")
telnetd_shell = daemon_fixture("telnetd-shell", scope="module")
lighttpd_basic = daemon_fixture("lighttpd-basic", scope="module")
lighttpd_digest = daemon_fixture("lighttpd-digest", scope="module")
mosquitto_anon = daemon_fixture("mosquitto-anon", scope="module")
mosquitto_auth = daemon_fixture("mosquitto-auth", scope="module")
snmpd = daemon_fixture("snmpd", scope="module")

# Wrong pairs first, so the budget and the per-account cap are exercised on real daemons.
PAIRS = {
    "telnet": [("root", "vizxv"), ("admin", "1234"), ("admin", "admin")],
    "ssh": [("root", "root"), ("admin", "password"), ("admin", "admin")],
    "ftp": [("anonymous", "a@b.c"), ("root", "root"), ("ftpuser", "ftppass")],
    "http": [("admin", "password"), ("admin", "admin"), ("admin", "12345")],
    "mqtt": [("admin", "admin"), ("iot", "iot")],
    "snmp": [("", "secret"), ("", "public"), ("", "private")],
}
SETTINGS = ProbeSettings(
    authentication=Authentication(spacing=0.1, max_per_account=3, max_per_service=10),
    credentials=CredentialStore([
        CredentialEntry(vendor="Test", protocol=protocol, username=user, password=password,
                        source="tests/daemons configuration")
        for protocol, pairs in PAIRS.items() for user, password in pairs]))


async def identify(daemon: Daemon) -> Service:
    network = Network(safe_scope(daemon.address), Limits(connect_timeout=2, read_timeout=8))
    if daemon.transport == "udp":
        [service] = await identify_all_udp(network, daemon.address, [daemon.port])
        return service
    return await identify_tcp(network, daemon.address, daemon.port)


async def run(probe: Probe, daemon: Daemon) -> tuple[Facts, list[Observation], Transcript]:
    service = await identify(daemon)
    assert probe.applies_to(Target(Device(address=daemon.address, services=[service]),
                                   service)), service
    network = Network(safe_scope(daemon.address),
                      Limits(connect_timeout=2, read_timeout=8, probe_budget=90))
    target = Target(Device(address=daemon.address, services=[service]), service)
    transcript = Transcript()
    facts = await probe.collect(ProbeContext(target, network, transcript, SETTINGS))
    return facts, probe.evaluate(target, facts), transcript


def only(observations: list[Observation], key: str) -> Observation:
    assert [o.key for o in observations] == [key], observations
    return observations[0]


async def test_busybox_telnetd_login_default_credential(telnetd_login: Daemon) -> None:
    facts, observations, transcript = await run(TelnetDefaultCredentials(), telnetd_login)
    observation = only(observations, "default-credential")
    assert observation.facts["username"] == "admin"
    assert observation.facts["negative_control"] == "failure"
    assert [a["outcome"] for a in facts["attempts"]] == ["failure", "failure", "success"]
    assert "admin\\r" in " ".join(e.data for e in transcript.exchanges)  # user name shown
    assert "«redacted»" in " ".join(e.data for e in transcript.exchanges)


async def test_busybox_telnetd_shell_without_login(telnetd_shell: Daemon) -> None:
    _, observations, _ = await run(TelnetUnauthenticatedShell(), telnetd_shell)
    observation = only(observations, "unauthenticated-access")
    assert "harmless echo" in observation.summary


async def test_telnetd_with_login_offers_no_open_shell(telnetd_login: Daemon) -> None:
    _, observations, _ = await run(TelnetUnauthenticatedShell(), telnetd_login)
    assert observations == []


@pytest.mark.parametrize("fixture, password", [("lighttpd_basic", "admin"),
                                               ("lighttpd_digest", "12345")])
async def test_lighttpd_basic_and_digest(fixture: str, password: str,
                                         request: pytest.FixtureRequest) -> None:
    daemon: Daemon = request.getfixturevalue(fixture)
    facts, observations, _ = await run(HttpDefaultCredentials(), daemon)
    observation = only(observations, "default-credential")
    assert facts["success"]["username"] == "admin"
    assert observation.facts["negative_control"] == "failure"
    assert sum(a["outcome"] == "failure" for a in facts["attempts"]) >= 1
    assert daemon.password == password


async def test_mosquitto_anonymous_and_credentials(mosquitto_anon: Daemon,
                                                   mosquitto_auth: Daemon) -> None:
    _, anonymous, _ = await run(MqttAnonymous(), mosquitto_anon)
    only(anonymous, "mqtt-anonymous")
    _, refused, _ = await run(MqttAnonymous(), mosquitto_auth)
    assert refused == []
    facts, observations, _ = await run(MqttDefaultCredentials(), mosquitto_auth)
    only(observations, "default-credential")
    assert facts["success"]["username"] == "iot"


async def test_snmpd_default_communities(snmpd: Daemon) -> None:
    facts, observations, transcript = await run(SnmpDefaultCommunity(), snmpd)
    observation = only(observations, "snmp-default-community")
    assert "public" not in str(observation.facts)  # the community is redacted
    assert facts["control"]["outcome"] == "failure"
    sent: Any = [e for e in transcript.exchanges if e.direction == "sent"]
    assert sent, "the SNMP exchange is recorded as evidence"


async def test_dropbear_password_default_credential(dropbear: Daemon) -> None:
    _, observations, _ = await run(SshDefaultCredentials(), dropbear)
    observation = only(observations, "default-credential")
    assert observation.facts["username"] == "admin"
    assert observation.facts["negative_control"] == "failure"
    _, none_auth, _ = await run(SshNoneAuth(), dropbear)
    assert none_auth == []


async def test_openssh_key_only_is_the_negative_control(openssh_keyonly: Daemon) -> None:
    facts, observations, _ = await run(SshDefaultCredentials(), openssh_keyonly)
    assert observations == []
    assert facts["password_offered"] is False and facts["passwords_sent"] == 0
    assert len(facts["attempts"]) == 1  # no password login: nothing more to try
    _, brute, _ = await run(SshBruteForceProtection(), openssh_keyonly)
    assert brute == []  # key-only SSH cannot be password-guessed


async def test_vsftpd_anonymous_and_local_account(vsftpd: Daemon) -> None:
    _, observations, _ = await run(FtpAnonymous(), vsftpd)
    only(observations, "anonymous-ftp")
    credentials, found, _ = await run(FtpDefaultCredentials(), vsftpd)
    only(found, "default-credential")
    assert credentials["success"]["username"] == "ftpuser"
    assert "anonymous" not in [a["username"] for a in credentials["attempts"]]
