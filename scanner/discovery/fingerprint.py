"""Service identification on open ports, standard or not: banner first, then polite requests.

Order per TCP port: wait briefly for a banner (SSH, Telnet, FTP speak first); if silent, send the
request the port hints at (MQTT CONNECT, RTSP OPTIONS) or an HTTP GET; if still nothing, try a
TLS handshake and repeat inside it. Binary IoT services with a safe identification request
(TP-Link 9999, Smart Install, Redis, memcached) get that request first. Fragile and industrial
ports (raw printing, Modbus, S7, DVR binary protocols; the interface table's connect-only
entries) are never sent a byte. UDP ports get the protocol-correct requests the interface table
lists for them (probes/data/interfaces.yaml), in order, until one is recognised.
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from probes.interfaces import UdpRequest, interface_table
from scanner.models import Certificate, Service
from scanner.net import (
    Connection,
    Network,
    ScopeViolation,
    Transcript,
    host_for_url,
    insecure_tls_context,
)
from scanner.protocols import iot_tcp, mqtt, telnet, udp
from scanner.protocols.ssh import parse_banner
from scanner.protocols.textproto import (
    USER_AGENT,
    Head,
    auth_scheme,
    build_request,
    head_complete,
    html_title,
    parse_head,
    response_complete,
)

# Raw printing and similar services print or act on whatever arrives (nmap #2237); industrial
# controllers and DVR binary protocols may crash on an unexpected HTTP request.
FRAGILE_PORTS = interface_table().connect_only_ports()
SHELL_PORTS = interface_table().shell_ports()  # where a bare prompt is a debug shell
TLS_FIRST_PORTS = {443, 465, 636, 853, 993, 995, 4433, 5061, 5986, 8443, 8883, 9443}
PORT_HINTS = {
    21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 80: "http", 443: "http", 554: "rtsp",
    1883: "mqtt", 2222: "ssh", 2323: "telnet", 5555: "adb", 7547: "http", 8000: "http",
    8080: "http", 8081: "http", 8443: "http", 8554: "rtsp", 8883: "mqtt", 49152: "http",
}
UDP_IDENTIFIERS = frozenset(port for request in interface_table().udp_requests
                            for port in request.ports)  # ports with a protocol-correct request
UDP_REPLY_WAIT = 2.0  # per request, or the profile's read timeout if shorter
BANNER_WAIT = 1.5  # services that speak first do so at once; nmap's NULL probe waits longer
CLIENT_FIRST_WAIT = 0.3  # ports whose usual protocol waits for the client (HTTP, RTSP, MQTT)


def _service(port: int, protocol: str, **values: object) -> Service:
    return Service(port=port, transport="tcp", protocol=protocol, sources=["banner"],
                   **values)


def _from_banner(port: int, banner: bytes) -> Service | None:
    """Protocols that speak first, recognised from what they said."""
    text = banner.decode("utf-8", "replace")
    first_line = text.splitlines()[0] if text.splitlines() else ""
    ssh = parse_banner(first_line)
    if ssh:
        return _service(port, "ssh", banner=first_line[:255], product=ssh[1], version=ssh[2],
                        details={"ssh_protocol": ssh[0]})
    if _negotiates(banner) or telnet.classify_prompt(banner) in ("login", "password"):
        return None  # handled by the telnet path, which negotiates
    if first_line.startswith("RFB ") and first_line[4:11].replace(".", "").isdigit():
        return _service(port, "vnc", banner=first_line[:255],
                        details={"rfb_version": first_line[4:11]})
    if first_line[:4] in ("220 ", "220-"):
        protocol = "smtp" if "SMTP" in first_line.upper() else "ftp"
        return _service(port, protocol, banner=first_line[:255])
    return None


def _negotiates(banner: bytes) -> bool:
    """Telnet servers open with option negotiation; random bytes almost never do."""
    return len(banner) >= 3 and banner[0] == telnet.IAC and \
        banner[1] in (telnet.DO, telnet.DONT, telnet.WILL, telnet.WONT, telnet.SB)


def _banner_complete(banner: bytes) -> bool:
    """A line, a prompt or Telnet negotiation: enough to tell what speaks. Negotiation is
    enough on its own because BusyBox telnetd's login(1) holds its prompt until the client
    answers (or for about 50 ms): waiting for it would cost that on every Telnet port."""
    return b"\n" in banner or _negotiates(banner) or \
        telnet.classify_prompt(telnet.split_negotiation(banner)[0]) is not None


def _looks_like_telnet(banner: bytes, hint: str | None) -> bool:
    """Negotiation or a login prompt is Telnet; a bare "#"/">" line is Telnet only on a Telnet
    port (a progress line "Loading 100%" or XML ending in ">" is not a shell)."""
    prompt = telnet.classify_prompt(telnet.split_negotiation(banner)[0])
    return _negotiates(banner) or prompt in ("login", "password") or hint == "telnet"


def _http_service(port: int, head: Head, tls: bool, protocol: str = "http") -> Service:
    details = {"status": str(head.status)}
    if head.protocol == "HTTP":
        title = html_title(head.body)
        if title:
            details["title"] = title
        scheme = auth_scheme(head)
        if scheme:
            details["auth"] = scheme
        if head.header("location"):
            details["location"] = head.header("location")[:512]
    if head.header("public"):
        details["methods"] = head.header("public")[:256]
    server = head.header("server")
    return _service(port, protocol, tls=tls, banner=server[:255], product=server[:128],
                    details=details)


async def _http_get(conn: Connection, host: str, port: int) -> Head | None:
    host_header = host_for_url(host)
    await conn.send(build_request("GET", "/", {
        "Host": f"{host_header}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*",
        "Connection": "close"}))
    data = await conn.recv_until(response_complete, max_bytes=32768)
    return parse_head(data)


async def _rtsp_options(conn: Connection, host: str, port: int) -> Head | None:
    await conn.send(build_request("OPTIONS", f"rtsp://{host}:{port}/", {
        "CSeq": "1", "User-Agent": USER_AGENT}, protocol="RTSP/1.0"))
    head = parse_head(await conn.recv_until(head_complete, max_bytes=8192))
    return head if head and head.protocol == "RTSP" else None


async def _mqtt_probe(conn: Connection) -> int | None:
    await conn.send(mqtt.connect_packet())
    return mqtt.parse_connack(await conn.recv_until(lambda b: len(b) >= 4, max_bytes=64))


def certificate_facts(der: bytes) -> Certificate:
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(value) for value in names.get_values_for_type(x509.DNSName)]
        sans += [str(value) for value in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    return Certificate(
        subject=cert.subject.rfc4514_string()[:512],
        issuer=cert.issuer.rfc4514_string()[:512],
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        self_signed=cert.subject == cert.issuer,
        subject_alt_names=sans[:32],
    )


async def _identify_plain(network: Network, host: str, port: int,
                          opened: Connection | None = None) -> Service | None:
    hint = PORT_HINTS.get(port)
    async with opened or await network.open_tcp(host, port) as conn:
        banner = await conn.recv_until(
            _banner_complete, max_bytes=4096,
            timeout=CLIENT_FIRST_WAIT if hint in ("http", "rtsp", "mqtt") else BANNER_WAIT)
        if banner:
            recognised = _from_banner(port, banner)
            if recognised:
                return recognised
            if port in SHELL_PORTS and telnet.classify_prompt(
                    telnet.split_negotiation(banner)[0]) == "shell":
                return _service(port, "shell", banner=banner.decode("utf-8", "replace")[-255:],
                                details={"prompt": "shell"})
            if _looks_like_telnet(banner, hint):
                text, prompt = await telnet.read_until_prompt(conn, timeout=3.0,
                                                              initial=banner)
                if prompt is not None or _negotiates(banner):
                    return _service(port, "telnet", banner=text.decode("utf-8", "replace")
                                    .strip()[-255:], details={"prompt": prompt or "none"})
            return _service(port, "unknown", banner=banner.decode("utf-8", "replace")[:255])
        if hint == "mqtt":
            code = await _mqtt_probe(conn)
            if code is not None:
                return _service(port, "mqtt", details={
                    "connack": mqtt.CONNACK_REASONS_V311.get(code, str(code))})
        elif hint == "rtsp":
            head = await _rtsp_options(conn, host, port)
            if head:
                return _http_service(port, head, tls=False, protocol="rtsp")
        else:
            head = await _http_get(conn, host, port)
            if head:
                return _http_service(port, head, tls=False,
                                     protocol="rtsp" if head.protocol == "RTSP" else "http")
    return None


async def _identify_tls(network: Network, host: str, port: int) -> Service | None:
    try:
        conn = await network.open_tcp(host, port, tls=insecure_tls_context())
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError):
        return None
    async with conn:
        details = {"tls_version": conn.tls_version or ""}
        certificate = None
        if conn.peer_certificate_der:
            try:
                certificate = certificate_facts(conn.peer_certificate_der)
            except Exception as exc:  # a device's malformed certificate is a fact, not a crash
                details["certificate_error"] = f"{type(exc).__name__}: {exc}"[:200]
        if PORT_HINTS.get(port) == "mqtt":
            code = await _mqtt_probe(conn)
            protocol = "mqtt" if code is not None else "tls"
        else:
            head = await _http_get(conn, host, port)
            if head:
                service = _http_service(port, head, tls=True)
                return service.model_copy(update={
                    "certificate": certificate, "details": {**service.details, **details}})
            protocol = "tls"
    return _service(port, protocol, tls=True, certificate=certificate, details=details)


async def _identify_binary(network: Network, host: str, port: int) -> Service | None:
    """The interface table's safe identification request for this port, if it has one."""
    request = interface_table().tcp_request_for(port)
    if request is None:
        return None
    protocol = iot_tcp.PROTOCOLS[request.recogniser]
    async with await network.open_tcp(host, port) as conn:
        await conn.send(protocol.request)
        reply = await conn.recv_until(protocol.complete, max_bytes=protocol.max_reply)
    details = protocol.recognise(reply)
    if details is None:
        return None
    return Service(port=port, transport="tcp", protocol=request.protocol,
                   sources=[request.recogniser], details=details)


async def identify_tcp(network: Network, host: str, port: int,
                       opened: Connection | None = None) -> Service:
    """Best identification of one open TCP port; never raises for what the device does.

    ``opened``: the sweep's connection to the port, used for the plain-text attempt when that
    comes first; otherwise closed at once (it holds one of the host's slots)."""
    try:
        return await _identify_tcp(network, host, port, opened)
    finally:
        if opened is not None:
            await opened.close()  # no-op when an attempt already used and closed it


async def _identify_tcp(network: Network, host: str, port: int,
                        opened: Connection | None) -> Service:
    if port in FRAGILE_PORTS:
        return Service(port=port, transport="tcp", protocol=FRAGILE_PORTS[port],
                       sources=["port"], details={"note": "fragile port: no payload sent",
                                                  "guess": "port number only"})
    attempts = [_identify_tls, _identify_plain] if port in TLS_FIRST_PORTS else \
        [_identify_plain, _identify_tls]
    if interface_table().tcp_request_for(port) is not None:
        attempts.insert(0, _identify_binary)
    if opened is not None and attempts[0] is not _identify_plain:
        await opened.close()
        opened = None
    problems = []
    for attempt in attempts:
        try:
            if attempt is _identify_plain and opened is not None:
                service, opened = await _identify_plain(network, host, port, opened), None
            else:
                service = await attempt(network, host, port)
        except ScopeViolation:
            raise
        except Exception as exc:  # whatever the device provokes, the port stays recorded
            problems.append(f"{attempt.__name__.strip('_')}: {type(exc).__name__}")
            continue
        if service is not None:
            return service
    details = {"identification": "; ".join(problems)} if problems else {}
    return Service(port=port, transport="tcp", protocol=PORT_HINTS.get(port, "unknown"),
                   sources=["port"], details={**details, "guess": "port number only"})


async def identify_udp(network: Network, host: str, port: int) -> Service | None:
    """UDP answers only to a protocol-correct request: the table's requests for this port, in
    order, until a reply is recognised."""
    for request in interface_table().udp_requests_for(port):
        details = await udp_request(network, host, port, request)
        if details is not None:
            banner = details.pop("banner", "")
            return Service(port=port, transport="udp", protocol=request.protocol,
                           banner=banner, sources=[request.id], details=details)
    return None


async def udp_request(network: Network, host: str, port: int, request: UdpRequest,
                      transcript: Transcript | None = None) -> dict[str, str] | None:
    """Send one table request and recognise the first reply; None when none is recognised.

    A request whose reply comes from a new port (TFTP) uses a session that hears the host on
    any port; a reply that starts a transfer is stopped at once."""
    payload = udp.REQUESTS[request.request](host)
    recognise = udp.RECOGNISERS[request.reply]
    wait = min(network.limits.read_timeout, UDP_REPLY_WAIT)
    if not request.any_source_port:
        replies = await network.udp_exchange(host, port, payload, transcript=transcript,
                                             timeout=wait)
        return recognise(replies[0]) if replies else None
    async with network.udp_session(host, port, transcript=transcript) as session:
        session.send(payload)
        try:
            data, reply_port = await session.recv(timeout=wait)
        except (TimeoutError, ConnectionError):
            return None
        details = recognise(data)
        follow_up = udp.FOLLOW_UPS.get(request.reply)
        stop = follow_up(data) if follow_up and details is not None else None
        if stop is not None:
            session.send(stop, port=reply_port)
        return details


async def identify_all_udp(network: Network, host: str, ports: list[int]) -> list[Service]:
    results = await asyncio.gather(*(identify_udp(network, host, port) for port in ports
                                     if port in UDP_IDENTIFIERS), return_exceptions=True)
    return [result for result in results if isinstance(result, Service)]
