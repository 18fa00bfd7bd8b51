"""Exposure and cleartext checks against REAL daemons (tests/daemons): libcoap's coap-server,
snmpd, mosquitto (anonymous), vsftpd (no AUTH TLS), lighttpd (Basic) and busybox telnetd."""

from __future__ import annotations

import pytest

from probes.api import Probe, Target
from probes.cleartext import (
    CoapWithoutDtls,
    FtpCleartextLogin,
    HttpCleartextLogin,
    MqttCleartext,
    SnmpV1V2cEnabled,
)
from probes.exposure import UnneededInterfaceExposed
from scanner.discovery.fingerprint import identify_tcp, identify_udp
from scanner.models import Service
from scanner.net import Limits, Network
from tests.daemons import Daemon, daemon_fixture
from tests.helpers import safe_scope
from tests.test_exposure import Run, evidence, target_for
from tests.test_exposure import run_probe as run_in_block

pytestmark = pytest.mark.timeout(120)

coap_server = daemon_fixture("coap-server", scope="module")
snmpd = daemon_fixture("snmpd", scope="module")
mosquitto_anon = daemon_fixture("mosquitto-anon", scope="module")
vsftpd = daemon_fixture("vsftpd", scope="module")
lighttpd_basic = daemon_fixture("lighttpd-basic", scope="module")
telnetd_login = daemon_fixture("telnetd-login", scope="module")


async def run_probe(probe: Probe, target: Target) -> Run:
    return await run_in_block(probe, target, scope=target.address)


async def identify(daemon: Daemon) -> Service:
    network = Network(safe_scope(daemon.address), Limits(connect_timeout=2, read_timeout=4))
    try:
        if daemon.transport == "udp":
            found = await identify_udp(network, daemon.address, daemon.port)
            assert found is not None, f"{daemon.name} not identified"
            return found
        return await identify_tcp(network, daemon.address, daemon.port)
    finally:
        network.close()


async def test_coap_server(coap_server: Daemon) -> None:
    service = await identify(coap_server)
    assert service.protocol == "coap"
    target = target_for(coap_server.address, service)
    coap = await run_probe(CoapWithoutDtls(), target)
    [found] = coap.observations
    assert "/time" in found.facts["resources"]
    exposure = await run_probe(UnneededInterfaceExposed(profiles=()), target)
    assert [o.key for o in exposure.observations] == ["coap"]


async def test_snmpd(snmpd: Daemon) -> None:
    service = await identify(snmpd)
    assert service.protocol == "snmp" and "IoT-DVR" in service.banner
    target = target_for(snmpd.address, service)
    run = await run_probe(SnmpV1V2cEnabled(), target)
    [found] = run.observations
    assert found.facts["versions"] == "v1 and v2c" and found.facts["community"] == "public"
    assert "public" in evidence(run)
    exposure = await run_probe(UnneededInterfaceExposed(profiles=()), target)
    assert [o.key for o in exposure.observations] == ["snmp-v1v2c"]


async def test_mosquitto_anonymous(mosquitto_anon: Daemon) -> None:
    service = await identify(mosquitto_anon)
    run = await run_probe(MqttCleartext(), target_for(mosquitto_anon.address, service))
    [found] = run.observations
    assert found.facts["tls_port"].startswith("no")


async def test_vsftpd_without_auth_tls(vsftpd: Daemon) -> None:
    service = await identify(vsftpd)
    target = target_for(vsftpd.address, service)
    run = await run_probe(FtpCleartextLogin(), target)
    [found] = run.observations
    assert found.facts["auth_tls_offered"] == "False" and "331" in found.summary
    exposure = await run_probe(UnneededInterfaceExposed(profiles=()), target)
    assert [o.key for o in exposure.observations] == ["ftp"]
    assert "220 IoT-DVR FTP" in exposure.observations[0].facts["evidence"]


async def test_lighttpd_basic(lighttpd_basic: Daemon) -> None:
    service = await identify(lighttpd_basic)
    run = await run_probe(HttpCleartextLogin(), target_for(lighttpd_basic.address, service))
    [found] = run.observations
    assert found.key == "basic" and "IPCamera" in evidence(run)


async def test_telnetd_login(telnetd_login: Daemon) -> None:
    service = await identify(telnetd_login)
    run = await run_probe(UnneededInterfaceExposed(profiles=()),
                          target_for(telnetd_login.address, service))
    [found] = run.observations
    assert found.key == "telnet" and "login" in found.facts["evidence"].lower()
