"""Every parser of device input, fuzzed: garbage and mutated valid messages end in a result or a
clean ValueError or ConnectionError (which the engine records as a probe error), never in another
exception, a hang or an allocation sized by a length the device claims.

tests/test_protocols.py and tests/test_exposure.py already fuzz the telnet, HTTP-head, MQTT
CONNACK, SNMP/CoAP/SSDP, SSH-banner, UPnP-description and UDP recognisers with random bytes;
this module covers the rest (SSH binary packets, TLS flights and certificates, FTP, RTSP,
TFTP, ADB, MQTT packets, SNMP walk rows, UPnP control documents, security.txt, the binary IoT
TCP recognisers, mDNS names) and mutates valid messages, which reach deeper than random bytes.
Bounded: every test has a fixed example count and no per-example deadline surprises; the
module runs in well under 60 s.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes import adb, disclosure, ftp, http_form, rtsp, snmp
from probes import mqtt as mqtt_probe
from probes import upnp as upnp_probe
from scanner.discovery.fingerprint import certificate_facts as banner_certificate_facts
from scanner.protocols import iot_tcp, sshwire, tftp, tls, udp
from scanner.protocols.textproto import auth_scheme, head_complete, parse_head

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _clean(parse: Callable[[], Any]) -> Any:
    """Run a parser: a result, a ValueError or a ConnectionError (FTP's protocol error) is
    fine; the engine records either as a probe error."""
    try:
        return parse()
    except (ValueError, ConnectionError):
        return None


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid message with bytes flipped, cut or inserted: lengths that lie, fields cut short."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(("flip", "cut", "insert", "max")))
        if operation == "flip":
            data[position] = draw(st.integers(0, 255))
        elif operation == "cut":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[position:position + 4] = b"\xff\xff\xff\xff"
    return bytes(data)


# --------------------------------------------------------------------------- SSH binary packets

KEXINIT = bytes((sshwire.MSG_KEXINIT,)) + b"\x11" * 16 + b"".join(
    sshwire.name_list(names) for names in (
        ("curve25519-sha256", "diffie-hellman-group14-sha256"), ("ssh-ed25519", "rsa-sha2-256"),
        ("aes128-ctr",), ("aes128-ctr",), ("hmac-sha2-256",), ("hmac-sha2-256",), ("none",),
        ("none",), (), ())) + b"\x00" + b"\x00\x00\x00\x00"
ED25519_BLOB = sshwire.ssh_string(b"ssh-ed25519") + sshwire.ssh_string(b"\x01" * 32)
RSA_BLOB = sshwire.ssh_string(b"ssh-rsa") + sshwire.ssh_mpint(65537) + \
    sshwire.ssh_mpint(int("c" * 256, 16))


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(sshwire.frame(KEXINIT))))
def test_ssh_packets_and_kexinit(data: bytes) -> None:
    packet = _clean(lambda: sshwire.parse_packet(data))
    if packet is not None:
        payload, used = packet
        assert used <= len(data) and len(payload) <= sshwire.MAX_PACKET
        _clean(lambda: sshwire.parse_kexinit(payload))
    kexinit = _clean(lambda: sshwire.parse_kexinit(data))
    if kexinit is not None:
        assert all(len(name) <= sshwire.MAX_NAME for name in kexinit.kex)
        sshwire.choose_kex(kexinit.kex)
        sshwire.host_key_targets(kexinit.host_key)
    sshwire.disconnect_reason(data or b"\x01")


@FUZZ
@given(st.one_of(st.binary(max_size=400), mutated(ED25519_BLOB), mutated(RSA_BLOB)))
def test_ssh_host_keys_and_kex_replies(data: bytes) -> None:
    key = _clean(lambda: sshwire.parse_host_key(data))
    if key is not None:
        assert key.bits >= 0 and key.fingerprint.startswith("SHA256:")
    _clean(lambda: sshwire.kex_reply_host_key(data, 31))


def test_ssh_huge_claimed_lengths_are_refused_without_reading() -> None:
    hostile = struct.pack(">IB", 0xFFFFFFF0, 4) + b"\x00" * 16
    assert _clean(lambda: sshwire.parse_packet(hostile)) is None
    assert _clean(lambda: sshwire.parse_kexinit(b"\x14" + b"\x00" * 16 + b"\xff" * 4)) is None


# --------------------------------------------------------------------------- TLS

SERVER_HELLO = bytes((tls.HANDSHAKE_SERVER_HELLO,)) + (38 + 2 + 6).to_bytes(3, "big") + \
    b"\x03\x03" + b"\x22" * 32 + b"\x00" + b"\xc0\x2f" + b"\x00" + \
    b"\x00\x06" + struct.pack("!HH", tls.EXT_SUPPORTED_VERSIONS, 2) + b"\x03\x03"
CERTIFICATE = bytes((tls.HANDSHAKE_CERTIFICATE,)) + (3 + 3 + 5).to_bytes(3, "big") + \
    (8).to_bytes(3, "big") + (5).to_bytes(3, "big") + b"\x30\x03\x02\x01\x01"
FLIGHT = b"".join(bytes((tls.CONTENT_HANDSHAKE, 3, 3)) + len(message).to_bytes(2, "big") +
                  message for message in (SERVER_HELLO, CERTIFICATE, b"\x0e\x00\x00\x00"))


@FUZZ
@given(st.one_of(st.binary(max_size=800), mutated(FLIGHT)))
def test_tls_server_flights(data: bytes) -> None:
    flight = _clean(lambda: tls.parse_flight(data))
    if flight is not None:
        assert len(flight.certificates) <= tls.MAX_CERTIFICATES
        assert flight.alert_name is not None


def test_the_seeds_of_the_mutations_are_valid() -> None:
    """Mutating a message reaches deep code only if the message parsed whole to begin with."""
    flight = tls.parse_flight(FLIGHT)
    assert flight.hello_done and flight.cipher_suite == 0xC02F and len(flight.certificates) == 1
    packet = sshwire.parse_packet(sshwire.frame(KEXINIT))
    assert packet is not None and "curve25519-sha256" in sshwire.parse_kexinit(packet[0]).kex
    assert sshwire.parse_host_key(RSA_BLOB).bits == 1024
    assert sshwire.parse_host_key(ED25519_BLOB).bits == 256
    assert snmp.parse_next_response(SNMP_RESPONSE) == snmp.Varbind((1, 3, 6, 1, 2, 1, 1, 1, 0),
                                                                   "hi")
    split = mqtt_probe.split_packet(PUBLISH_PACKET)
    assert split is not None and mqtt_probe.parse_publish(split[0], split[1]).topic == "a/b/c"
    assert upnp_probe.parse_wan_services(WAN_DESCRIPTION, "http://127.133.0.1:1/d")
    assert adb.parse_header(adb.connect_message()) is not None


@FEW
@given(st.binary(max_size=600))
def test_certificate_der_garbage(data: bytes) -> None:
    _clean(lambda: tls.certificate_facts(data))
    _clean(lambda: banner_certificate_facts(data))


# --------------------------------------------------------------------------- FTP, RTSP, HTTP text

@FUZZ
@given(st.binary(max_size=600))
def test_text_protocol_replies(data: bytes) -> None:
    text = data.decode("latin-1")
    reply = _clean(lambda: ftp.parse_reply(data))
    if reply is not None:
        assert reply[1] <= len(data)
    _clean(lambda: ftp.parse_pasv(text))
    _clean(lambda: ftp.parse_epsv(text))
    ftp.summarize_listing(data, truncated=False)
    rtsp.response_done(data)
    rtsp.is_sdp(data)
    rtsp.pick_challenge(_clean(lambda: rtsp.parse_challenges(
        rtsp.authenticate_values(data))) or [])
    head_complete(data)
    head = parse_head(data)
    if head is not None:
        auth_scheme(head)
    http_form.set_cookies(text)
    http_form.hidden_value(data, "csrf")


# --------------------------------------------------------------------------- MQTT, SNMP, ADB, TFTP

PUBLISH_PACKET = b"\x30\x0c\x00\x05a/b/c" + b"hello"


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(PUBLISH_PACKET)),
       st.sampled_from((4, 5)))
def test_mqtt_packets(data: bytes, level: int) -> None:
    packet = _clean(lambda: mqtt_probe.split_packet(data))
    if packet is not None:
        first, body, used = packet
        assert used <= len(data)
        publish = _clean(lambda: mqtt_probe.parse_publish(first, body, level))
        if publish is not None:
            assert 0 <= publish.payload_size <= len(body) and len(publish.topic) <= 200
        mqtt_probe.connack_code(first, body, data[:2])


def test_mqtt_256_mb_length_is_refused_at_once() -> None:
    claim = b"\x30\xff\xff\xff\x7f" + b"x" * 16
    assert _clean(lambda: mqtt_probe.split_packet(claim)) is None  # ValueError, not a wait
    assert _clean(lambda: mqtt_probe.decode_varint(b"\x30\xff\xff\xff\xff\x01", 1)) is None


SNMP_RESPONSE = bytes.fromhex(
    "302902010104067075626c6963a21c0202162e020100020100301030"
    "0e06082b060102010101000402 6869".replace(" ", ""))


@FEW
@given(st.one_of(st.binary(max_size=300), mutated(SNMP_RESPONSE)),
       st.lists(st.integers(0, 300), max_size=12))  # OID arcs as BER decodes them
def test_snmp_walk_replies_and_rows(data: bytes, index: list[int]) -> None:
    snmp.parse_next_response(data)  # None on anything malformed, by contract
    values = (data.decode("latin-1"), 1, None)
    tables = {table: [(index, value) for value in values]
              for table in ("groups", "views", "access")}
    assert snmp.write_capability(tables)[0] in ("write", "no-write", "unknown")
    _clean(lambda: snmp.oid_tuple(data.decode("latin-1")))


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutated(adb.connect_message())))
def test_adb_tftp_and_binary_iot_replies(data: bytes) -> None:
    header = adb.parse_header(data)
    if header is not None:
        assert header.name
    banner = adb.parse_banner(data)
    assert all(len(value) <= 256 for value in banner.values())
    packet = tftp.parse_packet(data)
    if packet is not None:
        tftp.looks_like_tftp(data)
    udp.tftp_stop_transfer(data)
    for protocol in iot_tcp.PROTOCOLS.values():
        protocol.complete(data)
        protocol.recognise(data)
    _clean(lambda: udp.dns_name(data, 0))
    udp.coap_resources(data.decode("latin-1"))


# --------------------------------------------------------------------------- XML and security.txt

WAN_DESCRIPTION = (
    b'<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><serviceList>'
    b"<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
    b"<controlURL>/ctl/IPConn</controlURL><SCPDURL>/scpd.xml</SCPDURL></service>"
    b"</serviceList></device></root>")
XML_ATTACKS = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;">]><root>&c;</root>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>',
    b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.134.0.1/evil.dtd"><root/>',
)


@FUZZ
@given(st.one_of(st.binary(max_size=600), mutated(WAN_DESCRIPTION),
                 st.sampled_from(XML_ATTACKS)))
def test_upnp_control_documents(data: bytes) -> None:
    services = _clean(lambda: upnp_probe.parse_wan_services(data, "http://127.133.0.1:49152/d"))
    for service in services or []:
        assert len(service.service_type) <= 128
    actions = _clean(lambda: upnp_probe.parse_actions(data))
    assert actions is None or len(actions) <= upnp_probe.MAX_ACTIONS
    _clean(lambda: upnp_probe.parse_soap_reply(data))


def test_xml_entities_and_dtds_are_refused() -> None:
    for attack in XML_ATTACKS:
        with pytest.raises(ValueError):
            upnp_probe.parse_wan_services(attack, "http://127.133.0.1/")
        with pytest.raises(ValueError):
            upnp_probe.parse_soap_reply(attack)


@FUZZ
@given(st.text(max_size=600))
def test_security_txt(text: str) -> None:
    parsed = disclosure.parse_security_txt(text, NOW)
    assert parsed is not None
    disclosure.version_tokens(text)
