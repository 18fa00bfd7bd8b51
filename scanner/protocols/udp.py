"""Protocol-correct UDP requests (never empty datagrams) and their recognisers.

``REQUESTS`` and ``RECOGNISERS`` name them for the interface table (probes/data/
interfaces.yaml): a request builder takes the target address (SSDP puts it in HOST); a
recogniser takes one datagram and returns what it learnt, or None when the datagram is not that
protocol's reply. Recognisers read only within the datagram and stop at fixed counts, so a
garbage, truncated or oversized reply is None or a capped fact, never an exception.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from scanner.protocols import tftp
from scanner.protocols.textproto import USER_AGENT, parse_head

SYS_DESCR_OID = "1.3.6.1.2.1.1.1.0"
SSDP_MULTICAST_V4 = "239.255.255.250"
SSDP_PORT = 1900
IGD_SEARCH_TARGET = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"


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
    if len(data) < 4 or data[0] >> 6 != 1 or data[0] >> 4 & 0x3 == 3 \
            or data[1] >> 5 not in (2, 4, 5):
        return None  # version 1, not a reset, a response code (2.xx, 4.xx, 5.xx)
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


def coap_resources(link_format: str, limit: int = 64) -> list[str]:
    """The resource paths of a CoRE link-format document (RFC 6690): ``</a>;rt="x",</b>``."""
    found = []
    for link in link_format.split(",")[:limit]:
        target = link.strip().split(">", 1)[0]
        if target.startswith("<"):
            found.append(target[1:][:128])
    return found


def _recognise_snmp(data: bytes) -> dict[str, str] | None:
    values = parse_snmp_response(data)
    if values is None:
        return None
    return {"banner": next(iter(values.values()), "")[:255], "community": "public",
            "version": "v2c"}


def _recognise_coap(data: bytes) -> dict[str, str] | None:
    parsed = parse_coap(data)
    if parsed is None:
        return None
    return {"code": parsed["code"], "resources": parsed["payload"][:512]}


def _recognise_ssdp(data: bytes) -> dict[str, str] | None:
    reply = parse_ssdp_reply(data)
    if reply is None or not (reply.st or reply.usn or reply.location):
        return None
    return {"banner": reply.server[:255], "location": reply.location[:512],
            "st": reply.st[:256], "usn": reply.usn[:256]}


def tftp_probe_request(host: str) -> bytes:
    """A read request for a name no server has: TFTP answers ERROR (or, rarely, DATA)."""
    return tftp.read_request(f"iotb-{os.urandom(4).hex()}")


def _recognise_tftp(data: bytes) -> dict[str, str] | None:
    if not tftp.looks_like_tftp(data):
        return None
    packet = tftp.parse_packet(data)
    if packet is not None and packet.opcode == tftp.OP_ERROR:
        return {"banner": packet.payload.decode("utf-8", "replace")[:255]}
    return {"answer": "DATA block 1"}


def tftp_stop_transfer(reply: bytes) -> bytes | None:
    """A server that started sending a file is told to stop at once."""
    packet = tftp.parse_packet(reply)
    if packet is not None and packet.opcode == tftp.OP_DATA:
        return tftp.error_packet(0, "identification only")
    return None


# --- WS-Discovery (ONVIF cameras, printers) -------------------------------------------------

WSD_PROBE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
    "<soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
    "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action>"
    "<wsa:MessageID>urn:uuid:{message_id}</wsa:MessageID></soap:Header>"
    "<soap:Body><wsd:Probe/></soap:Body></soap:Envelope>")


def wsd_probe(host: str) -> bytes:
    """A WS-Discovery Probe for any type (OASIS WS-Discovery 1.1, SOAP over UDP)."""
    return WSD_PROBE.format(message_id=uuid.uuid4()).encode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _recognise_wsd(data: bytes) -> dict[str, str] | None:
    try:
        root = ElementTree.fromstring(data, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return None
    texts: dict[str, list[str]] = {"ProbeMatch": [], "Types": [], "XAddrs": [], "Scopes": []}
    for index, element in enumerate(root.iter()):
        if index >= 512:
            break
        name = _local(element.tag)
        if name in texts:
            texts[name].append(" ".join((element.text or "").split())[:512])
    if not texts["ProbeMatch"]:
        return None
    return {"types": " ".join(texts["Types"])[:512], "xaddrs": " ".join(texts["XAddrs"])[:512],
            "scopes": " ".join(texts["Scopes"])[:512]}


# --- BACnet/IP (ASHRAE 135 Annex J) ---------------------------------------------------------

BACNET_WHO_IS = bytes((0x81, 0x0A, 0x00, 0x08,  # BVLC: BACnet/IP, Original-Unicast-NPDU, length
                       0x01, 0x00,  # NPDU: version 1, no network layer fields, no reply expected
                       0x10, 0x08))  # APDU: Unconfirmed-Request, Who-Is (no range)


def bacnet_who_is(host: str) -> bytes:
    return BACNET_WHO_IS


def _recognise_bacnet(data: bytes) -> dict[str, str] | None:
    """A BVLC frame of the length it announces holding an APDU; I-Am gives the device id."""
    if len(data) < 6 or data[0] != 0x81 or struct.unpack("!H", data[2:4])[0] != len(data):
        return None
    npdu = {0x0A: 4, 0x0B: 4, 0x04: 10}.get(data[1])  # unicast, broadcast, forwarded (+B/IP)
    if npdu is None or len(data) < npdu + 2 or data[npdu] != 0x01:
        return None
    control, position = data[npdu + 1], npdu + 2
    if control & 0x80:
        return None  # a network-layer message, not an application reply
    if control & 0x20 and position + 3 <= len(data):  # DNET, DLEN, DADR
        position += 3 + data[position + 2]
    if control & 0x08 and position + 3 <= len(data):  # SNET, SLEN, SADR
        position += 3 + data[position + 2]
    if control & 0x20:
        position += 1  # hop count
    apdu = data[position:]
    if not apdu:
        return None
    found = {"apdu_type": str(apdu[0] >> 4)}
    if apdu[:3] == b"\x10\x00\xc4" and len(apdu) >= 7:  # I-Am, BACnetObjectIdentifier
        identifier = struct.unpack("!I", apdu[3:7])[0]
        found["device_instance"] = str(identifier & 0x3FFFFF)
    return found


# --- Ubiquiti discovery (UniFi/airOS, port 10001) -------------------------------------------

UBIQUITI_DISCOVERY_V1 = b"\x01\x00\x00\x00"
UBIQUITI_FIELDS = {0x03: "firmware", 0x0B: "hostname", 0x0C: "platform", 0x0D: "essid",
                   0x14: "model"}


def ubiquiti_discovery(host: str) -> bytes:
    return UBIQUITI_DISCOVERY_V1


def _recognise_ubiquiti(data: bytes) -> dict[str, str] | None:
    """Version 1, command 0, a length that fits, then type/length/value fields."""
    if len(data) < 4 or data[0] != 0x01 or data[1] != 0x00:
        return None
    length = struct.unpack("!H", data[2:4])[0]
    if length + 4 > len(data):
        return None
    found: dict[str, str] = {}
    position, end = 4, 4 + length
    for _ in range(64):
        if position + 3 > end:
            break
        kind, size = data[position], struct.unpack("!H", data[position + 1:position + 3])[0]
        value = data[position + 3:position + 3 + size]
        position += 3 + size
        if kind in UBIQUITI_FIELDS and position <= end:
            found[UBIQUITI_FIELDS[kind]] = value.decode("utf-8", "replace")[:128]
    return found if found else None


# --- TP-Link smart-home protocol (Kasa plugs and bulbs, port 9999) --------------------------

TPLINK_SYSINFO = b'{"system":{"get_sysinfo":{}}}'
TPLINK_KEY = 171
TPLINK_FIELDS = ("alias", "model", "sw_ver", "hw_ver", "dev_name", "mac")


def tplink_encrypt(plain: bytes) -> bytes:
    """The protocol's XOR autokey cipher: each byte is XORed with the previous cipher byte."""
    key, out = TPLINK_KEY, bytearray()
    for byte in plain:
        key ^= byte
        out.append(key)
    return bytes(out)


def tplink_decrypt(cipher: bytes) -> bytes:
    key, out = TPLINK_KEY, bytearray()
    for byte in cipher:
        out.append(key ^ byte)
        key = byte
    return bytes(out)


def tplink_sysinfo(host: str) -> bytes:
    """get_sysinfo over UDP: the bare cipher text (TCP adds a 4-byte length prefix)."""
    return tplink_encrypt(TPLINK_SYSINFO)


def tplink_sysinfo_facts(plain: bytes) -> dict[str, str] | None:
    """The device facts of a decrypted get_sysinfo answer, or None when it is not one."""
    try:
        document = json.loads(plain[:65536])
    except (ValueError, RecursionError):
        return None
    system = document.get("system") if isinstance(document, dict) else None
    info = system.get("get_sysinfo") if isinstance(system, dict) else None
    if not isinstance(info, dict):
        return None
    return {name: str(info[name])[:128] for name in TPLINK_FIELDS if name in info}


def _recognise_tplink(data: bytes) -> dict[str, str] | None:
    return tplink_sysinfo_facts(tplink_decrypt(data))


# --- NTP (RFC 5905 client request; RFC 9327 mode 6 control) ---------------------------------

def ntp_client(host: str) -> bytes:
    """A mode 3 (client) request of version 4: 48 bytes, all zero after the first."""
    return bytes((0x23,)) + bytes(47)


def _recognise_ntp_server(data: bytes) -> dict[str, str] | None:
    if len(data) < 48 or data[0] & 0x07 != 4:
        return None
    return {"version": str(data[0] >> 3 & 0x07), "stratum": str(data[1])}


def ntp_readvar(host: str) -> bytes:
    """Mode 6 READVAR of the system variables (association 0), version 2, sequence 1."""
    return struct.pack("!BBHHHHH", 0x16, 0x02, 1, 0, 0, 0, 0)


def _recognise_ntp_control(data: bytes) -> dict[str, str] | None:
    """A mode 6 response to READVAR: the control interface answers whoever asks."""
    if len(data) < 12 or data[0] & 0x07 != 6 or not data[1] & 0x80 or data[1] & 0x1F != 2:
        return None
    count = struct.unpack("!H", data[10:12])[0]
    text = data[12:12 + count].decode("ascii", "replace")
    return {"error": "yes" if data[1] & 0x40 else "no", "variables": " ".join(text.split())[:512]}


# --- mDNS answering a unicast query from off the link (RFC 6762 section 5.5) ---------------

SERVICES_QUERY_NAME = "_services._dns-sd._udp.local"
DNS_PTR = 12


def mdns_services_query(host: str) -> bytes:
    """A legacy unicast DNS-SD enumeration query (PTR _services._dns-sd._udp.local)."""
    question = b"".join(bytes((len(label),)) + label.encode()
                        for label in SERVICES_QUERY_NAME.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", int.from_bytes(os.urandom(2), "big"), 0, 1, 0, 0, 0) \
        + question + struct.pack("!HH", DNS_PTR, 1)


def dns_name(data: bytes, position: int) -> tuple[str, int]:
    """A possibly compressed DNS name and the position after it; ValueError when malformed.
    Bounded: at most 16 compression jumps and 255 bytes of name."""
    labels: list[str] = []
    end = None
    for _ in range(128):
        if position >= len(data):
            raise ValueError("name runs past the datagram")
        length = data[position]
        if length == 0:
            return ".".join(labels), end if end is not None else position + 1
        if length & 0xC0 == 0xC0:
            if position + 1 >= len(data) or len(labels) > 127:
                raise ValueError("truncated compression pointer")
            end = end if end is not None else position + 2
            target = (length & 0x3F) << 8 | data[position + 1]
            if target >= position:
                raise ValueError("compression pointer does not point backwards")
            position = target
            continue
        if length & 0xC0:
            raise ValueError("unknown label type")
        labels.append(data[position + 1:position + 1 + length].decode("utf-8", "replace"))
        position += 1 + length
        if sum(len(label) + 1 for label in labels) > 255:
            raise ValueError("name longer than 255 bytes")
    raise ValueError("too many labels")


def _recognise_mdns(data: bytes) -> dict[str, str] | None:
    """A DNS response (QR set, opcode 0) with records; PTR targets name the services."""
    if len(data) < 12:
        return None
    _, flags, questions, answers, authority, additional = struct.unpack("!HHHHHH", data[:12])
    if not flags & 0x8000 or flags >> 11 & 0x0F or not answers + additional:
        return None
    names: list[str] = []
    try:
        position = 12
        for _ in range(min(questions, 16)):
            position = dns_name(data, position)[1] + 4
        for _ in range(min(answers + authority + additional, 32)):
            _, position = dns_name(data, position)
            if position + 10 > len(data):
                break
            kind, _, _, size = struct.unpack("!HHIH", data[position:position + 10])
            position += 10
            if kind == DNS_PTR:
                names.append(dns_name(data, position)[0][:128])
            position += size
    except ValueError:
        if not names:
            return None
    return {"records": str(answers + additional), "services": " ".join(names[:16])[:512]}


Request = Callable[[str], bytes]
Recogniser = Callable[[bytes], dict[str, str] | None]

REQUESTS: dict[str, Request] = {
    "snmp-v2c-get-sysdescr": lambda host: snmp_get_sysdescr(),
    "tftp-read-request": tftp_probe_request,
    "coap-get-well-known-core": lambda host: coap_get_well_known_core(),
    "ssdp-msearch": ssdp_msearch,
    "ssdp-msearch-igd": lambda host: ssdp_msearch(host, IGD_SEARCH_TARGET),
    "wsd-probe": wsd_probe,
    "bacnet-who-is": bacnet_who_is,
    "ubiquiti-discovery-v1": ubiquiti_discovery,
    "tplink-get-sysinfo": tplink_sysinfo,
    "ntp-client": ntp_client,
    "ntp-readvar": ntp_readvar,
    "mdns-services-query": mdns_services_query,
}
RECOGNISERS: dict[str, Recogniser] = {
    "snmp": _recognise_snmp,
    "tftp": _recognise_tftp,
    "coap": _recognise_coap,
    "ssdp": _recognise_ssdp,
    "wsd": _recognise_wsd,
    "bacnet": _recognise_bacnet,
    "ubiquiti": _recognise_ubiquiti,
    "tplink": _recognise_tplink,
    "ntp-server": _recognise_ntp_server,
    "ntp-control": _recognise_ntp_control,
    "mdns": _recognise_mdns,
}
# A reply that starts something the scanner must stop at once (a TFTP transfer)
FOLLOW_UPS: dict[str, Callable[[bytes], bytes | None]] = {"tftp": tftp_stop_transfer}
