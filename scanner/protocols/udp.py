"""Protocol-correct UDP requests (never empty datagrams) and their parsers: SNMP, CoAP, SSDP."""

from __future__ import annotations

import os
from dataclasses import dataclass

from scanner.protocols.textproto import USER_AGENT, parse_head

SYS_DESCR_OID = "1.3.6.1.2.1.1.1.0"
SSDP_MULTICAST_V4 = "239.255.255.250"
SSDP_PORT = 1900


def snmp_get_sysdescr(community: str = "public", request_id: int | None = None) -> bytes:
    """SNMPv2c GetRequest for sysDescr.0, built with scapy's ASN.1 layer."""
    from scapy.asn1.asn1 import ASN1_OID
    from scapy.layers.snmp import SNMP, SNMPget, SNMPvarbind

    packet = SNMP(version=1, community=community.encode(), PDU=SNMPget(
        id=request_id if request_id is not None else int.from_bytes(os.urandom(2), "big"),
        varbindlist=[SNMPvarbind(oid=ASN1_OID(SYS_DESCR_OID))]))
    return bytes(packet)


def parse_snmp_response(data: bytes) -> dict[str, str] | None:
    """OID -> value text of a GetResponse, or None for anything that is not one."""
    from scapy.layers.snmp import SNMP, SNMPresponse

    try:
        packet = SNMP(data)
    except Exception:  # scapy raises assorted decoding errors on malformed BER
        return None
    if not isinstance(packet.PDU, SNMPresponse) or int(packet.PDU.error.val) != 0:
        return None
    values: dict[str, str] = {}
    for varbind in packet.PDU.varbindlist[:32]:
        value = getattr(varbind.value, "val", varbind.value)
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        values[str(varbind.oid.val)] = text[:1024]
    return values


def coap_get_well_known_core() -> bytes:
    """Confirmable CoAP GET /.well-known/core (RFC 7252, RFC 6690)."""
    message_id = os.urandom(2)
    header = bytes((0x40, 0x01)) + message_id  # ver 1, CON, token length 0; code 0.01 GET
    # Uri-Path option (11) twice: ".well-known" (delta 11, len 11) then "core" (delta 0, len 4)
    return header + bytes((0xBB,)) + b".well-known" + bytes((0x04,)) + b"core"


def parse_coap(data: bytes) -> dict[str, str] | None:
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    code = data[1]
    token_length = data[0] & 0x0F
    payload = data.split(b"\xff", 1)[1] if b"\xff" in data[4 + token_length:] else b""
    return {"code": f"{code >> 5}.{code & 0x1F:02d}",
            "payload": payload[:2048].decode("utf-8", "replace")}


def ssdp_msearch(host: str, search_target: str = "ssdp:all", mx: int = 1) -> bytes:
    lines = [
        "M-SEARCH * HTTP/1.1",
        f"HOST: {host}:{SSDP_PORT}",
        'MAN: "ssdp:discover"',
        f"MX: {mx}",
        f"ST: {search_target}",
        f"USER-AGENT: {USER_AGENT}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class SsdpReply:
    location: str
    server: str
    usn: str
    st: str


def parse_ssdp_reply(data: bytes) -> SsdpReply | None:
    head = parse_head(data)
    if head is None or head.protocol != "HTTP" or head.status != 200:
        return None
    return SsdpReply(head.header("location"), head.header("server"), head.header("usn"),
                     head.header("st"))
