"""Telnet and HTTP credential probes against the lab and misbehaving fakes (127.97.x)."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from aiohttp import web

from probes.api import Facts, ProbeContext, ProbeSettings, Target
from probes.authflow import CredentialProbe
from probes.http import HttpDefaultCredentials, HttpUnauthenticatedAdmin
from probes.telnet import TelnetDefaultCredentials, TelnetUnauthenticatedShell
from profiles import Authentication
from profiles.credentials import CredentialEntry, CredentialStore
from scanner.discovery.fingerprint import identify_tcp
from scanner.lab import Lab, default_devices
from scanner.models import Device
from scanner.net import Limits, Network, Transcript
from tests import fakes
from tests.helpers import safe_scope

PAIRS = {
    "telnet": [("root", "vizxv"), ("admin", "1234"), ("admin", "password"), ("admin", "admin"),
               ("admin", "0000"), ("support", "support")],
    "http": [("admin", "admin"), ("admin", "12345"), ("root", "pass"), ("admin", "0000")],
}
ENTRIES = [CredentialEntry(vendor="Acme", protocol=protocol, username=user, password=password,
                           source="test data")
           for protocol, pairs in PAIRS.items() for user, password in pairs]


def settings(**budget: float) -> ProbeSettings:
    return ProbeSettings(authentication=Authentication(spacing=0, **budget),  # type: ignore[arg-type]
                         credentials=CredentialStore(ENTRIES))


async def run_probe(probe: CredentialProbe | TelnetUnauthenticatedShell | HttpUnauthenticatedAdmin,
                    address: str, port: int, probe_settings: ProbeSettings | None = None
                    ) -> tuple[Facts, list, Transcript]:  # type: ignore[type-arg]
    network = Network(safe_scope(address), Limits(connect_timeout=1.0, read_timeout=2.0))
    service = await identify_tcp(network, address, port)
    target = Target(Device(address=address, services=[service]), service)
    transcript = Transcript()
    facts = await probe.collect(ProbeContext(target, network, transcript,
                                             probe_settings or settings()))
    return facts, probe.evaluate(target, facts), transcript


async def test_lab_camera_telnet_default_credential_is_found_and_redacted() -> None:
    camera = default_devices("127.97.0")[0]
    async with Lab([camera]):
        facts, observations, transcript = await run_probe(TelnetDefaultCredentials(),
                                                          camera.address, 2323)
    [observation] = observations
    assert observation.key == "default-credential"
    assert observation.facts["username"] == "admin"
    assert observation.facts["negative_control"] == "failure"
    assert "evaluated a harmless echo" in facts["success"]["detail"]
    assert len(facts["attempts"]) <= 3 + 1  # admin tried at most 3 times, root once
    sent = " ".join(e.data for e in transcript.exchanges if e.direction == "sent")
    assert "admin" in sent and "«redacted»" in sent
    for password in ("1234", "password", "vizxv"):
        assert f"{password}\\r" not in sent


async def test_per_account_budget_is_respected() -> None:
    camera = default_devices("127.97.1")[0]
    async with Lab([camera]):
        facts, observations, _ = await run_probe(
            TelnetDefaultCredentials(), camera.address, 2323,
            settings(max_per_account=2))
    assert observations == []  # admin/admin is the 3rd admin password: never reached
    tried = [a["username"] for a in facts["attempts"]]
    assert tried.count("admin") == 2


async def test_lab_camera_http_basic_default_credential() -> None:
    camera = default_devices("127.97.2")[0]
    async with Lab([camera]):
        facts, observations, transcript = await run_probe(HttpDefaultCredentials(),
                                                          camera.address, 8080)
    [observation] = observations
    assert observation.key == "default-credential" and facts["success"]["username"] == "admin"
    sent = " ".join(e.data for e in transcript.exchanges if e.direction == "sent")
    assert "Authorization: Basic «redacted»" in sent


async def _telnet_accepting_anything(reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
    writer.write(b"login: ")
    await reader.readline()
    writer.write(b"Password: ")
    await reader.readline()
    writer.write(b"\r\n# ")
    line = await asyncio.wait_for(reader.readline(), 5)
    match = re.search(rb"\$\(\(6\*7\)\)(\w+)", line)
    if match:
        writer.write(b"42" + match.group(1) + b"\r\n# ")
    await writer.drain()


async def test_accept_everything_is_not_a_default_credential() -> None:
    server = await asyncio.start_server(_telnet_accepting_anything, "127.97.3.1", 2323)
    try:
        _, observations, _ = await run_probe(TelnetDefaultCredentials(), "127.97.3.1", 2323)
    finally:
        server.close()
    [observation] = observations
    assert observation.key == "authentication-not-enforced"


async def test_lockout_after_three_stops_the_attempts() -> None:
    failures = 0
    attempts_after_lockout = 0

    async def locking(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failures, attempts_after_lockout
        if failures >= 3:
            attempts_after_lockout += 1
            writer.close()
            return
        writer.write(b"login: ")
        await reader.readline()
        writer.write(b"Password: ")
        await reader.readline()
        failures += 1
        writer.write(b"\r\nLogin incorrect\r\n")
        writer.close()

    server = await asyncio.start_server(locking, "127.97.4.1", 2323)
    try:
        facts, observations, _ = await run_probe(TelnetDefaultCredentials(), "127.97.4.1", 2323)
    finally:
        server.close()
    assert observations == []
    assert facts["lockout"] and "stopped answering" in facts["lockout"]
    assert failures == 3 and attempts_after_lockout == 1  # one refused try, then we stop


async def test_unauthenticated_shell() -> None:
    async def shell(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\r\nBusyBox v1.22.1 built-in shell (ash)\r\n/ # ")
        line = await asyncio.wait_for(reader.readline(), 5)
        match = re.search(rb"\$\(\(6\*7\)\)(\w+)", line)
        if match:
            writer.write(b"42" + match.group(1) + b"\r\n/ # ")
        await writer.drain()

    server = await asyncio.start_server(shell, "127.97.5.1", 2323)
    login = await fakes.banner("127.97.5.2", 2323, b"login: ")
    try:
        _, found, _ = await run_probe(TelnetUnauthenticatedShell(), "127.97.5.1", 2323)
        _, clean, _ = await run_probe(TelnetUnauthenticatedShell(), "127.97.5.2", 2323)
    finally:
        server.close()
        await login.close()
    [observation] = found
    assert observation.key == "unauthenticated-access" and "harmless echo" in observation.summary
    assert clean == []


def _digest_app(user: str, password: str, realm: str = "cam") -> web.Application:
    nonce = "abc123nonce"

    async def handler(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if header.startswith("Digest "):
            fields = dict(re.findall(r'(\w+)="?([^",]+)"?', header))
            ha1 = hashlib.md5(f"{fields['username']}:{realm}:{password}".encode()).hexdigest()
            ha2 = hashlib.md5(f"GET:{fields['uri']}".encode()).hexdigest()
            if "qop" in fields:
                expected = hashlib.md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:"
                                       f"{fields['qop']}:{ha2}".encode()).hexdigest()
            else:
                expected = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
            if fields["username"] == user and fields.get("response") == expected:
                return web.Response(text="<title>DVR</title>", content_type="text/html")
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Digest realm="{realm}", nonce="{nonce}", qop="auth"'})

    app = web.Application()
    app.router.add_get("/", handler)
    return app


async def _serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def test_http_digest_default_credential() -> None:
    runner = await _serve(_digest_app("admin", "12345"), "127.97.6.1", 8080)
    try:
        facts, observations, _ = await run_probe(HttpDefaultCredentials(), "127.97.6.1", 8080)
    finally:
        await runner.cleanup()
    [observation] = observations
    assert observation.key == "default-credential"
    assert facts["success"]["username"] == "admin" and "DVR" in facts["success"]["detail"]


async def test_http_basic_accepting_anything() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization"):
            return web.Response(text="ok")
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})

    app = web.Application()
    app.router.add_get("/", handler)
    runner = await _serve(app, "127.97.6.2", 8080)
    try:
        _, observations, _ = await run_probe(HttpDefaultCredentials(), "127.97.6.2", 8080)
    finally:
        await runner.cleanup()
    assert [o.key for o in observations] == ["authentication-not-enforced"]


@pytest.mark.parametrize("page, expected", [
    (b"<title>Admin</title><a href=/logout>Logout</a> <button>Reboot</button>", 1),
    (b"<title>Login</title><form><input type=password name=p>Logout Reboot</form>", 0),
    (b"<title>Welcome</title>Nothing to see", 0),
])
async def test_unauthenticated_admin_page(page: bytes, expected: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = await _serve(app, "127.97.7.1", 8080)
    try:
        _, observations, _ = await run_probe(HttpUnauthenticatedAdmin(), "127.97.7.1", 8080)
    finally:
        await runner.cleanup()
    assert len(observations) == expected


async def test_brute_force_protection_missing_on_the_lab_camera() -> None:
    from probes.telnet import TelnetBruteForceProtection

    camera = default_devices("127.97.8")[0]
    async with Lab([camera]):
        facts, observations, transcript = await run_probe(
            TelnetBruteForceProtection(), camera.address, 2323, settings(brute_force_attempts=5))
    [observation] = observations
    assert observation.key == "no-brute-force-protection"
    assert len(facts["attempts"]) == 5 and observation.facts["timing"].count("#") == 5
    sent = " ".join(e.data for e in transcript.exchanges if e.direction == "sent")
    assert "«redacted»" in sent


@pytest.mark.parametrize("behaviour", ["lockout", "backoff"])
async def test_brute_force_protection_present(behaviour: str) -> None:
    from probes.telnet import TelnetBruteForceProtection

    failures = 0

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failures
        if behaviour == "lockout" and failures >= 3:
            writer.close()
            return
        writer.write(b"login: ")
        await reader.readline()
        writer.write(b"Password: ")
        await reader.readline()
        failures += 1
        if behaviour == "backoff":
            await asyncio.sleep(min(0.1 * 2 ** failures, 4.0))  # doubling delays
        writer.write(b"\r\nLogin incorrect\r\n")
        writer.close()

    address = "127.97.9.1" if behaviour == "lockout" else "127.97.9.2"
    server = await asyncio.start_server(guarded, address, 2323)
    try:
        facts, observations, _ = await run_probe(
            TelnetBruteForceProtection(), address, 2323, settings(brute_force_attempts=6))
    finally:
        server.close()
    assert observations == [], facts
