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

import asyncio
import re
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from aiohttp import ClientMiddlewareType

from profiles import Authentication
from profiles.credentials import Credential, CredentialStore
from scanner.http import MAX_BODY_BYTES, HttpResponse
from scanner.http import request as http_request
from scanner.models import Confidence, Device, Exchange, Intrusiveness, Service, Severity
from scanner.net import (
    Connection,
    Network,
    Transcript,
    UdpSession,
    host_for_url,
    insecure_tls_context,
)

T = TypeVar("T")

PLUGIN_API_VERSION = 1
CHECK_ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Facts = dict[str, Any]


class NotApplicable(Exception):
    """Raised by ``collect`` when it finds nothing the check tests (a device that names no
    update URL): the run is left out, so a clause is not PASSed on a check that saw nothing."""


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


@dataclass(frozen=True)
class ProbeSettings:
    """Scan-wide settings a probe may read: budgets, credential data, what it may do."""

    authentication: Authentication = field(default_factory=Authentication)
    credentials: CredentialStore = field(default_factory=lambda: CredentialStore(()))
    intrusiveness_cap: Intrusiveness = Intrusiveness.AUTH_ATTEMPT
    show_secrets: bool = False
    trusted_ca_files: tuple[str, ...] = ()  # PEM files trusted besides the system store


SharedKey = tuple[str, str, int, str]  # (collection name, address, port, transport)


class SharedCollections:
    """Collections several checks need from one service, made once (Prowler's service clients).

    Six TLS checks need one TLS scan, not six: the first check that asks starts the collection
    as a task of its own (so its budget, not the asking probe's, bounds it), later askers await
    the same task. The result or the exception is the same for all, and each asker gets the
    collection's exchanges in its evidence.
    """

    def __init__(self) -> None:
        self._tasks: dict[SharedKey, asyncio.Task[tuple[Any, list[Exchange]]]] = {}

    def get(self, key: SharedKey, start: Callable[[], Awaitable[tuple[Any, list[Exchange]]]],
            ) -> asyncio.Task[tuple[Any, list[Exchange]]]:
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.ensure_future(start())
            # An exception nobody awaits again (its asker was cancelled) must not be logged
            # as "never retrieved".
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
        return task

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


class ProbeContext:
    """What a probe may touch: its target, the gated network, its transcript and settings."""

    def __init__(self, target: Target, network: Network, transcript: Transcript,
                 settings: ProbeSettings | None = None, deadline: float | None = None,
                 shared: SharedCollections | None = None) -> None:
        self.target = target
        self.network = network
        self.transcript = transcript
        self.settings = settings or ProbeSettings()
        self.deadline = deadline if deadline is not None else \
            time.monotonic() + network.limits.probe_budget
        self._shared = shared if shared is not None else SharedCollections()

    def time_left(self) -> float:
        """Seconds before the engine stops this probe: long loops stop early and keep facts."""
        return self.deadline - time.monotonic()

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

    def udp_session(self, port: int | None = None, *,
                    max_datagrams: int = 4096) -> AbstractAsyncContextManager[UdpSession]:
        """A UDP conversation with the target whose replies may come from any of its ports
        (TFTP answers from a new transfer id); other hosts' datagrams are dropped."""
        return self.network.udp_session(
            self.target.address, port if port is not None else self.target.port,
            transcript=self.transcript, max_datagrams=max_datagrams)

    async def http(self, method: str, path: str = "/", *, tls: bool | None = None,
                   headers: Mapping[str, str] | None = None, data: bytes | None = None,
                   follow_redirects: bool = True,
                   middlewares: tuple[ClientMiddlewareType, ...] = (),
                   max_body: int = MAX_BODY_BYTES) -> HttpResponse:
        """An HTTP(S) request to the target service; redirects only within the scope."""
        use_tls = self.target.service.tls if tls is None else tls
        host = host_for_url(self.target.address)
        url = f"{'https' if use_tls else 'http'}://{host}:{self.target.port}{path}"
        return await http_request(self.network, method, url, transcript=self.transcript,
                                  headers=headers, data=data, max_body=max_body,
                                  follow_redirects=follow_redirects, middlewares=middlewares)

    async def fetch(self, url: str, *, method: str = "GET", tls: ssl.SSLContext | None = None,
                    max_body: int = MAX_BODY_BYTES, sink: Callable[[bytes], None] | None = None,
                    ) -> HttpResponse:
        """An HTTP(S) request to any URL inside the scope (an update server the device names);
        a URL outside it raises ScopeViolation before anything is sent."""
        return await http_request(self.network, method, url, transcript=self.transcript,
                                  tls=tls, max_body=max_body, sink=sink)

    async def run_blocking(self, function: Callable[..., T], *args: Any) -> T:
        """For blocking libraries (paramiko): the bounded thread pool, never the event loop.

        The caller must hold a slot (``network.slot``) for any socket the library opens."""
        return await self.network.run_blocking(function, *args)

    async def shared(self, name: str, collect: Callable[[ProbeContext], Awaitable[T]]) -> T:
        """``collect`` run once per service for every check that asks by the same ``name``;
        its exchanges are added to this check's evidence."""
        service = self.target.service

        async def start() -> tuple[Any, list[Exchange]]:
            transcript = Transcript(show_secrets=self.settings.show_secrets)
            ctx = ProbeContext(self.target, self.network, transcript, self.settings,
                               shared=self._shared)
            async with asyncio.timeout(self.network.limits.probe_budget):
                result = await collect(ctx)
            return result, transcript.exchanges

        task = self._shared.get((name, self.target.address, service.port, service.transport),
                                start)
        result, exchanges = await asyncio.shield(task)
        for exchange in exchanges:
            self.transcript.append(exchange)
        return result  # type: ignore[no-any-return]

    def credentials(self, protocol: str) -> list[Credential]:
        """Candidate credentials for this device, its vendor's first."""
        return self.settings.credentials.candidates(
            protocol, self.target.device.fingerprint_text(), self.target.port)

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

    def summarize(self, facts: Facts) -> dict[str, str]:
        """Facts worth showing for every run, pass or fail (e.g. attempts used of the budget)."""
        return {}


class FleetCheck(Probe):
    """A check across every device of a scan, from the facts another probe collected.

    Some weaknesses exist only between devices: one private key or SSH host key on every unit
    of a model is a class-wide secret that one extracted firmware image reveals. The engine runs
    ``evaluate_fleet`` once, after every host, with each successful run of the ``reads`` probe;
    a finding's evidence is that run's transcript.
    """

    reads: ClassVar[str]  # check id of the probe whose facts this check reads

    def applies_to(self, target: Target) -> bool:
        return False  # never runs per service

    async def collect(self, ctx: ProbeContext) -> Facts:
        return {}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return []

    def fleet_facts(self, facts: Facts) -> Facts:
        """The part of one run's facts that ``evaluate_fleet`` reads. The engine keeps it for
        every device until the scan's end, so a check that compares one fingerprint should
        keep just that; the default keeps everything."""
        return facts

    @abstractmethod
    def evaluate_fleet(self, samples: Sequence[tuple[Target, Facts]],
                       ) -> list[tuple[Target, Observation]]:
        """Pure: every (target, fleet facts) of the ``reads`` probe in, failed conditions
        out."""
