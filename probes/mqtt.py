"""MQTT: brokers that accept anonymous clients, and brokers that accept default credentials.

Everything read from a broker is bounded: a packet's remaining length is a varint of at most 4
bytes, and a length above ``MAX_PACKET`` is refused before a byte of its body is read (a hostile
broker may claim 256 MB). The intrusive subscription to ``#`` records topics and payload sizes
only — payloads can be personal data and never enter the evidence.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import Attempt, CredentialProbe, Outcome
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import Connection
from scanner.protocols import mqtt

MAX_PACKET = 256 * 1024  # largest packet we agree to read
READ_CHUNK = 16 * 1024
SUBSCRIBE_SECONDS = 3.0
SUBSCRIBE_MAX_MESSAGES = 200
SUBSCRIBE_MAX_BYTES = 64 * 1024
SAMPLE_TOPICS = 10

PUBLISH = 0x3
SUBACK = 0x9
DISCONNECT = b"\xe0\x00"
# v3.1.1 return codes and v5 reason codes
BAD_VERSION = (0x01, 0x84)
BAD_CREDENTIALS_V311 = (0x04, 0x05)
BAD_CREDENTIALS_V5 = (0x86, 0x87)
# server unavailable (3.1.1), server unavailable, busy, banned (5.0): the broker stops serving us
UNAVAILABLE = (0x03, 0x88, 0x89, 0x8A)
V5_REASONS = {0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
              0x84: "unsupported protocol version", 0x85: "client identifier not valid",
              0x86: "bad user name or password", 0x87: "not authorised",
              0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned"}

MQTT_REFERENCES = (
    "https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html",
    "https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html",
    "https://mosquitto.org/documentation/authentication-methods/",
)


class MqttProtocolError(ValueError):
    """The peer broke the MQTT framing (or claimed a packet larger than we read)."""


def reason_text(level: int, code: int) -> str:
    if level == 5 and code in V5_REASONS:
        return V5_REASONS[code]
    return mqtt.CONNACK_REASONS_V311.get(code, f"code {code:#04x}")


def decode_varint(data: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """An MQTT variable byte integer at ``start``: (value, bytes used), None if incomplete.

    At most 4 bytes (the protocol's maximum, 268,435,455); a fifth continuation is malformed."""
    value = 0
    for index in range(4):
        if start + index >= len(data):
            return None
        byte = data[start + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    raise MqttProtocolError("remaining length longer than 4 bytes")


def split_packet(buffer: bytes | bytearray, max_length: int = MAX_PACKET
                 ) -> tuple[int, bytes, int] | None:
    """The first complete packet in ``buffer``: (first byte, body, bytes consumed), or None when
    more bytes are needed. A claimed length over ``max_length`` is refused at once, so the body
    of a hostile length is never waited for or stored."""
    if not buffer:
        return None
    parsed = decode_varint(buffer, 1)
    if parsed is None:
        return None
    length, used = parsed
    if length > max_length:
        raise MqttProtocolError(f"packet claims {length} bytes (cap {max_length}): not read")
    end = 1 + used + length
    if len(buffer) < end:
        return None
    return buffer[0], bytes(buffer[1 + used:end]), end



def subscribe_packet(topic_filter: str, packet_id: int = 1, level: int = 4) -> bytes:
    """SUBSCRIBE to one filter at QoS 0."""
    body = packet_id.to_bytes(2, "big")
    if level == 5:
        body += b"\x00"  # no properties
    # QoS 0 (v5: no-local and retain flags off)
    body += mqtt.encode_string(topic_filter.encode()) + b"\x00"
    return bytes((0x82,)) + mqtt.encode_varint(len(body)) + body


@dataclass(frozen=True)
class Publish:
    topic: str
    payload_size: int
    retain: bool


def parse_publish(first: int, body: bytes, level: int = 4) -> Publish:
    """Topic and payload size of a PUBLISH; the payload itself is not kept."""
    if len(body) < 2:
        raise MqttProtocolError("PUBLISH too short")
    topic_length = int.from_bytes(body[:2], "big")
    offset = 2 + topic_length
    if offset > len(body):
        raise MqttProtocolError("PUBLISH topic runs past the packet")
    topic = body[2:offset].decode("utf-8", "replace")
    if (first >> 1) & 0x03:  # QoS 1 or 2 carry a packet identifier
        offset += 2
    if level == 5:
        properties = decode_varint(body, offset)
        if properties is None:
            raise MqttProtocolError("PUBLISH properties truncated")
        offset += properties[1] + properties[0]
    if offset > len(body):
        raise MqttProtocolError("PUBLISH header runs past the packet")
    return Publish(topic[:200], len(body) - offset, bool(first & 0x01))


def connack_code(first: int, body: bytes, raw_head: bytes) -> int | None:
    """The CONNACK return/reason code (``parse_connack`` for the usual short form)."""
    if first >> 4 != mqtt.CONNACK >> 4:
        return None
    code = mqtt.parse_connack(raw_head + body)
    if code is None and len(body) >= 2:  # a v5 CONNACK whose properties need a longer length
        code = body[1]
    return code


class PacketReader:
    """Reads whole MQTT packets from a connection, bounded in bytes and time.

    With ``record`` off the bytes bypass the transcript (used while subscribed, so payloads —
    possibly personal data — are never stored); the caller records a summary instead."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buffer = bytearray()
        self.record = True

    async def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete MQTT packet in time")
        chunk = await self.conn.recv(max_bytes=READ_CHUNK, timeout=remaining, record=self.record)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        self.buffer.extend(chunk)

    async def packet(self, timeout: float, max_length: int = MAX_PACKET
                     ) -> tuple[int, bytes, bytes]:
        """(first byte, body, fixed header bytes) of the next packet."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = split_packet(self.buffer, max_length)
            if parsed is not None:
                first, body, consumed = parsed
                head = bytes(self.buffer[:consumed - len(body)])
                del self.buffer[:consumed]
                return first, body, head
            await self._fill(deadline)


@dataclass
class ConnectResult:
    level: int
    code: int | None  # None: the broker answered with something that is not a CONNACK
    detail: str
    conn: Connection | None = None  # left open when the CONNACK was 0 and keep_open was asked
    reader: PacketReader | None = None
    tried: list[str] = field(default_factory=list)


async def mqtt_connect(ctx: ProbeContext, username: str | None = None,
                       password: str | None = None, keep_open: bool = False) -> ConnectResult:
    """CONNECT at MQTT 3.1.1, then at 5.0 if the broker refuses the protocol level.

    Raises ConnectionError/TimeoutError when the broker closes or stays silent; a reply that is
    not a CONNACK comes back with ``code`` None."""
    tried: list[str] = []
    result = ConnectResult(4, None, "")
    for level in (4, 5):
        conn = await ctx.connect(tls=ctx.target.service.tls)
        keep = False
        try:
            await conn.send(mqtt.connect_packet(level, username=username, password=password))
            reader = PacketReader(conn)
            try:
                first, body, head = await reader.packet(ctx.network.limits.read_timeout,
                                                        max_length=1024)
            except MqttProtocolError as exc:
                tried.append(f"level {level}: {exc}")
                return ConnectResult(level, None, str(exc), tried=tried)
            code = connack_code(first, body, head)
            if code is None:
                tried.append(f"level {level}: not a CONNACK (first byte {first:#04x})")
                return ConnectResult(level, None, f"not a CONNACK (first byte {first:#04x})",
                                     tried=tried)
            tried.append(f"level {level}: CONNACK {code:#04x} ({reason_text(level, code)})")
            result = ConnectResult(level, code, f"CONNACK {code:#04x} "
                                                f"({reason_text(level, code)}), "
                                                f"MQTT {'5.0' if level == 5 else '3.1.1'}",
                                   tried=tried)
            if code == 0:
                if keep_open:
                    result.conn, result.reader, keep = conn, reader, True
                else:
                    await conn.send(DISCONNECT)
                return result
            if code not in BAD_VERSION:
                return result
        finally:
            if not keep:
                await conn.close()
    return result


async def read_subscription(ctx: ProbeContext, conn: Connection, reader: PacketReader,
                            level: int) -> dict[str, Any]:
    """SUBSCRIBE to ``#`` and count what arrives, within SUBSCRIBE_* bounds."""
    await conn.send(subscribe_packet("#", 1, level))
    reader.record = False  # PUBLISH payloads stay out of the evidence
    deadline = time.monotonic() + SUBSCRIBE_SECONDS
    topics: list[str] = []
    sizes: list[int] = []
    total = retained = 0
    suback: int | None = None
    stopped = "time limit"
    while True:
        if len(sizes) >= SUBSCRIBE_MAX_MESSAGES:
            stopped = "message limit"
            break
        room = SUBSCRIBE_MAX_BYTES - total
        remaining = deadline - time.monotonic()
        if room <= 0:
            stopped = "byte limit"
            break
        if remaining <= 0:
            break
        try:
            first, body, _ = await reader.packet(remaining, max_length=room)
        except TimeoutError:
            break
        except MqttProtocolError as exc:
            stopped = f"byte limit ({exc})" if "cap" in str(exc) else f"malformed: {exc}"
            break
        except (ConnectionError, OSError) as exc:
            stopped = f"broker closed: {exc}"
            break
        kind = first >> 4
        if kind == SUBACK and suback is None:
            suback = body[-1] if len(body) >= 3 else None
            if suback is not None and suback >= 0x80:
                stopped = "subscription refused"
                break
        elif kind == PUBLISH:
            total += len(body)
            try:
                message = parse_publish(first, body, level)
            except MqttProtocolError as exc:
                stopped = f"malformed: {exc}"
                break
            sizes.append(message.payload_size)
            retained += message.retain
            if message.topic not in topics and len(topics) < SAMPLE_TOPICS:
                topics.append(message.topic)
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        await conn.send(DISCONNECT)
    ctx.note(f"subscription to '#': SUBACK {suback if suback is None else hex(suback)}, "
             f"{len(sizes)} PUBLISH message(s), {sum(sizes)} payload bytes (payloads not "
             f"recorded), stopped by {stopped}; sample topics: {topics}")
    return {"suback": suback, "messages": len(sizes), "payload_bytes": sum(sizes),
            "payload_sizes": sizes[:SAMPLE_TOPICS], "retained": retained,
            "topics": topics, "stopped": stopped}


class MqttAnonymous(Probe):
    metadata = ProbeMetadata(
        check_id="mqtt-anonymous",
        title="The MQTT broker does not accept anonymous clients",
        description="A broker that accepts a CONNECT with no user name lets anyone on the "
                    "network read device telemetry and publish commands to devices that "
                    "subscribe to it.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("mqtt",),
        remediation="Disable anonymous access (mosquitto: allow_anonymous false), require "
                    "per-device credentials or client certificates, restrict topics with ACLs "
                    "and use TLS (port 8883).",
        references=MQTT_REFERENCES,
        categories=("unauthenticated-access",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        result = await mqtt_connect(ctx, keep_open=True)
        facts: Facts = {"level": result.level, "code": result.code, "detail": result.detail,
                        "tried": result.tried, "tls": ctx.target.service.tls,
                        "subscription": None}
        if result.conn is None or result.reader is None:
            return facts
        try:
            if ctx.settings.intrusiveness_cap >= Intrusiveness.INTRUSIVE:
                facts["subscription"] = await read_subscription(ctx, result.conn, result.reader,
                                                                result.level)
            else:
                await result.conn.send(DISCONNECT)
        finally:
            await result.conn.close()
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("code") != 0:
            return []
        version = "5.0" if facts.get("level") == 5 else "3.1.1"
        channel = "over TLS" if facts.get("tls") else "in cleartext"
        summary = (f"The MQTT broker on port {target.port} accepts a client with no credentials "
                   f"(CONNACK 0 to an anonymous MQTT {version} CONNECT, {channel}).")
        details = {"kind": "mqtt-anonymous", "mqtt_version": version,
                   "tls": str(bool(facts.get("tls")))}
        subscription = facts.get("subscription")
        if subscription:
            count = int(subscription.get("messages", 0))
            topics = [str(t) for t in subscription.get("topics", [])]
            if subscription.get("suback") is not None and subscription["suback"] >= 0x80:
                summary += " Its ACL refused a subscription to '#'."
            elif count:
                summary += (f" A 3-second subscription to '#' delivered {count} message(s) "
                            f"on topics such as {', '.join(topics[:3])}.")
            else:
                summary += " A 3-second subscription to '#' was accepted (no messages arrived)."
            details.update(messages=str(count), sample_topics="; ".join(topics),
                           payload_bytes=str(subscription.get("payload_bytes", 0)),
                           subscription_stopped=str(subscription.get("stopped", "")))
        else:
            details["subscription"] = "not attempted (needs the intrusive level)"
        return [Observation(summary=summary, confidence=Confidence.CONFIRMED,
                            key="mqtt-anonymous", facts=details)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"connack": str(facts.get("detail", ""))[:200]}


class MqttDefaultCredentials(CredentialProbe):
    credential_protocol = "mqtt"
    metadata = ProbeMetadata(
        check_id="mqtt-default-credentials",
        title="The MQTT broker does not accept default credentials",
        description="Brokers shipped with a default user name and password let anyone who "
                    "knows the vendor's manual read telemetry and command devices.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("mqtt",),
        remediation="Replace the default broker account with unique per-device credentials "
                    "(or client certificates) and use TLS so they are not sent in cleartext.",
        references=MQTT_REFERENCES,
        categories=("default-credentials",),
    )

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        try:
            result = await mqtt_connect(ctx, username=username, password=password or None)
        except MqttProtocolError as exc:
            raise ConnectionError(f"not MQTT: {exc}") from None
        if result.code is None:
            raise ConnectionError(f"no CONNACK: {result.detail}")
        if result.code == 0:
            return Attempt(Outcome.SUCCESS, result.detail)
        if result.code in UNAVAILABLE:
            return Attempt(Outcome.BLOCKED, result.detail)
        if result.code in BAD_CREDENTIALS_V311 + BAD_CREDENTIALS_V5:
            return Attempt(Outcome.FAILURE, result.detail)
        return Attempt(Outcome.FAILURE, f"refused: {result.detail}")
