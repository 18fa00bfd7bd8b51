"""Declarative checks (probes/declarative.py, probes/templates/*.yaml) against in-process fakes.

Every shipped template is run against a fake device that has the exposure, one that does not,
and (for page templates) a catch-all server that answers the exposed reply to every path, which
must never be flagged. Safety: every fake binds 127.130.0.x (this module's block), on a port the
kernel picks; every wait is bounded by the test limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from probes.api import NotApplicable, Observation, ProbeContext, SharedCollections, Target
from probes.declarative import (
    MAX_BODY,
    HttpSpec,
    Reply,
    TcpSpec,
    Template,
    TemplateCheck,
    builtin_templates,
    check_class,
    load_template,
    matches,
    parse_version,
)
from probes.registry import ENTRY_POINT_GROUP, load_probes, load_templates
from profiles.yamldata import DataFileError
from scanner.models import Device, Intrusiveness, Service
from scanner.net import Limits, Network, Transcript
from scanner.targets import build_scope
from tests import fakes
from tests.helpers import NEVER_TOUCH_PORTS

BLOCK = "127.130.0.0/16"
EXPOSED, FIXED, CATCH_ALL, HOSTILE = "127.130.0.1", "127.130.0.2", "127.130.0.3", "127.130.0.4"
SHARING = "127.130.0.5"
LIMITS = Limits(connect_timeout=1.0, read_timeout=1.5, probe_budget=10.0, rate=1000.0)

TEMPLATES: dict[str, Template] = {
    where.rsplit("/", 1)[-1].removesuffix(".yaml"): cast(type[TemplateCheck], load()).template
    for where, load in builtin_templates()}


@dataclass(frozen=True)
class Page:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


JPEG = Page(body=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64),
            headers={"Content-Type": "image/jpeg"})
DENIED = Page(401, b"<html><body>401 Unauthorized</body></html>",
              {"Content-Type": "text/html"})


def page(body: str, content_type: str = "text/plain", status: int = 200) -> Page:
    return Page(status, body.encode(), {"Content-Type": content_type})


@dataclass(frozen=True)
class Sample:
    """An HTTP device with the exposure at ``path`` and one without it; for banner templates
    (control: false) ``server`` / ``fixed_server`` go on every reply."""

    path: str = "/"
    exposed: Page = field(default_factory=Page)
    fixed: Page = DENIED
    server: str = ""
    fixed_server: str = ""


HTTP_SAMPLES: dict[str, Sample] = {
    "hikvision-snapshot-auth-bypass": Sample("/onvif-http/snapshot?auth=YWRtaW46MTEK", JPEG),
    "hikvision-user-list-auth-bypass": Sample(
        "/Security/users?auth=YWRtaW46MTEK",
        page('<?xml version="1.0"?><UserList version="1.0"><User><id>1</id>'
             "<userName>admin</userName></User></UserList>", "application/xml")),
    "hikvision-device-info-auth-bypass": Sample(
        "/System/deviceInfo?auth=YWRtaW46MTEK",
        page("<DeviceInfo><model>DS-2CD2032-I</model><firmwareVersion>V5.4.0"
             "</firmwareVersion></DeviceInfo>", "application/xml")),
    "dahua-passwd-config-exposed": Sample(
        "/current_config/passwd", page("id:name:passwd:groupid:\n1:admin:6QNMIQGe:1:\n")),
    "dahua-account-config-exposed": Sample(
        "/current_config/Account1", page('{"DevInformation" : {"SerialID" : "X"}}')),
    "dlink-dcs-user-disclosure": Sample(
        "/config/getuser?index=0", page("name=admin\npass=S3cretCamPw\npriv=1\n")),
    "axis-snapshot-unauthenticated": Sample("/axis-cgi/jpg/image.cgi", JPEG),
    "camera-snapshot-unauthenticated": Sample("/tmpfs/auto.jpg", JPEG,
                                              Page(404, b"not found")),
    "goahead-system-ini-disclosure": Sample(
        "/system.ini?loginuse&loginpas",
        Page(body=b"\x00\x01admin\x00\x00s3cret\x00" + bytes(32),
             headers={"Content-Type": "application/octet-stream"}),
        page("<html><body>login</body></html>", "text/html")),
    "git-config-exposed": Sample("/.git/config",
                                 page("[core]\n\trepositoryformatversion = 0\n")),
    "apache-server-status-exposed": Sample(
        "/server-status",
        page("<h1>Apache Server Status for 127.130.0.1</h1><dl><dt>Server Version: "
             "Apache/2.4.57 (Debian)</dt></dl>", "text/html"), page("Forbidden", status=403)),
    "phpinfo-exposed": Sample(
        "/info.php", page("<title>PHP 8.2.7 - phpinfo()</title><h1>PHP Version 8.2.7</h1>",
                          "text/html")),
    "luci-no-root-password": Sample(
        "/cgi-bin/luci",
        page("<h2>No password set!</h2>There is no password set on this router.",
             "text/html"),
        page("<h2>Authorization Required</h2><form>", "text/html", 403)),
    "tasmota-web-unauthenticated": Sample(
        "/cm?cmnd=Status",
        page('{"Status":{"Module":1,"DeviceName":"Kitchen","FriendlyName":["Kitchen"],'
             '"Topic":"tasmota_A1B2C3"}}', "application/json"),
        page('{"WARNING":"Need user=<username>&password=<password>"}', "application/json",
             401)),
    "shelly-gen1-settings-unauthenticated": Sample(
        "/settings",
        page('{"device":{"type":"SHSW-1","mac":"AABBCCDDEEFF"},'
             '"wifi_sta":{"enabled":true,"ssid":"HomeNet"}}', "application/json")),
    "shelly-gen2-config-unauthenticated": Sample(
        "/rpc/Shelly.GetConfig",
        page('{"sys":{"device":{"name":"Porch","mac":"AABBCCDDEEFF"}},'
             '"wifi":{"sta":{"ssid":"HomeNet"}}}', "application/json")),
    "node-red-admin-unauthenticated": Sample(
        "/flows", page('{"flows":[{"id":"1","type":"tab","label":"Flow 1"}],"rev":"abc"}',
                       "application/json")),
    "home-assistant-onboarding-open": Sample(
        "/api/onboarding",
        page('[{"step":"user","done":false},{"step":"core_config","done":false}]',
             "application/json"),
        page('[{"step":"user","done":true},{"step":"core_config","done":true}]',
             "application/json")),
    "go-pprof-exposed": Sample(
        "/debug/pprof/", page("<title>/debug/pprof/</title>Types of profiles available:"
                              "<a href='goroutine?debug=1'>goroutine</a>", "text/html"),
        Page(404, b"404 page not found")),
    "docker-api-unauthenticated": Sample(
        "/version", page('{"Version":"24.0.5","ApiVersion":"1.43","MinAPIVersion":"1.12"}',
                         "application/json"), Page(404, b"page not found")),
    "cisco-rv-config-export": Sample(
        "/cgi-bin/config.exp", page("####sysconfig####\n[VERSION]\nVERSION=1.4.2.15\n[SYSTEM]\n"
                                    "USERNAME=cisco\nPASSWD=066bae9070a9a95b3e03019db131cd40\n")),
    "rompager-misfortune-cookie": Sample(server="RomPager/4.07 UPnP/1.0",
                                         fixed_server="RomPager/4.51 UPnP/1.0"),
    "boa-web-server": Sample(server="Boa/0.94.14rc21", fixed_server="lighttpd/1.4.69"),
    "goahead-webs-eol": Sample(server="GoAhead-Webs", fixed_server="GoAhead-http"),
    "mini-httpd-file-read": Sample(server="mini_httpd/1.19 19dec2003",
                                   fixed_server="mini_httpd/1.30 26Oct2018"),
    "lighttpd-mod-alias-traversal": Sample(server="lighttpd/1.4.35",
                                           fixed_server="lighttpd/1.4.69"),
    "uc-httpd-directory-traversal": Sample(server="uc-httpd 1.0.0", fixed_server="nginx"),
}

TCP_SAMPLES: dict[str, tuple[bytes, bytes]] = {  # exposed banner, fixed banner
    "dropbear-format-string": (b"SSH-2.0-dropbear_2015.71\r\n", b"SSH-2.0-dropbear_2022.83\r\n"),
    "openssh-user-enumeration": (b"SSH-2.0-OpenSSH_7.4p1 Debian-10+deb9u7\r\n",
                                 b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"),
    "vsftpd-234-backdoor": (b"220 (vsFTPd 2.3.4)\r\n", b"220 (vsFTPd 3.0.3)\r\n"),
    "proftpd-135-mod-copy": (b"220 ProFTPD 1.3.5 Server (Debian) [::ffff:127.0.0.1]\r\n",
                             b"220 ProFTPD 1.3.5e Server (Debian) [::ffff:127.0.0.1]\r\n"),
}

PAGE_TEMPLATES = [i for i, t in TEMPLATES.items() if isinstance(t.spec, HttpSpec)
                  and t.spec.control]


# ------------------------------------------------------------------ fakes and runs


@dataclass
class HttpFake:
    """Answers ``routes`` (raw path and query) and 404 elsewhere, or ``everything`` to any
    path; ``server`` goes on every reply. Remembers what it was asked."""

    routes: dict[str, Page] = field(default_factory=dict)
    everything: Page | None = None
    server: str = "fake"
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        if len(self.requests) < 200:
            self.requests.append((request.method, request.raw_path, dict(request.headers)))
        chosen = self.everything or self.routes.get(request.raw_path, Page(404, b"not found"))
        return web.Response(status=chosen.status, body=chosen.body,
                            headers={"Server": self.server, **chosen.headers})


@contextlib.asynccontextmanager
async def serving(fake: HttpFake, address: str) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def target(address: str, port: int, protocol: str = "http") -> Target:
    service = Service(port=port, transport="tcp", protocol=protocol)
    return Target(Device(address=address, services=[service]), service)


@dataclass
class Run:
    observations: list[Observation]
    summary: dict[str, str]
    transcript: Transcript
    seconds: float

    @property
    def evidence(self) -> str:
        return "\n".join(f"{e.endpoint} {e.data}" for e in self.transcript.exchanges)


async def run(check: TemplateCheck, tgt: Target, shared: SharedCollections | None = None,
              transcript: Transcript | None = None) -> Run:
    network = Network(build_scope([BLOCK], excluded_ports=NEVER_TOUCH_PORTS), LIMITS)
    transcript = transcript or Transcript()
    started = time.monotonic()
    try:
        async with asyncio.timeout(LIMITS.probe_budget):
            facts = await check.collect(ProbeContext(tgt, network, transcript, shared=shared))
    finally:
        network.close()
    return Run(check.evaluate(tgt, facts), check.summarize(facts), transcript,
               time.monotonic() - started)


def check_of(template_id: str) -> TemplateCheck:
    return check_class(TEMPLATES[template_id])()


# ------------------------------------------------------------------ the shipped set


def test_templates_ship_safe_cited_and_each_has_a_test() -> None:
    assert len(TEMPLATES) >= 25
    assert set(TEMPLATES) == set(HTTP_SAMPLES) | set(TCP_SAMPLES)
    for template_id, template in TEMPLATES.items():
        metadata = template.metadata()
        assert metadata.problems() == [], template_id
        assert metadata.intrusiveness is Intrusiveness.SAFE, template_id
        assert template.references and all(r.startswith("http") for r in template.references)
        cves = [r for r in template.references if "CVE-" in r]
        assert all(r.rsplit("/", 1)[-1] in template.description + template.finding
                   for r in cves), f"{template_id}: a cited CVE is not named in the text"


def test_builtin_templates_load_through_a_provider_entry_point() -> None:
    provider = EntryPoint(name="declarative-templates", group=ENTRY_POINT_GROUP,
                          value="probes.declarative:builtin_templates")
    adb = EntryPoint(name="adb-exposed", group=ENTRY_POINT_GROUP, value="probes.adb:AdbExposed")
    loaded, errors = load_probes([adb, provider])
    assert errors == []
    ids = {lp.probe.metadata.check_id for lp in loaded}
    assert ids == {"adb-exposed", *TEMPLATES}


GOOD = """\
id: my-status-page
title: The status page is not public
description: A status page that lists every client and its requests.
finding: The device serves its status page without authentication
severity: low
references: ["https://example.org/advisory"]
remediation: Restrict the status page to administrators.
http:
  paths: [/status]
  matchers:
    - type: word
      words: [Clients]
"""


def test_user_template_folders_load_with_file_and_line_errors(tmp_path: Path) -> None:
    (tmp_path / "my-status-page.yaml").write_text(GOOD)
    (tmp_path / "bad-method.yaml").write_text(
        GOOD.replace("my-status-page", "bad-method").replace("http:\n", "http:\n  method: POST\n"))
    (tmp_path / "git-config-exposed.yaml").write_text(
        GOOD.replace("my-status-page", "git-config-exposed"))
    loaded, errors = load_templates([tmp_path])
    assert [lp.probe.metadata.check_id for lp in loaded] == ["git-config-exposed",
                                                             "my-status-page"]
    assert not loaded[0].builtin and loaded[0].source == f"templates {tmp_path}"
    assert len(errors) == 1 and "bad-method.yaml:9: http.method" in errors[0].reason
    provider = EntryPoint(name="declarative-templates", group=ENTRY_POINT_GROUP,
                          value="probes.declarative:builtin_templates")
    loaded, errors = load_probes([provider], template_dirs=[tmp_path])
    assert "my-status-page" in {lp.probe.metadata.check_id for lp in loaded}
    refused = [e for e in errors if "git-config-exposed.yaml" in e.entry_point]
    assert refused and "already provided" in refused[0].reason  # a built-in is never replaced
    _, errors = load_templates([tmp_path / "missing"])
    assert "not a folder" in errors[0].reason


@pytest.mark.parametrize(("change", "message"), [
    (("id: my-status-page", "id: other-name"), "file name must be the template id"),
    (("      words: [Clients]", "      regex: ['(a+)+$']"), "http.matchers.0"),
    (("paths: [/status]", "paths: ['http://elsewhere/']"), "http.paths.0"),
    (("  paths: [/status]", "  paths: [/status]\n  control: false"), "control: false"),
    (("references: [\"https://example.org/advisory\"]\n", ""), "references"),
    ((GOOD[GOOD.index("http:"):], ""), "exactly one of"),
])
def test_invalid_templates_are_refused(change: tuple[str, str], message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        load_template(GOOD.replace(*change), "user/my-status-page.yaml")


# ------------------------------------------------------------------ pure matching


def test_versions_and_matchers_are_plain_and_bounded() -> None:
    assert parse_version("2015.71\r\n") == (2015, 71)
    assert parse_version("7.4p1 Debian") == (7, 4)
    assert parse_version("4.07 UPnP/1.0") == (4, 7)
    assert parse_version("x1.2") is None and parse_version("") is None
    spec = TEMPLATES["home-assistant-onboarding-open"].spec
    nested = b"[" * 100_000 + b"]" * 100_000  # json.loads recursion: no crash, no match
    assert not matches(spec, Reply(200, {}, nested))
    assert not matches(spec, Reply(200, {}, b'[{"step":"user","done":0}]'))  # 0 is not false
    assert matches(spec, Reply(200, {}, b'[{"step":"user","done":false}]'))


# ------------------------------------------------------------------ against fake devices


@pytest.mark.parametrize("template_id", sorted(HTTP_SAMPLES))
async def test_http_template_flags_the_exposure_and_passes_the_fixed_device(
        template_id: str) -> None:
    sample = HTTP_SAMPLES[template_id]
    template = TEMPLATES[template_id]
    assert isinstance(template.spec, HttpSpec)
    exposed = HttpFake({sample.path: sample.exposed}, server=sample.server or "fake")
    fixed = HttpFake({sample.path: sample.fixed}, server=sample.fixed_server or "fake")
    async with serving(exposed, EXPOSED) as exposed_port:
        found = await run(check_of(template_id), target(EXPOSED, exposed_port))
    async with serving(fixed, FIXED) as fixed_port:
        passed = await run(check_of(template_id), target(FIXED, fixed_port))
    assert len(found.observations) == 1, found.summary
    observation = found.observations[0]
    assert template.finding in observation.summary
    assert observation.confidence is template.confidence
    assert f"{template.spec.method} http://{EXPOSED}:{exposed_port}{sample.path}" \
        in found.evidence  # the exchange that proves it
    assert passed.observations == [] and passed.summary
    assert all(method in ("GET", "HEAD") for method, _, _ in exposed.requests + fixed.requests)
    if template.spec.control:  # a random path was asked first, and nothing else was sent
        assert exposed.requests[0][1].startswith("/iotbaseline-control-")
        asked = {path for _, path, _ in exposed.requests[1:]}
        assert asked <= set(template.spec.paths)


@pytest.mark.parametrize("template_id", sorted(PAGE_TEMPLATES))
async def test_catch_all_server_is_never_flagged(template_id: str) -> None:
    """A server that answers the exposed page to every URL: the control matches, no finding."""
    sample = HTTP_SAMPLES[template_id]
    fake = HttpFake(everything=sample.exposed)
    transcript = Transcript()
    async with serving(fake, CATCH_ALL) as port:
        with pytest.raises(NotApplicable, match="catch-all"):
            await run(check_of(template_id), target(CATCH_ALL, port), transcript=transcript)
    assert any("catch-all server" in e.data for e in transcript.exchanges)
    assert all(path.startswith("/iotbaseline-control-") for _, path, _ in fake.requests)


@pytest.mark.parametrize("template_id", sorted(TCP_SAMPLES))
async def test_banner_template_flags_the_old_release_only(template_id: str) -> None:
    template = TEMPLATES[template_id]
    old, new = TCP_SAMPLES[template_id]
    protocol = template.protocols[0]
    old_fake = await fakes.banner(EXPOSED, 0, old)
    new_fake = await fakes.banner(FIXED, 0, new)
    try:
        found = await run(check_of(template_id), target(EXPOSED, old_fake.port, protocol))
        passed = await run(check_of(template_id), target(FIXED, new_fake.port, protocol))
    finally:
        await old_fake.close()
        await new_fake.close()
    assert len(found.observations) == 1 and template.finding in found.observations[0].summary
    assert old.decode().strip() in found.evidence
    assert passed.observations == []
    assert found.seconds < 2.0  # the read stops at the end of the banner line, not the wait


async def test_extracted_facts_and_redacted_secrets() -> None:
    sample = HTTP_SAMPLES["dlink-dcs-user-disclosure"]
    async with serving(HttpFake({sample.path: sample.exposed}), EXPOSED) as port:
        found = await run(check_of("dlink-dcs-user-disclosure"), target(EXPOSED, port))
    assert found.observations[0].facts["user"] == "admin"
    assert "S3cretCamPw" not in found.evidence and "«redacted»" in found.evidence
    sample = HTTP_SAMPLES["shelly-gen1-settings-unauthenticated"]
    async with serving(HttpFake({sample.path: sample.exposed}), EXPOSED) as port:
        found = await run(check_of("shelly-gen1-settings-unauthenticated"),
                          target(EXPOSED, port))
    assert found.observations[0].facts["wifi_ssid"] == "HomeNet"
    assert found.observations[0].facts["device_type"] == "SHSW-1"


@pytest.mark.parametrize(("template_id", "secret"), [
    ("dlink-dcs-user-disclosure", "S3cretCamPw"),
    ("dahua-passwd-config-exposed", "6QNMIQGe"),
    ("cisco-rv-config-export", "066bae9070a9a95b3e03019db131cd40")])
async def test_leaked_passwords_and_hashes_leave_every_copy_of_the_evidence(
        template_id: str, secret: str) -> None:
    """Redacted in the shared collection itself: a second check reading it gets no copy with
    the secret either."""
    sample = HTTP_SAMPLES[template_id]
    shared = SharedCollections()
    async with serving(HttpFake({sample.path: sample.exposed}), EXPOSED) as port:
        runs = [await run(check_of(template_id), target(EXPOSED, port), shared=shared)
                for _ in range(2)]
    shared.close()
    for found in runs:
        assert len(found.observations) == 1
        assert secret not in found.evidence and "«redacted»" in found.evidence


async def test_templates_on_one_service_share_requests() -> None:
    """Six banner templates read "/" once; two templates with ".jpg"-less paths share one
    control; the shared exchanges land in every template's evidence."""
    fake = HttpFake(server="RomPager/4.07 UPnP/1.0")
    shared = SharedCollections()
    async with serving(fake, SHARING) as port:
        runs = [await run(check_of(template_id), target(SHARING, port), shared=shared)
                for template_id in ("rompager-misfortune-cookie", "boa-web-server",
                                    "goahead-webs-eol", "mini-httpd-file-read",
                                    "git-config-exposed", "apache-server-status-exposed")]
    shared.close()
    assert [len(r.observations) for r in runs] == [1, 0, 0, 0, 0, 0]
    paths = [path for _, path, _ in fake.requests]
    assert paths.count("/") == 1
    assert len([p for p in paths if p.startswith("/iotbaseline-control-")]) == 1
    assert all("GET http" in r.evidence for r in runs)


async def test_node_red_template_sends_its_header() -> None:
    sample = HTTP_SAMPLES["node-red-admin-unauthenticated"]
    fake = HttpFake({sample.path: sample.exposed})
    async with serving(fake, EXPOSED) as port:
        await run(check_of("node-red-admin-unauthenticated"), target(EXPOSED, port))
    sent = [headers for _, path, headers in fake.requests if path == "/flows"]
    assert sent and sent[0].get("Node-RED-API-Version") == "v2"


# ------------------------------------------------------------------ hostile devices


async def test_hostile_http_replies_end_cleanly() -> None:
    check = check_of("git-config-exposed")
    garbage = await fakes.garbage(HOSTILE, 0)
    try:
        with pytest.raises(ConnectionError):
            await run(check, target(HOSTILE, garbage.port))
    finally:
        await garbage.close()
    endless = await fakes.endless(HOSTILE, 0)
    try:
        with pytest.raises((ConnectionError, TimeoutError)):
            await run(check, target(HOSTILE, endless.port))
    finally:
        await endless.close()
    huge = HttpFake(routes={"/.git/config": Page(body=b"[core]" + b"x" * (4 * MAX_BODY) +
                                                 b"repositoryformatversion")})
    async with serving(huge, HOSTILE) as port:
        capped = await run(check, target(HOSTILE, port))
    assert capped.observations == []  # the marker past the 64 KiB cap is never read


async def test_silent_or_slow_tcp_services_end_within_the_wait() -> None:
    check = check_of("dropbear-format-string")
    assert isinstance(check.template.spec, TcpSpec)
    for make in (fakes.silent, fakes.drip):
        fake = await make(HOSTILE, 0)
        try:
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):
                result = await run(check, target(HOSTILE, fake.port, "ssh"))
                assert result.observations == []
            assert time.monotonic() - started < check.template.spec.wait + 1.0
        finally:
            await fake.close()


def test_template_check_applies_only_to_its_protocols() -> None:
    http_check, ssh_check = check_of("git-config-exposed"), check_of("dropbear-format-string")
    assert http_check.applies_to(target(EXPOSED, 80, "http"))
    assert not http_check.applies_to(target(EXPOSED, 22, "ssh"))
    assert ssh_check.applies_to(target(EXPOSED, 22, "ssh"))
    assert isinstance(TEMPLATES["git-config-exposed"], Template)
