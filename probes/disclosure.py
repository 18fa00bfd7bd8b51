"""Disclosure: a published vulnerability contact (RFC 9116 security.txt) and version banners.

security.txt is the network-visible half of a disclosure policy (27402 5.1.3): present and valid
is positive evidence for the assessor, absent is informational (the policy may be published on
the vendor's site instead, which the device profile can name). Version strings in unauthenticated
banners tell an attacker which exploits to try (5.1.2 asks that the version be identifiable by
the user, not broadcast to anyone who connects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.protocols import telnet
from scanner.protocols.udp import parse_snmp_response, snmp_get_sysdescr

SECURITY_TXT_PATHS = ("/.well-known/security.txt", "/security.txt")  # RFC 9116 §3, legacy
MAX_SECURITY_TXT = 32 * 1024  # RFC 9116 files are a few hundred bytes
MAX_FIELDS = 200
RFC_9116 = "https://www.rfc-editor.org/rfc/rfc9116"
KNOWN_FIELDS = {"acknowledgments", "canonical", "contact", "encryption", "expires", "hiring",
                "policy", "preferred-languages", "csaf"}
SIGNED_HEADER = "-----BEGIN PGP SIGNED MESSAGE-----"
FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,63}):\s*(.*?)\s*$")


@dataclass
class SecurityTxt:
    """What a security.txt says, and what is wrong with it (RFC 9116 §2.5, §3)."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    signed: bool = False
    problems: list[str] = field(default_factory=list)
    expires: datetime | None = None


def _parse_expires(value: str) -> datetime | None:
    """RFC 9116 §2.5.5: an Internet date/time (RFC 3339), e.g. 2027-01-31T23:00:00Z."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_security_txt(text: str, now: datetime) -> SecurityTxt:
    """Fields and problems; unknown fields are allowed (the registry grows), not counted."""
    result = SecurityTxt(signed=text.lstrip().startswith(SIGNED_HEADER))
    in_signature = False
    for raw in text.splitlines()[:2000]:
        line = raw.strip()
        if line.startswith("-----BEGIN PGP SIGNATURE-----"):
            in_signature = True
        if in_signature or not line or line.startswith(("#", "-----", "Hash:")):
            if line.startswith("-----END PGP SIGNATURE-----"):
                in_signature = False
            continue
        match = FIELD_LINE.match(line)
        if match is None:
            result.problems.append(f"line is not 'Field: value': {line[:60]!r}")
            continue
        name = match.group(1).lower()
        if sum(len(values) for values in result.fields.values()) < MAX_FIELDS:
            result.fields.setdefault(name, []).append(match.group(2)[:512])
    if not result.fields.get("contact"):
        result.problems.append("no Contact field (required)")
    expires = result.fields.get("expires", [])
    if len(expires) != 1:
        result.problems.append(f"Expires must appear exactly once (found {len(expires)})")
    if expires:
        result.expires = _parse_expires(expires[0])
        if result.expires is None:
            result.problems.append(f"Expires is not an RFC 3339 date: {expires[0][:40]!r}")
        elif result.expires <= now:
            result.problems.append(f"expired on {result.expires.date().isoformat()}")
    for contact in result.fields.get("contact", []):
        if not contact.lower().startswith(("mailto:", "https://", "tel:")):
            result.problems.append(f"Contact must be a mailto:, https:// or tel: URI: "
                                   f"{contact[:60]!r}")
    return result


class SecurityTxtPublished(Probe):
    metadata = ProbeMetadata(
        check_id="security-txt",
        title="A vulnerability disclosure contact is published (security.txt)",
        description="RFC 9116 security.txt tells finders of vulnerabilities whom to tell and "
                    "until when the statement holds. On a device's web interface it shows that "
                    "the vendor runs a disclosure process (ETSI EN 303 645 5.2, ISO/IEC 29147).",
        severity=Severity.INFO,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Serve /.well-known/security.txt (RFC 9116) with a Contact, an Expires "
                    "date less than a year ahead and a Policy link, ideally signed; renew it "
                    "before it expires.",
        references=(RFC_9116, "https://securitytxt.org/"),
        categories=("disclosure",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        tried = []
        for path in SECURITY_TXT_PATHS:
            response = await ctx.http("GET", path)
            tried.append(f"{path}: HTTP {response.status}")
            content_type = response.header("content-type").lower()
            if response.status == 200 and "html" not in content_type \
                    and len(response.body) <= MAX_SECURITY_TXT:
                return {"found": path, "url": response.url, "content_type": content_type,
                        "text": response.text, "tried": tried}
        return {"found": None, "tried": tried}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        tried = "; ".join(facts.get("tried", []))
        if not facts.get("found"):
            return [Observation(
                summary=f"The web interface on port {target.port} publishes no security.txt "
                        "(RFC 9116): no disclosure contact is visible on the device.",
                key="absent", facts={"tried": tried})]
        parsed = parse_security_txt(str(facts.get("text", "")), datetime.now(UTC))
        if not parsed.problems:
            return []
        return [Observation(
            summary=f"security.txt at {facts['found']} on port {target.port} is not valid: "
                    f"{'; '.join(parsed.problems[:3])}.",
            severity=Severity.LOW, key="invalid",
            facts={"problems": "; ".join(parsed.problems[:10]), "url": str(facts.get("url")),
                   "contact": ", ".join(parsed.fields.get("contact", [])[:3])})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        if not facts.get("found"):
            return {"security.txt": "absent"}
        parsed = parse_security_txt(str(facts.get("text", "")), datetime.now(UTC))
        shown = {"security.txt": str(facts["found"]),
                 "contact": ", ".join(parsed.fields.get("contact", [])[:3]),
                 "expires": parsed.expires.isoformat() if parsed.expires else "",
                 "policy": ", ".join(parsed.fields.get("policy", [])[:2]),
                 "signed": "yes (signature not verified)" if parsed.signed else "no"}
        return {key: value for key, value in shown.items() if value}


# "Name/1.2.3", "Name 1.2", "OpenSSH_9.2p1", "dropbear_2022.83", "Version 3.0.3": a product word
# then a dotted number. Linear-time: no nested quantifiers.
VERSION_TOKEN = re.compile(
    r"\b([A-Za-z][A-Za-z0-9+.-]{1,40})[/_ ]v?(\d{1,6}(?:\.\d{1,6}){1,4}[A-Za-z0-9.+~-]{0,20})")
BANNER_PROTOCOLS = ("ftp", "ssh", "smtp", "telnet")
HTTP_HEADERS = ("server", "x-powered-by", "x-aspnet-version", "x-generator")


SSH_PROTOCOL_PREFIX = re.compile(r"SSH-\d\.\d+-")  # "SSH-2.0-" names the protocol, not software


def version_tokens(text: str) -> list[str]:
    """Product/version pairs in a banner, at most eight, in order of appearance."""
    found: list[str] = []
    for match in VERSION_TOKEN.finditer(SSH_PROTOCOL_PREFIX.sub(" ", text[:4096])):
        token = f"{match.group(1)} {match.group(2)}"
        if token not in found:
            found.append(token)
    return found[:8]


class VersionDisclosure(Probe):
    metadata = ProbeMetadata(
        check_id="version-disclosure",
        title="Unauthenticated banners do not disclose software versions",
        description="A server that announces its exact software version to anyone who connects "
                    "lets attackers pick matching exploits without any probing; the version "
                    "belongs on an authenticated status page.",
        severity=Severity.INFO,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http", *BANNER_PROTOCOLS, "snmp"),
        remediation="Remove version numbers from Server headers, login banners and greetings "
                    "(e.g. lighttpd server.tag, Apache ServerTokens Prod, OpenSSH has no "
                    "option: keep it current instead).",
        references=("https://cwe.mitre.org/data/definitions/200.html",
                    "https://owasp.org/www-project-web-security-testing-guide/latest/"
                    "4-Web_Application_Security_Testing/01-Information_Gathering/"
                    "02-Fingerprint_Web_Server"),
        categories=("information-disclosure",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        service = ctx.target.service
        if service.protocol == "http":
            response = await ctx.http("GET", "/", follow_redirects=False)
            shown = {name: response.header(name) for name in HTTP_HEADERS
                     if response.header(name)}
            return {"source": "HTTP response headers", "text": shown}
        if service.protocol == "snmp":
            replies = await ctx.udp(snmp_get_sysdescr())
            values = parse_snmp_response(replies[0]) if replies else None
            return {"source": "SNMP sysDescr (community public)",
                    "text": {"sysDescr": next(iter(values.values()), "") if values else ""}}
        wait = min(3.0, ctx.network.limits.read_timeout)
        async with await ctx.connect() as conn:
            if service.protocol == "telnet":  # the greeting comes after option negotiation
                banner, _ = await telnet.read_until_prompt(conn, timeout=wait)
            else:
                banner = await conn.recv_until(lambda b: b"\n" in b, max_bytes=1024,
                                               timeout=wait)
        return {"source": f"{service.protocol} greeting",
                "text": {"banner": banner.decode("utf-8", "replace").strip()[:255]}}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        texts: dict[str, str] = facts.get("text") or {}
        disclosed = {name: tokens for name, value in texts.items()
                     if (tokens := version_tokens(value))}
        if not disclosed:
            return []
        pairs = sorted({token for tokens in disclosed.values() for token in tokens})
        return [Observation(
            summary=f"The {target.service.label} service on port {target.port} tells anyone "
                    f"who connects that it runs {', '.join(pairs[:4])}.",
            confidence=Confidence.CONFIRMED, key="version",
            facts={"source": str(facts.get("source", "")), "versions": ", ".join(pairs),
                   **{name: texts[name][:200] for name in disclosed}})]
