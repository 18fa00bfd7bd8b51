"""Cleartext-protocol checks against in-process fakes on 127.112.0.0/16: each weak service
fails with the cleartext exchange as evidence, each hardened counterpart passes."""

from __future__ import annotations

from collections.abc import Callable

from probes.cleartext import (
    CoapWithoutDtls,
    FtpCleartextLogin,
    HttpCleartextLogin,
    HttpNotRedirectedToHttps,
    MqttCleartext,
    RtspCleartext,
    SnmpV1V2cEnabled,
)
from scanner.models import Service, Severity
from tests.test_exposure import evidence, run_probe, target_for, tcp_device, udp_device

HTTP = Service(port=8080, transport="tcp", protocol="http")
HTTPS = Service(port=8443, transport="tcp", protocol="http", tls=True)


def http(status: str, headers: str = "", body: bytes = b"") -> Callable[[bytes], bytes | None]:
    head = f"HTTP/1.0 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode()
    return lambda request: head + body


LOGIN = b'<html><form method="post"><input name="user"><input type="password" name="p"></form>'


async def test_http_login_form_and_basic_fail_a_redirect_passes() -> None:
    probe = HttpCleartextLogin()
    async with tcp_device("127.112.10.1", 8080, http("200 OK", body=LOGIN)), \
            tcp_device("127.112.10.2", 8080, http("401 Unauthorized",
                                                  'WWW-Authenticate: Basic realm="cam"\r\n')), \
            tcp_device("127.112.10.3", 8080, http("301 Moved",
                                                  "Location: https://127.112.10.3:8443/\r\n")):
        form = await run_probe(probe, target_for("127.112.10.1", HTTP))
        basic = await run_probe(probe, target_for("127.112.10.2", HTTP))
        redirected = await run_probe(probe, target_for("127.112.10.3", HTTP))
    [found] = form.observations
    assert found.key == "form" and 'type="password"' in evidence(form)
    [challenge] = basic.observations
    assert challenge.key == "basic" and "Basic realm" in evidence(basic)
    assert redirected.observations == [] and redirected.facts["redirect_https"]
    assert not probe.applies_to(target_for("127.112.10.3", HTTPS))


async def test_http_content_instead_of_redirect_only_where_https_exists() -> None:
    probe = HttpNotRedirectedToHttps()
    async with tcp_device("127.112.11.1", 8080, http("200 OK", body=b"<html>hi</html>")):
        with_https = target_for("127.112.11.1", HTTP, HTTPS)
        assert probe.applies_to(with_https)
        assert not probe.applies_to(target_for("127.112.11.1", HTTP))
        run = await run_probe(probe, with_https)
    [found] = run.observations
    assert found.severity is None and probe.metadata.severity == Severity.LOW
    assert found.facts["https_ports"] == "8443"


def ftp(user_reply: bytes, features: bytes) -> Callable[[bytes], bytes | None]:
    def answer(request: bytes) -> bytes | None:
        if request.startswith(b"FEAT"):
            return features
        if request.startswith(b"USER"):
            return user_reply
        return b"221 Goodbye.\r\n"
    return answer


async def test_ftp_without_tls_fails_and_a_tls_only_server_passes() -> None:
    probe = FtpCleartextLogin()
    service = Service(port=2121, transport="tcp", protocol="ftp")
    no_tls = ftp(b"331 Please specify the password.\r\n", b"211-Features:\r\n EPSV\r\n211 End\r\n")
    optional = ftp(b"331 Password required\r\n",
                   b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n211 End\r\n")
    required = ftp(b"530 Non-anonymous sessions must use encryption.\r\n",
                   b"211-Features:\r\n AUTH TLS\r\n211 End\r\n")
    greeting = b"220 FTP ready\r\n"
    async with tcp_device("127.112.12.1", 2121, no_tls, greeting), \
            tcp_device("127.112.12.2", 2121, optional, greeting), \
            tcp_device("127.112.12.3", 2121, required, greeting):
        bare = await run_probe(probe, target_for("127.112.12.1", service))
        offered = await run_probe(probe, target_for("127.112.12.2", service))
        hardened = await run_probe(probe, target_for("127.112.12.3", service))
    [found] = bare.observations
    assert "not offered at all" in found.summary and found.severity is None
    assert "USER iotbaseline-probe" in evidence(bare) and "PASS" not in evidence(bare)
    [weaker] = offered.observations
    assert "offered but not required" in weaker.summary and weaker.severity == Severity.MEDIUM
    assert hardened.observations == [] and hardened.facts["auth_tls"]


async def test_mqtt_plain_broker_reports_the_tls_port() -> None:
    probe = MqttCleartext()
    service = Service(port=1883, transport="tcp", protocol="mqtt")
    async with tcp_device("127.112.13.1", 1883, lambda request: b"\x20\x02\x00\x05"), \
            tcp_device("127.112.13.2", 1883, lambda request: b"\x30\x02\x00\x00"):
        refused = await run_probe(probe, target_for("127.112.13.1", service))
        other = await run_probe(probe, target_for("127.112.13.2", service))
    [found] = refused.observations  # even a refused CONNECT was answered in cleartext
    assert "MQTT over TLS on 8883: no" in found.summary
    assert other.observations == []  # a PUBLISH is no CONNACK: not shown to be MQTT


async def test_coap_without_dtls_lists_resources() -> None:
    probe = CoapWithoutDtls()
    service = Service(port=5683, transport="udp", protocol="coap")

    def core(request: bytes) -> bytes:
        return bytes((0x60, 0x45)) + request[2:4] + b"\xff</sensors/temp>;rt=\"t\",</actuators>"

    async with udp_device("127.112.14.1", 5683, core), \
            udp_device("127.112.14.2", 5683, lambda request: b"\xff" * 64):
        run = await run_probe(probe, target_for("127.112.14.1", service))
        garbage = await run_probe(probe, target_for("127.112.14.2", service))
    [found] = run.observations
    assert found.facts["resources"] == "/sensors/temp, /actuators"
    assert garbage.observations == []


async def test_rtsp_basic_is_high_and_a_non_rtsp_reply_passes() -> None:
    probe = RtspCleartext()
    service = Service(port=8554, transport="tcp", protocol="rtsp")

    def rtsp(challenge: str) -> Callable[[bytes], bytes | None]:
        return lambda request: (f"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n{challenge}"
                                "Content-Length: 0\r\n\r\n").encode()

    async with tcp_device("127.112.15.1", 8554, rtsp('WWW-Authenticate: Basic realm="c"\r\n')), \
            tcp_device("127.112.15.2", 8554, rtsp('WWW-Authenticate: Digest realm="c", '
                                                  'nonce="n"\r\n')), \
            tcp_device("127.112.15.3", 8554, lambda request: b"garbage\r\n\r\n"):
        basic = await run_probe(probe, target_for("127.112.15.1", service))
        digest = await run_probe(probe, target_for("127.112.15.2", service))
        other = await run_probe(probe, target_for("127.112.15.3", service))
    assert basic.observations[0].severity == Severity.HIGH
    assert digest.observations[0].severity is None and "digest" in digest.observations[0].summary
    assert other.observations == []


async def test_snmp_silent_agent_passes() -> None:
    probe = SnmpV1V2cEnabled()
    service = Service(port=1161, transport="udp", protocol="snmp")
    async with udp_device("127.112.16.1", 1161, lambda request: None) as agent:
        run = await run_probe(probe, target_for("127.112.16.1", service))
    assert run.observations == [] and len(agent.received) == 2  # one v1, one v2c request
