"""Cleartext protocols: credentials and data a passive listener on the path can read.

Each check's evidence is the cleartext exchange itself (recorded by the connection): the login
form or Basic challenge served over plain HTTP, the FTP server taking USER without TLS, the MQTT
CONNACK, the CoAP resource list, the SNMP reply to a community string, the RTSP challenge. No
credential is ever sent: FTP gets a user name nobody has and no password.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.ftp import FTP_REFERENCES, greeting_refusal, open_control
from probes.mqtt import MQTT_REFERENCES, mqtt_connect
from probes.rtsp import RTSP_REFERENCES, describe_once
from probes.snmp import SNMP_REFERENCES, VERSION_NAMES, get_request
from scanner.models import Intrusiveness, Service, Severity
from scanner.net import ScopeViolation
from scanner.protocols.udp import (
    coap_get_well_known_core,
    coap_resources,
    parse_coap,
    parse_snmp_response,
)

PASSWORD_INPUT = re.compile(rb"<input[^>]{0,400}type\s*=\s*[\"']?password", re.IGNORECASE)
TLS_WORDS = ("tls", "ssl", "encrypt", "secure")
PROBE_USER = "iotbaseline-probe"  # a user name no device has: USER only, never PASS
MQTT_TLS_PORT = 8883
OWASP_TRANSPORT = "https://owasp.org/www-project-internet-of-things/"
HSTS_REFERENCE = "https://www.rfc-editor.org/rfc/rfc6797"
FRONT_PAGE = "cleartext-http-front-page"  # one GET / shared by both HTTP checks of a service


def _plain(target: Target) -> bool:
    return not target.service.tls


def _https_services(target: Target) -> list[Service]:
    return [service for service in target.device.services
            if service.protocol == "http" and service.tls and service.transport == "tcp"]


async def http_front_page(ctx: ProbeContext) -> Facts:
    """GET / over plain HTTP: where it redirects, and whether it asks for a password.

    A redirect to https:// ends it; a redirect within plain HTTP (to /login.html) is followed
    so the login form it leads to is seen."""
    first = await ctx.http("GET", "/", tls=False, follow_redirects=False)
    location = first.header("location")
    facts: Facts = {"status": first.status, "location": location[:300],
                    "redirect_https": location.lower().startswith("https://")}
    response = first
    if 300 <= first.status < 400 and location and not facts["redirect_https"]:
        response = await ctx.http("GET", "/", tls=False, follow_redirects=True)
        facts["final_url"] = response.url[:300]
        facts["redirect_https"] = response.url.lower().startswith("https://")
    challenge = response.header("www-authenticate")
    facts.update(final_status=response.status,
                 auth=challenge.split(" ", 1)[0].lower() if challenge else "",
                 password_form=bool(PASSWORD_INPUT.search(response.body)),
                 body_bytes=len(response.body))
    return facts


class HttpCleartextLogin(Probe):
    metadata = ProbeMetadata(
        check_id="http-cleartext-login",
        title="The web login is not offered over cleartext HTTP",
        description="A login form or an HTTP Basic/Digest challenge served over plain HTTP "
                    "sends the password (Basic, forms) or the whole session (Digest) in "
                    "cleartext to anyone on the path.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Serve the administration interface over HTTPS only and redirect plain "
                    "HTTP to it (with HSTS); disable the plain HTTP listener where possible.",
        references=(OWASP_TRANSPORT, HSTS_REFERENCE,
                    "https://www.rfc-editor.org/rfc/rfc7617#section-4"),
        categories=("cleartext",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and _plain(target)

    async def collect(self, ctx: ProbeContext) -> Facts:
        facts = await ctx.shared(FRONT_PAGE, http_front_page)
        ctx.note(f"plain HTTP GET /: status {facts['final_status']}, redirect to HTTPS "
                 f"{facts['redirect_https']}, challenge {facts['auth'] or 'none'}, password "
                 f"input {facts['password_form']}")
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("redirect_https"):
            return []
        auth, form = facts.get("auth", ""), facts.get("password_form")
        if auth not in ("basic", "digest") and not form:
            return []
        kind = f"an HTTP {auth.capitalize()} challenge" if auth in ("basic", "digest") \
            else "a login form with a password field"
        exposed = "the session (Digest hashes the password)" if auth == "digest" and not form \
            else "the password"
        return [Observation(
            summary=f"Plain HTTP on port {target.port} serves {kind} without redirecting to "
                    f"HTTPS: {exposed} travels in cleartext.",
            severity=Severity.MEDIUM if exposed.startswith("the session") else None,
            key=auth or "form",
            facts={"challenge": auth or "none", "password_form": str(bool(form)),
                   "status": str(facts.get("final_status")),
                   "url": str(facts.get("final_url", "/"))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"redirect_https": str(facts.get("redirect_https")),
                "challenge": facts.get("auth") or "none"}


class HttpNotRedirectedToHttps(Probe):
    metadata = ProbeMetadata(
        check_id="http-not-redirected-to-https",
        title="Plain HTTP redirects to the device's HTTPS interface",
        description="A device that has HTTPS but still serves its pages over plain HTTP lets "
                    "users (and bookmarks) keep using the cleartext interface.",
        severity=Severity.LOW,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Answer every plain HTTP request with a redirect to the HTTPS interface "
                    "(301/308) and send Strict-Transport-Security from HTTPS.",
        references=(HSTS_REFERENCE, OWASP_TRANSPORT),
        categories=("cleartext",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and _plain(target) and bool(_https_services(target))

    async def collect(self, ctx: ProbeContext) -> Facts:
        return await ctx.shared(FRONT_PAGE, http_front_page)

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("redirect_https") or not 200 <= int(facts.get("final_status", 0)) < 300:
            return []
        https = ", ".join(str(service.port) for service in _https_services(target))
        return [Observation(
            summary=f"Plain HTTP on port {target.port} serves content (HTTP "
                    f"{facts.get('final_status')}) instead of redirecting to the device's "
                    f"HTTPS interface (port {https}).",
            facts={"https_ports": https, "status": str(facts.get("final_status")),
                   "bytes": str(facts.get("body_bytes", 0))})]


class FtpCleartextLogin(Probe):
    metadata = ProbeMetadata(
        check_id="ftp-cleartext-login",
        title="FTP requires TLS before a login",
        description="An FTP server that takes USER and PASS without AUTH TLS first receives "
                    "passwords and files in cleartext.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("ftp",),
        remediation="Require TLS for logins and data (RFC 4217; vsftpd: ssl_enable, "
                    "force_local_logins_ssl, force_local_data_ssl) or replace FTP with SFTP.",
        references=(*FTP_REFERENCES, "https://www.rfc-editor.org/rfc/rfc4217"),
        categories=("cleartext",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and _plain(target)

    async def collect(self, ctx: ProbeContext) -> Facts:
        conn, control, greeting = await open_control(ctx)
        async with conn:
            refusal = greeting_refusal(greeting)
            if refusal is not None:
                raise refusal
            feat = await control.command("FEAT")
            features = [line.strip().upper() for line in feat.lines[1:-1]] \
                if feat.code == 211 else []
            user = await control.command(f"USER {PROBE_USER}")
            await control.quit()
        if user.code == 421:
            raise ConnectionError(f"FTP service is closing the session: {user.text}")
        wants_tls = user.code in (530, 534, 550) and \
            any(word in user.text.lower() for word in TLS_WORDS)
        return {"greeting": greeting.text, "feat_code": feat.code,
                "auth_tls": any(f.startswith(("AUTH TLS", "AUTH SSL")) for f in features),
                "features": ", ".join(features)[:300], "user_code": user.code,
                "user_reply": user.text, "requires_tls": wants_tls}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("requires_tls") or facts.get("user_code") not in (230, 331, 332):
            return []
        offered = facts.get("auth_tls")
        tls = "AUTH TLS is offered but not required" if offered else \
            "AUTH TLS is not offered at all"
        return [Observation(
            summary=f"FTP on port {target.port} accepts USER without TLS (reply "
                    f"{facts.get('user_code')}): {tls}, so passwords travel in cleartext.",
            severity=Severity.MEDIUM if offered else None,
            facts={"auth_tls_offered": str(bool(offered)),
                   "user_reply": str(facts.get("user_reply", ""))[:200],
                   "features": str(facts.get("features", ""))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"auth_tls_offered": str(bool(facts.get("auth_tls"))),
                "requires_tls": str(bool(facts.get("requires_tls")))}


async def _tls_listener(ctx: ProbeContext, port: int) -> str:
    """Whether the device completes a TLS handshake on ``port``: the MQTTS port."""
    known = ctx.target.device.service(port)
    if known is not None:
        return f"{known.label} (discovered)" if known.tls else f"{known.label} without TLS"
    try:
        async with await ctx.connect(port, tls=True) as conn:
            return f"TLS {conn.tls_version or ''} handshake completed".strip()
    except ScopeViolation:
        return "not checked (port outside the scope)"
    except (ConnectionError, TimeoutError, OSError, ssl.SSLError) as exc:
        return f"no ({type(exc).__name__})"


class MqttCleartext(Probe):
    metadata = ProbeMetadata(
        check_id="mqtt-cleartext",
        title="MQTT is offered only over TLS",
        description="A broker on plain TCP carries client credentials, telemetry and commands "
                    "in cleartext.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("mqtt",),
        remediation="Listen for MQTT over TLS only (port 8883) and close the plain listener "
                    "(1883), or bind it to localhost.",
        references=MQTT_REFERENCES,
        categories=("cleartext",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and _plain(target)

    async def collect(self, ctx: ProbeContext) -> Facts:
        result = await mqtt_connect(ctx)
        facts: Facts = {"code": result.code, "detail": result.detail}
        if result.code is not None:
            facts["tls_port"] = await _tls_listener(ctx, MQTT_TLS_PORT)
            ctx.note(f"MQTT over TLS on {MQTT_TLS_PORT}: {facts['tls_port']}")
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("code") is None:
            return []
        tls_port = str(facts.get("tls_port", ""))
        also = f"MQTT over TLS on {MQTT_TLS_PORT}: {tls_port}"
        return [Observation(
            summary=f"The MQTT broker on port {target.port} answers CONNECT on plain TCP "
                    f"({facts.get('detail')}); {also}.",
            facts={"connack": str(facts.get("detail")), "tls_port": tls_port})]


class CoapWithoutDtls(Probe):
    metadata = ProbeMetadata(
        check_id="coap-without-dtls",
        title="CoAP is offered only over DTLS",
        description="A CoAP endpoint that answers GET /.well-known/core without DTLS gives its "
                    "resource list and data to anyone, unauthenticated and in cleartext.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("coap",),
        remediation="Use CoAP over DTLS (coaps, port 5684) with per-device keys or "
                    "certificates (RFC 7252 section 9) and close the plain port 5683.",
        references=("https://www.rfc-editor.org/rfc/rfc7252#section-9",
                    "https://www.rfc-editor.org/rfc/rfc6690"),
        categories=("cleartext", "unauthenticated-access"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        replies = await ctx.udp(coap_get_well_known_core())
        parsed = parse_coap(replies[0]) if replies else None
        if parsed is None:
            return {"answered": False, "replies": len(replies)}
        return {"answered": True, "code": parsed["code"],
                "resources": coap_resources(parsed["payload"])}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if not facts.get("answered"):
            return []
        resources: list[str] = facts.get("resources") or []
        listed = ", ".join(resources[:20]) or "none listed"
        return [Observation(
            summary=f"CoAP on UDP {target.port} answers GET /.well-known/core without DTLS "
                    f"(code {facts.get('code')}); resources: {listed}.",
            facts={"code": str(facts.get("code")), "resources": listed[:500],
                   "resource_count": str(len(resources))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"resources": str(len(facts.get("resources") or []))}


class SnmpV1V2cEnabled(Probe):
    metadata = ProbeMetadata(
        check_id="snmp-v1v2c-enabled",
        title="SNMP v1/v2c is disabled (SNMPv3 with authPriv only)",
        description="SNMP v1 and v2c authenticate with a community string sent in cleartext "
                    "in every request, and carry every value unencrypted.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("snmp",),
        remediation="Disable SNMP v1/v2c; use SNMPv3 with the authPriv security level and "
                    "per-device users, or disable SNMP.",
        references=SNMP_REFERENCES,
        categories=("cleartext",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        community = ctx.target.service.details.get("community", "public")
        answered: dict[str, str] = {}
        for version, name in VERSION_NAMES.items():
            replies = await ctx.udp(get_request(community, version),
                                    timeout=min(2.0, ctx.network.limits.read_timeout))
            values = parse_snmp_response(replies[0]) if replies else None
            if values is not None:
                answered[name] = next(iter(values.values()), "")[:200]
        return {"community": community, "answered": answered}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        answered: dict[str, str] = facts.get("answered") or {}
        if not answered:
            return []
        versions = " and ".join(sorted(answered))
        return [Observation(
            summary=f"The SNMP agent on UDP {target.port} answers {versions} requests with "
                    f"the community {facts.get('community')!r}, which travels in cleartext.",
            facts={"versions": versions, "community": str(facts.get("community")),
                   "sysdescr": next(iter(answered.values()), "")})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"versions_answered": ", ".join(sorted(facts.get("answered") or {})) or "none"}


class RtspCleartext(Probe):
    metadata = ProbeMetadata(
        check_id="rtsp-cleartext",
        title="RTSP is offered only over TLS",
        description="RTSP on plain TCP carries stream URLs, credentials (in cleartext with "
                    "Basic) and usually the video itself unencrypted.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("rtsp",),
        remediation="Offer streams over RTSPS (RTSP over TLS, with SRTP) only; if plain RTSP "
                    "must stay, require Digest authentication, never Basic.",
        references=RTSP_REFERENCES,
        categories=("cleartext",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and _plain(target)

    async def collect(self, ctx: ProbeContext) -> Facts:
        reply = await describe_once(ctx, "/")
        schemes = sorted({challenge.scheme for challenge in reply.challenges})
        return {"status": reply.status, "schemes": schemes}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("status") is None:
            return []
        schemes: list[str] = facts.get("schemes") or []
        if "basic" in schemes:
            credentials = "it asks for credentials with Basic, so they travel in cleartext"
        elif schemes:
            credentials = f"it asks for credentials with {', '.join(schemes)}"
        else:
            credentials = "it asked for no credentials"
        facts_out: dict[str, Any] = {"status": str(facts.get("status")),
                                     "schemes": ", ".join(schemes) or "none"}
        return [Observation(
            summary=f"RTSP on port {target.port} answers DESCRIBE on plain TCP (status "
                    f"{facts.get('status')}); {credentials}.",
            severity=Severity.HIGH if "basic" in schemes else None,
            facts=facts_out)]
