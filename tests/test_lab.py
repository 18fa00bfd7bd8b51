"""The simulated lab (scanner/lab.py) and the misbehaving fakes (tests/fakes.py), at socket level.

Uses 127.78.0.x (lab) and 127.78.1.x (fakes) so it cannot clash with other test modules that
start the lab on its default 127.77.0.x addresses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from defusedxml import ElementTree

from scanner import lab as lab_module
from scanner.lab import (
    LAB_THREAD_PREFIX,
    SSH_MAX_BYTES,
    Lab,
    LabDevice,
    LabService,
    default_devices,
)
from tests import fakes

PREFIX = "127.78.0"
CAMERA, ROUTER, HUB, HARDENED = (f"{PREFIX}.{n}" for n in (11, 12, 13, 14))
FAKE_PORT = 9000
IAC, WILL, DO, SB, SE = 255, 251, 253, 250, 240


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    async with Lab(default_devices(PREFIX)) as running:
        yield running


async def connect(
    host: str, port: int, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port, ssl=tls), 2)


async def until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 2)


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer closes; a reset counts as a close."""
    try:
        return await asyncio.wait_for(reader.read(), 2)
    except ConnectionResetError:
        return b""


async def request(
    host: str, port: int, head: str, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one request head, read the response to EOF -> (status, lower-cased headers, body)."""
    reader, writer = await connect(host, port, tls)
    writer.write(head.encode())
    data = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def get(path: str, host: str, extra: str = "") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


def basic(user: str, password: str) -> str:
    return (
        "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() + "\r\n"
    )


# --- lab lifecycle ----------------------------------------------------------------------------


def test_default_devices_and_ports() -> None:
    devices = default_devices(PREFIX)
    assert [d.name for d in devices] == ["camera", "router", "hub", "hardened"]
    lab = Lab(devices)
    assert lab.addresses == [CAMERA, ROUTER, HUB, HARDENED]
    assert lab.tcp_ports == [1883, 2222, 2323, 8080, 8443, 8554, 49152]
    assert lab.udp_ports == [1900]


def test_refuses_non_loopback_addresses() -> None:
    device = LabDevice("x", "192.0.2.1", "hub", (LabService(1883, "tcp", "mqtt"),))
    with pytest.raises(ValueError, match="loopback"):
        Lab([device])


async def test_stop_closes_open_connections_promptly(lab: Lab) -> None:
    reader, writer = await connect(CAMERA, 2323)
    await until(reader, b"login: ")
    assert lab.connection_counts[(CAMERA, 2323)] == 1
    await asyncio.wait_for(lab.stop(), 1)
    assert await read_to_eof(reader) == b""
    writer.close()
    with pytest.raises(OSError):
        await connect(CAMERA, 2323)


async def test_a_bad_client_only_costs_its_own_connection(lab: Lab) -> None:
    reader, writer = await connect(CAMERA, 8080)
    writer.write(b"\x00\xff\xfe\r\n\r\n")  # no request line to parse
    assert await read_to_eof(reader) == b""
    writer.close()
    status, _, _ = await request(CAMERA, 8080, get("/", CAMERA))
    assert status == 401


# --- camera -----------------------------------------------------------------------------------


async def test_telnet_login_success(lab: Lab) -> None:
    reader, writer = await connect(CAMERA, 2323)
    greeting = await until(reader, b"ipcam login: ")
    assert greeting.startswith(bytes((IAC, WILL, 1, IAC, WILL, 3, IAC, DO, 31)))
    assert greeting.endswith(b"\r\nipcam login: ")
    # Option replies, including an IAC sequence split across two segments, must be stripped.
    writer.write(
        bytes((IAC, DO, 1, IAC, DO, 3, IAC, WILL, 31, IAC, SB, 31, 0, 80, 0, 24, IAC, SE, IAC))
    )
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(bytes((DO, 1)) + b"admin\r\n")
    assert (await until(reader, b"Password: ")).startswith(b"admin")
    writer.write(b"admin\r\n")
    assert b"BusyBox" in await until(reader, b"# ")
    writer.write(b"id\r\n")
    assert b"not found" in await until(reader, b"# ")
    writer.write(b"exit\r\n")
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_telnet_login_failure_closes_after_three(lab: Lab) -> None:
    reader, writer = await connect(CAMERA, 2323)
    await until(reader, b"login: ")
    for attempt in range(3):
        writer.write(b"root\r\n")
        await until(reader, b"Password: ")
        writer.write(b"wrong\r\n")
        assert (await until(reader, b"Login incorrect\r\n")).endswith(b"\r\nLogin incorrect\r\n")
        if attempt < 2:
            await until(reader, b"\r\nipcam login: ")
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_camera_http_basic_auth(lab: Lab) -> None:
    status, headers, _ = await request(CAMERA, 8080, get("/", CAMERA))
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="IPCamera"'
    assert headers["server"] == "Boa/0.94.13"
    status, _, _ = await request(CAMERA, 8080, get("/", CAMERA, basic("admin", "admin")))
    assert status == 401
    status, _, body = await request(CAMERA, 8080, get("/", CAMERA, basic("admin", "12345")))
    assert status == 200
    assert b"<title>Network Camera</title>" in body


async def test_rtsp_options_and_describe(lab: Lab) -> None:
    reader, writer = await connect(CAMERA, 8554)
    url = f"rtsp://{CAMERA}:8554/live"
    writer.write(f"OPTIONS {url} RTSP/1.0\r\nCSeq: 7\r\n\r\n".encode())
    reply = (await until(reader, b"\r\n\r\n")).decode()
    assert reply.startswith("RTSP/1.0 200 OK\r\n")
    assert "CSeq: 7\r\n" in reply
    assert "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n" in reply
    assert "Server: Hipcam RealServer/V1.0\r\n" in reply
    writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 8\r\n\r\n".encode())
    reply = (await until(reader, b"\r\n\r\n")).decode()
    assert reply.startswith("RTSP/1.0 401 Unauthorized\r\n")
    assert 'WWW-Authenticate: Basic realm="IPCamera"' in reply and "CSeq: 8" in reply
    writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 9\r\n{basic('admin', '12345')}\r\n".encode())
    reply = (await until(reader, b"\r\n\r\n")).decode()
    assert reply.startswith("RTSP/1.0 200 OK\r\n") and "application/sdp" in reply
    writer.close()


# --- SSH --------------------------------------------------------------------------------------


async def ssh_kexinit(host: str) -> tuple[bytes, list[list[str]]]:
    """Banner and the ten KEXINIT name-lists, checking RFC 4253 framing on the way."""
    reader, writer = await connect(host, 2222)
    version = await until(reader, b"\r\n")
    writer.write(b"SSH-2.0-iotbaseline_test\r\n")
    (length,) = struct.unpack("!I", await asyncio.wait_for(reader.readexactly(4), 2))
    packet = await asyncio.wait_for(reader.readexactly(length), 2)
    writer.close()
    padding = packet[0]
    assert padding >= 4 and (4 + length) % 8 == 0
    payload = packet[1 : length - padding]
    assert payload[0] == 20
    offset, lists = 17, []
    for _ in range(10):
        (size,) = struct.unpack_from("!I", payload, offset)
        lists.append(payload[offset + 4 : offset + 4 + size].decode().split(",") if size else [])
        offset += 4 + size
    assert payload[offset:] == bytes(5)  # first_kex_packet_follows + reserved
    return version, lists


@contextlib.contextmanager
def ssh_client(host: str) -> Iterator[paramiko.Transport]:
    """A paramiko client after key exchange, closed and joined on exit. Blocking: run the whole
    exchange in a thread, as the lab accepts on the event loop."""
    transport = paramiko.Transport(socket.create_connection((host, 2222), timeout=2))
    try:
        transport.start_client(timeout=5)
        yield transport
    finally:
        transport.close()
        transport.join(2)


def lab_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(LAB_THREAD_PREFIX)]


async def test_router_ssh_weak_kexinit(lab: Lab) -> None:
    version, lists = await ssh_kexinit(ROUTER)
    assert version == b"SSH-2.0-dropbear_2017.75\r\n"
    kex, host_keys, ciphers, _, macs, _, compression, *_ = lists
    assert kex == ["diffie-hellman-group14-sha256"]  # no kex-strict: predates Terrapin
    assert host_keys == ["rsa-sha2-256", "rsa-sha2-512"]
    assert ciphers == ["aes128-cbc", "3des-cbc", "aes128-ctr"]
    assert macs == ["hmac-md5", "hmac-sha1"]
    assert compression == ["none"]
    assert lists[3] == ciphers and lists[5] == macs and lists[8:] == [[], []]


async def test_hardened_ssh_strong_kexinit(lab: Lab) -> None:
    version, lists = await ssh_kexinit(HARDENED)
    assert version == b"SSH-2.0-OpenSSH_9.6\r\n"
    assert lists[0] == [
        "curve25519-sha256@libssh.org",
        "diffie-hellman-group16-sha512",
        "kex-strict-s-v00@openssh.com",
    ]
    assert lists[1] == ["ssh-ed25519"]
    assert lists[2] == ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]
    assert lists[4] == ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"]


def router_logins() -> dict[str, object]:
    seen: dict[str, object] = {}
    with ssh_client(ROUTER) as client:
        key = client.get_remote_server_key()
        seen["banner"], seen["host_key"] = client.remote_version, (key.get_name(), key.get_bits())
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            client.auth_none("admin")
        seen["methods"] = refused.value.allowed_types
        assert client.auth_password("admin", "admin") == []
        seen["authenticated"] = client.is_authenticated()
        # Even a successful login gets no session.
        with pytest.raises(paramiko.ChannelException, match="prohibited"):
            client.open_session(timeout=2)
    with ssh_client(ROUTER) as client:
        with pytest.raises(paramiko.AuthenticationException) as wrong:
            client.auth_password("admin", "password")
        assert not isinstance(wrong.value, paramiko.BadAuthenticationType)
        seen["wrong_password_authenticated"] = client.is_authenticated()
    return seen


async def test_router_ssh_accepts_admin_admin_only(lab: Lab) -> None:
    seen = await asyncio.wait_for(asyncio.to_thread(router_logins), 20)
    assert seen == {
        "banner": "SSH-2.0-dropbear_2017.75",
        "host_key": ("ssh-rsa", 1024),
        "methods": ["password"],
        "authenticated": True,
        "wrong_password_authenticated": False,
    }
    assert lab.connection_counts[(ROUTER, 2222)] == 2


def hardened_logins() -> dict[str, object]:
    seen: dict[str, object] = {}
    with ssh_client(HARDENED) as client:
        seen["banner"] = client.remote_version
        seen["host_key"] = client.get_remote_server_key().get_name()
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            client.auth_none("admin")
        seen["methods"] = refused.value.allowed_types
        with pytest.raises(paramiko.BadAuthenticationType) as password:
            client.auth_password("admin", "admin")
        seen["password_methods"] = password.value.allowed_types
        seen["authenticated"] = client.is_authenticated()
    return seen


async def test_hardened_ssh_offers_only_publickey(lab: Lab) -> None:
    seen = await asyncio.wait_for(asyncio.to_thread(hardened_logins), 20)
    assert seen == {
        "banner": "SSH-2.0-OpenSSH_9.6",
        "host_key": "ssh-ed25519",
        "methods": ["publickey"],
        "password_methods": ["publickey"],
        "authenticated": False,
    }


async def test_ssh_connection_is_bounded_in_time_and_bytes(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A version line that never ends: the byte cap closes the connection.
    reader, writer = await connect(ROUTER, 2222)
    await until(reader, b"\r\n")
    with contextlib.suppress(ConnectionError):
        for _ in range(SSH_MAX_BYTES // 4096 + 2):
            writer.write(b"A" * 4096)
            await asyncio.wait_for(writer.drain(), 2)
    assert await read_to_eof(reader) == b""
    writer.close()
    # A client that goes quiet after its version line: the session deadline closes it.
    monkeypatch.setattr(lab_module, "SSH_SESSION_TIMEOUT", 0.5)
    reader, writer = await connect(HARDENED, 2222)
    await until(reader, b"\r\n")
    writer.write(b"SSH-2.0-idle\r\n")
    started = asyncio.get_running_loop().time()
    data = await read_to_eof(reader)  # the server's KEXINIT, then EOF
    assert data[5] == 20 and asyncio.get_running_loop().time() - started < 1.5
    writer.close()


async def test_stop_ends_every_ssh_thread_promptly(lab: Lab) -> None:
    idle = [await connect(address, 2222) for address in (ROUTER, ROUTER, HARDENED)]
    for reader, _ in idle:
        await until(reader, b"\r\n")
    logged_in = threading.Event()
    leave = threading.Event()

    def stay_logged_in() -> bool:
        with ssh_client(ROUTER) as client:
            client.auth_password("admin", "admin")
            logged_in.set()
            leave.wait(5)
            return client.is_active()

    client = asyncio.create_task(asyncio.to_thread(stay_logged_in))
    try:
        assert await asyncio.to_thread(logged_in.wait, 10)
        assert len(lab_threads()) == 4
        assert lab.connection_counts == {(ROUTER, 2222): 3, (HARDENED, 2222): 1}
        await asyncio.wait_for(lab.stop(), 1)
        assert lab_threads() == []
        for reader, writer in idle:
            assert await read_to_eof(reader) == b""
            writer.close()
        await asyncio.sleep(0.3)  # the client's own thread sees the EOF
    finally:
        leave.set()
        assert await asyncio.wait_for(client, 5) is False  # the lab ended the session
    with pytest.raises(OSError):
        await connect(ROUTER, 2222)


# --- router UPnP and web ----------------------------------------------------------------------


def m_search(st: str) -> bytes:
    return (
        f'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        f"MX: 1\r\nST: {st}\r\n\r\n"
    ).encode()


async def test_ssdp_reply_and_device_description(lab: Lab) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((f"{PREFIX}.1", 0))
        sock.setblocking(False)
        # Neither a non-matching ST nor a non-M-SEARCH datagram gets an answer.
        await loop.sock_sendto(
            sock, m_search("urn:schemas-upnp-org:device:MediaRenderer:1"), (ROUTER, 1900)
        )
        await loop.sock_sendto(sock, b"NOTIFY * HTTP/1.1\r\n\r\n", (ROUTER, 1900))
        await loop.sock_sendto(sock, m_search("ssdp:all"), (ROUTER, 1900))
        data, sender = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 0.3)
    assert sender == (ROUTER, 1900)
    status_line, *lines = data.decode().split("\r\n")
    assert status_line == "HTTP/1.1 200 OK"
    headers = {k.upper(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    assert headers["CACHE-CONTROL"] == "max-age=1800"
    assert headers["ST"] == "upnp:rootdevice"
    assert headers["USN"].startswith("uuid:") and headers["USN"].endswith("::upnp:rootdevice")
    assert headers["SERVER"] == "Linux/3.4 UPnP/1.0 MiniUPnPd/1.9"
    assert "EXT" in headers
    location = urlsplit(headers["LOCATION"])
    assert (location.hostname, location.port, location.path) == (ROUTER, 49152, "/rootDesc.xml")

    status, http_headers, body = await request(ROUTER, 49152, get(location.path, ROUTER))
    assert status == 200 and "xml" in http_headers["content-type"]
    ns = {"u": "urn:schemas-upnp-org:device-1-0"}
    device = ElementTree.fromstring(body).find("u:device", ns)
    assert device.findtext("u:deviceType", namespaces=ns) == (
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
    )
    assert device.findtext("u:manufacturer", namespaces=ns) == "NETGEAR"
    assert device.findtext("u:modelName", namespaces=ns) == "R7000"
    assert device.findtext("u:serialNumber", namespaces=ns) == "4A21B3C00F9E"
    assert device.findtext("u:UDN", namespaces=ns) == headers["USN"].split("::")[0]
    service = device.find("u:serviceList/u:service", ns)
    assert service.findtext("u:controlURL", namespaces=ns) == "/ctl/IPConn"


async def test_router_login_page(lab: Lab) -> None:
    status, headers, body = await request(ROUTER, 8080, get("/", ROUTER))
    assert status == 200 and headers["server"] == "httpd"
    assert b"<title>Router Login</title>" in body
    assert b'action="/login.cgi"' in body and b'name="password"' in body


# --- hub --------------------------------------------------------------------------------------


def mqtt_string(text: str) -> bytes:
    return struct.pack("!H", len(text)) + text.encode()


def mqtt_connect(level: int) -> bytes:
    properties = b"\x00" if level == 5 else b""
    body = mqtt_string("MQTT") + bytes((level, 0x02)) + struct.pack("!H", 30) + properties
    body += mqtt_string("iotbaseline-test")
    return bytes((0x10, len(body))) + body


async def mqtt_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, length = await asyncio.wait_for(reader.readexactly(2), 2)
    assert length < 128
    return first, await asyncio.wait_for(reader.readexactly(length), 2)


async def test_mqtt_311_connect_subscribe_ping(lab: Lab) -> None:
    reader, writer = await connect(HUB, 1883)
    writer.write(mqtt_connect(4))
    assert await mqtt_read(reader) == (0x20, b"\x00\x00")
    writer.write(b"\x82" + bytes((6,)) + b"\x00\x01" + mqtt_string("#") + b"\x00")
    assert await mqtt_read(reader) == (0x90, b"\x00\x01\x00")
    published = [await mqtt_read(reader), await mqtt_read(reader)]
    assert published == [
        (0x31, mqtt_string("home/livingroom/temperature") + b"21.5"),
        (0x31, mqtt_string("home/frontdoor/lock") + b"locked"),
    ]
    writer.write(b"\xc0\x00")
    assert await mqtt_read(reader) == (0xD0, b"")
    writer.write(b"\xe0\x00")
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_mqtt_5_connect_and_exact_topic(lab: Lab) -> None:
    reader, writer = await connect(HUB, 1883)
    writer.write(mqtt_connect(5))
    assert await mqtt_read(reader) == (0x20, b"\x00\x00\x00")
    body = b"\x00\x02\x00" + mqtt_string("home/frontdoor/lock") + b"\x00"
    writer.write(bytes((0x82, len(body))) + body)
    assert await mqtt_read(reader) == (0x90, b"\x00\x02\x00\x00")
    assert await mqtt_read(reader) == (0x31, mqtt_string("home/frontdoor/lock") + b"\x00locked")
    writer.write(b"\xc0\x00")
    assert await mqtt_read(reader) == (0xD0, b"")  # no second publish came before it
    writer.close()


async def test_mqtt_oversized_packet_closes(lab: Lab) -> None:
    reader, writer = await connect(HUB, 1883)
    writer.write(b"\x10\xff\xff\xff\x7f")  # remaining length ~256 MiB
    assert await read_to_eof(reader) == b""
    writer.close()


async def test_hub_api_info(lab: Lab) -> None:
    status, headers, body = await request(HUB, 8080, get("/api/info", HUB))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"model": "SmartHub 2", "firmware": "1.4.2", "vendor": "Acme"}
    status, _, body = await request(HUB, 8080, get("/", HUB))
    assert status == 200 and b"<title>SmartHub</title>" in body


# --- hardened ---------------------------------------------------------------------------------


async def test_https_certificate_chains_to_the_lab_ca(lab: Lab) -> None:
    tls = ssl.create_default_context(cadata=lab.ca.pem.decode())
    tls.check_hostname = False  # the SAN names the address; verified below
    _, writer = await connect(HARDENED, 8443, tls)  # verification against the lab CA passes
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "thermostat.lab"
    assert cert.issuer == lab.ca.certificate.subject != cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [HARDENED]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    with pytest.raises(ssl.SSLCertVerificationError):  # untrusted without the lab CA
        await connect(HARDENED, 8443, ssl.create_default_context())

    status, headers, body = await request(HARDENED, 8443, get("/", HARDENED), tls)
    assert status == 200 and headers["server"] == "nginx"
    assert b"<title>Thermostat</title>" in body


# --- fakes ------------------------------------------------------------------------------------


async def test_fake_silent() -> None:
    fake = await fakes.silent("127.78.1.1", FAKE_PORT)
    try:
        reader, writer = await connect("127.78.1.1", FAKE_PORT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        assert fake.connections == 1
        writer.close()
    finally:
        await fake.close()


async def test_fake_garbage() -> None:
    fake = await fakes.garbage("127.78.1.2", FAKE_PORT)
    try:
        reader, writer = await connect("127.78.1.2", FAKE_PORT)
        data = await read_to_eof(reader)
        assert len(data) == 4096 and 0 in data and 0xFF in data
        writer.close()
    finally:
        await fake.close()


async def test_fake_reset() -> None:
    fake = await fakes.reset("127.78.1.3", FAKE_PORT)
    try:
        reader, writer = await connect("127.78.1.3", FAKE_PORT)
        try:
            data = await asyncio.wait_for(reader.read(1), 2)
        except ConnectionResetError:
            data = b""
        assert data == b""
        writer.close()
    finally:
        await fake.close()


async def test_fake_endless_stops_when_client_leaves() -> None:
    fake = await fakes.endless("127.78.1.4", FAKE_PORT)
    try:
        reader, writer = await connect("127.78.1.4", FAKE_PORT)
        received = 0
        async with asyncio.timeout(2):
            while received <= 1 << 20:
                received += len(await reader.read(1 << 16))
        writer.close()
        async with asyncio.timeout(2):
            while fake.active:
                await asyncio.sleep(0.02)
    finally:
        await fake.close()


async def test_fake_drip() -> None:
    fake = await fakes.drip("127.78.1.5", FAKE_PORT)
    try:
        reader, writer = await connect("127.78.1.5", FAKE_PORT)
        assert await asyncio.wait_for(reader.read(10), 1) == b"."
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.5)
        writer.close()
    finally:
        await fake.close()


async def test_fake_banner() -> None:
    fake = await fakes.banner("127.78.1.6", FAKE_PORT, b"220 FTP ready\r\n")
    try:
        reader, writer = await connect("127.78.1.6", FAKE_PORT)
        assert await until(reader, b"\r\n") == b"220 FTP ready\r\n"
        writer.write(b"USER anonymous\r\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.2)
        writer.close()
    finally:
        await fake.close()
