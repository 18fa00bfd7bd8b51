"""Device profiles (loader, matching) and the profile-driven HTTP form login probe.

Fake devices are aiohttp.web apps on 127.98.0.x only; every fake is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probes.api import Facts, Observation, ProbeContext, ProbeSettings, Target
from probes.authflow import Outcome
from probes.http_form import (
    HttpFormDefaultCredentials,
    form_fields,
    hidden_value,
    judge,
    set_cookies,
)
from probes.registry import LoadedProbe
from profiles import Authentication
from profiles.credentials import CredentialEntry, CredentialStore
from profiles.devices import (
    DeviceProfileError,
    LoginForm,
    builtin_device_profiles,
    load_device_profiles,
    load_file,
    matching_profiles,
)
from scanner.http import HttpResponse
from scanner.models import Device, Finding, Service, finding_id
from scanner.net import Limits, Network, Transcript
from tests import fakes
from tests.helpers import ScanRunner, fast_profile, safe_scope

BLOCK = "127.98.0"
PORT = 8080
CHECK = "http-form-default-credentials"
PAIRS = [("admin", "admin"), ("root", "root"), ("admin", "password"), ("admin", "1234"),
         ("user", "user")]


def store(pairs: list[tuple[str, str]] = PAIRS) -> CredentialStore:
    return CredentialStore([CredentialEntry(vendor="Acme", protocol="http", username=user,
                                            password=password, source="test data")
                            for user, password in pairs])


def settings(pairs: list[tuple[str, str]] = PAIRS, **budget: Any) -> ProbeSettings:
    return ProbeSettings(authentication=Authentication(spacing=0, **budget),
                         credentials=store(pairs))


def target(address: str, title: str = "", port: int = PORT, **details: str) -> Target:
    service = Service(port=port, transport="tcp", protocol="http",
                      details={**({"title": title} if title else {}), **details})
    return Target(Device(address=address, services=[service]), service)


async def run(probe: HttpFormDefaultCredentials, tgt: Target,
              probe_settings: ProbeSettings | None = None, read_timeout: float = 2.0
              ) -> tuple[Facts, list[Observation], Transcript]:
    network = Network(safe_scope(tgt.address),
                      Limits(connect_timeout=1.0, read_timeout=read_timeout, rate=500.0))
    transcript = Transcript()
    facts = await probe.collect(ProbeContext(tgt, network, transcript,
                                             probe_settings or settings()))
    return facts, probe.evaluate(tgt, facts), transcript


@contextlib.asynccontextmanager
async def serving(app: web.Application, address: str, port: int = PORT
                  ) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def transcript_text(transcript: Transcript) -> str:
    return "\n".join(f"{e.endpoint} {e.data}" for e in transcript.exchanges)


# --- loader ----------------------------------------------------------------------------------

def test_every_shipped_profile_loads_and_cites_its_sources() -> None:
    profiles = builtin_device_profiles()
    assert len(profiles) >= 8
    assert len({p.id for p in profiles}) == len(profiles)
    assert len({p.vendor for p in profiles}) >= 8
    folder = Path(__file__).resolve().parent.parent / "profiles" / "devices"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(p.id for p in profiles)
    assert sum(bool(p.login_forms) for p in profiles) >= 11  # the login-form families
    for profile in profiles:
        for form in profile.login_forms:
            assert form.success.is_set() and len(form.source) > 20, profile.id
    assert load_device_profiles() is builtin_device_profiles()  # cached


GOOD = """\
id: acme-cam
vendor: Acme
match:
  terms: [acme]
login_forms:
  - action: /login
    method: POST
    username_field: user
    password_field: pass
    success:
      status: [302]
    source: test data
"""


@pytest.mark.parametrize("old, new, line, field", [
    ("method: POST", "method: PUT", 7, "login_forms.0.method"),
    ("    success:\n      status: [302]\n", "    success: {}\n", 10, "login_forms.0.success"),
    ("    password_field: pass", "    password_field: pass\n    pasword_hint: x", 10,
     "login_forms.0.pasword_hint"),
    ("terms: [acme]", "terms: [ACME]", 4, "match.terms"),
    ("action: /login", "action: http://elsewhere/login", 6, "login_forms.0.action"),
    ("id: acme-cam", "id: Acme Cam", 1, "id"),
])
def test_bad_profiles_name_file_line_and_field(old: str, new: str, line: int,
                                               field: str) -> None:
    assert old in GOOD
    with pytest.raises(DeviceProfileError) as error:
        load_file(GOOD.replace(old, new), "acme.yaml")
    message = str(error.value)
    assert message.startswith(f"acme.yaml:{line}: {field}: "), message
    assert "\n" not in message


def test_good_profile_and_its_defaults() -> None:
    profile = load_file(GOOD.replace("method: POST", "method: post"), "acme.yaml")
    form = profile.login_forms[0]
    assert form.method == "POST" and form.page is None and not form.failure.is_set()


def test_csrf_needs_a_page_and_ids_are_unique(tmp_path: Path) -> None:
    with pytest.raises(DeviceProfileError, match="csrf_field needs a page"):
        load_file(GOOD.replace("    source:", "    csrf_field: token\n    source:"), "a.yaml")
    mine = tmp_path / "mine.yaml"
    mine.write_text(GOOD)
    loaded = load_device_profiles([str(mine)])
    assert loaded[-1].id == "acme-cam" and len(loaded) == len(builtin_device_profiles()) + 1
    clash = tmp_path / "clash.yaml"
    clash.write_text(GOOD.replace("id: acme-cam", "id: openwrt-luci"))
    with pytest.raises(DeviceProfileError, match=r"clash.yaml: id: 'openwrt-luci' is already"):
        load_device_profiles([str(clash)])
    with pytest.raises(DeviceProfileError, match="no such file"):
        load_device_profiles([str(tmp_path / "missing.yaml")])


# --- matching ----------------------------------------------------------------------------------

def _ids(device: Device) -> list[str]:
    return [p.id for p in matching_profiles(builtin_device_profiles(), device)]


def test_profiles_match_by_fingerprint_title_and_server() -> None:
    assert _ids(Device(address="10.0.0.1", vendor="Synology Incorporated")) == ["synology-dsm"]
    assert _ids(target("10.0.0.1", "OpenWrt - LuCI").device) == ["openwrt-luci"]
    dlink = Service(port=80, transport="tcp", protocol="http", banner="Mathopd/1.5p6",
                    product="Mathopd/1.5p6")
    assert _ids(Device(address="10.0.0.1", services=[dlink])) == ["dlink-dir-300-615"]
    assert _ids(Device(address="10.0.0.1", vendor="Hewlett Packard",
                       services=[Service(port=80, transport="tcp", protocol="http",
                                         details={"title": "Printer"})])) == []
    # A Server rule looks at HTTP services only, and matching ignores case.
    ssh = Service(port=22, transport="tcp", protocol="ssh", banner="mathopd/1.5p6")
    assert _ids(Device(address="10.0.0.1", services=[ssh])) == []
    assert _ids(target("10.0.0.1", "PFSENSE - Login").device) == ["pfsense"]


def test_the_form_of_the_profile_matching_this_service_comes_first() -> None:
    probe = HttpFormDefaultCredentials()
    luci = Service(port=80, transport="tcp", protocol="http", details={"title": "LuCI"})
    red = Service(port=1880, transport="tcp", protocol="http", details={"title": "Node-RED"})
    device = Device(address="10.0.0.1", services=[luci, red])
    chosen_80 = probe.choose(Target(device, luci))
    chosen_1880 = probe.choose(Target(device, red))
    assert chosen_80 is not None and chosen_80[0].id == "openwrt-luci"
    assert chosen_1880 is not None and chosen_1880[0].id == "node-red"


def test_applies_only_to_http_services_of_profiled_devices() -> None:
    probe = HttpFormDefaultCredentials()
    assert probe.applies_to(target("10.0.0.1", "OpenWrt - LuCI"))
    assert not probe.applies_to(target("10.0.0.1", "Some camera"))
    assert not probe.applies_to(target("10.0.0.1", "OpenWrt - LuCI", auth="basic"))
    telnet = Service(port=23, transport="tcp", protocol="telnet", banner="OpenWrt")
    assert not probe.applies_to(Target(Device(address="10.0.0.1", services=[telnet]), telnet))


# --- pure parts: markers, cookies, hidden inputs -------------------------------------------

def _response(status: int = 200, body: bytes = b"", **headers: str) -> HttpResponse:
    return HttpResponse("http://x/", status, {k.replace("_", "-"): v for k, v in
                                              headers.items()}, body)


def _form(**markers: Any) -> LoginForm:
    failure = markers.pop("failure", {})
    return LoginForm(action="/login", password_field="p", success=markers, failure=failure,
                     source="test data")


def test_markers_all_set_ones_must_hold() -> None:
    form = _form(status=[302], set_cookie=["sysauth", "sysauth_http"],
                 redirect_contains=["/admin"])
    good = _response(302, set_cookie="sysauth_http=abc; path=/; HttpOnly", location="/ADMIN/x")
    assert judge(form, good).outcome is Outcome.SUCCESS
    assert "cookie sysauth_http set" in judge(form, good).detail
    for bad in (_response(200, set_cookie="sysauth=abc", location="/admin"),
                _response(302, set_cookie="sysauth=; path=/", location="/admin"),
                _response(302, set_cookie="other=abc", location="/admin"),
                _response(302, set_cookie="sysauth=abc", location="/login")):
        assert judge(form, bad).outcome is Outcome.FAILURE
    body_form = _form(contains=['"success":TRUE'], not_contains=["error"])
    assert judge(body_form, _response(body=b'{"success":true}')).outcome is Outcome.SUCCESS
    assert judge(body_form, _response(body=b'{"success":true,"error":1}')).outcome \
        is Outcome.FAILURE


def test_failure_markers_win_and_throttling_is_a_lockout_sign() -> None:
    form = _form(status=[200], failure={"contains": ["invalid"]})
    assert judge(form, _response(200, b"Invalid credentials")).outcome is Outcome.FAILURE
    assert judge(form, _response(200, b"Welcome")).outcome is Outcome.SUCCESS
    assert judge(form, _response(404)).outcome is Outcome.NOT_OFFERED
    for status in (429, 503):
        with pytest.raises(ConnectionError):
            judge(form, _response(status))


def test_set_cookie_parsing_survives_expires_dates_and_joined_headers() -> None:
    header = ("a=1; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/, b=two; HttpOnly, "
              "gone=deleted; Max-Age=0, c=\"3\"")
    assert set_cookies(header) == {"a": "1", "b": "two", "c": "3"}
    assert set_cookies("") == {}


def test_hidden_inputs_in_any_quoting() -> None:
    page = (b"<form><input type='hidden' name='__csrf_magic' value=\"sid:ab&amp;c,1\" />"
            b"<INPUT value=x2 name=token type=hidden></form>")
    assert hidden_value(page, "__csrf_magic") == "sid:ab&c,1"
    assert hidden_value(page, "token") == "x2"
    assert hidden_value(page, "missing") is None
    assert hidden_value(b"<input " + b"a" * 100_000, "x") is None  # unterminated: bounded


def test_fields_order_and_password_only_forms() -> None:
    [form] = load_file(GOOD, "a.yaml").login_forms
    assert form_fields(form, "u", "p", None) == [("user", "u"), ("pass", "p")]
    netgear = next(p for p in builtin_device_profiles()
                   if p.id == "netgear-prosafe-plus-switch").login_forms[0]
    assert form_fields(netgear, "admin", "password", None) == [("password", "password")]


def test_evaluate_is_pure_and_names_the_form() -> None:
    probe = HttpFormDefaultCredentials()
    tgt = target("10.0.0.1", "LuCI")
    assert probe.evaluate(tgt, {"success": None, "attempts": []}) == []
    facts = {"success": {"username": "admin", "password": "«redacted»", "vendor": "Acme",
                         "detail": "HTTP 302"},
             "control": {"outcome": "failure"}, "attempts": [{}], "profile": "openwrt-luci",
             "form": "POST /cgi-bin/luci", "form_source": "luci source"}
    [observation] = probe.evaluate(tgt, facts)
    assert observation.key == "default-credential"
    assert observation.facts["device_profile"] == "openwrt-luci"
    assert observation.facts["login_form"] == "POST /cgi-bin/luci"


# --- fake devices ----------------------------------------------------------------------------


def luci_app(accept: Callable[[str, str], bool], counter: Counter[str] | None = None,
             lock_after: int | None = None) -> web.Application:
    """A LuCI-like device: 302 + sysauth_http cookie on a good login, 403 otherwise;
    with ``lock_after``, 429 for every login once that many have failed."""
    state = {"failed": 0}

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="<html><title>OpenWrt - LuCI</title></html>",
                            content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        if counter is not None:
            counter["requests"] += 1
        if lock_after is not None and state["failed"] >= lock_after:
            return web.Response(status=429, text="Too many attempts")
        user, password = str(form.get("luci_username")), str(form.get("luci_password"))
        if counter is not None:
            counter[user] += 1
        if accept(user, password):
            raise web.HTTPFound("/cgi-bin/luci/", headers={
                "Set-Cookie": f"sysauth_http={secrets.token_hex(8)}; path=/cgi-bin/luci; "
                              "HttpOnly"})
        state["failed"] += 1
        return web.Response(status=403, headers={"X-LuCI-Login-Required": "yes"},
                            text="<title>OpenWrt - LuCI</title><form>login</form>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_post("/cgi-bin/luci", login)
    return app


async def test_luci_default_credential_is_found_confirmed_and_redacted() -> None:
    address = f"{BLOCK}.1"
    async with serving(luci_app(lambda u, p: (u, p) == ("admin", "password")), address):
        facts, observations, transcript = await run(HttpFormDefaultCredentials(),
                                                    target(address, "OpenWrt - LuCI"))
    [observation] = observations
    assert observation.key == "default-credential"
    assert observation.facts["negative_control"] == "failure"
    assert observation.facts["device_profile"] == "openwrt-luci"
    assert facts["success"]["username"] == "admin"
    assert "cookie sysauth_http set" in facts["success"]["detail"]
    assert [a["outcome"] for a in facts["attempts"]] == ["failure", "failure", "success"]
    text = transcript_text(transcript)
    assert "luci_password=password" not in text and "luci_password=«redacted»" in text
    assert "device profile openwrt-luci" in text


async def test_luci_hardened_gives_no_finding() -> None:
    address = f"{BLOCK}.2"
    counter: Counter[str] = Counter()
    async with serving(luci_app(lambda u, p: False, counter), address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "OpenWrt - LuCI"))
    assert observations == []
    assert facts["success"] is None and facts["control"] is None
    assert {a["outcome"] for a in facts["attempts"]} == {"failure"}
    assert counter["requests"] == len(PAIRS) and counter["admin"] == 3


async def test_accept_everything_is_authentication_not_enforced() -> None:
    address = f"{BLOCK}.3"
    async with serving(luci_app(lambda u, p: True), address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "OpenWrt - LuCI"))
    assert [o.key for o in observations] == ["authentication-not-enforced"]
    assert facts["control"]["outcome"] == "success"


async def test_lockout_after_three_failures_stops_the_flow() -> None:
    address = f"{BLOCK}.4"
    counter: Counter[str] = Counter()
    pairs = [("admin", f"wrong{n}") for n in range(8)]
    async with serving(luci_app(lambda u, p: False, counter, lock_after=3), address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "OpenWrt - LuCI"),
                                           settings(pairs, max_per_account=20))
    assert observations == []
    assert counter["admin"] == 3  # three logins judged, never a fourth
    assert counter["requests"] == 4  # the fourth was refused with 429, and the flow stopped
    assert facts["lockout"] and "429" in facts["lockout"]
    assert facts["control"] is None


compact = functools.partial(json.dumps, separators=(",", ":"))  # as DSM answers


def synology_app(password: str) -> web.Application:
    async def auth(request: web.Request) -> web.Response:
        query = request.query
        if (query.get("api"), query.get("method"), query.get("version")) != \
                ("SYNO.API.Auth", "login", "3"):
            return web.json_response({"error": {"code": 101}, "success": False})
        if query.get("account") == "admin" and query.get("passwd") == password:
            return web.json_response({"data": {"sid": secrets.token_hex(8)}, "success": True},
                                     dumps=compact)
        return web.json_response({"error": {"code": 400}, "success": False}, dumps=compact)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="<title>Synology DiskStation</title>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/webapi/auth.cgi", auth)
    return app


async def test_synology_json_api_login_with_the_password_in_the_query() -> None:
    address = f"{BLOCK}.5"
    weird = "p@ss w%rd&1"
    pairs = [("admin", "admin"), ("admin", weird)]
    async with serving(synology_app(weird), address):
        facts, observations, transcript = await run(
            HttpFormDefaultCredentials(), target(address, "Synology DiskStation"),
            settings(pairs))
    [observation] = observations
    assert observation.key == "default-credential"
    assert observation.facts["device_profile"] == "synology-dsm"
    assert facts["control"]["outcome"] == "failure"
    text = transcript_text(transcript)
    assert "passwd=admin" not in text  # the first password tried, in endpoints and data
    for form in (weird, "p%40ss+w%25rd%261", "p%40ss%20w%25rd%261"):
        assert form not in text
    assert "account=" in text and "passwd=«redacted»" in text  # (a user name equal to a
    # password tried earlier is redacted too: over-redaction is the safe side)


def pfsense_app(password: str, seen: Counter[str]) -> web.Application:
    """A pfSense-like form: a csrf-magic token tied to the session cookie must come back."""
    sessions: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        sid, token = secrets.token_hex(8), f"sid:{secrets.token_hex(12)},1700000000"
        sessions[sid] = token
        response = web.Response(
            text="<title>pfSense - Login</title><form method='post' class='login'>"
                 f"<input type='hidden' name='__csrf_magic' value=\"{token}\" />"
                 "<input name='usernamefld'><input type='password' name='passwordfld'>"
                 "</form>", content_type="text/html")
        response.headers["Set-Cookie"] = f"PHPSESSID={sid}; path=/; HttpOnly"
        return response

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        sid = request.cookies.get("PHPSESSID", "")
        if sid not in sessions or form.get("__csrf_magic") != sessions.pop(sid):
            seen["csrf-rejected"] += 1
            return web.Response(status=403, text="CSRF check failed")
        seen["csrf-ok"] += 1
        if form.get("usernamefld") == "admin" and form.get("passwordfld") == password:
            raise web.HTTPFound("/")
        return web.Response(text="<div>Username or Password incorrect</div>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/index.php", page)
    app.router.add_post("/index.php", login)
    return app


async def test_csrf_token_and_session_cookie_are_copied() -> None:
    address = f"{BLOCK}.6"
    seen: Counter[str] = Counter()
    async with serving(pfsense_app("pfsense", seen), address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "pfSense - Login"),
                                           settings([("admin", "admin"),
                                                     ("admin", "pfsense")]))
    assert [o.key for o in observations] == ["default-credential"]
    assert seen["csrf-rejected"] == 0 and seen["csrf-ok"] == 3  # two tries and the control
    assert [a["outcome"] for a in facts["attempts"]] == ["failure", "success"]


async def test_a_page_without_the_csrf_field_is_not_this_form() -> None:
    address = f"{BLOCK}.7"

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<title>pfSense</title><form></form>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/index.php", page)
    async with serving(app, address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "pfSense - Login"))
    assert observations == []
    assert facts["password_login"] == "not offered" and len(facts["attempts"]) == 1


async def test_custom_profiles_can_be_given_to_the_probe(tmp_path: Path) -> None:
    address = f"{BLOCK}.8"
    mine = tmp_path / "acme.yaml"
    mine.write_text(GOOD)

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("user"), form.get("pass")) == ("root", "root"):
            raise web.HTTPFound("/home")
        return web.Response(text="no")

    app = web.Application()
    app.router.add_post("/login", login)
    probe = HttpFormDefaultCredentials(load_device_profiles([str(mine)]))
    tgt = Target(Device(address=address, vendor="Acme Corp",
                        services=[Service(port=PORT, transport="tcp", protocol="http")]),
                 Service(port=PORT, transport="tcp", protocol="http"))
    assert probe.applies_to(tgt) and not HttpFormDefaultCredentials().applies_to(tgt)
    async with serving(app, address):
        facts, observations, _ = await run(probe, tgt)
    assert [o.key for o in observations] == ["default-credential"]
    assert facts["profile"] == "acme-cam" and facts["success"]["username"] == "root"


async def test_slow_device_ends_in_an_error_not_a_hang() -> None:
    address = f"{BLOCK}.9"
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 5)
        return web.Response(status=403)

    app = web.Application()
    app.router.add_post("/cgi-bin/luci", slow)
    async with serving(app, address):
        with pytest.raises((TimeoutError, ConnectionError)):
            await asyncio.wait_for(run(HttpFormDefaultCredentials(),
                                       target(address, "OpenWrt - LuCI"),
                                       read_timeout=0.5), 10)
        release.set()


@pytest.mark.parametrize("make", [fakes.garbage, fakes.reset, fakes.silent])
async def test_hostile_replies_end_in_connection_errors(
        make: Callable[[str, int], Awaitable[fakes.FakeServer]]) -> None:
    address = f"{BLOCK}.10"
    fake = await make(address, PORT)
    try:
        with pytest.raises((ConnectionError, TimeoutError, OSError)):
            await asyncio.wait_for(run(HttpFormDefaultCredentials(),
                                       target(address, "OpenWrt - LuCI"),
                                       read_timeout=0.5), 10)
    finally:
        await fake.close()


async def test_a_device_that_disappears_mid_way_is_a_lockout_sign() -> None:
    address = f"{BLOCK}.11"
    calls: Counter[str] = Counter()

    async def flaky(request: web.Request) -> web.StreamResponse:
        calls["n"] += 1
        if calls["n"] >= 2:
            assert request.transport is not None
            request.transport.abort()  # reset: the service stops talking to us
            return web.Response(status=500)
        return web.Response(status=403)

    app = web.Application()
    app.router.add_post("/cgi-bin/luci", flaky)
    async with serving(app, address):
        facts, observations, _ = await run(HttpFormDefaultCredentials(),
                                           target(address, "OpenWrt - LuCI"))
    assert observations == [] and facts["lockout"]
    assert [a["outcome"] for a in facts["attempts"]] == ["failure", "blocked"]


# --- the whole engine --------------------------------------------------------------------------

async def test_engine_matches_the_device_by_its_http_title(run_scan: ScanRunner,
                                                           tmp_path: Path) -> None:
    address = f"{BLOCK}.20"
    credentials = tmp_path / "luci-creds.yaml"
    credentials.write_text("entries:\n  - {vendor: OpenWrt, protocol: http, username: admin, "
                           "password: admin, source: test data, match: [luci]}\n")
    profile = fast_profile(authentication={"extra_files": [str(credentials)], "spacing": 0,
                                           "max_per_account": 1000, "max_per_service": 1000})
    async with serving(luci_app(lambda u, p: (u, p) == ("admin", "admin")), address):
        result = await run_scan(address, tcp=[PORT], profile=profile,
                                probes=[LoadedProbe(HttpFormDefaultCredentials(), "tests 0",
                                                    False)])
    [device] = result.devices
    assert device.services[0].details.get("title") == "OpenWrt - LuCI"
    findings: list[Finding] = [f for f in result.findings if f.check_id == CHECK]
    assert [f.facts["kind"] for f in findings] == ["default-credential"]
    [finding] = findings
    assert finding.id == finding_id(CHECK, address, PORT, "tcp", "default-credential")
    assert finding.facts["device_profile"] == "openwrt-luci"
    assert finding.facts["username"] == "admin" and finding.facts["password"] == "«redacted»"
    evidence = "\n".join(f"{e.endpoint} {e.data}" for e in finding.evidence)
    assert "luci_password=admin" not in evidence
    assert re.search(r"luci_password=«redacted»", evidence)
    [check_run] = [r for r in result.check_runs if r.check_id == CHECK]
    assert check_run.status == "fail" and "openwrt-luci" in check_run.details["form"]
    assert not [e for e in result.errors if e.check_id == CHECK]


async def test_a_failed_get_login_does_not_put_the_password_in_the_error() -> None:
    from scanner.http import request
    from scanner.net import Limits, Network
    from tests.helpers import safe_scope

    network = Network(safe_scope("127.98.0.250"), Limits(connect_timeout=1.0))
    with pytest.raises(ConnectionError) as caught:  # nothing listens there: refused
        await request(network, "GET", "http://127.98.0.250:40999/login?usr=admin&pwd=s3cret",
                      transcript=None)
    assert "s3cret" not in str(caught.value) and "/login" in str(caught.value)
