"""MQTT, SNMP and RTSP probes against in-process fake devices on 127.96.2.0/24.

Each fake counts what reaches it (CONNECTs with credentials, SUBSCRIBEs, SNMP SetRequests,
RTSP requests with an Authorization header) so the tests can fail when a probe oversteps: a 4th
attempt after a lockout, a subscription outside the intrusive level, a write.
Fakes check digests and parse packets with their own code, never the probe's helpers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlparse

import pytest

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeSettings, Target
from probes.mqtt import (
    MqttAnonymous,
    MqttDefaultCredentials,
    MqttProtocolError,
    decode_varint,
    parse_publish,
    split_packet,
    subscribe_packet,
)
from probes.registry import LoadedProbe
from probes.rtsp import (
    Challenge,
    RtspDefaultCredentials,
    RtspUnauthenticated,
    authorization,
    digest_response,
    parse_challenges,
    pick_challenge,
)
from probes.snmp import SnmpDefaultCommunity, parse_next_response, write_capability
from profiles import Authentication
from profiles.credentials import CredentialEntry, CredentialStore
from scanner.lab import LabCertificateAuthority
from scanner.models import Device, Intrusiveness, Service, Severity
from scanner.net import REDACTED, Limits, Network, Transcript
from tests import fakes
from tests.helpers import ScanRunner, fast_profile, safe_scope

NET = "127.96.2"
MQTT_PORT = 1883
RTSP_PORT = 554
SNMP_PORT = 161 if os.geteuid() == 0 else 16161  # 161 needs root; the probe follows the port
TEST_DEADLINE = 20.0  # no single probe run may take longer

# --- running a probe directly ---------------------------------------------------------------


@dataclass
class Run:
    facts: Facts
    observations: list[Observation]
    transcript: Transcript
    seconds: float

    @property
    def keys(self) -> list[str]:
        return [o.key for o in self.observations]

    def evidence(self) -> str:
        return "\n".join(e.data for e in self.transcript.exchanges)


def credentials(protocol: str, *pairs: tuple[str, str]) -> CredentialStore:
    return CredentialStore([CredentialEntry(vendor="generic", protocol=protocol, username=u,
                                            password=p, source="test data")
                            for u, p in pairs])


async def run_probe(probe: Probe, address: str, port: int, protocol: str, *,
                    transport: str = "tcp", store: CredentialStore | None = None,
                    cap: Intrusiveness = Intrusiveness.AUTH_ATTEMPT, per_account: int = 3,
                    read_timeout: float = 1.0) -> Run:
    service = Service(port=port, transport=transport, protocol=protocol)
    target = Target(Device(address=address, services=[service]), service)
    network = Network(safe_scope(address),
                      Limits(connect_timeout=1.0, read_timeout=read_timeout, rate=1000.0))
    settings = ProbeSettings(
        credentials=store or CredentialStore(()), intrusiveness_cap=cap,
        authentication=Authentication(spacing=0, max_per_account=per_account))
    transcript = Transcript()
    started = time.monotonic()
    try:
        async with asyncio.timeout(TEST_DEADLINE):
            facts = await probe.collect(ProbeContext(target, network, transcript, settings))
    finally:
        network.close()
    return Run(facts, probe.evaluate(target, facts), transcript, time.monotonic() - started)


@contextlib.asynccontextmanager
async def serving(start: Awaitable[fakes.FakeServer]) -> AsyncIterator[fakes.FakeServer]:
    server = await start
    try:
        yield server
    finally:
        await server.close()


def serve(address: str, port: int,
          behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
          ) -> Awaitable[fakes.FakeServer]:
    return fakes._serve(address, port, behaviour)


# --- MQTT fake broker (its own parser) ------------------------------------------------------


async def _mqtt_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length = 0
    for shift in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << (7 * shift)
        if not byte & 0x80:
            break
    if length > 65536:
        raise ValueError("too long for the fake")
    return first, await reader.readexactly(length)


def _mqtt_connect_fields(body: bytes) -> tuple[int, str | None, str | None]:
    position = 2 + int.from_bytes(body[:2], "big")
    level, flags = body[position], body[position + 1]
    position += 4
    if level == 5:
        position += 1 + body[position]  # our probe sends short properties

    def string() -> str:
        nonlocal position
        size = int.from_bytes(body[position:position + 2], "big")
        text = body[position + 2:position + 2 + size].decode()
        position += 2 + size
        return text

    string()  # client id
    username = string() if flags & 0x80 else None
    password = string() if flags & 0x40 else None
    return level, username, password


def _mqtt_packet(first: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes((first,)) + bytes(encoded) + body


PAYLOAD_MARK = "PRIVATE-PAYLOAD-7f3a"


@dataclass
class Broker:
    anonymous: bool = False
    accounts: frozenset[tuple[str, str]] = frozenset()
    accept_any: bool = False
    lock_after: int | None = None
    levels: tuple[int, ...] = (4, 5)
    retained: tuple[tuple[str, bytes], ...] = ()
    huge_connack: bool = False
    huge_publish: bool = False
    slow_after: int | None = None
    # what reached the fake
    connects: int = 0
    credential_attempts: int = 0
    refused_after_lock: int = 0
    subscribes: int = 0
    failures: int = 0
    passwords: list[str | None] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.lock_after is not None and self.failures >= self.lock_after:
            self.refused_after_lock += 1
            return  # locked: closed at once, no CONNACK
        first, body = await _mqtt_read(reader)
        if first >> 4 != 1:
            return
        self.connects += 1
        level, username, password = _mqtt_connect_fields(body)
        if self.huge_connack:  # claims 256 MB, then a little filler; never the 256 MB
            writer.write(b"\x20\xff\xff\xff\x7f" + b"\x00" * 65536)
            await writer.drain()
            await reader.read(1)
            return
        if level not in self.levels:
            writer.write(b"\x20\x02\x00\x01")  # unacceptable protocol version
            return
        if username is not None:
            self.credential_attempts += 1
            self.passwords.append(password)
            if self.slow_after is not None and self.credential_attempts > self.slow_after:
                await asyncio.sleep(1.5)
        ok = self.anonymous if username is None else (
            self.accept_any or (username, password or "") in self.accounts)
        if not ok and username is not None:
            self.failures += 1
        code = 0 if ok else ((0x86 if level == 5 else 4) if username is not None
                             else (0x87 if level == 5 else 5))
        writer.write(b"\x20\x03\x00" + bytes((code, 0)) if level == 5
                     else b"\x20\x02\x00" + bytes((code,)))
        await writer.drain()
        if not ok:
            return
        properties = b"\x00" if level == 5 else b""
        for _ in range(20):
            kind, body = await _mqtt_read(reader)
            if kind >> 4 == 0xE:
                return
            if kind == 0x82:
                self.subscribes += 1
                writer.write(_mqtt_packet(0x90, body[:2] + properties + b"\x00"))
                for topic, payload in self.retained:
                    publish = len(topic).to_bytes(2, "big") + topic.encode() + properties
                    writer.write(_mqtt_packet(0x31, publish + payload))
                if self.huge_publish:
                    writer.write(b"\x31\xff\xff\xff\x7f\x00\x01a" + b"x" * 4096)
                await writer.drain()


RETAINED = (("home/livingroom/temp", f"21.5 {PAYLOAD_MARK}".encode()),
            ("home/door/lock", f"unlocked {PAYLOAD_MARK}".encode()),
            ("cam/1/motion", f"1 {PAYLOAD_MARK}".encode()))


async def mqtt_run(probe: Probe, address: str, broker: Broker, **options: Any) -> Run:
    async with serving(serve(address, MQTT_PORT, broker)):
        return await run_probe(probe, address, MQTT_PORT, "mqtt", **options)


# --- MQTT: pure parsing ---------------------------------------------------------------------


def test_mqtt_remaining_length_is_bounded() -> None:
    assert decode_varint(b"\x20\x7f", 1) == (127, 1)
    assert decode_varint(b"\x20\xff\xff\xff\x7f", 1) == (268_435_455, 4)
    assert decode_varint(b"\x20\xff\xff", 1) is None  # incomplete: wait for more
    with pytest.raises(MqttProtocolError):
        decode_varint(b"\x20\xff\xff\xff\xff\x01", 1)  # a 5th length byte
    with pytest.raises(MqttProtocolError, match="claims 268435455"):
        split_packet(b"\x30\xff\xff\xff\x7f")  # refused before any body arrives
    assert split_packet(b"\x20\x02\x00") is None
    assert split_packet(b"\x20\x02\x00\x05\x90") == (0x20, b"\x00\x05", 4)


def test_mqtt_publish_keeps_topic_and_size_only() -> None:
    body = b"\x00\x03a/b" + b"hello"
    assert parse_publish(0x31, body).topic == "a/b"
    assert parse_publish(0x31, body).payload_size == 5
    assert parse_publish(0x31, body).retain
    qos1 = b"\x00\x03a/b\x00\x07" + b"hi"
    assert parse_publish(0x32, qos1).payload_size == 2
    v5 = b"\x00\x03a/b\x02\x01\x01" + b"hey"
    assert parse_publish(0x30, v5, level=5).payload_size == 3
    with pytest.raises(MqttProtocolError):
        parse_publish(0x30, b"\x00\x09a/b")
    assert subscribe_packet("#") == b"\x82\x06\x00\x01\x00\x01#\x00"
    assert subscribe_packet("#", level=5) == b"\x82\x07\x00\x01\x00\x00\x01#\x00"


# --- MQTT: anonymous access -----------------------------------------------------------------


async def test_mqtt_anonymous_broker_is_found_without_subscribing_when_safe() -> None:
    broker = Broker(anonymous=True, retained=RETAINED)
    for cap in (Intrusiveness.SAFE, Intrusiveness.AUTH_ATTEMPT):
        run = await mqtt_run(MqttAnonymous(), f"{NET}.10", broker, cap=cap)
        assert run.keys == ["mqtt-anonymous"]
        assert run.observations[0].facts["subscription"].startswith("not attempted")
    assert broker.subscribes == 0  # SUBSCRIBE only at the intrusive level


async def test_mqtt_anonymous_subscription_when_intrusive_records_no_payloads() -> None:
    broker = Broker(anonymous=True, retained=RETAINED)
    run = await mqtt_run(MqttAnonymous(), f"{NET}.11", broker, cap=Intrusiveness.INTRUSIVE)
    assert broker.subscribes == 1
    assert run.keys == ["mqtt-anonymous"]
    subscription = run.facts["subscription"]
    assert subscription["messages"] == 3
    assert subscription["topics"] == [topic for topic, _ in RETAINED]
    assert subscription["payload_sizes"] == [len(payload) for _, payload in RETAINED]
    assert PAYLOAD_MARK not in run.evidence()  # payloads are personal data: sizes only
    assert PAYLOAD_MARK not in str(run.facts) + str(run.observations)
    assert "home/door/lock" in run.observations[0].facts["sample_topics"]
    assert run.seconds < 5.0  # bounded by the 3 s subscription window


async def test_mqtt_subscription_stops_at_message_and_byte_caps() -> None:
    many = tuple((f"sensor/{i}", b"1") for i in range(300))
    run = await mqtt_run(MqttAnonymous(), f"{NET}.12", Broker(anonymous=True, retained=many),
                         cap=Intrusiveness.INTRUSIVE)
    assert run.facts["subscription"]["messages"] == 200
    assert run.facts["subscription"]["stopped"] == "message limit"
    assert len(run.facts["subscription"]["topics"]) == 10
    big = tuple((f"image/{i}", b"\xff" * 10_000) for i in range(20))
    run = await mqtt_run(MqttAnonymous(), f"{NET}.13", Broker(anonymous=True, retained=big),
                         cap=Intrusiveness.INTRUSIVE)
    subscription = run.facts["subscription"]
    assert subscription["stopped"].startswith("byte limit")
    assert subscription["payload_bytes"] <= 64 * 1024
    assert run.keys == ["mqtt-anonymous"]


async def test_mqtt_hostile_publish_length_is_never_read() -> None:
    run = await mqtt_run(MqttAnonymous(), f"{NET}.14",
                         Broker(anonymous=True, retained=RETAINED[:1], huge_publish=True),
                         cap=Intrusiveness.INTRUSIVE)
    assert run.keys == ["mqtt-anonymous"]  # the finding survives the hostile packet
    assert run.facts["subscription"]["messages"] == 1
    assert "byte limit" in run.facts["subscription"]["stopped"]
    assert run.seconds < 3.5


async def test_mqtt_hostile_connack_length_is_refused_without_allocating() -> None:
    tracemalloc.start()
    try:
        run = await mqtt_run(MqttAnonymous(), f"{NET}.15", Broker(huge_connack=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.facts["code"] is None and "claims 268435455" in run.facts["detail"]
    assert run.observations == []
    assert peak < 8 * 1024 * 1024  # nowhere near the 256 MB claimed
    assert run.seconds < 2.0
    with pytest.raises(ConnectionError, match="no CONNACK"):
        await mqtt_run(MqttDefaultCredentials(), f"{NET}.15", Broker(huge_connack=True),
                       store=credentials("mqtt", ("admin", "admin")))


async def test_mqtt_v5_only_broker_is_retried_at_level_5() -> None:
    broker = Broker(anonymous=True, levels=(5,), retained=RETAINED[:2])
    run = await mqtt_run(MqttAnonymous(), f"{NET}.16", broker, cap=Intrusiveness.INTRUSIVE)
    assert run.facts["level"] == 5 and run.keys == ["mqtt-anonymous"]
    assert run.observations[0].facts["mqtt_version"] == "5.0"
    assert run.facts["subscription"]["messages"] == 2
    assert broker.connects == 2  # 3.1.1 refused, then 5.0


async def test_mqtt_over_tls_is_reached_with_tls() -> None:
    address, broker = f"{NET}.19", Broker(anonymous=True)
    context = LabCertificateAuthority().server_context("broker.local", address)

    async def tls_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await writer.start_tls(context, ssl_handshake_timeout=2.0)
        await broker(reader, writer)

    async with serving(serve(address, 8883, tls_broker)):
        service = Service(port=8883, transport="tcp", protocol="mqtt", tls=True)
        target = Target(Device(address=address, services=[service]), service)
        network = Network(safe_scope(address), Limits(connect_timeout=1.0, read_timeout=1.0))
        try:
            facts = await MqttAnonymous().collect(ProbeContext(target, network, Transcript()))
        finally:
            network.close()
    [found] = MqttAnonymous().evaluate(target, facts)
    assert "over TLS" in found.summary and broker.connects == 1


async def test_mqtt_garbage_and_silence_end_in_errors_not_findings() -> None:
    address = f"{NET}.17"
    async with serving(fakes.garbage(address, MQTT_PORT)):
        run = await run_probe(MqttAnonymous(), address, MQTT_PORT, "mqtt")
        assert run.observations == [] and run.facts["code"] is None
        with pytest.raises(ConnectionError):
            await run_probe(MqttDefaultCredentials(), address, MQTT_PORT, "mqtt",
                            store=credentials("mqtt", ("admin", "admin")))
    address = f"{NET}.18"
    async with serving(fakes.silent(address, MQTT_PORT)):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await run_probe(MqttAnonymous(), address, MQTT_PORT, "mqtt", read_timeout=0.5)
        assert time.monotonic() - started < 2.0


# --- MQTT: default credentials --------------------------------------------------------------


async def test_mqtt_refused_anonymous_but_default_credentials_accepted() -> None:
    broker = Broker(accounts=frozenset({("iot", "iot")}))
    run = await mqtt_run(MqttAnonymous(), f"{NET}.20", broker)
    assert run.observations == [] and run.facts["code"] == 5
    store = credentials("mqtt", ("admin", "admin"), ("iot", "iot"), ("admin", "password"))
    run = await mqtt_run(MqttDefaultCredentials(), f"{NET}.20", broker, store=store)
    assert run.keys == ["default-credential"]
    found = run.observations[0]
    assert found.facts["username"] == "iot" and found.facts["password"] == REDACTED
    assert found.facts["negative_control"] == "failure"
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure", "success"]
    assert "CONNACK 0x00" in run.facts["success"]["detail"]
    assert "iot" not in [e.data for e in run.transcript.exchanges if "MQTT" in e.data][-1][-3:]
    assert b"iot" not in REDACTED.encode()


async def test_mqtt_hardened_broker_gives_no_finding() -> None:
    broker = Broker(accounts=frozenset({("iot", "Zq8-unique-7")}))
    store = credentials("mqtt", ("admin", "admin"), ("iot", "iot"))
    run = await mqtt_run(MqttDefaultCredentials(), f"{NET}.21", broker, store=store)
    assert run.observations == [] and broker.credential_attempts == 2
    assert all(a["outcome"] == "failure" for a in run.facts["attempts"])


async def test_mqtt_accept_everything_is_not_a_default_credential() -> None:
    broker = Broker(accept_any=True)
    run = await mqtt_run(MqttDefaultCredentials(), f"{NET}.22", broker,
                         store=credentials("mqtt", ("admin", "admin")))
    assert run.keys == ["authentication-not-enforced"]
    assert broker.credential_attempts == 2  # the candidate and the random negative control


async def test_mqtt_lockout_after_three_stops_the_flow() -> None:
    broker = Broker(accounts=frozenset({("admin", "right")}), lock_after=3)
    store = credentials("mqtt", *[("admin", f"wrong{i}") for i in range(6)])
    run = await mqtt_run(MqttDefaultCredentials(), f"{NET}.23", broker, store=store,
                         per_account=10)
    assert broker.credential_attempts == 3  # never a 4th password on the account
    assert broker.refused_after_lock == 1  # one refused connection, then the flow stopped
    assert run.facts["lockout"] and run.observations == []
    # and with the default budget a 4th password on one account is never even tried
    plain = Broker(accounts=frozenset({("admin", "right")}))
    await mqtt_run(MqttDefaultCredentials(), f"{NET}.24", plain, store=store)
    assert plain.credential_attempts == 3


async def test_mqtt_slowing_broker_makes_the_flow_back_off() -> None:
    broker = Broker(accounts=frozenset({("admin", "right")}), slow_after=3)
    store = credentials("mqtt", *[(f"user{i}", "x") for i in range(6)])
    run = await mqtt_run(MqttDefaultCredentials(), f"{NET}.25", broker, store=store,
                         read_timeout=3.0)
    assert "slowed" in str(run.facts["lockout"])
    assert broker.credential_attempts == 5  # backs off after two slow answers in a row


# --- SNMP fake agent (scapy builds the replies) ---------------------------------------------

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
GROUP_COLUMN = "1.3.6.1.6.3.16.1.2.1.3"
WRITE_COLUMN = "1.3.6.1.6.3.16.1.4.1.6"
VIEW_COLUMN = "1.3.6.1.6.3.16.1.5.2.1.4"


def _octets(text: str) -> str:
    return ".".join(map(str, (len(text), *text.encode())))


def vacm_table(*, writable: bool, names: tuple[str, ...] = ("comm1",)) -> dict[str, str | int]:
    """net-snmp style VACM rows (what `rocommunity`/`rwcommunity` create)."""
    table: dict[str, str | int] = {}
    for number, name in enumerate(names, 1):
        group = f"grpcomm{number}"
        for model in (1, 2):
            table[f"{GROUP_COLUMN}.{model}.{_octets(name)}"] = group
        table[f"{WRITE_COLUMN}.{_octets(group)}.0.0.1"] = "_all_" if writable else "none"
    table[f"{VIEW_COLUMN}.{_octets('_all_')}.1.1"] = 1
    table[f"{VIEW_COLUMN}.{_octets('_none_')}.1.1"] = 2
    return table


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in oid.strip(".").split("."))


class SnmpAgent(asyncio.DatagramProtocol):
    def __init__(self, communities: set[str] | None, table: dict[str, str | int] | None = None,
                 versions: tuple[int, ...] = (0, 1), garbage: bool = False) -> None:
        self.communities = communities  # None: any community
        self.table = {SYS_DESCR: "Acme IPC firmware 2.1 (busybox)", **(table or {})}
        self.versions = versions
        self.garbage = garbage
        self.datagrams = 0
        self.answered = 0
        self.sets = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # 3.11: not a subclass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        from scapy.asn1.asn1 import ASN1_INTEGER, ASN1_NULL, ASN1_OID, ASN1_STRING
        from scapy.layers.snmp import SNMP, SNMPget, SNMPnext, SNMPresponse, SNMPset, SNMPvarbind

        assert self.transport is not None
        self.datagrams += 1
        if self.garbage:
            self.transport.sendto(b"\x30\x82\xff\xff" + os.urandom(40), addr)
            return
        packet = SNMP(data)
        version, community = int(packet.version.val), packet.community.val.decode()
        if version not in self.versions or (
                self.communities is not None and community not in self.communities):
            return  # wrong community: dropped silently, as agents do
        pdu = packet.PDU
        if isinstance(pdu, SNMPset):
            self.sets += 1
            return
        asked = str(pdu.varbindlist[0].oid.val).strip(".")
        error = 0
        if isinstance(pdu, SNMPnext):
            later = sorted((k for k in self.table if _oid_key(k) > _oid_key(asked)), key=_oid_key)
            oid = later[0] if later else None
        elif isinstance(pdu, SNMPget):
            oid = asked if asked in self.table else None
        else:
            return
        if oid is None:
            if version == 0:
                error, varbind = 2, SNMPvarbind(oid=ASN1_OID(asked))
            else:
                varbind = SNMPvarbind(oid=ASN1_OID(asked), value=None, endOfMibView=ASN1_NULL(None))
        else:
            value = self.table[oid]
            varbind = SNMPvarbind(oid=ASN1_OID(oid), value=ASN1_INTEGER(value)
                                  if isinstance(value, int) else ASN1_STRING(value.encode()))
        self.answered += 1
        reply = SNMP(version=version, community=community.encode(), PDU=SNMPresponse(
            id=pdu.id.val, error=error, error_index=1 if error else 0, varbindlist=[varbind]))
        self.transport.sendto(bytes(reply), addr)


async def snmp_run(address: str, agent: SnmpAgent, store: CredentialStore) -> Run:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: agent,
                                                       local_addr=(address, SNMP_PORT))
    try:
        return await run_probe(SnmpDefaultCommunity(), address, SNMP_PORT, "snmp",
                               transport="udp", store=store, read_timeout=0.5)
    finally:
        transport.close()


COMMUNITIES = credentials("snmp", ("", "private"), ("", "public"), ("", "admin"))


async def test_snmp_public_community_read_only_proved_by_vacm() -> None:
    agent = SnmpAgent({"public"}, vacm_table(writable=False))
    run = await snmp_run(f"{NET}.30", agent, COMMUNITIES)
    assert run.keys == ["snmp-default-community"]
    found = run.observations[0]
    assert found.severity is Severity.HIGH
    assert found.facts["write_verdict"] == "no-write"
    assert "read access confirmed" in found.summary
    assert found.facts["negative_control"] == "failure"
    assert "SNMPv2c" in run.facts["success"]["detail"]
    assert "Acme IPC" in run.facts["success"]["detail"]
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure", "success"]
    assert agent.sets == 0  # never a SetRequest
    assert "public" not in run.evidence()  # the community is redacted in the evidence


async def test_snmp_write_access_reported_only_when_a_read_proves_it() -> None:
    agent = SnmpAgent({"public"}, vacm_table(writable=True))
    run = await snmp_run(f"{NET}.31", agent, COMMUNITIES)
    found = run.observations[0]
    assert found.key == "snmp-default-community"
    assert found.severity is Severity.CRITICAL
    assert found.facts["write_verdict"] == "write" and "write access proven" in found.summary
    assert agent.sets == 0
    # two communities configured: the tables cannot say which one we hold
    agent = SnmpAgent({"public"}, vacm_table(writable=True, names=("comm1", "comm2")))
    run = await snmp_run(f"{NET}.32", agent, COMMUNITIES)
    assert run.observations[0].facts["write_verdict"] == "unknown"
    assert "write access not tested (we never write)" in run.observations[0].summary
    assert run.observations[0].severity is Severity.HIGH
    # no VACM visible with this community
    run = await snmp_run(f"{NET}.33", SnmpAgent({"public"}), COMMUNITIES)
    assert "write access not tested (we never write)" in run.observations[0].summary


async def test_snmp_v1_only_agent_is_reached_by_the_fallback() -> None:
    agent = SnmpAgent({"public"}, versions=(0,))
    run = await snmp_run(f"{NET}.34", agent, COMMUNITIES)
    assert run.keys == ["snmp-default-community"]
    assert "SNMPv1" in run.facts["success"]["detail"]


async def test_snmp_any_community_is_authentication_not_enforced() -> None:
    run = await snmp_run(f"{NET}.35", SnmpAgent(None), COMMUNITIES)
    assert run.keys == ["authentication-not-enforced"]
    assert "snmp-default-community" not in run.keys


async def test_snmp_silence_is_failure_not_lockout() -> None:
    agent = SnmpAgent(set())
    store = credentials("snmp", *[("", f"community{i}") for i in range(5)])
    run = await snmp_run(f"{NET}.36", agent, store)
    assert run.observations == [] and run.facts["lockout"] is None
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure"] * 5  # beyond 3 per ""
    assert agent.datagrams == 10  # v2c and v1 for each community
    assert run.seconds < 5.0


async def test_snmp_garbage_replies_are_failures() -> None:
    run = await snmp_run(f"{NET}.37", SnmpAgent(None, garbage=True), COMMUNITIES)
    assert run.observations == []
    assert all(a["outcome"] == "failure" for a in run.facts["attempts"])


def test_snmp_write_capability_is_pure_and_conservative() -> None:
    def rows(table: dict[str, str | int], column: str) -> list[tuple[list[int], Any]]:
        return [(list(_oid_key(k)[len(_oid_key(column)):]), v) for k, v in table.items()
                if k.startswith(column + ".")]

    def tables(table: dict[str, str | int]) -> dict[str, list[tuple[list[int], Any]]]:
        return {"groups": rows(table, GROUP_COLUMN), "access": rows(table, WRITE_COLUMN),
                "views": rows(table, VIEW_COLUMN)}

    assert write_capability(tables(vacm_table(writable=True)))[0] == "write"
    assert write_capability(tables(vacm_table(writable=False)))[0] == "no-write"
    assert write_capability(tables(vacm_table(writable=True, names=("a", "b"))))[0] == "unknown"
    assert write_capability({})[0] == "unknown"
    excluded_only = vacm_table(writable=True)
    excluded_only[f"{VIEW_COLUMN}.{_octets('_all_')}.1.1"] = 2  # the view includes nothing
    assert write_capability(tables(excluded_only))[0] == "no-write"
    assert parse_next_response(b"\x30\x03\x02\x01") is None


# --- RTSP fake server (its own digest check) ------------------------------------------------

SDP = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Camera 1\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"


def _fake_digest_ok(fields: dict[str, str], password: str, method: str) -> bool:
    ha1 = hashlib.md5(f"{fields['username']}:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{fields['uri']}".encode()).hexdigest()
    if fields.get("qop"):
        text = f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}"
    else:
        text = f"{ha1}:{fields['nonce']}:{ha2}"
    return hashlib.md5(text.encode()).hexdigest() == fields.get("response")


@dataclass
class Camera:
    mode: str  # "open", "basic", "digest", "any"
    open_paths: tuple[str, ...] = ("/live",)
    user: str = "admin"
    password: str = "admin"
    qop: bool = False
    lock_after: int | None = None
    requests: int = 0
    auth_attempts: int = 0
    schemes: list[str] = field(default_factory=list)
    failures: int = 0
    refused_after_lock: int = 0
    nonces: set[str] = field(default_factory=set)

    def _challenge(self) -> list[str]:
        if self.mode == "digest":
            nonce = os.urandom(8).hex()
            self.nonces.add(nonce)
            qop = ', qop="auth"' if self.qop else ""
            return ['Basic realm="IPC"', f'Digest realm="IPC", nonce="{nonce}"{qop}']
        return ['Basic realm="IPC"']

    def _authorized(self, header: str) -> bool:
        if self.mode == "any":
            return bool(header)
        scheme, _, rest = header.partition(" ")
        if self.mode == "basic" and scheme == "Basic":
            return base64.b64decode(rest).decode() == f"{self.user}:{self.password}"
        if self.mode == "digest" and scheme == "Digest":
            fields = {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]*)', rest)}
            return (fields.get("username") == self.user and fields.get("nonce") in self.nonces
                    and _fake_digest_ok(fields, self.password, "DESCRIBE"))
        return False

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.lock_after is not None and self.failures >= self.lock_after:
            self.refused_after_lock += 1
            return  # locked: every new connection is closed at once
        for _ in range(10):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, url, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            self.requests += 1
            cseq = headers.get("cseq", "0")
            auth = headers.get("authorization", "")
            if auth:
                self.auth_attempts += 1
                self.schemes.append(auth.split(" ", 1)[0])
            extra: list[str] = []
            body = b""
            if method == "OPTIONS":
                status = "200 OK"
                extra = ["Public: OPTIONS, DESCRIBE"]
            elif self.mode == "open":
                status = "200 OK" if urlparse(url).path in self.open_paths else "404 Not Found"
                body = SDP if status.startswith("200") else b""
            elif self._authorized(auth):
                status, body = "200 OK", SDP
            else:
                if auth:
                    self.failures += 1
                status = "401 Unauthorized"
                extra = [f"WWW-Authenticate: {value}" for value in self._challenge()]
            if body:
                extra += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
            writer.write(("\r\n".join([f"RTSP/1.0 {status}", f"CSeq: {cseq}", *extra])
                          + "\r\n\r\n").encode() + body)
            await writer.drain()


async def rtsp_run(probe: Probe, address: str, camera: Camera, **options: Any) -> Run:
    async with serving(serve(address, RTSP_PORT, camera)):
        return await run_probe(probe, address, RTSP_PORT, "rtsp", **options)


# --- RTSP: pure helpers ---------------------------------------------------------------------


def test_digest_matches_the_rfc_2617_vector() -> None:
    # RFC 2617 section 3.5
    assert digest_response("Mufasa", "Circle Of Life", "testrealm@host.com",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html",
                           qop="auth", nc="00000001",
                           cnonce="0a4f113b") == "6629fae49393a05397450978507c4ef1"
    # RFC 2069 form (no qop), as most cameras use: MD5(HA1:nonce:HA2)
    ha1 = hashlib.md5(b"admin:IPC:admin").hexdigest()
    ha2 = hashlib.md5(b"DESCRIBE:rtsp://127.96.2.1:554/").hexdigest()
    assert digest_response("admin", "admin", "IPC", "abc", "DESCRIBE",
                           "rtsp://127.96.2.1:554/") == \
        hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()


def test_challenges_prefer_digest_and_header_is_well_formed() -> None:
    found = parse_challenges(['Basic realm="IPC"',
                              'Digest realm="IP Camera", nonce="n1", qop="auth,auth-int", '
                              'opaque="o"'])
    chosen = pick_challenge(found)
    assert chosen is not None and chosen.scheme == "digest"
    assert chosen.params == {"realm": "IP Camera", "nonce": "n1", "qop": "auth,auth-int",
                             "opaque": "o"}
    assert [c.scheme for c in parse_challenges(['Digest realm="r", nonce="n", Basic '
                                                'realm="r"'])] == ["digest", "basic"]
    header = authorization(chosen, "admin", "pw", "DESCRIBE", "rtsp://h/", cnonce="c0")
    assert header.startswith("Digest ") and 'opaque="o"' in header and "qop=auth," in header
    assert authorization(Challenge("basic", {}), "admin", "12345", "DESCRIBE", "u") == \
        "Basic " + base64.b64encode(b"admin:12345").decode()


# --- RTSP: unauthenticated streams ----------------------------------------------------------


async def test_rtsp_open_stream_is_found_on_a_common_path() -> None:
    camera = Camera("open")
    run = await rtsp_run(RtspUnauthenticated(), f"{NET}.50", camera)
    assert run.keys == ["unauthenticated-access"]
    assert run.observations[0].facts["url"] == f"rtsp://{NET}.50:{RTSP_PORT}/live"
    assert run.observations[0].facts["media"] == "video"
    assert camera.requests == 2  # "/" then "/live": stops at the first open stream


async def test_rtsp_protected_everywhere_passes_within_five_requests() -> None:
    camera = Camera("basic")
    run = await rtsp_run(RtspUnauthenticated(), f"{NET}.51", camera)
    assert run.observations == []
    assert camera.requests == 5 and camera.auth_attempts == 0
    # a 200 that is not SDP is not a stream
    run = await rtsp_run(RtspUnauthenticated(), f"{NET}.52", Camera("any"))
    assert run.observations == []


async def test_rtsp_misbehaving_servers_end_without_findings() -> None:
    address = f"{NET}.53"
    async with serving(fakes.garbage(address, RTSP_PORT)):
        run = await run_probe(RtspUnauthenticated(), address, RTSP_PORT, "rtsp")
        assert run.observations == []
        run = await run_probe(RtspDefaultCredentials(), address, RTSP_PORT, "rtsp",
                              store=credentials("rtsp", ("admin", "admin")))
        assert run.observations == [] and run.facts["skipped"]
    address = f"{NET}.54"
    async with serving(fakes.silent(address, RTSP_PORT)):
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await run_probe(RtspUnauthenticated(), address, RTSP_PORT, "rtsp", read_timeout=0.5)
        assert time.monotonic() - started < 2.0


# --- RTSP: default credentials --------------------------------------------------------------


async def test_rtsp_basic_default_credentials() -> None:
    camera = Camera("basic", password="12345")
    store = credentials("rtsp", ("admin", "admin"), ("admin", "12345"))
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.55", camera, store=store)
    assert run.keys == ["default-credential"]
    assert run.facts["path"] == "/" and run.facts["scheme"] == "basic"
    assert run.observations[0].facts["negative_control"] == "failure"
    assert camera.schemes == ["Basic"] * 3  # two candidates and the control
    evidence = run.evidence()
    assert "Authorization: Basic " + REDACTED in evidence
    assert base64.b64encode(b"admin:12345").decode() not in evidence
    assert "12345" not in evidence


@pytest.mark.parametrize("qop", [False, True])
async def test_rtsp_digest_default_credentials(qop: bool) -> None:
    camera = Camera("digest", qop=qop)
    store = credentials("rtsp", ("admin", "1234"), ("admin", "admin"))
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.{56 + qop}", camera, store=store)
    assert run.keys == ["default-credential"]
    assert run.facts["scheme"] == "digest"
    assert set(camera.schemes) == {"Digest"}  # digest chosen over the Basic also offered
    assert "Digest" in run.facts["success"]["detail"]


async def test_rtsp_hardened_camera_gives_no_finding() -> None:
    camera = Camera("digest", password="Zk3-unique")
    store = credentials("rtsp", ("admin", "admin"), ("admin", "12345"))
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.58", camera, store=store)
    assert run.observations == [] and camera.auth_attempts == 2


async def test_rtsp_accept_everything_is_not_a_default_credential() -> None:
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.59", Camera("any"),
                         store=credentials("rtsp", ("admin", "admin")))
    assert run.keys == ["authentication-not-enforced"]


async def test_rtsp_lockout_after_three_stops_the_flow() -> None:
    camera = Camera("basic", password="right", lock_after=3)
    store = credentials("rtsp", *[("admin", f"wrong{i}") for i in range(6)])
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.60", camera, store=store,
                         per_account=10)
    assert camera.auth_attempts == 3
    assert camera.refused_after_lock == 1
    assert run.facts["lockout"] and run.observations == []


async def test_rtsp_open_camera_needs_no_credential_probe() -> None:
    camera = Camera("open", open_paths=("/", "/live", "/stream1", "/h264",
                                        "/Streaming/Channels/101"))
    run = await rtsp_run(RtspDefaultCredentials(), f"{NET}.61", camera,
                         store=credentials("rtsp", ("admin", "admin")))
    assert run.facts["skipped"] and camera.auth_attempts == 0 and run.observations == []


# --- through the engine: findings validate against the report schema ------------------------


async def test_engine_reports_mqtt_and_rtsp_findings(run_scan: ScanRunner) -> None:
    address = f"{NET}.70"
    broker, camera = Broker(anonymous=True, retained=RETAINED), Camera("open")
    async with serving(serve(address, MQTT_PORT, broker)), \
            serving(serve(address, RTSP_PORT, camera)):
        result = await run_scan(address, tcp=[MQTT_PORT, RTSP_PORT], profile=fast_profile(),
                                probes=[LoadedProbe(MqttAnonymous(), "tests 0", False),
                                        LoadedProbe(RtspUnauthenticated(), "tests 0", False)])
    kinds = {(f.check_id, f.port) for f in result.findings}
    assert ("mqtt-anonymous", MQTT_PORT) in kinds
    assert ("rtsp-unauthenticated", RTSP_PORT) in kinds
    assert not result.errors
    assert broker.subscribes == 0  # the engine's default cap is below intrusive
