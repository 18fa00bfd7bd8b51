"""TLS quality: protocol versions, cipher suites and the certificate, from one bounded scan.

Six checks judge one collection (``ctx.shared("tls-scan", …)``) of any service that speaks TLS
from the first byte, or that upgrades to it on request (explicit TLS: FTP ``AUTH TLS``, SMTP
``STARTTLS``; every connection of the scan repeats that dialogue first, and a service that
refuses it is not applicable here — its cleartext is the cleartext checks' finding): which
versions SSLv3…TLS 1.3 the service accepts, each tried with a raw ClientHello (so versions and
suites the local OpenSSL dropped are still seen); for each accepted version the suites it
accepts, found by elimination (offer all, remove the one chosen, repeat), capped in rounds and
time; the certificate chain; and one verifying handshake against the system store plus the
profile's CAs. A fleet check compares leaf public keys across devices, and an HTTPS check reads
one response's headers.

Evidence: the version probes and the verifying handshake are recorded as sent (with any upgrade
dialogue); the elimination rounds (up to hundreds of hellos) are summarised as notes, one per
accepted suite, each reproducible with ``openssl s_client -cipher`` (``-starttls ftp|smtp``)
or the recorded hello minus the listed suites.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files
from typing import Any, ClassVar

from pydantic import field_validator

from probes.api import (
    Facts,
    FleetCheck,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeMetadata,
    Target,
)
from probes.ftp import FtpControl, greeting_refusal
from profiles.yamldata import parse_yaml, validate
from scanner.models import Confidence, Intrusiveness, Model, Service, Severity, utc_now
from scanner.net import Connection, insecure_tls_context, verifying_tls_context
from scanner.protocols.tls import (
    SSL3,
    TLS1_0,
    TLS1_1,
    TLS1_2,
    TLS1_3,
    TLS13_SUITES,
    VERSION_NAMES,
    ServerFlight,
    certificate_facts,
    client_hello,
    exchange_hello,
    names_match,
)

SCAN_NAME = "tls-scan"
HELLO_WAIT = 4.0  # seconds for one first flight, or the profile's read timeout if shorter
MAX_ROUNDS_PER_VERSION = 128  # elimination rounds: more suites than any real server enables
MAX_ROUNDS = 320  # across all versions
VERIFY_RESERVE = 3.0  # seconds of the budget kept for the verifying handshake
REFERENCE_BCP = "https://www.rfc-editor.org/rfc/rfc9325"

# ----------------------------------------------------------------------------- data


class VersionRule(Model):
    name: str
    code: int
    severity: Severity | None
    reason: str
    reference: str


class Rule(Model):
    severity: Severity
    reason: str
    reference: str


class WeaknessRule(Rule):
    category: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class KeyPolicy(Model):
    minimum_bits: dict[str, int]
    key_severity: Severity
    curves: list[str]
    weak_signature_hashes: dict[str, Severity]
    reference: str


class StartTlsRefused(ConnectionError):
    """The service refused the upgrade to TLS: it offers none on this connection."""


class StartTlsStep(Model):
    send: str
    expect: int


class StartTls(Model):
    """A cleartext protocol's request for TLS on the same connection (tls.yaml ``starttls``)."""

    reference: str
    steps: list[StartTlsStep]

    async def upgrade(self, conn: Connection) -> None:
        """Read the greeting and walk the steps, so the next bytes sent are a ClientHello.

        Raises StartTlsRefused when a step gets another reply; replies are read with the FTP
        reader, as SMTP replies have the same syntax (RFC 5321 4.2), bounded in bytes and time.
        """
        control = FtpControl(conn)
        greeting = await control.reply()
        if greeting.code == 120:
            greeting = await control.reply()
        refusal = greeting_refusal(greeting)
        if refusal is not None:
            raise refusal
        for step in self.steps:
            reply = await control.command(step.send)
            if reply.code != step.expect:
                raise StartTlsRefused(f"{step.send} answered {reply.code} {reply.text}"[:240])


class TlsData(Model):
    protocol_versions: list[VersionRule]
    starttls: dict[str, StartTls]  # protocol -> its upgrade dialogue
    no_modern_version: Rule
    weaknesses: list[WeaknessRule]
    certificate_keys: KeyPolicy
    cipher_suites: dict[str, str]  # "0x0005" -> IANA name

    @functools.cached_property
    def suites(self) -> dict[int, str]:
        return {int(code, 16): name for code, name in self.cipher_suites.items()}

    def suite_name(self, code: int) -> str:
        return self.suites.get(code, f"unknown 0x{code:04X}")

    def categories(self, suite_name: str) -> list[WeaknessRule]:
        return [rule for rule in self.weaknesses if re.search(rule.pattern, suite_name)]


@functools.cache
def tls_data() -> TlsData:
    """probes/data/tls.yaml, validated once."""
    text = files("probes").joinpath("data", "tls.yaml").read_text(encoding="utf-8")
    return validate(TlsData, parse_yaml(text, "probes/data/tls.yaml"), text,
                    "probes/data/tls.yaml")


# ----------------------------------------------------------------------------- collection


def _offered_suites(version: int) -> list[int]:
    """TLS 1.3 suites only in a 1.3 hello; every other registered suite below it."""
    codes = tls_data().suites
    if version == TLS1_3:
        return sorted(TLS13_SUITES)
    return [code for code in codes if code not in TLS13_SUITES]


def _hostname(target: Target) -> str | None:
    return target.device.hostnames[0] if target.device.hostnames else None


def starttls_for(service: Service) -> StartTls | None:
    """The upgrade dialogue a cleartext service needs before its handshake; None for a service
    that speaks TLS from the first byte (or not at all)."""
    return None if service.tls else tls_data().starttls.get(service.protocol)


async def _cleartext_connection(ctx: ProbeContext, *, record: bool) -> Connection:
    """A TCP connection at the point where the server expects a ClientHello."""
    conn = await ctx.network.open_tcp(ctx.target.address, ctx.target.port,
                                      transcript=ctx.transcript if record else None)
    upgrade = starttls_for(ctx.target.service)
    if upgrade is not None:
        try:
            await upgrade.upgrade(conn)
        except BaseException:
            await conn.close()
            raise
    return conn


async def _handshake(ctx: ProbeContext, context: ssl.SSLContext) -> Connection:
    """A connection whose TLS handshake through ``context`` completed: from the first byte, or
    after the upgrade dialogue on the same connection."""
    hostname = _hostname(ctx.target)
    if starttls_for(ctx.target.service) is None:
        return await ctx.network.open_tcp(ctx.target.address, ctx.target.port, tls=context,
                                          server_hostname=hostname, transcript=ctx.transcript)
    conn = await _cleartext_connection(ctx, record=True)
    limits = ctx.network.limits
    try:
        await conn.writer.start_tls(context, server_hostname=hostname,
                                    ssl_handshake_timeout=limits.connect_timeout
                                    + limits.read_timeout)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _offer(ctx: ProbeContext, version: int, suites: Sequence[int], *,
                 record: bool) -> ServerFlight:
    """One ClientHello on a fresh connection; resets and closes mean "refused"."""
    wait = min(HELLO_WAIT, ctx.network.limits.read_timeout)
    hello = client_hello(version, suites, _hostname(ctx.target))
    async with await _cleartext_connection(ctx, record=record) as conn:
        try:
            return await exchange_hello(conn, hello, wait)
        except (ConnectionResetError, BrokenPipeError):
            return ServerFlight()


async def _scan_version(ctx: ProbeContext, version: int, rounds: list[int]) -> dict[str, Any]:
    """Whether ``version`` is accepted and, by elimination, which suites it accepts."""
    name = VERSION_NAMES[version]
    first = await _offer(ctx, version, _offered_suites(version), record=True)
    if first.version != version or first.cipher_suite is None:
        refusal = (first.alert_name or
                   (f"answered with {VERSION_NAMES.get(first.version, hex(first.version))}"
                    if first.version is not None else "closed"))
        ctx.note(f"{name}: not accepted ({refusal})")
        return {"accepted": False, "refusal": refusal}
    data = tls_data()
    accepted = [first.cipher_suite]
    ctx.note(f"{name}: accepted; server chose {data.suite_name(first.cipher_suite)}")
    remaining = [code for code in _offered_suites(version) if code != first.cipher_suite]
    stopped = ""
    while remaining:
        if len(accepted) >= MAX_ROUNDS_PER_VERSION or rounds[0] >= MAX_ROUNDS:
            stopped = "round cap"
        elif ctx.time_left() < VERIFY_RESERVE + HELLO_WAIT:
            stopped = "time budget"
        if stopped:
            break
        rounds[0] += 1
        try:
            flight = await _offer(ctx, version, remaining, record=False)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            stopped = f"{type(exc).__name__}: {exc}"[:160]
            break
        if flight.version != version or flight.cipher_suite not in remaining:
            break  # refused what is left: every accepted suite is found
        accepted.append(flight.cipher_suite)
        remaining.remove(flight.cipher_suite)
        ctx.note(f"{name}: offered {len(remaining) + 1} suites without the ones above, "
                 f"server chose {data.suite_name(flight.cipher_suite)}")
    if stopped:
        ctx.note(f"{name}: suite enumeration stopped early ({stopped})")
    return {"accepted": True, "suites": [data.suite_name(code) for code in accepted],
            "certificates": first.certificates, "stopped": stopped}


async def _trust(ctx: ProbeContext, leaf: dict[str, Any] | None) -> dict[str, Any]:
    """A verifying handshake's verdict; when local OpenSSL cannot connect at all, whether the
    leaf is self-signed (checked with its own key) is the best we can say."""
    context = verifying_tls_context(tuple(ctx.settings.trusted_ca_files),
                                    chain_only=True)
    try:
        conn = await _handshake(ctx, context)
    except ssl.SSLCertVerificationError as exc:
        message = str(exc.verify_message or exc.reason or exc)[:200]
        ctx.note(f"verifying handshake failed: {message}")
        return {"verdict": "untrusted", "verify_message": message, "verify_code": exc.verify_code,
                "method": "verifying handshake"}
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
        ctx.note(f"no verifying handshake possible ({type(exc).__name__}: {exc})"[:240])
        if leaf is not None and leaf.get("self_signed"):
            return {"verdict": "self-signed", "method": "self-signature check",
                    "verify_message": "self-signed certificate (its signature verifies with "
                                      "its own key)"}
        return {"verdict": "unknown", "method": "none", "verify_message": str(exc)[:200]}
    async with conn:
        ctx.note("verifying handshake succeeded: the chain leads to a trusted CA")
    return {"verdict": "trusted", "method": "verifying handshake"}


async def _tls13_leaf(ctx: ProbeContext) -> list[bytes]:
    """A TLS 1.3 server encrypts its certificate: fetch the leaf through local OpenSSL."""
    try:
        async with await _handshake(ctx, insecure_tls_context()) as conn:
            der = conn.peer_certificate_der
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
        ctx.note(f"no certificate: local OpenSSL could not connect ({exc})"[:240])
        return []
    return [der] if der else []


def _chain_facts(chain: list[bytes]) -> list[dict[str, Any]]:
    found = []
    for der in chain:
        try:
            found.append(certificate_facts(der))
        except ValueError as exc:  # a device's malformed certificate is a fact
            found.append({"error": f"unparseable certificate: {exc}"[:200],
                          "der_bytes": len(der)})
    return found


async def scan_tls(ctx: ProbeContext) -> Facts:
    """The one TLS collection every TLS check reads (see the module docstring)."""
    checked_at = utc_now()
    rounds = [0]
    # TLS 1.2 first and alone: a silent or non-TLS service ends the scan here, in one wait.
    try:
        results = {TLS1_2: await _scan_version(ctx, TLS1_2, rounds)}
    except StartTlsRefused as exc:
        raise NotApplicable(f"no TLS offered: {exc}") from exc
    others = (TLS1_3, TLS1_1, TLS1_0, SSL3)
    for version, result in zip(others, await asyncio.gather(
            *(_scan_version(ctx, version, rounds) for version in others),
            return_exceptions=True), strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, ConnectionError | TimeoutError | ValueError):
                raise result
            ctx.note(f"{VERSION_NAMES[version]}: {type(result).__name__}: {result}"[:240])
            result = {"accepted": False, "refusal": f"{type(result).__name__}"}
        results[version] = result
    chain: list[bytes] = next((results[v].pop("certificates") for v in (TLS1_2, TLS1_1, TLS1_0,
                                                                        SSL3)
                               if results[v].get("certificates")), [])
    for result in results.values():
        result.pop("certificates", None)
    accepted = [v for v in sorted(results) if results[v]["accepted"]]
    if not chain and TLS1_3 in accepted:
        chain = await _tls13_leaf(ctx)
    certificates = _chain_facts(chain)
    leaf = certificates[0] if certificates and "error" not in certificates[0] else None
    trust = await _trust(ctx, leaf) if accepted else {"verdict": "unknown", "method": "none"}
    return {
        "checked_at": checked_at.isoformat(),
        "versions": {VERSION_NAMES[v]: results[v] for v in sorted(results)},
        "accepted_versions": [VERSION_NAMES[v] for v in accepted],
        "certificates": certificates,
        "trust": trust,
        "rounds": rounds[0],
    }


# ----------------------------------------------------------------------------- checks


def _leaf(facts: Facts) -> dict[str, Any] | None:
    certificates = facts.get("certificates") or []
    if certificates and "error" not in certificates[0]:
        leaf: dict[str, Any] = certificates[0]
        return leaf
    return None


def _names(target: Target) -> list[str]:
    return [target.address, *target.device.hostnames]


class TlsCheck(Probe):
    """A check judging the shared TLS scan of a service that speaks TLS from the start, or
    of a cleartext one with an upgrade dialogue (which may refuse it: NotApplicable)."""

    def applies_to(self, target: Target) -> bool:
        service = target.service
        return service.transport == "tcp" and (service.tls or starttls_for(service) is not None)

    async def collect(self, ctx: ProbeContext) -> Facts:
        return await ctx.shared(SCAN_NAME, scan_tls)

    def summarize(self, facts: Facts) -> dict[str, str]:
        leaf = _leaf(facts) or {}
        shown = {"tls_versions": ", ".join(facts.get("accepted_versions", [])) or "none",
                 "certificate_trust": str(facts.get("trust", {}).get("verdict", "unknown"))}
        if leaf:
            shown["certificate_subject"] = str(leaf.get("subject", ""))
            shown["certificate_not_after"] = str(leaf.get("not_after", ""))
        return shown


_TLS_PROTOCOLS = ("tls", "http", "mqtt", "ftp", "rtsp", "smtp")


class TlsLegacyProtocols(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-legacy-protocols",
        title="Only TLS 1.2 or newer is accepted",
        description="SSLv3 (POODLE) and TLS 1.0/1.1 (deprecated by RFC 8996) let an attacker "
                    "in the path downgrade or decrypt sessions; a device that offers nothing "
                    "newer cannot be reached securely at all.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Disable SSLv3, TLS 1.0 and TLS 1.1 in the device's TLS configuration or "
                    "firmware; enable TLS 1.2 and TLS 1.3.",
        references=("https://www.rfc-editor.org/rfc/rfc8996",
                    "https://www.rfc-editor.org/rfc/rfc7568", REFERENCE_BCP),
        max_connections=2,
        categories=("tls", "cryptography"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        data = tls_data()
        versions: dict[str, dict[str, Any]] = facts.get("versions", {})
        found = []
        for rule in data.protocol_versions:
            result = versions.get(rule.name, {})
            if rule.severity is not None and result.get("accepted"):
                found.append(Observation(
                    summary=f"The service on port {target.port} accepts {rule.name}: "
                            f"{rule.reason}",
                    severity=rule.severity, key=rule.name,
                    facts={"version": rule.name,
                           "suites": ", ".join(result.get("suites", []))[:1024],
                           "reason": rule.reason, "reference": rule.reference}))
        accepted = facts.get("accepted_versions", [])
        if accepted and not {"TLSv1.2", "TLSv1.3"} & set(accepted):
            modern = data.no_modern_version
            found.append(Observation(
                summary=f"The service on port {target.port} accepts only "
                        f"{', '.join(accepted)}: {modern.reason}",
                severity=modern.severity, key="no-modern-version",
                facts={"accepted_versions": ", ".join(accepted), "reason": modern.reason,
                       "reference": modern.reference}))
        return found


class TlsWeakCipherSuites(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-weak-cipher-suites",
        title="No weak TLS cipher suites are accepted",
        description="NULL, EXPORT, anonymous, RC4 and 64-bit block cipher suites give no or "
                    "breakable confidentiality or no authentication; static key exchange loses "
                    "forward secrecy. A client or attacker in the path can pick any suite the "
                    "server accepts.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Restrict the server to ECDHE (or TLS 1.3) suites with AEAD ciphers "
                    "(AES-GCM, ChaCha20-Poly1305), as RFC 9325 recommends.",
        references=(REFERENCE_BCP, "https://www.rfc-editor.org/rfc/rfc7465"),
        max_connections=2,
        categories=("tls", "cryptography"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        data = tls_data()
        by_category: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        rules = {rule.category: rule for rule in data.weaknesses}
        for version, result in facts.get("versions", {}).items():
            for suite in result.get("suites", []):
                for rule in data.categories(suite):
                    by_category[rule.category][suite].append(version)
        found = []
        for category, suites in by_category.items():
            rule = rules[category]
            listed = ", ".join(f"{suite} ({'/'.join(versions)})"
                               for suite, versions in suites.items())
            found.append(Observation(
                summary=f"The service on port {target.port} accepts {len(suites)} {category} "
                        f"cipher suite{'s' if len(suites) != 1 else ''}: {rule.reason}",
                severity=rule.severity, key=category,
                facts={"category": category, "suites": listed[:2048], "reason": rule.reason,
                       "reference": rule.reference}))
        return found


class TlsCertificateExpired(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-certificate-expired",
        title="The TLS certificate is within its validity period",
        description="An expired (or not yet valid) certificate makes every client either fail "
                    "or be configured to ignore validation, which then also accepts an "
                    "attacker's certificate.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Install a current certificate and automate its renewal (e.g. ACME, or the "
                    "vendor's certificate management); check the device clock.",
        references=("https://www.rfc-editor.org/rfc/rfc5280#section-4.1.2.5",),
        max_connections=2,
        categories=("tls", "certificate"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        leaf = _leaf(facts)
        if leaf is None or "checked_at" not in facts:
            return []
        checked = datetime.fromisoformat(facts["checked_at"])
        not_before = datetime.fromisoformat(leaf["not_before"])
        not_after = datetime.fromisoformat(leaf["not_after"])
        detail = {"subject": leaf["subject"], "not_before": leaf["not_before"],
                  "not_after": leaf["not_after"], "checked_at": facts["checked_at"],
                  "sha256": leaf["sha256"]}
        if checked > not_after:
            days = (checked - not_after).days
            return [Observation(
                summary=f"The certificate on port {target.port} expired on "
                        f"{not_after.date().isoformat()} ({days} days before the scan).",
                key="expired", facts=detail)]
        if checked < not_before:
            return [Observation(
                summary=f"The certificate on port {target.port} is not valid until "
                        f"{not_before.date().isoformat()} (device clock or issuance error).",
                key="not-yet-valid", facts=detail)]
        return []


class TlsCertificateUntrusted(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-certificate-untrusted",
        title="The TLS certificate chains to a trusted CA",
        description="A self-signed certificate, or one from an unknown CA, cannot be told "
                    "apart from an attacker's: clients must skip validation and are open to "
                    "interception.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Issue the device a certificate from a CA its clients trust (a public CA, "
                    "or the organisation's private CA, listed in the scan profile's "
                    "trusted_ca_files).",
        references=("https://www.rfc-editor.org/rfc/rfc5280#section-6",
                    "https://www.rfc-editor.org/rfc/rfc6125"),
        max_connections=2,
        categories=("tls", "certificate"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        trust: dict[str, Any] = facts.get("trust", {})
        verdict = trust.get("verdict")
        if verdict not in ("untrusted", "self-signed"):
            return []
        leaf = _leaf(facts) or {}
        self_signed = bool(leaf.get("self_signed")) or verdict == "self-signed"
        kind = "self-signed" if self_signed else "not issued by a trusted CA"
        return [Observation(
            summary=f"The certificate on port {target.port} is {kind}: "
                    f"{trust.get('verify_message', '')}.",
            confidence=Confidence.CONFIRMED if verdict == "untrusted" else Confidence.FIRM,
            key="untrusted",
            facts={"verify_message": str(trust.get("verify_message", "")),
                   "method": str(trust.get("method", "")),
                   "subject": str(leaf.get("subject", "")), "issuer": str(leaf.get("issuer", "")),
                   "self_signed": str(self_signed).lower(),
                   "spki_sha256": str(leaf.get("spki_sha256", ""))})]


class TlsCertificateNameMismatch(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-certificate-name-mismatch",
        title="The TLS certificate names the device",
        description="A client checks that the certificate names the address or host name it "
                    "connected to; when it does not, users learn to click through warnings and "
                    "any valid certificate for another name would be accepted.",
        severity=Severity.LOW,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Issue the certificate with subjectAltName entries for every address and "
                    "host name clients use (IP SANs for addresses; CN alone is obsolete).",
        references=("https://www.rfc-editor.org/rfc/rfc6125", "https://www.rfc-editor.org/rfc/rfc2818#section-3.1"),
        max_connections=2,
        categories=("tls", "certificate"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        leaf = _leaf(facts)
        if leaf is None:
            return []
        names = _names(target)
        if any(names_match(name, leaf["dns_names"], leaf["ip_addresses"], leaf["common_names"])
               for name in names):
            return []
        listed = [*leaf["ip_addresses"], *leaf["dns_names"]] or \
            [f"CN={name}" for name in leaf["common_names"]]
        return [Observation(
            summary=f"The certificate on port {target.port} names "
                    f"{', '.join(listed) or 'nothing'} but not {', '.join(names)}.",
            key="name-mismatch",
            facts={"expected": ", ".join(names), "certificate_names": ", ".join(listed)[:1024],
                   "subject": leaf["subject"]})]


class TlsCertificateWeakKey(TlsCheck):
    metadata = ProbeMetadata(
        check_id="tls-certificate-weak-key",
        title="The TLS certificate has a strong key and signature",
        description="RSA or DSA keys under 2048 bits and small or non-standard curves can be "
                    "broken or are rejected by current clients; MD5 and SHA-1 signatures allow "
                    "forged certificates by collision.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=_TLS_PROTOCOLS,
        remediation="Re-issue the certificate with an RSA key of at least 2048 bits or an "
                    "ECDSA P-256/P-384 key, signed with SHA-256 or stronger.",
        references=("https://csrc.nist.gov/pubs/sp/800/131/a/r2/final",
                    "https://csrc.nist.gov/pubs/sp/800/57/pt1/r5/final"),
        max_connections=2,
        categories=("tls", "certificate", "cryptography"),
    )

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        leaf = _leaf(facts)
        if leaf is None:
            return []
        policy = tls_data().certificate_keys
        found = []
        key_type, bits = str(leaf.get("key_type")), int(leaf.get("key_bits", 0))
        minimum = policy.minimum_bits.get(key_type)
        curve = leaf.get("curve")
        problem = ""
        if minimum is not None and bits < minimum:
            problem = f"a {bits}-bit {key_type} key (minimum {minimum})"
        elif key_type == "EC" and curve not in policy.curves:
            problem = f"an EC key on {curve}, not one of {', '.join(policy.curves)}"
        if problem:
            found.append(Observation(
                summary=f"The certificate on port {target.port} has {problem}.",
                severity=policy.key_severity, key="key",
                facts={"key_type": key_type, "key_bits": str(bits), "curve": str(curve or ""),
                       "subject": leaf["subject"], "reference": policy.reference}))
        digest = str(leaf.get("signature_hash", "")).lower()
        if digest in policy.weak_signature_hashes:
            found.append(Observation(
                summary=f"The certificate on port {target.port} is signed with "
                        f"{digest.upper()}, which allows forged certificates by collision.",
                severity=policy.weak_signature_hashes[digest], key="signature",
                facts={"signature_hash": digest, "subject": leaf["subject"],
                       "issuer": leaf["issuer"], "reference": policy.reference}))
        return found


class TlsSharedCertificate(FleetCheck):
    """The same leaf public key on several devices: one extracted firmware image gives the
    private key of every unit, so any of them can be impersonated and its traffic decrypted."""

    reads: ClassVar[str] = "tls-certificate-untrusted"
    metadata = ProbeMetadata(
        check_id="tls-shared-certificate",
        title="Each device has its own TLS key",
        description="Devices that present the same public key share one private key, usually "
                    "baked into the firmware: whoever extracts it from one unit can "
                    "impersonate every unit of the model and decrypt their traffic.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.PASSIVE,
        protocols=_TLS_PROTOCOLS,
        remediation="Generate a unique key pair on each device at first boot or "
                    "provisioning; never ship private keys in firmware images.",
        references=("https://www.etsi.org/deliver/etsi_en/303600_303699/303645/"
                    "03.01.03_60/en_303645v030103p.pdf",
                    "https://sec-consult.com/blog/detail/house-keys-how-embedded-devices-"
                    "share-private-keys/"),
        categories=("tls", "certificate", "class-secret"),
    )

    def fleet_facts(self, facts: Facts) -> Facts:
        leaf = _leaf(facts)
        return {"certificates": [leaf]} if leaf is not None else {}

    def evaluate_fleet(self, samples: Sequence[tuple[Target, Facts]],
                       ) -> list[tuple[Target, Observation]]:
        groups: dict[str, list[tuple[Target, dict[str, Any]]]] = defaultdict(list)
        for target, facts in samples:
            leaf = _leaf(facts)
            if leaf is not None and leaf.get("spki_sha256"):
                groups[leaf["spki_sha256"]].append((target, leaf))
        found = []
        for fingerprint, members in groups.items():
            devices = sorted({target.address for target, _ in members})
            if len(devices) < 2:
                continue
            models = sorted({target.device.model for target, _ in members if target.device.model})
            model_text = f" (model {', '.join(models)})" if models else ""
            for target, leaf in members:
                found.append((target, Observation(
                    summary=f"{len(devices)} devices{model_text} present the same TLS public "
                            f"key (SHA-256 {fingerprint[:16]}…): its private key is a "
                            f"class-wide secret.",
                    key=fingerprint,
                    facts={"spki_sha256": fingerprint, "devices": ", ".join(devices)[:1024],
                           "models": ", ".join(models), "subject": str(leaf.get("subject", ""))})))
        return found


class HttpsHstsMissing(Probe):
    metadata = ProbeMetadata(
        check_id="https-hsts-missing",
        title="The HTTPS interface sends Strict-Transport-Security",
        description="Without HSTS a browser that once reached the web UI over HTTPS can later "
                    "be sent to its plain-HTTP form by an attacker in the path (SSL stripping).",
        severity=Severity.INFO,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Send `Strict-Transport-Security: max-age=31536000` on every HTTPS response.",
        references=("https://www.rfc-editor.org/rfc/rfc6797",),
        max_connections=1,
        categories=("tls", "web"),
    )

    def applies_to(self, target: Target) -> bool:
        return target.service.protocol == "http" and target.service.tls

    async def collect(self, ctx: ProbeContext) -> Facts:
        response = await ctx.http("GET", "/", follow_redirects=False)
        return {"status": response.status,
                "hsts": response.header("strict-transport-security")[:256]}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        hsts = str(facts.get("hsts", ""))
        max_age = re.search(r"max-age\s*=\s*\"?(\d+)", hsts, re.IGNORECASE)
        if max_age and int(max_age.group(1)) > 0:
            return []
        problem = "sends Strict-Transport-Security with max-age 0" if hsts else \
            "sends no Strict-Transport-Security header"
        return [Observation(
            summary=f"The HTTPS interface on port {target.port} {problem}.",
            key="hsts", facts={"status": str(facts.get("status", "")), "header": hsts})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"hsts": str(facts.get("hsts", "")) or "absent"}
