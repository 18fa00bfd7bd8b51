"""The scan data model: what the engine records and every renderer reads.

Pydantic models give one definition for validation, JSON serialisation and the JSON Schema that is
committed under ``reports/schema`` (a test fails when the two drift apart).
"""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Severity(enum.StrEnum):
    """Serialised by name; ``rank`` orders them so ``--fail-on`` can compare."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown severity {text!r} (choose from {names})") from None


class Intrusiveness(enum.IntEnum):
    """How much a probe may disturb a device, in nmap NSE's spirit; profiles cap it."""

    PASSIVE = 0  # only reads what discovery already collected
    SAFE = 1  # ordinary protocol requests a normal client makes
    AUTH_ATTEMPT = 2  # tries credentials, within a lockout-safe budget
    INTRUSIVE = 3  # may stress the device (brute-force protection tests, long subscriptions)

    @classmethod
    def parse(cls, text: str) -> Intrusiveness:
        try:
            return cls[text.strip().upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(member.name.lower() for member in cls)
            raise ValueError(f"unknown intrusiveness {text!r} (choose from {names})") from None


class Confidence(enum.StrEnum):
    CONFIRMED = "confirmed"  # reproduced by an exchange that proves it
    FIRM = "firm"  # strong indirect evidence
    TENTATIVE = "tentative"  # a hint worth a manual look


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=False)


class Exchange(Model):
    """One step of a conversation with a device, kept so an assessor can reproduce it."""

    at: datetime
    direction: str = Field(pattern="^(sent|received|event)$")
    endpoint: str  # "tcp://127.0.0.1:23", "udp://…", "https://…"
    data: str  # text with non-printable bytes escaped, secrets redacted
    truncated: bool = False


class Certificate(Model):
    subject: str
    issuer: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    serial: str = ""
    sha256: str
    self_signed: bool = False
    subject_alt_names: list[str] = Field(default_factory=list)


class Service(Model):
    port: int = Field(ge=0, le=65535)
    transport: str = Field(pattern="^(tcp|udp)$")
    state: str = "open"
    protocol: str = "unknown"  # identified application protocol: ssh, telnet, http, …
    tls: bool = False
    banner: str = ""
    product: str = ""
    version: str = ""
    sources: list[str] = Field(default_factory=list)  # which discovery steps saw it
    details: dict[str, str] = Field(default_factory=dict)  # http title, auth scheme, …
    certificate: Certificate | None = None

    @property
    def label(self) -> str:
        """What a person calls it: "https" rather than "http" with tls."""
        if not self.tls:
            return self.protocol
        return "https" if self.protocol == "http" else f"{self.protocol}+tls"


class Device(Model):
    address: str
    mac: str | None = None
    vendor: str | None = None  # from the MAC OUI
    hostnames: list[str] = Field(default_factory=list)
    manufacturer: str | None = None  # as the device describes itself (UPnP, mDNS, SNMP)
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    os_guess: str | None = None
    services: list[Service] = Field(default_factory=list)
    mdns_services: list[str] = Field(default_factory=list)
    mdns_properties: dict[str, str] = Field(default_factory=dict)  # DNS-SD TXT (capped)
    upnp: dict[str, str] = Field(default_factory=dict)
    discovered_by: list[str] = Field(default_factory=list)

    def fingerprint_text(self) -> str:
        """Every identifying string we hold, for matching vendor data (credentials, profiles)."""
        parts = [self.vendor, self.manufacturer, self.model, self.firmware, self.os_guess,
                 *self.hostnames, *self.upnp.values(), *self.mdns_services,
                 *self.mdns_properties.values()]
        for service in self.services:
            parts += [service.banner, service.product, service.details.get("title", "")]
            if service.certificate is not None:
                parts += [service.certificate.subject, service.certificate.issuer]
        return " ".join(part for part in parts if part)[:8192]

    def service(self, port: int, transport: str = "tcp") -> Service | None:
        return next(
            (s for s in self.services if s.port == port and s.transport == transport), None
        )


class Finding(Model):
    id: str  # stable across scans: same check, device, port and key give the same id
    check_id: str
    title: str
    summary: str
    severity: Severity
    confidence: Confidence
    device: str
    port: int | None = None
    transport: str | None = None
    protocol: str | None = None
    clauses: dict[str, list[str]] = Field(default_factory=dict)  # framework id -> clause ids
    evidence: list[Exchange] = Field(default_factory=list)
    facts: dict[str, str] = Field(default_factory=dict)
    remediation: str = ""
    references: list[str] = Field(default_factory=list)
    found_at: datetime


def finding_id(check_id: str, device: str, port: int | None, transport: str | None,
               key: str = "") -> str:
    """A hash of what makes a finding the same finding, so scans can be compared."""
    material = "|".join([check_id, device, str(port), str(transport), key])
    return "IOTB-" + hashlib.sha256(material.encode()).hexdigest()[:16].upper()


class CheckStatus(enum.StrEnum):
    PASS = "pass"  # the check ran and found no counterexample
    FAIL = "fail"  # at least one finding
    ERROR = "error"  # the check could not complete (timeout, protocol error, plugin bug)


class CheckRun(Model):
    """One probe run against one service: the raw material for clause verdicts."""

    check_id: str
    device: str
    port: int | None = None
    transport: str | None = None
    status: CheckStatus
    findings: int = 0
    started_at: datetime
    duration_s: float
    details: dict[str, str] = Field(default_factory=dict)  # e.g. credential attempts used


class ProbeError(Model):
    check_id: str
    device: str
    port: int | None = None
    reason: str  # one line: "timeout after 10.0 s", "protocol error: …"
    kind: str  # timeout | connection | protocol | scope | plugin
    traceback: str = ""
    at: datetime


class ScanMeta(Model):
    tool: str = "iotbaseline"
    tool_version: str
    schema_version: str = SCHEMA_VERSION
    scan_id: str
    profile: str
    targets: list[str]
    excluded: list[str] = Field(default_factory=list)
    scope_size: int
    ports: dict[str, list[int]]
    started_at: datetime
    finished_at: datetime | None = None
    complete: bool = False
    stop_reason: str | None = Field(default=None, pattern="^(interrupted|error)$")
    interrupted_reason: str | None = None
    excluded_ports: list[int] = Field(default_factory=list)
    command_line: list[str] = Field(default_factory=list)
    discovery_notes: list[str] = Field(default_factory=list)  # e.g. why ARP did not run
    probes: dict[str, str] = Field(default_factory=dict)  # check id -> source "package version"


class Verdict(enum.StrEnum):
    PASS = "PASS"  # the applicable checks ran and found no counterexample (not proof of safety)
    FAIL = "FAIL"  # at least one reproducible finding, or the assessor answered fail
    INCONCLUSIVE = "INCONCLUSIVE"  # checks errored, or part of the clause is still unanswered
    NOT_APPLICABLE = "NOT_APPLICABLE"  # precondition absent, with the reason
    MANUAL = "MANUAL"  # not observable by a scan and not yet answered from the checklist


class ManualAnswer(Model):
    """An assessor's answer to a clause's questions for one device model (or one device)."""

    verdict: Verdict
    justification: str = Field(min_length=1, max_length=4000)
    evidence: list[str] = Field(default_factory=list)  # document references, URLs, file names
    assessor: str = ""
    source: str = ""  # the answers file and line it came from


class ClauseVerdict(Model):
    framework: str
    clause: str
    title: str
    device: str
    verdict: Verdict
    reason: str  # one or two sentences saying why, worded for the report
    automated: Verdict | None = None  # what the checks alone say (None: no check maps here)
    coverage: str = ""  # "full" or "partial" when checks map here
    checks: list[str] = Field(default_factory=list)  # check ids that ran on this device
    findings: list[str] = Field(default_factory=list)  # finding ids behind a FAIL
    answer: ManualAnswer | None = None


class DeviceVerdict(Model):
    framework: str
    device: str
    verdict: Verdict


class ScanResult(Model):
    """The one immutable document renderers take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: str = SCHEMA_VERSION
    meta: ScanMeta
    devices: list[Device]
    findings: list[Finding]
    check_runs: list[CheckRun]
    errors: list[ProbeError]
    verdicts: list[ClauseVerdict] = Field(default_factory=list)
    device_verdicts: list[DeviceVerdict] = Field(default_factory=list)
