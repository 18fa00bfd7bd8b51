"""Just enough of the SSH transport (RFC 4253) to read what a server offers and its host keys.

The client reads the identification line, the server's KEXINIT and — after offering exactly one
key exchange and one host key algorithm — the server's KEXDH/ECDH reply, whose first field is
the host key blob in cleartext. Nothing is ever derived, verified or encrypted: the connection
is dropped after that reply. Every read is bounded in bytes and time, and any reply that breaks
the framing becomes a :class:`SshProtocolError` (a ValueError).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scanner.net import Connection

CLIENT_BANNER = b"SSH-2.0-iotbaseline_1.0\r\n"
MAX_LINE = 255  # RFC 4253 4.2: the identification line, CR LF included
MAX_PRE_BANNER_LINES = 20  # lines a server may send before its identification
MAX_PACKET = 35000  # RFC 4253 6.1: the packet size every implementation must handle
MAX_NAMES = 128  # names in one name-list we keep
MAX_NAME = 64  # RFC 4251 6: an algorithm name is at most 64 characters
MAX_MESSAGES = 16  # non-KEX messages (IGNORE, DEBUG, EXT_INFO…) we skip while waiting

MSG_DISCONNECT, MSG_IGNORE, MSG_UNIMPLEMENTED, MSG_DEBUG = 1, 2, 3, 4
MSG_KEXINIT = 20
MSG_KEXDH_INIT, MSG_KEXDH_REPLY = 30, 31  # also KEX_ECDH_INIT/REPLY
MSG_KEX_DH_GEX_GROUP, MSG_KEX_DH_GEX_INIT, MSG_KEX_DH_GEX_REPLY = 31, 32, 33
MSG_KEX_DH_GEX_REQUEST = 34
GEX_BITS = (2048, 4096, 8192)  # minimum, preferred, maximum group size we ask for

# Fixed MODP groups by prime size (RFC 4253 8.1, RFC 8268). Any value of (size - 1) bits is a
# valid public value for a prime of that size (1 < e < p - 1), so no prime is needed: the shared
# secret is never computed.
MODP_BITS = {
    "diffie-hellman-group1-sha1": 1024,
    "diffie-hellman-group14-sha1": 2048, "diffie-hellman-group14-sha256": 2048,
    "diffie-hellman-group14-sha256@ssh.com": 2048,
    "diffie-hellman-group15-sha256": 3072, "diffie-hellman-group15-sha512": 3072,
    "diffie-hellman-group15-sha256@ssh.com": 3072, "diffie-hellman-group15-sha384@ssh.com": 3072,
    "diffie-hellman-group16-sha512": 4096, "diffie-hellman-group16-sha256": 4096,
    "diffie-hellman-group16-sha384@ssh.com": 4096, "diffie-hellman-group16-sha512@ssh.com": 4096,
    "diffie-hellman-group17-sha512": 6144,
    "diffie-hellman-group18-sha512": 8192, "diffie-hellman-group18-sha512@ssh.com": 8192,
}
ECDH_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "ecdh-sha2-nistp256": ec.SECP256R1, "ecdh-sha2-nistp384": ec.SECP384R1,
    "ecdh-sha2-nistp521": ec.SECP521R1,
}
X25519_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")
GEX_KEX = ("diffie-hellman-group-exchange-sha256", "diffie-hellman-group-exchange-sha1",
           "diffie-hellman-group-exchange-sha256@ssh.com",
           "diffie-hellman-group-exchange-sha512@ssh.com")
# Our preference when several are offered: the cheapest first (no 8192-bit exponentiation).
SUPPORTED_KEX = (*X25519_KEX, *ECDH_CURVES, "diffie-hellman-group14-sha256",
                 "diffie-hellman-group14-sha1", *(k for k in MODP_BITS if "group14" not in k),
                 *GEX_KEX)

# Host key algorithms that name the same key: one connection per family is enough.
HOST_KEY_FAMILIES = {
    "ssh-rsa": "rsa", "rsa-sha2-256": "rsa", "rsa-sha2-512": "rsa",
    "ssh-ed25519": "ed25519", "ssh-ed448": "ed448", "ssh-dss": "dsa",
    "ecdsa-sha2-nistp256": "ecdsa-p256", "ecdsa-sha2-nistp384": "ecdsa-p384",
    "ecdsa-sha2-nistp521": "ecdsa-p521",
}
ECDSA_BITS = {"nistp256": 256, "nistp384": 384, "nistp521": 521}


class SshProtocolError(ValueError):
    """The peer broke the SSH framing or said something we cannot parse."""


@dataclass(frozen=True)
class KexInit:
    """The name-lists of a KEXINIT (RFC 4253 7.1), in the sender's order of preference."""

    kex: tuple[str, ...]
    host_key: tuple[str, ...]
    ciphers_c2s: tuple[str, ...]
    ciphers_s2c: tuple[str, ...]
    macs_c2s: tuple[str, ...]
    macs_s2c: tuple[str, ...]
    compression_c2s: tuple[str, ...]
    compression_s2c: tuple[str, ...]
    first_kex_follows: bool = False


@dataclass(frozen=True)
class HostKey:
    """A server host key as ssh-keygen -l describes it."""

    key_type: str  # the type inside the blob: ssh-rsa, ssh-ed25519, ecdsa-sha2-nistp256…
    bits: int  # modulus or curve size; 0 when unknown
    fingerprint: str  # SHA256:… (unpadded base64 of the blob's SHA-256)


@dataclass
class Banner:
    line: str  # the identification line, without CR LF
    before: list[str] = field(default_factory=list)  # lines the server sent before it

    @property
    def protocol(self) -> str:
        return self.line.split("-", 2)[1] if self.line.count("-") >= 2 else ""

    @property
    def ssh1(self) -> bool:
        """SSH-1.x (1.99 means both 1 and 2)."""
        return self.protocol.startswith("1.")

    @property
    def ssh2(self) -> bool:
        return self.protocol in ("2.0", "1.99")


# ----------------------------------------------------------------------------- encoding


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def ssh_mpint(value: int) -> bytes:
    """A non-negative mpint (RFC 4251 5): big-endian, a leading zero when the top bit is set."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return ssh_string(raw)


def name_list(names: tuple[str, ...] | list[str]) -> bytes:
    return ssh_string(",".join(names).encode("ascii"))


def frame(payload: bytes) -> bytes:
    """An unencrypted binary packet: length, padding length, payload, 4..11 random bytes."""
    padding = 8 - (len(payload) + 5) % 8
    if padding < 4:
        padding += 8
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + \
        os.urandom(padding)


def client_kexinit(kex: str, host_key: str, server: KexInit) -> bytes:
    """Our KEXINIT: the one kex and host key algorithm we want, and the server's own cipher,
    MAC and compression lists so that negotiation cannot fail on them."""
    lists = (
        (kex,), (host_key,), server.ciphers_c2s, server.ciphers_s2c, server.macs_c2s,
        server.macs_s2c, server.compression_c2s, server.compression_s2c, (), (),
    )
    return bytes([MSG_KEXINIT]) + secrets.token_bytes(16) + \
        b"".join(name_list(names) for names in lists) + b"\x00" + b"\x00\x00\x00\x00"


# ----------------------------------------------------------------------------- decoding


class Reader:
    """Bounds-checked reads over one message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.offset + count > len(self.data):
            raise SshProtocolError(f"message truncated: wanted {count} bytes at {self.offset}, "
                                   f"{len(self.data) - self.offset} left")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def names(self) -> tuple[str, ...]:
        raw = self.string()
        if not raw:
            return ()
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise SshProtocolError("name-list is not ASCII") from None
        if not text.isprintable():
            raise SshProtocolError("name-list holds control characters")
        return tuple(name[:MAX_NAME] for name in text.split(",")[:MAX_NAMES] if name)


def parse_packet(buffer: bytes) -> tuple[bytes, int] | None:
    """(payload, bytes used) of the first unencrypted packet, or None if more bytes are needed.

    Raises SshProtocolError for a length over MAX_PACKET, a padding shorter than 4 bytes or
    longer than the packet, or a size that is not a multiple of 8."""
    if len(buffer) < 5:
        return None
    length, padding = struct.unpack(">IB", buffer[:5])
    if length > MAX_PACKET or length < 5:
        raise SshProtocolError(f"packet length {length} outside 5..{MAX_PACKET}")
    if padding < 4 or padding > length - 1:
        raise SshProtocolError(f"padding length {padding} invalid for packet length {length}")
    if (length + 4) % 8:
        raise SshProtocolError(f"packet size {length + 4} is not a multiple of 8")
    if len(buffer) < length + 4:
        return None
    return buffer[5:4 + length - padding], length + 4


def parse_kexinit(payload: bytes) -> KexInit:
    reader = Reader(payload)
    if reader.byte() != MSG_KEXINIT:
        raise SshProtocolError(f"expected KEXINIT, got message {payload[0]}")
    reader.take(16)  # cookie
    kex, host_key, ciphers_c2s, ciphers_s2c, macs_c2s, macs_s2c, compression_c2s, \
        compression_s2c, _, _ = (reader.names() for _ in range(10))
    first_kex_follows = bool(reader.byte())
    reader.uint32()  # reserved: read so that a truncated KEXINIT is an error
    return KexInit(kex, host_key, ciphers_c2s, ciphers_s2c, macs_c2s, macs_s2c,
                   compression_c2s, compression_s2c, first_kex_follows)


def parse_host_key(blob: bytes) -> HostKey:
    """Type and size of a public key blob (RFC 4253 6.6, RFC 5656, RFC 8709, certificates)."""
    reader = Reader(blob)
    key_type = reader.string().decode("ascii", "replace")[:MAX_NAME]
    if key_type.endswith("-cert-v01@openssh.com") or key_type.endswith("-cert-v00@openssh.com"):
        reader.string()  # nonce; the certified key's fields follow
    base = key_type.split("-cert-v0", 1)[0]
    bits = 0
    if base == "ssh-rsa":
        reader.mpint()  # e
        bits = reader.mpint().bit_length()
    elif base == "ssh-dss":
        bits = reader.mpint().bit_length()  # p
    elif base.startswith("ecdsa-sha2-") or base.startswith("sk-ecdsa-sha2-"):
        bits = ECDSA_BITS.get(reader.string().decode("ascii", "replace"), 0)
    elif base in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        bits = 256
    elif base == "ssh-ed448":
        bits = 448
    return HostKey(key_type, bits, fingerprint(blob))


def fingerprint(blob: bytes) -> str:
    """As ssh-keygen -l prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def kex_reply_host_key(payload: bytes, expected: int) -> bytes:
    """The host key blob (K_S), the first field of KEXDH_REPLY / KEX_ECDH_REPLY / GEX_REPLY."""
    reader = Reader(payload)
    kind = reader.byte()
    if kind != expected:
        raise SshProtocolError(f"expected key exchange reply {expected}, got message {kind}")
    blob = reader.string()
    if not blob:
        raise SshProtocolError("empty host key in the key exchange reply")
    return blob


def disconnect_reason(payload: bytes) -> str:
    reader = Reader(payload)
    reader.byte()
    try:
        code = reader.uint32()
        text = reader.string().decode("utf-8", "replace")
    except SshProtocolError:
        return "disconnect"
    return f"disconnect {code}: " + "".join(c if c.isprintable() else "?" for c in text)[:200]


def choose_kex(offered: tuple[str, ...]) -> str | None:
    """The key exchange we can perform that the server offers, cheapest first."""
    return next((kex for kex in SUPPORTED_KEX if kex in offered), None)


def host_key_targets(offered: tuple[str, ...]) -> list[str]:
    """One algorithm per distinct host key the server offers (rsa-sha2-* and ssh-rsa name the
    same key), in the server's order; certificates and unknown families are skipped."""
    picked: dict[str, str] = {}
    for algorithm in offered:
        family = HOST_KEY_FAMILIES.get(algorithm)
        if family and family not in picked:
            picked[family] = algorithm
    return list(picked.values())


# ----------------------------------------------------------------------------- I/O


class SshWire:
    """Reads identification lines and binary packets from a Connection, keeping the overflow."""

    def __init__(self, conn: Connection, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.buffer = b""

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("SSH exchange did not finish in time")
        return left

    async def _fill(self, done: Callable[[bytes], bool], cap: int) -> None:
        """Read until ``done(buffer)``; TimeoutError at the deadline, ConnectionError at EOF."""
        while not done(self.buffer):
            want = cap - len(self.buffer)
            if want <= 0:
                raise SshProtocolError(f"more than {cap} bytes without a complete message")
            chunk = await self.conn.recv(max_bytes=want, timeout=self._left())
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk

    async def banner(self) -> Banner:
        """The server's identification line; RFC 4253 lets other lines come before it."""
        found = Banner("")
        for _ in range(MAX_PRE_BANNER_LINES + 1):
            await self._fill(lambda data: b"\n" in data, MAX_LINE + 1)
            raw, _, self.buffer = self.buffer.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            line = "".join(c if c.isprintable() else "?" for c in line)
            if line.startswith("SSH-"):
                found.line = line
                return found
            found.before.append(line)
        raise SshProtocolError(f"no SSH identification in the first {MAX_PRE_BANNER_LINES} "
                               "lines")

    async def packet(self) -> bytes:
        """The next unencrypted packet's payload."""
        parsed: tuple[bytes, int] | None = None

        def complete(data: bytes) -> bool:
            nonlocal parsed
            parsed = parse_packet(data)
            return parsed is not None

        await self._fill(complete, MAX_PACKET + 4 + len(self.buffer))
        assert parsed is not None
        payload, used = parsed
        self.buffer = self.buffer[used:]
        if not payload:
            raise SshProtocolError("empty packet payload")
        return payload

    async def message(self, *wanted: int) -> bytes:
        """The next packet of a ``wanted`` type, skipping IGNORE/DEBUG and the like (bounded);
        a DISCONNECT or any other type is an SshProtocolError."""
        for _ in range(MAX_MESSAGES):
            payload = await self.packet()
            if payload[0] in wanted:
                return payload
            if payload[0] == MSG_DISCONNECT:
                raise SshProtocolError(f"server sent {disconnect_reason(payload)}")
            if payload[0] not in (MSG_IGNORE, MSG_DEBUG, MSG_UNIMPLEMENTED):
                raise SshProtocolError(f"unexpected message {payload[0]} during key exchange")
        raise SshProtocolError(f"more than {MAX_MESSAGES} messages without a key exchange reply")


async def start(conn: Connection, deadline: float) -> tuple[SshWire, Banner, KexInit | None]:
    """Exchange identifications and KEXINITs' first half: the server's banner and, for an SSH-2
    server, its KEXINIT (None for an SSH-1-only server, which we leave at once)."""
    wire = SshWire(conn, deadline)
    server_banner = await wire.banner()
    if not server_banner.ssh2:
        return wire, server_banner, None
    await conn.send(CLIENT_BANNER)
    return wire, server_banner, parse_kexinit(await wire.message(MSG_KEXINIT))


async def fetch_host_key(wire: SshWire, server: KexInit, kex: str, host_key: str) -> HostKey:
    """Run the key exchange ``kex`` far enough to read the host key of ``host_key``."""
    await wire.conn.send(frame(client_kexinit(kex, host_key, server)))
    reply = MSG_KEXDH_REPLY
    if kex in X25519_KEX:
        public = x25519.X25519PrivateKey.generate().public_key()
        init = ssh_string(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    elif kex in ECDH_CURVES:
        point = ec.generate_private_key(ECDH_CURVES[kex]()).public_key()
        init = ssh_string(point.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
    elif kex in MODP_BITS:
        init = ssh_mpint(_public_value(MODP_BITS[kex]))
    elif kex in GEX_KEX:
        await wire.conn.send(frame(bytes([MSG_KEX_DH_GEX_REQUEST])
                                   + struct.pack(">III", *GEX_BITS)))
        group = Reader(await wire.message(MSG_KEX_DH_GEX_GROUP))
        group.byte()
        prime = group.mpint()
        if prime.bit_length() < 512 or prime.bit_length() > 16384:
            raise SshProtocolError(f"group exchange prime of {prime.bit_length()} bits")
        init = ssh_mpint(_public_value(prime.bit_length()))
        reply = MSG_KEX_DH_GEX_REPLY
    else:
        raise ValueError(f"key exchange {kex} is not supported")
    first = MSG_KEX_DH_GEX_INIT if kex in GEX_KEX else MSG_KEXDH_INIT
    await wire.conn.send(frame(bytes([first]) + init))
    return parse_host_key(kex_reply_host_key(await wire.message(reply), reply))


def _public_value(bits: int) -> int:
    """A random value of ``bits - 1`` bits: above 1 and below any prime of ``bits`` bits."""
    return secrets.randbits(bits - 2) | (1 << (bits - 2))
