"""Smoke tests of the real-daemon harness (tests/daemons): each daemon starts in its private mount
namespace on its 127.95.0.x address and behaves as configured, checked with a plain client.
The host's account files must be byte-identical before and after the module.

Each test skips only when ``tests.daemons.available(name)`` gives a reason (not root, a package
missing, no mount namespace); CI runs as root after ``make system-deps``, so there they all run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import io
import os
import re
import shutil
import socket
import struct
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests import daemons
from tests.daemons import Daemon, daemon_fixture

pytestmark = pytest.mark.timeout(60)

HOST_ACCOUNT_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group")
IO_TIMEOUT = 8.0

dropbear = daemon_fixture("dropbear")
telnetd_login = daemon_fixture("telnetd-login")
telnetd_shell = daemon_fixture("telnetd-shell")
lighttpd_basic = daemon_fixture("lighttpd-basic")
lighttpd_digest = daemon_fixture("lighttpd-digest")
vsftpd = daemon_fixture("vsftpd")
mosquitto_anon = daemon_fixture("mosquitto-anon")
mosquitto_auth = daemon_fixture("mosquitto-auth")
snmpd = daemon_fixture("snmpd")
openssh_keyonly = daemon_fixture("openssh-keyonly")


def _digests() -> dict[str, str]:
    out = {}
    for path in HOST_ACCOUNT_FILES:
        try:
            out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:  # /etc/shadow is unreadable when not root
            out[path] = f"unreadable: {exc.__class__.__name__}"
    return out


@pytest.fixture(scope="module", autouse=True)
def _host_accounts_untouched() -> Iterator[None]:
    before = _digests()
    yield
    assert _digests() == before, "a daemon test changed the host's account files"


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status  # a zombie of some other parent is dead too


# --------------------------------------------------------------------------- harness itself


def test_every_daemon_is_confined_to_127_95_0_0_24() -> None:
    for name, spec in daemons.SPECS.items():
        assert spec.address.startswith("127.95.0."), name
        assert spec.port != 2024, name
    assert set(daemons.NAMES) == {
        "dropbear", "telnetd-login", "telnetd-shell", "lighttpd-basic", "lighttpd-digest",
        "vsftpd", "mosquitto-anon", "mosquitto-auth", "snmpd", "openssh-keyonly",
        "openssh-weak", "openssh-hardened", "stunnel-weak", "stunnel-strong", "coap-server",
        "vsftpd-ftps"}


def test_unknown_name_is_an_error_not_a_skip() -> None:
    with pytest.raises(KeyError):
        daemons.available("no-such-daemon")


def test_running_stops_the_daemon_and_its_log_shows_on_failure(tmp_path: Path) -> None:
    reason = daemons.available("mosquitto-anon")
    if reason:
        pytest.skip(f"mosquitto-anon: {reason}")
    with pytest.raises(AssertionError) as info, daemons.running("mosquitto-anon", tmp_path) as d:
        assert d.transport == "tcp" and d.log.is_file()
        assert d.pid == os.getpgid(d.pid)
        raise AssertionError("deliberate")
    assert any("mosquitto version" in note for note in getattr(info.value, "__notes__", []))
    assert _gone(d.pid)
    assert not daemons._listening(d.address, d.port, d.transport)


# --------------------------------------------------------------------------- SSH


def _ssh(daemon: Daemon, **auth: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(daemon.address, daemon.port, timeout=IO_TIMEOUT, banner_timeout=IO_TIMEOUT,
                   auth_timeout=IO_TIMEOUT, look_for_keys=False, allow_agent=False, **auth)
    return client


def _run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=IO_TIMEOUT)
    return stdout.read().decode().strip()


def test_dropbear_password_login(dropbear: Daemon) -> None:
    client = _ssh(dropbear, username="admin", password="admin")
    try:
        assert _run(client, "id -un; echo $HOME") == "admin\n/home/admin"
        assert "dropbear" in client.get_transport().remote_version.lower()
    finally:
        client.close()
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(dropbear, username="admin", password="wrong").close()


def test_openssh_refuses_passwords_but_takes_the_key(openssh_keyonly: Daemon) -> None:
    with pytest.raises(paramiko.BadAuthenticationType) as info:
        _ssh(openssh_keyonly, username="admin", password="admin").close()
    assert info.value.allowed_types == ["publickey"]
    client = _ssh(openssh_keyonly, username="admin",
                  key_filename=openssh_keyonly.extra["client_key"])
    try:
        assert _run(client, "id -un") == "admin"
        assert "openssh" in client.get_transport().remote_version.lower()
    finally:
        client.close()


# --------------------------------------------------------------------------- telnet

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240


class Telnet:
    """A tiny telnet client: refuses every option the server asks of us, accepts the server's
    ECHO and SUPPRESS-GO-AHEAD, and drops subnegotiations."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.raw = bytearray()
        self.text = bytearray()

    @classmethod
    async def open(cls, daemon: Daemon) -> Telnet:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(daemon.address, daemon.port), IO_TIMEOUT)
        return cls(reader, writer)

    def _parse(self) -> None:
        raw, i = self.raw, 0
        while i < len(raw):
            if raw[i] != IAC:
                self.text.append(raw[i])
                i += 1
                continue
            if i + 1 >= len(raw):
                break
            command = raw[i + 1]
            if command == IAC:
                self.text.append(IAC)
                i += 2
            elif command in (DO, DONT, WILL, WONT):
                if i + 2 >= len(raw):
                    break
                option = raw[i + 2]
                if command == DO:
                    self.writer.write(bytes([IAC, WONT, option]))
                elif command == WILL:
                    self.writer.write(bytes([IAC, DO if option in (1, 3) else DONT, option]))
                i += 3
            elif command == SB:
                end = raw.find(bytes([IAC, SE]), i + 2)
                if end < 0:
                    break
                i = end + 2
            else:
                i += 2
        del raw[:i]

    async def expect(self, pattern: str, timeout: float = IO_TIMEOUT) -> str:
        """Read until ``pattern`` matches the text since the last expect(); return that text."""
        regex = re.compile(pattern.encode())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(10_000):
            match = regex.search(self.text)
            if match:
                seen = self.text[: match.end()].decode(errors="replace")
                del self.text[: match.end()]
                return seen
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(self.reader.read(4096), remaining)
            except TimeoutError:
                break
            if not chunk:
                break
            self.raw += chunk
            self._parse()
        raise AssertionError(f"no {pattern!r} in {self.text.decode(errors='replace')!r}")

    def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\r\n")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


PROMPT = r"[$#] $"


async def test_telnet_login_reaches_a_shell(telnetd_login: Daemon) -> None:
    t = await Telnet.open(telnetd_login)
    try:
        banner = await t.expect(r"login: $")
        assert "IoT-DVR telnet service" in banner
        t.send("admin")
        await t.expect(r"Password: $")
        t.send("admin")
        await t.expect(PROMPT)
        t.send("id -un")
        assert "admin" in await t.expect(PROMPT)
    finally:
        await t.close()


async def test_telnet_login_refuses_a_wrong_password(telnetd_login: Daemon) -> None:
    t = await Telnet.open(telnetd_login)
    try:
        await t.expect(r"login: $")
        t.send("admin")
        await t.expect(r"Password: $")
        t.send("not-the-password")
        seen = await t.expect(r"login: $", timeout=15)  # pam_faildelay: about 3 s
        assert "Login incorrect" in seen
        assert not re.search(PROMPT, seen)
    finally:
        await t.close()


async def test_telnet_shell_needs_no_login_and_sessions_die_with_it(tmp_path: Path) -> None:
    reason = daemons.available("telnetd-shell")
    if reason:
        pytest.skip(f"telnetd-shell: {reason}")
    with daemons.running("telnetd-shell", tmp_path) as d:
        t = await Telnet.open(d)
        await t.expect(r"# $")
        t.send("echo uid=$(id -u) pid=$$")
        seen = await t.expect(r"pid=(\d+)\s")
        assert "uid=0" in seen
        shell_pid = int(re.findall(r"pid=(\d+)", seen)[-1])
        assert not _gone(shell_pid)
        # the session stays open: the harness must kill it (telnetd made it its own session)
    try:
        assert _gone(shell_pid), "the telnet session's shell outlived the daemon"
        assert _gone(d.pid)
    finally:
        await t.close()


# --------------------------------------------------------------------------- HTTP


def _opener(daemon: Daemon, handler: urllib.request.BaseHandler | None = None):
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if handler is not None:
        handlers.append(handler)
    return urllib.request.build_opener(*handlers)


def _status(opener: urllib.request.OpenerDirector,
            url: str | urllib.request.Request) -> tuple[int, str, str]:
    try:
        with opener.open(url, timeout=IO_TIMEOUT) as response:
            return response.status, response.headers.get("WWW-Authenticate", ""), \
                response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("WWW-Authenticate", ""), ""


def _auth_handler(kind: type, daemon: Daemon, user: str, password: str):
    passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    passwords.add_password(None, f"http://{daemon.address}:{daemon.port}/", user, password)
    return kind(passwords)


def test_lighttpd_basic_auth(lighttpd_basic: Daemon) -> None:
    base = f"http://{lighttpd_basic.address}:{lighttpd_basic.port}"
    code, challenge, _ = _status(_opener(lighttpd_basic), base + "/")
    assert code == 401 and challenge.startswith("Basic") and 'realm="IPCamera"' in challenge
    code, _, body = _status(_opener(lighttpd_basic), base + "/public.html")
    assert code == 200 and "public page" in body
    good = _auth_handler(urllib.request.HTTPBasicAuthHandler, lighttpd_basic, "admin", "admin")
    code, _, body = _status(_opener(lighttpd_basic, good), base + "/")
    assert code == 200 and "protected" in body
    bad = _auth_handler(urllib.request.HTTPBasicAuthHandler, lighttpd_basic, "admin", "nope")
    assert _status(_opener(lighttpd_basic, bad), base + "/")[0] == 401


def test_lighttpd_digest_auth(lighttpd_digest: Daemon) -> None:
    base = f"http://{lighttpd_digest.address}:{lighttpd_digest.port}"
    code, challenge, _ = _status(_opener(lighttpd_digest), base + "/")
    assert code == 401 and challenge.startswith("Digest") and 'realm="IPCamera"' in challenge
    assert _status(_opener(lighttpd_digest), base + "/public.html")[0] == 200
    good = _auth_handler(urllib.request.HTTPDigestAuthHandler, lighttpd_digest, "admin", "12345")
    code, _, body = _status(_opener(lighttpd_digest, good), base + "/")
    assert code == 200 and "protected" in body
    # One wrong answer by hand: urllib's handler would retry 5 times and lighttpd delays every
    # failed auth by about 1 s.
    request = urllib.request.Request(base + "/", headers={
        "Authorization": _digest_answer(challenge, "admin", "admin", "GET", "/")})
    assert _status(_opener(lighttpd_digest), request)[0] == 401


def _digest_answer(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """RFC 7616 MD5 Digest response with qop=auth to a WWW-Authenticate challenge."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.split(" ", 1)[1]))
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()
    ha1 = md5(f"{user}:{fields['realm']}:{password}")
    ha2 = md5(f"{method}:{uri}")
    nc, cnonce = "00000001", "0a4f113b"
    response = md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
            f'uri="{uri}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}", '
            f'response="{response}"')


# --------------------------------------------------------------------------- FTP


def test_vsftpd_anonymous_read_only_and_local_user(vsftpd: Daemon) -> None:
    with ftplib.FTP() as ftp:
        banner = ftp.connect(vsftpd.address, vsftpd.port, timeout=IO_TIMEOUT)
        assert "IoT-DVR FTP" in banner
        assert ftp.login().startswith("230")  # anonymous, any password
        assert ftp.nlst() == ["readme.txt"]
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.storbinary("STOR upload.bin", io.BytesIO(b"x"))
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.mkd("newdir")
    with ftplib.FTP() as ftp:
        ftp.connect(vsftpd.address, vsftpd.port, timeout=IO_TIMEOUT)
        ftp.login("ftpuser", "ftppass")
        assert ftp.pwd() == "/home/ftpuser"
        assert "README.txt" in ftp.nlst()
    with ftplib.FTP() as ftp:
        ftp.connect(vsftpd.address, vsftpd.port, timeout=IO_TIMEOUT)
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp.login("ftpuser", "wrong")


# --------------------------------------------------------------------------- MQTT


def _mqtt_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def mqtt_connack(daemon: Daemon, username: str | None = None,
                 password: str | None = None) -> int:
    """Send an MQTT 3.1.1 CONNECT and return the CONNACK return code."""
    flags = 0x02  # clean session
    payload = _mqtt_string("iotbaseline-smoke")
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + payload
    assert len(body) < 128  # one-byte remaining length
    with socket.create_connection((daemon.address, daemon.port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = b""
        for _ in range(4):
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                break
            reply += chunk
            if len(reply) == 4:
                break
    assert reply[:2] == b"\x20\x02", reply
    return reply[3]


def test_mosquitto_anonymous_allowed(mosquitto_anon: Daemon) -> None:
    assert mqtt_connack(mosquitto_anon) == 0


def test_mosquitto_anonymous_refused(mosquitto_auth: Daemon) -> None:
    assert mqtt_connack(mosquitto_auth) == 5
    assert mqtt_connack(mosquitto_auth, "iot", "iot") == 0
    assert mqtt_connack(mosquitto_auth, "iot", "wrong") in (4, 5)


# --------------------------------------------------------------------------- SNMP

SYS_DESCR, SYS_NAME = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.5.0"


def snmp_request(daemon: Daemon, community: str, oid: str, set_value: str | None = None,
                 timeout: float = 1.5) -> tuple[int, str] | None:
    """An SNMPv2c GET (or SET of an OCTET STRING) built with scapy; (error_status, value) or
    None when the agent stays silent (wrong community)."""
    from scapy.asn1.asn1 import ASN1_OID, ASN1_STRING
    from scapy.layers.snmp import SNMP, SNMPget, SNMPset, SNMPvarbind

    if set_value is None:
        pdu = SNMPget(id=4242, varbindlist=[SNMPvarbind(oid=ASN1_OID(oid))])
    else:
        pdu = SNMPset(id=4242, varbindlist=[SNMPvarbind(oid=ASN1_OID(oid),
                                                        value=ASN1_STRING(set_value))])
    packet = bytes(SNMP(version=1, community=community, PDU=pdu))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (daemon.address, daemon.port))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    reply = SNMP(data)
    value = reply.PDU.varbindlist[0].value.val
    return int(reply.PDU.error.val), value.decode() if isinstance(value, bytes) else str(value)


def test_snmpd_communities(snmpd: Daemon) -> None:
    assert snmp_request(snmpd, "public", SYS_DESCR) == (0, "IoT-DVR test")
    assert snmp_request(snmpd, "wrong-community", SYS_DESCR) is None
    status, _ = snmp_request(snmpd, "public", SYS_NAME, set_value="owned") or (None, "")
    assert status not in (None, 0)  # read-only community cannot write
    assert snmp_request(snmpd, "private", SYS_NAME, set_value="owned") == (0, "owned")
    assert snmp_request(snmpd, "public", SYS_NAME) == (0, "owned")


@pytest.mark.skipif(shutil.which("snmpget") is None, reason="snmpget (Debian package snmp) "
                    "not installed")
def test_snmpd_with_net_snmp_client(snmpd: Daemon) -> None:
    done = subprocess.run(["snmpget", "-v2c", "-c", "public", "-On", "-t", "1", "-r", "1",
                           f"{snmpd.address}:{snmpd.port}", SYS_DESCR],
                          capture_output=True, text=True, timeout=15, check=False,
                          env={**os.environ, "MIBS": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'.{SYS_DESCR} = STRING: "IoT-DVR test"'
