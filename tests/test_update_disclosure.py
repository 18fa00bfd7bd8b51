"""Update-channel integrity, firmware currency and disclosure, against real aiohttp servers on
loopback (127.121.0.0/24): device web UIs and update servers (plain HTTP, HTTPS with a test CA,
HTTPS self-signed) serving manifests, images and signatures made by the test.

Device .1 is the bad one (every condition present), device .2 the good one (every condition
removed): each check must fail on .1 and pass on .2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from probes.api import Probe, ProbeContext, Target
from probes.disclosure import SecurityTxtPublished, VersionDisclosure, parse_security_txt
from probes.registry import LoadedProbe
from probes.update import (
    FirmwareEndOfSupport,
    FirmwareOutdated,
    FirmwareUpdateUnauthenticated,
    UpdateChannelCertificate,
    UpdateChannelCleartext,
    UpdateIntegrityMismatch,
    UpdateManifestUnsigned,
    UpdateRollbackOffered,
    VendorDisclosurePolicy,
    collect_update_channel,
    update_urls_in_json,
    update_urls_in_text,
    verify_signature,
)
from profiles.devices import DeviceProfile
from profiles.lifecycle import version_after_markers, version_key
from scanner.models import CheckStatus, Device, ScanResult, Service, Severity
from scanner.net import Limits, Network, Transcript
from scanner.targets import build_scope
from tests.helpers import NEVER_TOUCH_PORTS, ScanRunner, fast_profile
from tests.tls_certs import ca_signed, weak_self_signed

BAD, GOOD = "127.121.0.1", "127.121.0.2"
PLAIN_SERVER, CA_SERVER, SELF_SIGNED_SERVER = "127.121.0.10", "127.121.0.11", "127.121.0.12"
UI_PORT, PLAIN_PORT, TLS_PORT = 8080, 8081, 8443
IMAGE = bytes(range(256)) * 64
VENDOR_KEY = ed25519.Ed25519PrivateKey.generate()
VENDOR_PUBLIC = VENDOR_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
SHA256 = hashlib.sha256(IMAGE).hexdigest()
SIGNATURE = base64.b64encode(VENDOR_KEY.sign(IMAGE)).decode()
FORGED = base64.b64encode(ed25519.Ed25519PrivateKey.generate().sign(IMAGE)).decode()


def _security_txt(expires: datetime) -> str:
    return (f"Contact: mailto:psirt@vendor.example\nExpires: {expires.isoformat()}\n"
            "Policy: https://vendor.example/disclosure\n")


def _ui(title: str, firmware: str, upload_open: bool, security_txt: str | None,
        update_url: str, server: str) -> web.Application:
    """A device web UI: start page, JSON info API, firmware upload page, security.txt."""
    async def handle(request: web.Request) -> web.Response:
        path = request.path
        if path == "/":
            return web.Response(text=f"<html><title>{title}</title>Camera</html>",
                                content_type="text/html", headers={"Server": server})
        if path == "/shelly":
            return web.json_response({"type": "CAM", "fw": firmware,
                                      "update": {"url": update_url}})
        if path == "/update":
            if not upload_open:
                return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})
            return web.Response(text="<form method=POST enctype='multipart/form-data'>Firmware:"
                                     "<input type='file' name='update'><input type=submit>"
                                     "</form>", content_type="text/html")
        if path == "/.well-known/security.txt" and security_txt is not None:
            return web.Response(text=security_txt, content_type="text/plain")
        return web.Response(status=404, text="not found")
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


def _manifest(version: str, digest: str | None, signature: str | None) -> bytes:
    body: dict[str, str] = {"version": version, "url": "/img/firmware.bin"}
    if digest:
        body["sha256"] = digest
    if signature:
        body["signature"] = signature
    return json.dumps(body).encode()


def _update_server() -> web.Application:
    manifests = {
        "/a/plain.json": _manifest("2.1.0", None, None),
        "/a/discovered.json": _manifest("2.1.0", SHA256, None),  # named only by the device
        "/a/baddigest.json": _manifest("1.5.0", "00" * 32, None),
        "/a/badsig.json": _manifest("2.1.0", SHA256, FORGED),
        "/a/selfsigned.json": _manifest("2.1.0", SHA256, SIGNATURE),
        "/b/good.json": _manifest("2.1.0", SHA256, SIGNATURE),
    }

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/img/firmware.bin":
            return web.Response(body=IMAGE, content_type="application/octet-stream")
        if request.path in manifests:
            return web.Response(body=manifests[request.path], content_type="application/json")
        return web.Response(status=404)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


def _profile(profile_id: str, title: str, endpoints: list[str], *, latest: str,
             end_of_support: str, disclosure: bool) -> DeviceProfile:
    data = {
        "id": profile_id, "vendor": "Test Vendor", "match": {"http_title": [title.lower()]},
        "update_endpoints": [{"manifest": url, "signature": {
            "scheme": "ed25519", "field": "signature", "public_key": VENDOR_PUBLIC},
            "source": "test vendor OTA documentation"} for url in endpoints],
        "firmware": {"latest": latest, "end_of_support": end_of_support,
                     "source": "test vendor life-cycle page"},
    }
    if disclosure:
        data["disclosure"] = {"policy_url": "https://vendor.example/disclosure",
                              "support_period": "until 2099-12-31",
                              "source": "https://vendor.example/security"}
    return DeviceProfile.model_validate(data)


PROFILES = (
    _profile("test-bad-camera", "IoTB Bad Camera", [
        f"http://{PLAIN_SERVER}:{PLAIN_PORT}/a/plain.json",
        f"https://{CA_SERVER}:{TLS_PORT}/a/baddigest.json",
        f"https://{CA_SERVER}:{TLS_PORT}/a/badsig.json",
        f"https://{SELF_SIGNED_SERVER}:{TLS_PORT}/a/selfsigned.json",
        "https://updates.vendor.invalid/fw/latest.json"],
        latest="2.1.0", end_of_support="2020-01-01", disclosure=False),
    _profile("test-good-camera", "IoTB Good Camera", [
        f"https://{CA_SERVER}:{TLS_PORT}/b/good.json"],
        latest="2.1.0", end_of_support="2099-12-31", disclosure=True),
)


async def _start(app: web.Application, host: str, port: int,
                 context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the self-signed one is RSA-1024
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Path]:
    """Both devices and the three update servers; yields the test CA file."""
    trusted = ca_signed(tmp_path, [CA_SERVER], stem="update")
    untrusted = weak_self_signed(tmp_path, SELF_SIGNED_SERVER, days_ago=10, stem="selfsigned")
    now = datetime.now(UTC)
    runners = [
        await _start(_ui("IoTB Bad Camera", "2.0.0", True, _security_txt(now - timedelta(
            days=3)), f"http://{PLAIN_SERVER}:{PLAIN_PORT}/a/discovered.json", "Boa/0.94.14rc21"),
            BAD, UI_PORT),
        await _start(_ui("IoTB Good Camera", "2.1.0", False, _security_txt(now + timedelta(
            days=200)), f"https://{CA_SERVER}:{TLS_PORT}/b/good.json", "camera"),
            GOOD, UI_PORT),
        await _start(_update_server(), PLAIN_SERVER, PLAIN_PORT),
        await _start(_update_server(), CA_SERVER, TLS_PORT,
                     _server_context(trusted.cert, trusted.key)),
        await _start(_update_server(), SELF_SIGNED_SERVER, TLS_PORT,
                     _server_context(untrusted.cert, untrusted.key)),
    ]
    try:
        assert trusted.ca is not None
        yield trusted.ca
    finally:
        for runner in runners:
            await runner.cleanup()


def _probes(*probes: Probe) -> list[LoadedProbe]:
    return [LoadedProbe(probe, "tests 0", False) for probe in probes]


DEVICE_CHECKS = (UpdateChannelCleartext, UpdateChannelCertificate, UpdateManifestUnsigned,
                 UpdateIntegrityMismatch, UpdateRollbackOffered, FirmwareOutdated,
                 FirmwareEndOfSupport, VendorDisclosurePolicy)


async def _scan(run_scan: ScanRunner, ca: Path) -> ScanResult:
    profile = fast_profile(tls={"ca_files": [str(ca)]}, timing={"probe_budget": 20.0})
    probes = [check(PROFILES) for check in DEVICE_CHECKS]
    return await run_scan(BAD, GOOD, PLAIN_SERVER, CA_SERVER, SELF_SIGNED_SERVER,
                          tcp=[UI_PORT], profile=profile,
                          probes=_probes(*probes, FirmwareUpdateUnauthenticated(),
                                         SecurityTxtPublished(), VersionDisclosure()))


def _by_check(result: ScanResult, device: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in result.findings:
        if finding.device == device:
            found.setdefault(finding.check_id, []).append(finding.facts.get("url", "")
                                                          or finding.summary)
    return found


async def test_every_update_and_disclosure_condition_fails_bad_and_passes_good(
        lab: Path, run_scan: ScanRunner) -> None:
    result = await _scan(run_scan, lab)
    assert not [e for e in result.errors if e.device in (BAD, GOOD)], result.errors
    bad, good = _by_check(result, BAD), _by_check(result, GOOD)
    plain = f"http://{PLAIN_SERVER}:{PLAIN_PORT}/a/plain.json"
    bad_digest = f"https://{CA_SERVER}:{TLS_PORT}/a/baddigest.json"
    bad_signature = f"https://{CA_SERVER}:{TLS_PORT}/a/badsig.json"
    self_signed = f"https://{SELF_SIGNED_SERVER}:{TLS_PORT}/a/selfsigned.json"
    discovered = f"http://{PLAIN_SERVER}:{PLAIN_PORT}/a/discovered.json"
    assert sorted(bad["update-channel-cleartext"]) == sorted([plain, discovered])
    assert bad["update-channel-certificate"] == [self_signed]
    assert sorted(bad["update-manifest-unsigned"]) == sorted([plain, bad_digest])
    assert sorted(bad["update-integrity-mismatch"]) == sorted([bad_digest, bad_signature])
    assert bad["update-rollback-offered"] == [bad_digest]
    assert len(bad["firmware-outdated"]) == len(bad["firmware-end-of-support"]) == 1
    assert len(bad["vendor-disclosure-policy"]) == 1
    assert len(bad["firmware-update-unauthenticated"]) == 1
    assert len(bad["security-txt"]) == 1  # expired
    assert bad["version-disclosure"][0].endswith("runs Boa 0.94.14rc21.")
    assert good == {}, good
    good_runs = {r.check_id: r for r in result.check_runs if r.device == GOOD}
    for check in [c.metadata.check_id for c in DEVICE_CHECKS] + ["security-txt",
                                                                  "firmware-update-unauthenticated"]:
        assert good_runs[check].status == CheckStatus.PASS, check
    assert good_runs["vendor-disclosure-policy"].details["policy_url"] == \
        "https://vendor.example/disclosure"
    bad_runs = {r.check_id: r for r in result.check_runs if r.device == BAD}
    assert "updates.vendor.invalid" in \
        bad_runs["update-channel-cleartext"].details["not contacted (outside the scope)"]
    assert bad_runs["firmware-outdated"].details["firmware"].startswith("2.0.0 (/shelly")
    unsigned = next(f for f in result.findings if f.check_id == "update-manifest-unsigned"
                    and f.facts["url"] == plain)
    assert unsigned.severity == Severity.HIGH  # neither digest nor signature
    assert any("/a/plain.json" in e.endpoint for e in unsigned.evidence)


async def test_a_scan_that_does_not_trust_the_vendor_ca_flags_the_certificate(
        lab: Path, run_scan: ScanRunner) -> None:
    result = await run_scan(GOOD, CA_SERVER, tcp=[UI_PORT], probes=_probes(
        UpdateChannelCertificate(PROFILES)))
    finding = next(f for f in result.findings if f.check_id == "update-channel-certificate")
    assert finding.device == GOOD and "certificate" in finding.summary.lower()


def test_security_txt_parsing() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    valid = parse_security_txt("# hi\nContact: mailto:a@b.example\nExpires: 2027-01-01T00:00:00Z"
                               "\nPolicy: https://b.example/p\n", now)
    assert valid.problems == [] and valid.fields["policy"] == ["https://b.example/p"]
    expired = parse_security_txt("Contact: https://b.example\nExpires: 2026-01-01T00:00:00Z",
                                 now)
    assert expired.problems == ["expired on 2026-01-01"]
    broken = parse_security_txt("Expires: soon\nExpires: later\nContact: b@example\njunk", now)
    assert len(broken.problems) == 4
    signed = parse_security_txt("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
                                "Contact: mailto:a@b.example\nExpires: 2027-01-01T00:00:00Z\n"
                                "-----BEGIN PGP SIGNATURE-----\nabc\n"
                                "-----END PGP SIGNATURE-----\n", now)
    assert signed.signed and signed.problems == []


def test_version_helpers_and_update_url_discovery() -> None:
    assert version_key("V5.5.4 build 200721") == (5, 5, 4, 200721)
    assert version_key("1.10.0") > version_key("1.9.9")
    assert version_after_markers("Camera Firmware Version: v2.3.1-b7 (c)",
                                 ["firmware version"]) == "2.3.1-b7"
    assert version_after_markers("no version here", ["firmware version"]) is None
    text = ('{"ota": "http://fw.vendor.example/ota/cam.json", "home": "http://vendor.example/",'
            ' "doc": "https://vendor.example/firmware/notes.html)."}')
    assert update_urls_in_text(text) == ["http://fw.vendor.example/ota/cam.json",
                                         "https://vendor.example/firmware/notes.html"]


def test_signature_verdicts() -> None:
    assert verify_signature("ed25519", VENDOR_PUBLIC, base64.b64decode(SIGNATURE),
                            IMAGE) == "valid"
    assert verify_signature("ed25519", VENDOR_PUBLIC, base64.b64decode(FORGED),
                            IMAGE) == "invalid"
    assert verify_signature("rsa-pss-sha256", VENDOR_PUBLIC, b"x", IMAGE).startswith(
        "unverifiable")
    assert verify_signature("ed25519", "not a key", b"x", IMAGE).startswith("unverifiable")


def test_missing_security_txt_is_informational() -> None:
    service = Service(port=80, transport="tcp", protocol="http")
    target = Target(Device(address=BAD, services=[service]), service)
    [absent] = SecurityTxtPublished().evaluate(target, {"found": None, "tried": [
        "/.well-known/security.txt: HTTP 404", "/security.txt: HTTP 404"]})
    assert absent.key == "absent" and absent.severity is None  # the metadata's INFO
    assert SecurityTxtPublished.metadata.severity == Severity.INFO


async def test_a_device_without_update_urls_gets_no_update_verdict(
        run_scan: ScanRunner) -> None:
    """No PASS from a check that had nothing to look at: the run is left out (N/A)."""
    runner = await _start(_ui("Plain Thing", "", False, None, "", "thing"), "127.121.0.3",
                          UI_PORT)
    try:
        result = await run_scan("127.121.0.3", tcp=[UI_PORT], probes=_probes(
            *(check(PROFILES) for check in DEVICE_CHECKS)))
    finally:
        await runner.cleanup()
    assert not result.findings and not result.errors
    assert {r.check_id for r in result.check_runs} == set()


def test_update_urls_named_under_update_keys_in_device_json() -> None:
    info = {"fw": "1.0", "update": {"url": "http://10.9.9.9/a/b.json", "note": "x"},
            "links": [{"ota_server": "https://ota.vendor.example/v1"}],
            "homepage": "http://vendor.example/"}
    assert update_urls_in_json(info) == ["http://10.9.9.9/a/b.json",
                                         "https://ota.vendor.example/v1"]


# --------------------------------------------------------- images: redirects, size cap, memory

BIG_IMAGE = IMAGE + b"one byte over the cap"
IMAGE_SERVER = "127.121.0.20"


def _image_server() -> web.Application:
    """Manifests whose image is reached through a redirect (with a body of its own), is exactly
    the cap, or is larger than the cap; every declared digest and signature is correct."""
    signed = base64.b64encode(VENDOR_KEY.sign(BIG_IMAGE)).decode()
    manifests = {
        "/c/redirected.json": {"version": "2.1.0", "url": "/img/moved.bin", "sha256": SHA256,
                               "signature": SIGNATURE},
        "/c/exact.json": {"version": "2.1.0", "url": "/img/firmware.bin", "sha256": SHA256,
                          "signature": SIGNATURE},
        "/c/big.json": {"version": "2.1.0", "url": "/img/big.bin",
                        "sha256": hashlib.sha256(BIG_IMAGE).hexdigest(), "signature": signed},
    }

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/img/moved.bin":
            return web.Response(status=302, text="<html>moved to /img/firmware.bin</html>",
                                headers={"Location": "/img/firmware.bin"})
        if request.path == "/img/firmware.bin":
            return web.Response(body=IMAGE, content_type="application/octet-stream")
        if request.path == "/img/big.bin":
            return web.Response(body=BIG_IMAGE, content_type="application/octet-stream")
        if request.path in manifests:
            return web.json_response(manifests[request.path])
        return web.Response(status=404)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    return app


async def test_image_digests_ignore_redirect_bodies_and_are_not_judged_past_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect's own body is not part of the image; an image exactly at the cap is judged;
    one larger than the cap gets no digest or signature verdict (its first part would differ)."""
    monkeypatch.setattr("probes.update.MAX_IMAGE", len(IMAGE))
    profile = _profile("test-image-camera", "IoTB Image Camera", [
        f"http://{IMAGE_SERVER}:{PLAIN_PORT}/c/{name}.json"
        for name in ("redirected", "exact", "big")],
        latest="2.1.0", end_of_support="2099-12-31", disclosure=True)
    service = Service(port=23, transport="tcp", protocol="telnet")  # no web UI to ask
    target = Target(Device(address=IMAGE_SERVER, services=[service]), service)
    network = Network(build_scope([f"{IMAGE_SERVER}/32"], excluded_ports=NEVER_TOUCH_PORTS),
                      Limits(connect_timeout=1.0, read_timeout=2.0, probe_budget=20.0))
    runner = await _start(_image_server(), IMAGE_SERVER, PLAIN_PORT)
    transcript = Transcript()
    try:
        facts = await collect_update_channel(ProbeContext(target, network, transcript),
                                             [profile])
    finally:
        network.close()
        await runner.cleanup()
    redirected, exact, big = facts["channels"]
    for whole in (redirected, exact):
        assert (whole["actual_digest"], whole["image_size"]) == (SHA256, len(IMAGE)), whole
        assert whole["signature"] == "valid" and not whole["image_truncated"]
    assert big["image_truncated"] and big["actual_digest"] == ""
    assert big["signature"] == "unverifiable: the image was not fetched whole"
    assert any("its digest and signature are not judged" in e.data
               for e in transcript.exchanges)
    assert UpdateIntegrityMismatch((profile,)).evaluate(target, facts) == []
