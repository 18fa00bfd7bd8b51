"""Raw TLS first flights: a ClientHello builder and a bounded parser of the server's reply.

Why hand-written and not scapy's TLS layer: scapy's dissector keeps session crypto state and
raises on odd records, and Python's ``ssl`` can only offer what the local OpenSSL still speaks
(no SSLv3, no EXPORT/RC4/DES suites). We need only the server's first flight — ServerHello,
Certificate, ServerHelloDone or an Alert — for any version and any suite code, under a byte cap
and a deadline. Nothing here derives keys: the caller hangs up after the first flight.

Also here: the X.509 facts the TLS checks judge (key size, signature hash, names, public-key
fingerprint) and RFC 6125 name matching, since both work on the DER the parser hands out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x25519,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from scanner.net import Connection

SSL3, TLS1_0, TLS1_1, TLS1_2, TLS1_3 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {SSL3: "SSLv3", TLS1_0: "TLSv1.0", TLS1_1: "TLSv1.1", TLS1_2: "TLSv1.2",
                 TLS1_3: "TLSv1.3"}
TLS13_SUITES = frozenset({0x1301, 0x1302, 0x1303, 0x1304, 0x1305})

MAX_FLIGHT_BYTES = 64 * 1024  # a first flight with a long chain fits; more is not a TLS server
MAX_RECORD_LENGTH = 2**14 + 2048  # RFC 8446 5.2: the largest record any version allows
MAX_CERTIFICATES = 16

CONTENT_CHANGE_CIPHER_SPEC, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPLICATION_DATA = \
    20, 21, 22, 23
HANDSHAKE_CLIENT_HELLO, HANDSHAKE_SERVER_HELLO, HANDSHAKE_CERTIFICATE = 1, 2, 11
HANDSHAKE_SERVER_HELLO_DONE = 14
EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS = 0, 10, 11
EXT_SIGNATURE_ALGORITHMS, EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE = 13, 43, 51
EXT_RENEGOTIATION_INFO = 0xFF01
GROUP_X25519 = 0x001D
# x25519, secp256r1, secp384r1, secp521r1, x448, ffdhe2048, ffdhe3072
SUPPORTED_GROUPS = (GROUP_X25519, 0x0017, 0x0018, 0x0019, 0x001E, 0x0100, 0x0101)
# ECDSA, RSA-PSS, EdDSA, RSA PKCS#1 with SHA-2, then the SHA-1 and DSA ones old servers need
SIGNATURE_ALGORITHMS = (0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0808,
                        0x0809, 0x080A, 0x080B, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
                        0x0402, 0x0202)
# RFC 8446 4.1.3: a ServerHello with this random is a HelloRetryRequest
HELLO_RETRY_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
ALERT_NAMES = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
               40: "handshake_failure", 42: "bad_certificate", 47: "illegal_parameter",
               50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
               71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
               90: "user_canceled", 109: "missing_extension", 110: "unsupported_extension",
               112: "unrecognized_name", 120: "no_application_protocol"}


def _u8_prefixed(data: bytes) -> bytes:
    return struct.pack("!B", len(data)) + data


def _u16_prefixed(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _u16_list(values: Sequence[int]) -> bytes:
    return b"".join(struct.pack("!H", value) for value in values)


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + _u16_prefixed(body)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _extensions(version: int, hostname: str | None) -> bytes:
    parts = []
    if hostname and not _is_address(hostname):  # RFC 6066 3: no IP literals in SNI
        name = hostname.encode("idna")
        parts.append(_extension(EXT_SERVER_NAME, _u16_prefixed(b"\x00" + _u16_prefixed(name))))
    parts.append(_extension(EXT_SUPPORTED_GROUPS, _u16_prefixed(_u16_list(SUPPORTED_GROUPS))))
    parts.append(_extension(EXT_EC_POINT_FORMATS, _u8_prefixed(b"\x00")))  # uncompressed
    if version >= TLS1_2:
        parts.append(_extension(EXT_SIGNATURE_ALGORITHMS,
                                _u16_prefixed(_u16_list(SIGNATURE_ALGORITHMS))))
    if version == TLS1_3:
        parts.append(_extension(EXT_SUPPORTED_VERSIONS, _u8_prefixed(_u16_list([TLS1_3]))))
        public = x25519.X25519PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        share = struct.pack("!H", GROUP_X25519) + _u16_prefixed(public)
        parts.append(_extension(EXT_KEY_SHARE, _u16_prefixed(share)))
    else:
        parts.append(_extension(EXT_RENEGOTIATION_INFO, b"\x00"))  # RFC 5746: initial handshake
    return b"".join(parts)


def client_hello(version: int, suites: Sequence[int], hostname: str | None = None) -> bytes:
    """One ClientHello record offering exactly ``version`` and ``suites``.

    TLS 1.3 is offered the RFC 8446 way (legacy version 1.2, supported_versions, an x25519 key
    share); SSLv3 gets no extensions, as SSLv3 stacks predate them. SSLv2 is never offered."""
    if version not in VERSION_NAMES:
        raise ValueError(f"unknown protocol version {version:#06x}")
    if not suites:
        raise ValueError("no cipher suites to offer")
    legacy_version = min(version, TLS1_2)
    session_id = os.urandom(32) if version == TLS1_3 else b""  # RFC 8446 D.4 middlebox mode
    body = (struct.pack("!H", legacy_version) + os.urandom(32) + _u8_prefixed(session_id)
            + _u16_prefixed(_u16_list(suites)) + _u8_prefixed(b"\x00"))
    if version != SSL3:
        body += _u16_prefixed(_extensions(version, hostname))
    handshake = struct.pack("!B", HANDSHAKE_CLIENT_HELLO) + len(body).to_bytes(3, "big") + body
    if len(handshake) > 2**14:
        raise ValueError("ClientHello larger than one record")
    record_version = SSL3 if version == SSL3 else TLS1_0  # what every stack accepts here
    return struct.pack("!BHH", CONTENT_HANDSHAKE, record_version, len(handshake)) + handshake


@dataclass
class ServerFlight:
    """What the server's first flight said, as far as it was read."""

    version: int | None = None  # negotiated: supported_versions wins over the legacy field
    cipher_suite: int | None = None
    hello_retry: bool = False
    alert: tuple[int, int] | None = None  # (level, description)
    certificates: list[bytes] = field(default_factory=list)  # DER, leaf first (≤ TLS 1.2)
    hello_done: bool = False
    received: int = 0  # bytes read

    @property
    def complete(self) -> bool:
        """Nothing more of interest will come: hang up."""
        return (self.alert is not None or self.hello_done or self.hello_retry
                or self.version == TLS1_3)

    @property
    def alert_name(self) -> str:
        if self.alert is None:
            return ""
        return ALERT_NAMES.get(self.alert[1], f"alert {self.alert[1]}")


class _Reader:
    """Bounds-checked reads from one message: a short message is a ValueError, never junk."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise ValueError(f"truncated {self.what}")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))

    @property
    def left(self) -> int:
        return len(self.data) - self.offset


def _parse_server_hello(body: bytes, flight: ServerFlight) -> None:
    reader = _Reader(body, "ServerHello")
    legacy_version = reader.number(2)
    random = reader.take(32)
    reader.vector(1)  # session id
    flight.cipher_suite = reader.number(2)
    reader.take(1)  # compression method
    flight.version = legacy_version
    flight.hello_retry = random == HELLO_RETRY_RANDOM
    if reader.left:
        extensions = _Reader(reader.vector(2), "ServerHello extensions")
        while extensions.left:
            kind = extensions.number(2)
            data = extensions.vector(2)
            if kind == EXT_SUPPORTED_VERSIONS and len(data) == 2:
                flight.version = int.from_bytes(data, "big")


def _parse_certificates(body: bytes) -> list[bytes]:
    reader = _Reader(_Reader(body, "Certificate").vector(3), "certificate list")
    chain: list[bytes] = []
    while reader.left and len(chain) < MAX_CERTIFICATES:
        chain.append(reader.vector(3))
    return chain


def parse_flight(data: bytes) -> ServerFlight:
    """The server's first flight from the bytes read so far; a partial record is left for
    later. Raises ValueError for anything that is not TLS (garbage, huge lengths, SSLv2)."""
    flight = ServerFlight(received=len(data))
    handshake = bytearray()
    offset = 0
    while offset + 5 <= len(data) and not flight.complete:
        content_type, major, length = struct.unpack_from("!BBxH", data, offset)
        if content_type not in (CONTENT_CHANGE_CIPHER_SPEC, CONTENT_ALERT, CONTENT_HANDSHAKE,
                                CONTENT_APPLICATION_DATA) or major != 3:
            raise ValueError(f"not a TLS record (first bytes {data[offset:offset + 5].hex()})")
        if length > MAX_RECORD_LENGTH:
            raise ValueError(f"TLS record length {length} exceeds {MAX_RECORD_LENGTH}")
        if offset + 5 + length > len(data):
            break
        fragment = data[offset + 5:offset + 5 + length]
        offset += 5 + length
        if content_type == CONTENT_ALERT:
            if len(fragment) < 2:
                raise ValueError("truncated alert")
            flight.alert = (fragment[0], fragment[1])
        elif content_type == CONTENT_HANDSHAKE:
            handshake += fragment
            _consume_handshake(handshake, flight)
    return flight


def _consume_handshake(buffer: bytearray, flight: ServerFlight) -> None:
    """Parse every complete handshake message in ``buffer`` (removing it)."""
    while len(buffer) >= 4 and not flight.complete:
        kind = buffer[0]
        length = int.from_bytes(buffer[1:4], "big")
        if length > MAX_FLIGHT_BYTES:
            raise ValueError(f"handshake message length {length} exceeds {MAX_FLIGHT_BYTES}")
        if len(buffer) < 4 + length:
            return
        body = bytes(buffer[4:4 + length])
        del buffer[:4 + length]
        if kind == HANDSHAKE_SERVER_HELLO:
            _parse_server_hello(body, flight)
        elif flight.version is None:
            raise ValueError(f"handshake message {kind} before ServerHello")
        elif kind == HANDSHAKE_CERTIFICATE:
            flight.certificates = _parse_certificates(body)
        elif kind == HANDSHAKE_SERVER_HELLO_DONE:
            flight.hello_done = True


def _flight_over(data: bytes) -> bool:
    try:
        return parse_flight(data).complete
    except ValueError:
        return True  # stop reading; the caller's parse raises it


async def exchange_hello(conn: Connection, hello: bytes, timeout: float) -> ServerFlight:
    """Send a ClientHello and read the first flight until it is complete, the connection
    closes, MAX_FLIGHT_BYTES arrive or ``timeout`` passes (a total, not per read).

    Raises TimeoutError when nothing at all arrived in time, ValueError for a reply that is
    not TLS; a closed connection gives an empty flight (the server refused the offer)."""
    await conn.send(hello)
    started = time.monotonic()
    data = await conn.recv_until(_flight_over, max_bytes=MAX_FLIGHT_BYTES, timeout=timeout)
    flight = parse_flight(data)
    if not data and time.monotonic() - started >= timeout * 0.9:
        raise TimeoutError(f"no TLS reply within {timeout:.1f} s")
    return flight


# ------------------------------------------------------------------ certificates


def _hash_name(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except Exception:  # an unknown signature OID: name it, do not judge it
        return certificate.signature_algorithm_oid.dotted_string
    return algorithm.name if algorithm is not None else "intrinsic"  # Ed25519/Ed448


def _key_facts(certificate: x509.Certificate) -> dict[str, Any]:
    try:
        key = certificate.public_key()
    except Exception as exc:  # an unsupported or malformed key is a fact
        return {"key_type": "unknown", "key_bits": 0, "key_error": str(exc)[:200]}
    if isinstance(key, rsa.RSAPublicKey):
        return {"key_type": "RSA", "key_bits": key.key_size}
    if isinstance(key, dsa.DSAPublicKey):
        return {"key_type": "DSA", "key_bits": key.key_size}
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"key_type": "EC", "key_bits": key.curve.key_size, "curve": key.curve.name}
    if isinstance(key, ed25519.Ed25519PublicKey):
        return {"key_type": "Ed25519", "key_bits": 256}
    if isinstance(key, ed448.Ed448PublicKey):
        return {"key_type": "Ed448", "key_bits": 456}
    return {"key_type": type(key).__name__, "key_bits": 0}


def _names(certificate: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = [str(name) for name in extension.value.get_values_for_type(x509.DNSName)]
        addresses = [str(a) for a in extension.value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, addresses = [], []
    common_names = [str(attribute.value)
                    for attribute in certificate.subject.get_attributes_for_oid(
                        NameOID.COMMON_NAME)]
    return dns[:64], addresses[:64], common_names[:4]


def _self_signed(certificate: x509.Certificate) -> bool:
    """Issuer equals subject and the signature verifies with the certificate's own key.

    Checked with the raw key rather than ``verify_directly_issued_by``, which refuses the
    SHA-1 signatures old devices carry."""
    if certificate.issuer != certificate.subject:
        return False
    try:
        key = certificate.public_key()
        digest = certificate.signature_hash_algorithm
        signature, signed = certificate.signature, certificate.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey) and digest is not None:
            key.verify(signature, signed, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and digest is not None:
            key.verify(signature, signed, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, signed)
        else:
            certificate.verify_directly_issued_by(certificate)
    except Exception:  # a bad or unsupported self-signature: not provably self-signed
        return False
    return True


def certificate_facts(der: bytes) -> dict[str, Any]:
    """Plain facts about one certificate; ValueError when it does not parse."""
    certificate = x509.load_der_x509_certificate(der)
    dns, addresses, common_names = _names(certificate)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return {
        "subject": certificate.subject.rfc4514_string()[:512],
        "issuer": certificate.issuer.rfc4514_string()[:512],
        "serial": format(certificate.serial_number, "x"),
        "not_before": certificate.not_valid_before_utc.astimezone(UTC).isoformat(),
        "not_after": certificate.not_valid_after_utc.astimezone(UTC).isoformat(),
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "signature_hash": _hash_name(certificate),
        "self_signed": _self_signed(certificate),
        "dns_names": dns,
        "ip_addresses": addresses,
        "common_names": common_names,
        **_key_facts(certificate),
    }


def _dns_matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 6.4.3: a wildcard only as the whole left-most label, never matching a dot,
    never for a public-suffix-like two-label pattern."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if not pattern.startswith("*."):
        return "*" not in pattern and pattern == hostname
    suffix = pattern[2:]
    if "*" in suffix or suffix.count(".") < 1:
        return False
    label, dot, rest = hostname.partition(".")
    return bool(dot and label and rest == suffix)


def names_match(name: str, dns_names: Sequence[str], ip_addresses: Sequence[str],
                common_names: Sequence[str]) -> bool:
    """Whether a certificate names ``name`` (an address or a hostname): an address only by an
    IP SAN; a hostname by a DNS SAN, or by the CN when the certificate has no SAN at all."""
    try:
        address = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        address = None
    if address is not None:
        return any(_same_address(address, entry) for entry in ip_addresses)
    if dns_names or ip_addresses:
        return any(_dns_matches(entry, name) for entry in dns_names)
    return any(_dns_matches(entry, name) for entry in common_names)


def _same_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entry: str) -> bool:
    try:
        return ipaddress.ip_address(entry) == address
    except ValueError:
        return False
