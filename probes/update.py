"""Update channel integrity, firmware currency and the vendor's published life-cycle facts.

No peer checks update integrity from the network side. The device profile names the vendor's
update manifest (a URL template filled with what discovery learnt: model, firmware, address) and
how it is protected (digest, signature scheme, vendor key); the device itself may name more
update URLs in its UPnP description, DNS-SD TXT records or JSON info API. Every URL is fetched
only when its host is inside the scan's scope; others are reported as facts and never contacted.
Only GET is used: nothing is uploaded, no update is triggered.

Device-level checks run once per device, on its first web service (or its first service when it
has none), so a device with three web ports is not checked three times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pydantic import BaseModel, ConfigDict, Field

from probes.api import (
    Facts,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeMetadata,
    Target,
)
from profiles.devices import DeviceProfile, load_device_profiles, matching_profiles
from profiles.lifecycle import UpdateEndpoint, version_after_markers, version_key
from profiles.yamldata import parse_yaml, validate
from scanner.http import CertificateError, HttpResponse
from scanner.models import Confidence, Device, Intrusiveness, Service, Severity
from scanner.net import ScopeViolation, host_for_url, verifying_tls_context
from scanner.protocols.textproto import html_title

MAX_MANIFEST = 256 * 1024
MAX_IMAGE = 16 * 1024 * 1024  # larger images get no digest verdict
MAX_SIGNATURE = 16 * 1024
MAX_ENDPOINTS = 8  # per device, declared and discovered together
MAX_DISCOVERED_URLS = 16
UPLOAD_INPUT = re.compile(rb"""<input[^>]{0,200}type\s*=\s*["']?file""", re.IGNORECASE)
PASSWORD_INPUT = re.compile(rb"""<input[^>]{0,200}type\s*=\s*["']?password""", re.IGNORECASE)
URL_IN_TEXT = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{3,300}")
UPDATE_WORDS = re.compile(r"firmware|update|upgrade|ota|/fw", re.IGNORECASE)
FIRMWARE_KEYS = ("fw", "fw_version", "firmware", "firmware_version", "FirmwareVersion",
                 "sw_version", "ver", "version", "Version")
OWASP_IOT_I4 = "https://owasp.org/www-project-internet-of-things/"
NIST_SP_800_193 = "https://csrc.nist.gov/pubs/sp/800/193/final"
RFC_9019 = "https://www.rfc-editor.org/rfc/rfc9019"


# --- data --------------------------------------------------------------------------------------

class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str = Field(pattern=r"^/[^\s#]*$", max_length=256)
    marker: str = Field("", max_length=64)
    product: str = Field(min_length=2, max_length=120)
    source: str = Field(min_length=3, max_length=300)


class _UpdatePaths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    paths: list[_Entry] = Field(max_length=200)
    info_paths: list[_Entry] = Field(max_length=50)


@cache
def update_paths() -> _UpdatePaths:
    where = "probes/data/update_paths.yaml"
    text = files("probes").joinpath("data", "update_paths.yaml").read_text("utf-8")
    return validate(_UpdatePaths, parse_yaml(text, where), text, where)


def device_anchor(device: Device) -> Service | None:
    """The one service that carries a device's device-level checks: its first web service."""
    web = [s for s in device.services if s.protocol == "http"]
    candidates = web or device.services
    return candidates[0] if candidates else None


def _is_anchor(target: Target) -> bool:
    anchor = device_anchor(target.device)
    return anchor is not None and (anchor.port, anchor.transport) == \
        (target.service.port, target.service.transport)


# --- firmware upload pages on the device --------------------------------------------------------

class FirmwareUpdateUnauthenticated(Probe):
    metadata = ProbeMetadata(
        check_id="firmware-update-unauthenticated",
        title="Firmware upload pages require authentication",
        description="A firmware upload page that loads without a login lets anyone on the "
                    "network replace the firmware with their own: persistent, total control "
                    "of the device (the ESP8266 HTTPUpdateServer default, many router UIs).",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Require an authenticated administrator session for every firmware upload "
                    "and update action, and accept only images signed by the vendor.",
        references=(OWASP_IOT_I4, NIST_SP_800_193),
        categories=("software-update", "unauthenticated-access"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        """A made-up path first: a device that answers every path with its start page must not
        look like one with an upload page."""
        baseline = await ctx.http("GET", f"/iotb-{secrets.token_hex(4)}.html",
                                  follow_redirects=False)
        catch_all = hashlib.sha256(baseline.body).hexdigest() if baseline.status == 200 else ""
        pages = []
        for entry in update_paths().paths:
            if ctx.time_left() < 2 * ctx.network.limits.read_timeout:
                ctx.note("time budget reached; remaining update paths not tried")
                break
            response = await ctx.http("GET", entry.path, follow_redirects=False)
            body = response.body[:65536]
            pages.append({
                "path": entry.path, "product": entry.product, "status": response.status,
                "upload_input": bool(UPLOAD_INPUT.search(body)),
                "password_input": bool(PASSWORD_INPUT.search(body)),
                "marker": bool(entry.marker) and entry.marker.lower().encode() in body.lower(),
                "same_as_catch_all": hashlib.sha256(response.body).hexdigest() == catch_all,
                "title": html_title(body)})
        return {"pages": pages, "catch_all": bool(catch_all)}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        observations = []
        for page in facts.get("pages", []):
            if page["status"] == 200 and page["upload_input"] and page["marker"] \
                    and not page["password_input"] and not page["same_as_catch_all"]:
                observations.append(Observation(
                    summary=f"The firmware upload page {page['path']} on port {target.port} "
                            f"({page['product']}) loads without any login.",
                    confidence=Confidence.FIRM, key=page["path"],
                    facts={"path": page["path"], "product": page["product"],
                           "title": page["title"] or ""}))
        return observations[:5]

    def summarize(self, facts: Facts) -> dict[str, str]:
        guarded = [p["path"] for p in facts.get("pages", []) if p["status"] in (401, 403)]
        return {"paths tried": str(len(facts.get("pages", []))),
                "guarded by a login": ", ".join(guarded[:6]) or "none found"}


# --- the update channel ----------------------------------------------------------------------

@dataclass
class _Channel:
    """What one update URL showed; plain data so the checks stay pure."""

    url: str
    origin: str  # "profile <id>" or "device <where>"
    in_scope: bool = True
    status: int | None = None
    error: str = ""
    certificate_error: str = ""
    plain_http_answer: str = ""  # an HTTPS manifest that also answers on http://
    version: str = ""
    image_url: str = ""
    image_status: int | None = None
    image_size: int = 0
    image_truncated: bool = False
    declared_digest: str = ""
    actual_digest: str = ""
    signature_scheme: str = ""
    signature: str = ""  # "valid", "invalid: …", "absent", "unverifiable: …"


def _fill(template: str, device: Device) -> str | None:
    values = {"address": device.address, "model": device.model or "",
              "firmware": device.firmware or "", "vendor": device.manufacturer or ""}
    names = re.findall(r"{(\w+)}", template)
    if any(not values.get(name) for name in names):
        return None
    return template.format(**{name: values[name] for name in names})


def _json_values(data: Any, keys: tuple[str, ...], depth: int = 0) -> list[str]:
    """String values under any of ``keys``, searched a few levels deep (device APIs nest)."""
    found: list[str] = []
    if depth > 4:
        return found
    if isinstance(data, dict):
        for key, value in list(data.items())[:200]:
            if key in keys and isinstance(value, (str, int, float)):
                found.append(str(value)[:128])
            elif isinstance(value, (dict, list)):
                found += _json_values(value, keys, depth + 1)
    elif isinstance(data, list):
        for item in data[:50]:
            found += _json_values(item, keys, depth + 1)
    return found


def update_urls_in_json(data: Any, under_update_key: bool = False, depth: int = 0) -> list[str]:
    """URLs a device's JSON names under an update-ish key ({"update": {"url": …}}), whatever
    their path looks like."""
    found: list[str] = []
    if depth > 5:
        return found
    items = list(data.items())[:200] if isinstance(data, dict) else \
        [("", item) for item in data[:50]] if isinstance(data, list) else []
    for key, value in items:
        flagged = under_update_key or bool(UPDATE_WORDS.search(str(key)))
        if isinstance(value, str) and flagged and URL_IN_TEXT.fullmatch(value.strip()):
            found.append(value.strip())
        elif isinstance(value, (dict, list)):
            found += update_urls_in_json(value, flagged, depth + 1)
    return found[:MAX_DISCOVERED_URLS]


def update_urls_in_text(text: str) -> list[str]:
    """Absolute URLs that look like an update channel (firmware, update, upgrade, OTA)."""
    found = []
    for match in URL_IN_TEXT.finditer(text[:262144]):
        url = match.group(0).rstrip(".,;)'\"")
        if UPDATE_WORDS.search(urlsplit(url).path) and url not in found:
            found.append(url)
    return found[:MAX_DISCOVERED_URLS]


def _decode_signature(raw: bytes) -> bytes:
    """Detached signatures come raw or base64-encoded; try base64 when it is clean ASCII."""
    text = raw.strip()
    try:
        return base64.b64decode(text, validate=True) if text.isascii() else raw
    except (binascii.Error, ValueError):
        return raw


def verify_signature(scheme: str, public_key_pem: str, signature: bytes,
                     message: bytes | bytearray) -> str:
    """"valid", "invalid" or "unverifiable: why" for the vendor key a profile declares."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"unverifiable: the profile's public key does not load ({type(exc).__name__})"
    try:
        if scheme == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif scheme == "ecdsa-sha256" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif scheme == "rsa-pkcs1-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, cast(bytes, message), padding.PKCS1v15(), hashes.SHA256())
        elif scheme == "rsa-pss-sha256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, cast(bytes, message),  # any buffer; the stub says bytes
                       padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO),
                       hashes.SHA256())
        else:
            return f"unverifiable: the profile's key does not fit the scheme {scheme}"
    except InvalidSignature:
        return "invalid"
    return "valid"


async def _fetch(ctx: ProbeContext, url: str, channel: _Channel, max_body: int,
                 sink: Callable[[bytes], None] | None = None) -> HttpResponse:
    """GET under the scope, judging the certificate of an https URL on the way."""
    if url.startswith("https:"):
        try:
            return await ctx.fetch(url, tls=verifying_tls_context(
                tuple(ctx.settings.trusted_ca_files)), max_body=max_body, sink=sink)
        except CertificateError as exc:
            channel.certificate_error = channel.certificate_error or str(exc)[:300]
    return await ctx.fetch(url, max_body=max_body, sink=sink)


async def _inspect(ctx: ProbeContext, channel: _Channel, endpoint: UpdateEndpoint | None,
                   ) -> None:
    manifest_response = await _fetch(ctx, channel.url, channel, MAX_MANIFEST)
    channel.status, manifest_bytes = manifest_response.status, manifest_response.body
    if channel.url.startswith("https:"):
        parts = urlsplit(channel.url)
        plain = parts._replace(scheme="http",
                               netloc=host_for_url(parts.hostname or "")).geturl()
        try:
            response = await ctx.fetch(plain, max_body=1024)
            channel.plain_http_answer = f"HTTP {response.status}"
        except (ConnectionError, OSError, TimeoutError):
            pass
    if channel.status != 200 or endpoint is None:
        return
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        channel.error = f"manifest is not JSON: {type(exc).__name__}"
        return
    if not isinstance(manifest, dict):
        channel.error = "manifest is not a JSON object"
        return
    channel.version = str(manifest.get(endpoint.version_field, ""))[:64]
    if endpoint.digest_field:
        channel.declared_digest = str(manifest.get(endpoint.digest_field, "")).lower()[:256]
    image = str(manifest.get(endpoint.image_field, ""))[:1000]
    signature = endpoint.signature
    channel.signature_scheme = signature.scheme if signature else ""
    # Hashed as it arrives; the bytes are kept only for a signature over the image itself
    # (Ed25519 has no prehashed form), never copied.
    kept = bytearray() if signature is not None and signature.covers == "image" else None
    if image:
        channel.image_url = urljoin(channel.url, image)
        try:
            channel.actual_digest = await _fetch_image(ctx, channel, endpoint.digest_algorithm,
                                                       kept)
        except ScopeViolation:
            ctx.note(f"image {channel.image_url[:200]} is outside the scope; not fetched")
    channel.signature = await _signature_verdict(ctx, channel, endpoint, manifest,
                                                 manifest_bytes, kept or b"")


async def _fetch_image(ctx: ProbeContext, channel: _Channel, algorithm: str,
                       kept: bytearray | None) -> str:
    """The image's digest, or "" when it was not served whole: the digest of a first part
    says nothing about the image (the facts say why)."""
    hasher = hashlib.new(algorithm)

    def take(chunk: bytes) -> None:
        hasher.update(chunk)
        channel.image_size += len(chunk)
        if kept is not None:
            kept.extend(chunk)

    response = await _fetch(ctx, channel.image_url, channel, MAX_IMAGE, sink=take)
    channel.image_status = response.status
    channel.image_truncated = response.truncated
    where = f"image {channel.image_url[:200]}: HTTP {response.status}, {channel.image_size} bytes"
    if response.status != 200:
        ctx.note(f"{where}; no digest judged")
        return ""
    if response.truncated:
        ctx.note(f"{where} read, the image is larger (the cap is {MAX_IMAGE} bytes); its "
                 "digest and signature are not judged")
        return ""
    digest = hasher.hexdigest()
    ctx.note(f"{where}, {algorithm} {digest}")
    return digest


async def _signature_verdict(ctx: ProbeContext, channel: _Channel, endpoint: UpdateEndpoint,
                             manifest: dict[str, Any], manifest_bytes: bytes,
                             image: bytes | bytearray) -> str:
    signature = endpoint.signature
    if signature is None:
        return "absent"
    raw: bytes | None = None
    if signature.field and manifest.get(signature.field):
        raw = str(manifest[signature.field]).encode()[:MAX_SIGNATURE]
    elif signature.url:
        url = _fill(signature.url, ctx.target.device)
        if url:
            fetched = await _fetch(ctx, url, channel, MAX_SIGNATURE)
            raw = fetched.body if fetched.status == 200 else None
    if not raw:
        return "absent"
    if not signature.public_key:
        return "unverifiable: the profile names no vendor public key"
    if signature.covers == "image" and not channel.actual_digest:
        return "unverifiable: the image was not fetched whole"
    message = image if signature.covers == "image" else manifest_bytes
    return verify_signature(signature.scheme, signature.public_key, _decode_signature(raw),
                            message)


def _profiles(probe: _DeviceLevel, device: Device) -> list[DeviceProfile]:
    return matching_profiles(probe.profiles, device)


async def collect_update_channel(ctx: ProbeContext, profiles: list[DeviceProfile]) -> Facts:
    """Every update URL of the device, inspected once (the checks below share it)."""
    device = ctx.target.device
    version, version_source = device.firmware or "", "discovery" if device.firmware else ""
    candidates: list[tuple[str, str, UpdateEndpoint | None]] = []
    unresolved = []
    for profile in profiles:
        for endpoint in profile.update_endpoints:
            url = _fill(endpoint.manifest, device)
            if url is None:
                unresolved.append(f"{endpoint.manifest} (profile {profile.id}: a template "
                                  "value is unknown)")
            else:
                candidates.append((url, f"profile {profile.id}", endpoint))
    discovered_text = " ".join([*device.upnp.values(), *device.mdns_properties.values()])
    json_urls: list[str] = []
    web = device_anchor(device)
    if web is not None and web.protocol == "http":
        for entry in update_paths().info_paths:
            if ctx.time_left() < 4 * ctx.network.limits.read_timeout:
                break
            try:
                response = await ctx.http("GET", entry.path, follow_redirects=False)
            except (ConnectionError, OSError, TimeoutError):
                continue
            looks_json = "json" in response.header("content-type") or \
                response.body.lstrip().startswith(b"{")
            if response.status != 200 or not looks_json:
                continue
            try:
                info = json.loads(response.body.decode("utf-8", "replace"))
            except ValueError:
                continue
            discovered_text += " " + response.text[:65536]
            json_urls += update_urls_in_json(info)
            if not version:
                found = _json_values(info, FIRMWARE_KEYS)
                if found:
                    version, version_source = found[0], f"{entry.path} ({entry.product})"
    if not version:
        for profile in profiles:
            if profile.firmware and profile.firmware.version_markers:
                found_version = version_after_markers(device.fingerprint_text(),
                                                      profile.firmware.version_markers)
                if found_version:
                    version, version_source = found_version, f"banner (profile {profile.id})"
                    break
    for url in [*json_urls, *update_urls_in_text(discovered_text)]:
        if all(url != known for known, _, _ in candidates):
            candidates.append((url, "device", None))
    channels = []
    for url, origin, declared in candidates[:MAX_ENDPOINTS]:
        host = urlsplit(url).hostname or ""
        port = urlsplit(url).port or (443 if url.startswith("https:") else 80)
        channel = _Channel(url=url, origin=origin,
                           in_scope=ctx.network.scope.allows(host, port))
        if not channel.in_scope:
            ctx.note(f"update URL {url[:200]} ({origin}) is outside the scope; not contacted")
        else:
            try:
                await _inspect(ctx, channel, declared)
            except (ConnectionError, OSError, TimeoutError) as exc:
                channel.error = f"{type(exc).__name__}: {exc}"[:300]
        channels.append(channel.__dict__)
    return {"firmware": version, "firmware_source": version_source, "channels": channels,
            "unresolved": unresolved, "profiles": [p.id for p in profiles]}


class _DeviceLevel(Probe):
    """Runs once per device, on its anchor service, from the shared update-channel facts."""

    def __init__(self, profiles: tuple[DeviceProfile, ...] | None = None) -> None:
        self._profiles = profiles

    @property
    def profiles(self) -> tuple[DeviceProfile, ...]:
        return self._profiles if self._profiles is not None else load_device_profiles()

    def applies_to(self, target: Target) -> bool:
        return _is_anchor(target)

    async def collect(self, ctx: ProbeContext) -> Facts:
        profiles = _profiles(self, ctx.target.device)
        facts: Facts = await ctx.shared("update-channel",
                                        lambda c: collect_update_channel(c, profiles))
        if not self.has_subject(facts):
            raise NotApplicable("nothing on this device for this check to test")
        return facts

    def has_subject(self, facts: Facts) -> bool:
        """Whether the device gave this check something to judge (an update URL we fetched)."""
        return bool(_contacted(facts))

    def summarize(self, facts: Facts) -> dict[str, str]:
        channels = facts.get("channels", [])
        shown = {"update URLs": str(len(channels)),
                 "not contacted (outside the scope)": ", ".join(
                     c["url"][:120] for c in channels if not c["in_scope"])[:256],
                 "firmware": f"{facts.get('firmware')} ({facts.get('firmware_source')})"
                 if facts.get("firmware") else ""}
        return {key: value for key, value in shown.items() if value}


def _contacted(facts: Facts) -> list[dict[str, Any]]:
    return [c for c in facts.get("channels", []) if c["in_scope"] and c["status"] is not None]


class UpdateChannelCleartext(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="update-channel-cleartext",
        title="Firmware updates are fetched over an authenticated, encrypted channel",
        description="A manifest or image fetched over plain HTTP can be replaced by anyone on "
                    "the path; without a signature check on the device that is remote code "
                    "execution, with one it still leaks what the device runs.",
        severity=Severity.HIGH, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Serve manifests and images over HTTPS only (no plain-HTTP fallback) and "
                    "have the device verify a vendor signature before installing.",
        references=(RFC_9019, NIST_SP_800_193),
        categories=("software-update", "cleartext"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        observations = []
        for channel in _contacted(facts):
            if channel["url"].startswith("http:"):
                what = f"the update manifest {channel['url']} is served over plain HTTP"
            elif channel["image_url"].startswith("http:") and channel["image_status"]:
                what = f"the firmware image {channel['image_url']} is served over plain HTTP"
            elif channel["plain_http_answer"]:
                what = (f"the HTTPS update URL {channel['url']} also answers over plain HTTP "
                        f"({channel['plain_http_answer']})")
            else:
                continue
            observations.append(Observation(
                summary=f"For {target.address}, {what}.", key=channel["url"],
                facts={"url": channel["url"], "origin": channel["origin"],
                       "image": channel["image_url"]}))
        return observations


class UpdateChannelCertificate(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="update-channel-certificate",
        title="The update server presents a valid, trusted certificate",
        description="An update server whose certificate is expired, self-signed or for another "
                    "name can only be trusted by a device that does not check certificates, "
                    "which any attacker on the path can then impersonate.",
        severity=Severity.HIGH, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Use a certificate from a CA the devices pin or trust, for the update host "
                    "name, renewed before expiry; make devices verify it.",
        references=(RFC_9019, "https://www.rfc-editor.org/rfc/rfc9525"),
        categories=("software-update", "tls"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return [Observation(
            summary=f"The update server at {channel['url']} failed certificate validation: "
                    f"{channel['certificate_error'][:200]}",
            key=channel["url"], facts={"url": channel["url"], "origin": channel["origin"],
                                       "error": channel["certificate_error"]})
            for channel in _contacted(facts) if channel["certificate_error"]]


class UpdateManifestUnsigned(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="update-manifest-unsigned",
        title="Update manifests carry a vendor signature",
        description="A digest detects a corrupted download, not a substituted one: only a "
                    "signature by a vendor key the device holds proves the image is the "
                    "vendor's (RFC 9019, NIST SP 800-193).",
        severity=Severity.HIGH, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Sign every image (and the manifest) with a vendor key kept offline; ship "
                    "the public key in the device's read-only storage and verify before "
                    "installing.",
        references=(RFC_9019, NIST_SP_800_193),
        categories=("software-update",),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        observations = []
        for channel in _contacted(facts):
            if channel["status"] != 200 or channel["error"] or channel["signature"] != "absent":
                continue
            digest_only = bool(channel["declared_digest"])
            observations.append(Observation(
                summary=f"The update manifest {channel['url']} has "
                        + ("a digest but no signature: anyone who can change the manifest can "
                           "change the digest with it." if digest_only else
                           "neither a digest nor a signature."),
                severity=Severity.MEDIUM if digest_only else Severity.HIGH,
                key=channel["url"], facts={"url": channel["url"], "origin": channel["origin"],
                                           "digest": channel["declared_digest"] or "none"}))
        return observations


class UpdateIntegrityMismatch(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="update-integrity-mismatch",
        title="Update images match their manifest's digest and signature",
        description="An image whose digest or signature does not verify is either corrupted "
                    "or tampered with; a device that installs it anyway has no update "
                    "integrity at all.",
        severity=Severity.CRITICAL, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Find out why the served image differs (a compromised mirror, a stale "
                    "cache, a signing mistake) and withdraw it; make devices refuse images "
                    "that do not verify.",
        references=(RFC_9019, NIST_SP_800_193),
        categories=("software-update",),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        observations = []
        for channel in _contacted(facts):
            problems = []
            if channel["declared_digest"] and channel["actual_digest"] and \
                    channel["declared_digest"] != channel["actual_digest"]:
                problems.append(f"the image digest is {channel['actual_digest']}, the manifest "
                                f"says {channel['declared_digest']}")
            if channel["signature"] == "invalid":
                problems.append(f"the {channel['signature_scheme']} signature does not verify "
                                "with the vendor key")
            if problems:
                observations.append(Observation(
                    summary=f"The update at {channel['url']}: {'; '.join(problems)}.",
                    key=channel["url"], facts={"url": channel["url"],
                                               "image": channel["image_url"],
                                               "problems": "; ".join(problems)}))
        return observations


class UpdateRollbackOffered(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="update-rollback-offered",
        title="The update channel does not offer older firmware than the device runs",
        description="An update server that offers a version older than the installed one "
                    "invites a downgrade to firmware with known, fixed vulnerabilities.",
        severity=Severity.MEDIUM, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Publish only the latest release in the manifest and make devices refuse "
                    "versions lower than the installed one (anti-rollback counter).",
        references=(RFC_9019, "https://www.rfc-editor.org/rfc/rfc9124"),
        categories=("software-update",),
    )

    def has_subject(self, facts: Facts) -> bool:
        return super().has_subject(facts) and bool(version_key(str(facts.get("firmware"))))

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        installed = str(facts.get("firmware") or "")
        return [Observation(
            summary=f"The update manifest {channel['url']} offers version {channel['version']}, "
                    f"older than the {installed} {target.address} runs.",
            key=channel["url"], facts={"url": channel["url"], "offered": channel["version"],
                                       "installed": installed,
                                       "installed_from": str(facts.get("firmware_source"))})
            for channel in _contacted(facts)
            if version_key(channel["version"]) and
            version_key(channel["version"]) < version_key(installed)]


def _support(profiles: list[DeviceProfile]) -> tuple[DeviceProfile, Any] | None:
    return next(((p, p.firmware) for p in profiles if p.firmware is not None), None)


class FirmwareOutdated(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="firmware-outdated",
        title="The device runs the latest firmware its vendor publishes",
        description="Firmware behind the vendor's latest release misses the security fixes "
                    "made since; the device profile records the latest version and its source.",
        severity=Severity.MEDIUM, intrusiveness=Intrusiveness.SAFE, protocols=("*",),
        remediation="Install the latest firmware and turn on automatic security updates.",
        references=("https://www.cisa.gov/securebydesign",),
        categories=("software-update", "firmware-currency"),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and any(
            p.firmware and p.firmware.latest for p in _profiles(self, target.device))

    def has_subject(self, facts: Facts) -> bool:
        return bool(version_key(str(facts.get("firmware"))))

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        support = _support(_profiles(self, target.device))
        installed = str(facts.get("firmware") or "")
        if support is None or not support[1].latest or not version_key(installed):
            return []
        profile, firmware = support
        if version_key(installed) >= version_key(firmware.latest):
            return []
        return [Observation(
            summary=f"{target.address} runs firmware {installed}; the vendor's latest is "
                    f"{firmware.latest}" + (f" (released {firmware.latest_released})"
                                            if firmware.latest_released else "") + ".",
            key="outdated", facts={"installed": installed, "latest": firmware.latest,
                                   "installed_from": str(facts.get("firmware_source")),
                                   "profile": profile.id, "source": firmware.source})]


class FirmwareEndOfSupport(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="firmware-end-of-support",
        title="The device is within its vendor's security support period",
        description="After the end of support no vulnerability is fixed any more; ISO/IEC "
                    "27402 5.1.2 and ETSI EN 303 645 5.3-13 ask that the period be published "
                    "and that the device be replaced before it ends.",
        severity=Severity.HIGH, intrusiveness=Intrusiveness.PASSIVE, protocols=("*",),
        remediation="Plan the device's replacement; isolate it until then.",
        references=("https://www.etsi.org/deliver/etsi_en/303600_303699/303645/"
                    "02.01.01_60/en_303645v020101p.pdf",),
        categories=("firmware-currency", "disclosure"),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and any(
            p.firmware and p.firmware.end_of_support for p in _profiles(self, target.device))

    async def collect(self, ctx: ProbeContext) -> Facts:
        support = _support(_profiles(self, ctx.target.device))
        assert support is not None  # applies_to checked it
        profile, firmware = support
        ctx.note(f"profile {profile.id}: end of support {firmware.end_of_support} "
                 f"({firmware.source})")
        return {"profile": profile.id, "end_of_support": str(firmware.end_of_support),
                "source": firmware.source, "today": datetime.now(UTC).date().isoformat()}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts["end_of_support"] >= facts["today"]:
            return []
        return [Observation(
            summary=f"{target.address} ({facts['profile']}) left its vendor's security "
                    f"support on {facts['end_of_support']}.",
            key="end-of-support", facts={k: str(v) for k, v in facts.items()})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"end of support": str(facts.get("end_of_support")),
                "source": str(facts.get("source"))}


class VendorDisclosurePolicy(_DeviceLevel):
    metadata = ProbeMetadata(
        check_id="vendor-disclosure-policy",
        title="The vendor publishes a disclosure policy and support period",
        description="Documentary evidence for 27402 5.1.2/5.1.3: the device profile records "
                    "where the vendor publishes its vulnerability disclosure policy and the "
                    "support period, so the assessor can cite them.",
        severity=Severity.INFO, intrusiveness=Intrusiveness.PASSIVE, protocols=("*",),
        remediation="Publish a vulnerability disclosure policy (ISO/IEC 29147) and the "
                    "security support period per model.",
        references=("https://www.iso.org/standard/72311.html",),
        categories=("disclosure",),
    )

    def applies_to(self, target: Target) -> bool:
        return _is_anchor(target) and bool(_profiles(self, target.device))

    async def collect(self, ctx: ProbeContext) -> Facts:
        profiles = _profiles(self, ctx.target.device)
        documented = next((p for p in profiles if p.disclosure is not None), None)
        if documented is None or documented.disclosure is None:
            return {"profiles": [p.id for p in profiles]}
        facts = {"profile": documented.id, **documented.disclosure.model_dump(exclude_none=True)}
        ctx.note("documented by the vendor: " + "; ".join(f"{k}: {v}" for k, v in facts.items()))
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("policy_url") and facts.get("support_period"):
            return []
        missing = [name for name, key in (("a disclosure policy", "policy_url"),
                                          ("a support period", "support_period"))
                   if not facts.get(key)]
        return [Observation(
            summary=f"No published {' or '.join(missing)} is known for {target.address} "
                    f"(profile {facts.get('profile') or ', '.join(facts.get('profiles', []))}).",
            confidence=Confidence.TENTATIVE, key="undocumented",
            facts={k: str(v) for k, v in facts.items()})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {k: str(v)[:256] for k, v in facts.items() if k != "profiles"}
