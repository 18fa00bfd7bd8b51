"""The probe plugin contract (API version 1).

A probe is metadata plus two steps, split as Prowler and sslyze split them:
``collect`` does the network I/O, only through the :class:`ProbeContext` it is handed (which
enforces scope, limits, timeouts and byte caps and records the transcript), and returns plain
facts; ``evaluate`` is pure — facts in, observations out — so it can be unit-tested with no
network. The engine turns observations into findings with ids, clause ids and evidence.

Plugins register classes under the ``iotbaseline.probes`` entry-point group; the built-in probes
are registered the same way.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scanner.models import Confidence, Device, Intrusiveness, Service, Severity
from scanner.net import Connection, Network, Transcript, insecure_tls_context

PLUGIN_API_VERSION = 1
CHECK_ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Facts = dict[str, Any]


@dataclass(frozen=True)
class ProbeMetadata:
    check_id: str  # stable, kebab-case; frameworks name checks by this id
    title: str  # the secure condition, e.g. "Telnet is not exposed"
    description: str
    severity: Severity
    intrusiveness: Intrusiveness
    protocols: tuple[str, ...]  # identified protocols it applies to ("telnet", "http", …)
    remediation: str
    references: tuple[str, ...] = ()
    max_connections: int = 1  # per host, at once
    categories: tuple[str, ...] = ()  # free tags: "cleartext", "default-credentials", …
    api_version: int = PLUGIN_API_VERSION

    def problems(self) -> list[str]:
        """Why this metadata is unusable; empty when it is fine."""
        found = []
        if not CHECK_ID_PATTERN.match(self.check_id):
            found.append(f"check id {self.check_id!r} is not kebab-case")
        if not 5 <= len(self.title) <= 120:
            found.append("title must be 5 to 120 characters")
        if not self.protocols:
            found.append("no protocols given")
        if self.max_connections < 1:
            found.append("max_connections must be at least 1")
        if self.api_version != PLUGIN_API_VERSION:
            found.append(f"written for plugin API {self.api_version}, "
                         f"this scanner speaks {PLUGIN_API_VERSION}")
        if not isinstance(self.severity, Severity):
            found.append("severity must be a Severity")
        if not isinstance(self.intrusiveness, Intrusiveness):
            found.append("intrusiveness must be an Intrusiveness")
        return found


@dataclass(frozen=True)
class Target:
    """The device and service a probe runs against (a read-only snapshot)."""

    device: Device
    service: Service

    @property
    def address(self) -> str:
        return self.device.address

    @property
    def port(self) -> int:
        return self.service.port


@dataclass(frozen=True)
class Observation:
    """A failed condition that ``evaluate`` saw; the engine makes it a finding."""

    summary: str  # one sentence an assessor can read aloud
    confidence: Confidence = Confidence.CONFIRMED
    severity: Severity | None = None  # overrides the metadata severity when set
    key: str = ""  # distinguishes several findings of one check on one service
    facts: Mapping[str, str] = field(default_factory=dict)


class ProbeContext:
    """What a probe may touch: its target, the gated network and its own transcript."""

    def __init__(self, target: Target, network: Network, transcript: Transcript,
                 options: Mapping[str, Any] | None = None) -> None:
        self.target = target
        self.network = network
        self.transcript = transcript
        self.options = dict(options or {})

    async def connect(self, port: int | None = None, *, tls: bool = False,
                      timeout: float | None = None) -> Connection:
        """Open a connection to the target (its service port unless told otherwise)."""
        return await self.network.open_tcp(
            self.target.address, port if port is not None else self.target.port,
            tls=insecure_tls_context() if tls else None, transcript=self.transcript,
            timeout=timeout,
        )

    async def udp(self, payload: bytes, port: int | None = None,
                  timeout: float | None = None) -> list[bytes]:
        return await self.network.udp_exchange(
            self.target.address, port if port is not None else self.target.port, payload,
            transcript=self.transcript, timeout=timeout,
        )

    def secret(self, value: str | bytes) -> None:
        """Mark a value (a password tried) for redaction in the evidence."""
        self.transcript.add_secret(value)

    def note(self, text: str) -> None:
        self.transcript.record("event", f"{self.target.address}:{self.target.port}", text)


class Probe(ABC):
    metadata: ClassVar[ProbeMetadata]

    def applies_to(self, target: Target) -> bool:
        return target.service.protocol in self.metadata.protocols

    @abstractmethod
    async def collect(self, ctx: ProbeContext) -> Facts:
        """Network I/O through ``ctx`` only; return plain facts."""

    @abstractmethod
    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        """Pure: no I/O. An empty list means the condition holds (PASS)."""
