"""HTTP: default credentials on Basic/Digest-protected pages; admin pages served with no login."""

from __future__ import annotations

import base64
import re

from aiohttp import DigestAuthMiddleware

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import (
    Attempt,
    BruteForceProtection,
    CredentialProbe,
    Outcome,
    brute_force_metadata,
)
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import host_for_url
from scanner.protocols.textproto import (
    USER_AGENT,
    build_request,
    html_title,
    parse_head,
    response_complete,
)

OWASP_AUTH = "https://owasp.org/www-project-web-security-testing-guide/latest/4-Web_Application_" \
             "Security_Testing/04-Authentication_Testing/02-Testing_for_Default_Credentials"
# Words that only an administration page shows once logged in.
ADMIN_MARKERS = re.compile(
    rb"(log ?out|sign ?out|factory (reset|default)|firmware (upgrade|update)|reboot|"
    rb"change password|system settings|backup configuration|restore configuration)",
    re.IGNORECASE)
PASSWORD_FIELD = re.compile(rb"""<input[^>]+type\s*=\s*["']?password""", re.IGNORECASE)


async def _basic_attempt(ctx: ProbeContext, username: str, password: str
                         ) -> tuple[int, bytes]:
    """One Basic-auth GET on one plain stream: many attempts per device make a full HTTP
    client per attempt the costliest part of the check."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    ctx.secret(token)
    async with await ctx.connect(tls=ctx.target.service.tls) as conn:
        await conn.send(build_request("GET", "/", {
            "Host": f"{host_for_url(ctx.target.address)}:{ctx.target.port}",
            "User-Agent": USER_AGENT, "Authorization": f"Basic {token}",
            "Connection": "close"}))
        head = parse_head(await conn.recv_until(response_complete, max_bytes=65536))
    if head is None:
        raise ConnectionError("no HTTP answer to a login attempt")
    return head.status, head.body


class HttpDefaultCredentials(CredentialProbe):
    credential_protocol = "http"
    metadata = ProbeMetadata(
        check_id="http-default-credentials",
        title="The web interface does not accept default credentials",
        description="Basic or Digest protected web interfaces of IoT devices often ship with a "
                    "factory password that is published in manuals and attack tools.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("http",),
        remediation="Force a unique password at first setup and remove factory defaults.",
        references=(OWASP_AUTH, "https://www.rfc-editor.org/rfc/rfc7617",
                    "https://www.rfc-editor.org/rfc/rfc7616"),
        categories=("default-credentials",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and \
            target.service.details.get("auth") in ("basic", "digest")

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        scheme = ctx.target.service.details.get("auth")
        if scheme == "digest":
            response = await ctx.http("GET", "/", follow_redirects=False,
                                      middlewares=(DigestAuthMiddleware(username, password),))
            status, body = response.status, response.body
        else:
            status, body = await _basic_attempt(ctx, username, password)
        if 200 <= status < 400:
            title = html_title(body)
            return Attempt(Outcome.SUCCESS, f"HTTP {status}" + (f", page '{title}'" if title
                                                                 else ""))
        if status in (401, 403):
            return Attempt(Outcome.FAILURE, f"HTTP {status}")
        if status in (429, 503):
            raise ConnectionError(f"HTTP {status}: the device is throttling us")
        return Attempt(Outcome.FAILURE, f"HTTP {status}")


class HttpUnauthenticatedAdmin(Probe):
    metadata = ProbeMetadata(
        check_id="http-unauthenticated-admin",
        title="The web administration interface requires authentication",
        description="An administration page (with reboot, firmware or password controls) that "
                    "loads without any login lets anyone on the network reconfigure the device.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Require authentication for every administration page and API.",
        references=("https://owasp.org/Top10/A01_2021-Broken_Access_Control/",),
        categories=("unauthenticated-access",),
    )

    def applies_to(self, target: Target) -> bool:
        return super().applies_to(target) and "auth" not in target.service.details

    async def collect(self, ctx: ProbeContext) -> Facts:
        response = await ctx.http("GET", "/")
        body = response.body
        markers = sorted({m.group(0).decode("latin-1").lower()
                          for m in ADMIN_MARKERS.finditer(body[:65536])})
        return {"status": response.status, "markers": markers[:8],
                "password_field": bool(PASSWORD_FIELD.search(body[:65536])),
                "title": html_title(body), "url": response.url}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        markers = facts.get("markers") or []
        if facts.get("status") != 200 or facts.get("password_field") or len(markers) < 2:
            return []
        return [Observation(
            summary=f"The web interface on port {target.port} serves an administration page "
                    f"('{facts.get('title') or 'untitled'}') with controls "
                    f"({', '.join(markers)}) and no login.",
            confidence=Confidence.FIRM, key="unauthenticated-access",
            facts={"kind": "unauthenticated-access", "markers": ", ".join(markers),
                   "url": str(facts.get("url", ""))})]


class HttpBruteForceProtection(BruteForceProtection):
    login = HttpDefaultCredentials
    metadata = brute_force_metadata("http-brute-force-protection", "The web interface",
                                    ("http",))

    def applies_to(self, target: Target) -> bool:
        return self.login().applies_to(target)
