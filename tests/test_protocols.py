"""Protocol helpers: known exchanges parse right, malformed input never raises (hypothesis)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.net import Transcript, escape_bytes
from scanner.protocols import mqtt, telnet
from scanner.protocols.ssh import parse_banner
from scanner.protocols.textproto import html_title, parse_head, response_complete
from scanner.protocols.udp import (
    coap_get_well_known_core,
    parse_coap,
    parse_snmp_response,
    parse_ssdp_reply,
    snmp_get_sysdescr,
)
from scanner.protocols.upnp import DescriptionError, parse_description

FUZZ = settings(max_examples=200, deadline=None)


def test_telnet_negotiation_refuses_everything() -> None:
    data = bytes([255, 253, 24, 255, 251, 1, 255, 250, 31, 0, 80, 255, 240]) + b"login: "
    text, replies, tail = telnet.split_negotiation(data)
    assert text == b"login: " and tail == b""
    assert replies == bytes([255, 252, 24, 255, 254, 1])
    assert telnet.split_negotiation(b"a\xff\xffb")[0] == b"a\xffb"


def test_telnet_negotiation_split_across_reads_is_kept() -> None:
    text, replies, tail = telnet.split_negotiation(b"hi\xff\xfd")
    assert (text, replies, tail) == (b"hi", b"", b"\xff\xfd")
    text, replies, tail = telnet.split_negotiation(tail + b"\x18login: ")
    assert (text, replies, tail) == (b"login: ", bytes([255, 252, 24]), b"")


@pytest.mark.parametrize("text, prompt", [
    (b"BusyBox v1.2\r\nipcam login: ", "login"), (b"Username:", "login"),
    (b"Password: ", "password"), (b"~ # ", "shell"), (b"[admin@router]$ ", "shell"),
    (b"Welcome\r\n", None), (b"", None),
])
def test_telnet_prompts(text: bytes, prompt: str | None) -> None:
    assert telnet.classify_prompt(text) == prompt


def test_ssh_banner() -> None:
    assert parse_banner("SSH-2.0-OpenSSH_9.6 Debian-3") == ("2.0", "OpenSSH", "9.6")
    assert parse_banner("SSH-2.0-dropbear_2017.75") == ("2.0", "dropbear", "2017.75")
    assert parse_banner("SSH-1.99-Cisco-1.25") == ("1.99", "Cisco", "1.25")
    assert parse_banner("HTTP/1.1 200 OK") is None


def test_http_head_and_title() -> None:
    raw = (b"HTTP/1.1 401 Unauthorized\r\nServer: Boa/0.94\r\nWWW-Authenticate: Basic "
           b"realm=\"cam\"\r\nContent-Length: 28\r\n\r\n<title> Cam &amp; co</title>")
    head = parse_head(raw)
    assert head and head.status == 401 and head.header("server") == "Boa/0.94"
    assert html_title(head.body) == "Cam & co"
    assert response_complete(raw)
    assert not response_complete(raw[:40])
    assert parse_head(b"SSH-2.0-x\r\n") is None


def test_mqtt_packets() -> None:
    packet = mqtt.connect_packet(level=5, client_id="c", username="u", password="p")
    assert packet[0] == 0x10 and packet[1] == len(packet) - 2 and b"MQTT\x05" in packet
    assert mqtt.parse_connack(b"\x20\x02\x00\x05") == 5
    assert mqtt.parse_connack(b"\x20\x03\x00\x00\x00") == 0
    assert mqtt.parse_connack(b"\x30\x02\x00\x00") is None


def test_snmp_roundtrip_and_coap() -> None:
    from scapy.asn1.asn1 import ASN1_OID, ASN1_STRING
    from scapy.layers.snmp import SNMP, SNMPresponse, SNMPvarbind

    request = SNMP(snmp_get_sysdescr("public", request_id=7))
    assert request.community.val == b"public"
    reply = bytes(SNMP(community=b"public", PDU=SNMPresponse(id=7, varbindlist=[
        SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"), value=ASN1_STRING(b"Linux cam 3.4"))])))
    assert parse_snmp_response(reply) == {"1.3.6.1.2.1.1.1.0": "Linux cam 3.4"}
    assert parse_snmp_response(b"\x30\x03garbage") is None
    request_coap = coap_get_well_known_core()
    assert request_coap[1] == 0x01 and request_coap.endswith(b"core")
    assert parse_coap(b"\x60\x45\x00\x01\xff</sensors>") == {"code": "2.05",
                                                             "payload": "</sensors>"}


def test_upnp_description_refuses_entities() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<root><device><friendlyName>&b;</friendlyName></device></root>")
    with pytest.raises(DescriptionError):
        parse_description(bomb)
    good = (b'<root xmlns="urn:schemas-upnp-org:device-1-0"><device><manufacturer>ACME'
            b"</manufacturer><modelName>R1</modelName><serviceList><service><serviceType>"
            b"urn:x:service:Y:1</serviceType><controlURL>/c</controlURL></service>"
            b"</serviceList></device></root>")
    assert parse_description(good) == {"manufacturer": "ACME", "modelName": "R1",
                                       "services": "urn:x:service:Y:1 /c"}


def test_transcript_redacts_and_caps() -> None:
    transcript = Transcript()
    transcript.add_secret("hunter2")
    transcript.record("sent", "tcp://x", b"PASS hunter2\r\n")
    assert "hunter2" not in transcript.exchanges[0].data
    assert "«redacted»" in transcript.exchanges[0].data
    transcript.record("received", "tcp://x", b"A" * 10_000)
    assert transcript.exchanges[1].truncated
    shown = Transcript(show_secrets=True)
    shown.add_secret("hunter2")
    shown.record("sent", "tcp://x", b"hunter2")
    assert shown.exchanges[0].data == "hunter2"
    assert escape_bytes(b"\x00\x1b[31m\\") == "\\x00\\x1b[31m\\\\"


@FUZZ
@given(st.binary(max_size=600))
def test_parsers_never_raise_on_garbage(data: bytes) -> None:
    telnet.split_negotiation(data)
    telnet.classify_prompt(data)
    parse_head(data)
    response_complete(data)
    html_title(data)
    mqtt.parse_connack(data)
    parse_snmp_response(data)
    parse_coap(data)
    parse_ssdp_reply(data)
    parse_banner(data.decode("latin-1"))
    with contextlib.suppress(DescriptionError):
        parse_description(data)


def test_a_short_secret_cannot_expose_part_of_a_longer_one() -> None:
    transcript = Transcript()
    transcript.add_secret("YWRtaW46")  # base64 of "admin:" (an empty password tried first)
    transcript.add_secret("YWRtaW46MTIzNDU=")  # base64 of "admin:12345"
    transcript.record("sent", "rtsp://x", b"Authorization: Basic YWRtaW46MTIzNDU=")
    assert transcript.exchanges[0].data == "Authorization: Basic «redacted»"
