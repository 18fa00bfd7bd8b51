"""The scan engine: one event loop, hosts fed through a bounded queue, every probe run contained.

Per host: liveness, TCP connect sweep, service identification, UDP identification, optional nmap,
then every applicable probe under its time budget. Whatever a device or a plugin does, the result
is a finding, a check run or a recorded probe error — never a lost scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from probes.api import (
    Facts,
    FleetCheck,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeSettings,
    SharedCollections,
    Target,
)
from probes.registry import LoadedProbe
from profiles import ScanProfile, Timing
from profiles.credentials import CredentialStore
from reports.compliance import PRIMARY_FRAMEWORK, clauses_by_check, select_frameworks
from reports.renderers import write_scan_reports
from reports.verdicts import AnswerKey
from scanner import __version__
from scanner.discovery import fingerprint, lan
from scanner.discovery.nmap_scan import nmap_services
from scanner.models import (
    CheckRun,
    CheckStatus,
    Device,
    Exchange,
    Finding,
    ManualAnswer,
    ProbeError,
    ScanMeta,
    ScanResult,
    Service,
    finding_id,
    utc_now,
)
from scanner.net import Limits, Network, ScopeViolation, Transcript
from scanner.storage import REPORT_NAME, ResultStore, Span, StoredScan, load_report
from scanner.targets import Scope

log = logging.getLogger("iotbaseline.engine")

MAX_HOST_WORKERS = 1024
# What one observation may put in the report: a plugin cannot make it gigabytes.
MAX_SUMMARY, MAX_FACTS, MAX_FACT = 1000, 32, 1024


class PlanError(ValueError):
    """The user's settings cannot make a scan plan; shown as one line, exit code 2."""


class Progress(Protocol):
    """What the engine tells a progress display; every method must be cheap and never raise."""

    def host_done(self, alive: bool, device: Device | None) -> None: ...
    def probes_planned(self, count: int) -> None: ...
    def probe_done(self, check_id: str, findings: int) -> None: ...


class NoProgress:
    def host_done(self, alive: bool, device: Device | None) -> None:
        pass

    def probes_planned(self, count: int) -> None:
        pass

    def probe_done(self, check_id: str, findings: int) -> None:
        pass


@dataclass
class ScanPlan:
    scope: Scope
    profile: ScanProfile
    probes: list[LoadedProbe]
    limits: Limits
    tcp_ports: list[int]
    udp_ports: list[int]
    show_secrets: bool = False
    command_line: list[str] = field(default_factory=list)
    credentials: CredentialStore = field(default_factory=lambda: CredentialStore(()))
    formats: list[str] = field(default_factory=lambda: ["json"])
    answers: dict[AnswerKey, ManualAnswer] = field(default_factory=dict)
    frameworks: list[str] = field(default_factory=lambda: [PRIMARY_FRAMEWORK])
    scan_id: str | None = None  # a job's id, so a job run twice is one scan in the store

    @classmethod
    def build(cls, scope: Scope, profile: ScanProfile, probes: Iterable[LoadedProbe], *,
              ports: dict[str, list[int]] | None = None, overrides: dict[str, float] | None = None,
              show_secrets: bool = False, command_line: list[str] | None = None) -> ScanPlan:
        """Apply the profile's caps and selections and the user's overrides."""
        changes = {k: v for k, v in (overrides or {}).items() if v is not None}
        try:  # one validation path: flags obey the same bounds as profile files
            timing = Timing.model_validate({**profile.timing.model_dump(), **changes})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise PlanError(f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") \
                from None
        limits = Limits(concurrency=timing.concurrency, per_host=timing.per_host,
                        rate=timing.rate, connect_timeout=timing.connect_timeout,
                        read_timeout=timing.read_timeout, probe_budget=timing.probe_budget)
        include, exclude = set(profile.checks.include), set(profile.checks.exclude)
        selected = [
            loaded for loaded in probes
            if loaded.probe.metadata.intrusiveness <= profile.intrusiveness_cap
            and (not include or loaded.probe.metadata.check_id in include)
            and loaded.probe.metadata.check_id not in exclude
        ]
        chosen_ports = ports or {"tcp": profile.ports.tcp, "udp": profile.ports.udp}
        tcp = [p for p in chosen_ports.get("tcp", []) if p not in scope.excluded_ports]
        udp = [p for p in chosen_ports.get("udp", []) if p not in scope.excluded_ports]
        if not tcp and not udp:
            raise PlanError("every port is excluded; nothing to scan")
        # Only checks use credentials: a sweep or discovery plan does not parse the lists.
        credentials = CredentialStore.load(profile.authentication.extra_files) if selected \
            else CredentialStore(())
        return cls(scope, profile, selected, limits, tcp, udp, show_secrets,
                   list(command_line or []), credentials)


class WeightedSlots:
    """A semaphore whose holders take several units at once (a probe's connections)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = self.free = capacity
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, units: int) -> AsyncIterator[None]:
        units = max(1, min(units, self.capacity))
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= units)
            self.free -= units
        try:
            yield
        finally:
            async with self._changed:
                self.free += units
                self._changed.notify_all()


def _probe_error_kind(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ScopeViolation):
        return "scope"
    if isinstance(exc, (ConnectionError, OSError, ssl.SSLError)):
        return "connection"
    if isinstance(exc, (ValueError, UnicodeError, EOFError)):
        return "protocol"
    return "plugin"


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class ScanEngine:
    def __init__(self, plan: ScanPlan, store: ResultStore,
                 progress: Progress | None = None) -> None:
        self.plan = plan
        self.store = store
        self.progress = progress or NoProgress()
        self.network = Network(plan.scope, plan.limits)
        self.lan_facts: dict[str, lan.LanFacts] = {}
        # Only checks make findings: a sweep or a discovery loads no framework data.
        self._clauses = clauses_by_check() if plan.probes else {}
        self.settings = ProbeSettings(
            authentication=plan.profile.authentication, credentials=plan.credentials,
            intrusiveness_cap=plan.profile.intrusiveness_cap, show_secrets=plan.show_secrets,
            trusted_ca_files=tuple(plan.profile.tls.ca_files))
        self._fleet = [lp.probe for lp in plan.probes if isinstance(lp.probe, FleetCheck)]
        # Per fleet check, what it reads of each run of its probe (``fleet_facts``), kept until
        # the scan's end; the run's evidence waits in the journal (a span), read back only for
        # the devices a fleet check fails.
        self._fleet_samples: dict[str, list[tuple[Target, Facts, Span]]] = {
            check.metadata.check_id: [] for check in self._fleet}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.meta = ScanMeta(
            tool_version=__version__, scan_id=plan.scan_id or str(uuid.uuid4()),
            profile=plan.profile.name,
            targets=list(plan.scope.target_specs), excluded=list(plan.scope.exclude_specs),
            scope_size=plan.scope.size, ports={"tcp": plan.tcp_ports, "udp": plan.udp_ports},
            started_at=utc_now(), command_line=plan.command_line,
            excluded_ports=sorted(plan.scope.excluded_ports),
            probes={lp.probe.metadata.check_id: lp.source for lp in plan.probes},
        )

    async def run(self) -> ScanResult:
        """Scan everything in scope and return the report as written, whole, in memory."""
        await self.execute()
        return load_report(self.store.out_dir / REPORT_NAME)

    async def execute(self) -> StoredScan:
        """Scan everything in scope and write the reports; on cancellation, keep and write what
        was found. Returns the scan as an index over its journal, so that a caller that needs
        only counts or a summary never holds every finding's evidence in memory."""
        self.store.start(self.meta)
        self._task = asyncio.create_task(self._scan())
        try:
            await self._task
            complete, stop, reason = True, None, None
        except asyncio.CancelledError:
            if not self._stopped:
                raise  # we were cancelled from outside: not ours to swallow
            complete, stop, reason = False, "interrupted", "interrupted before the scan finished"
            log.warning("scan interrupted; writing the partial report")
        except Exception as exc:  # an engine bug: keep what was found, say what happened
            complete, stop = False, "error"
            reason = f"scan stopped by an internal error: {_one_line(exc)}"
            self._record_error("engine", "-", None, exc)
        finally:
            self.network.close()
        self._run_fleet_checks()  # partial scans too: the devices seen so far are compared
        self.meta = self.meta.model_copy(update={
            "finished_at": utc_now(), "complete": complete, "stop_reason": stop,
            "interrupted_reason": reason})
        stored = self.store.finish(self.meta)
        # No device, no verdict: an empty sweep does not load the frameworks (and every probe
        # module their mappings are checked against) only to iterate over nothing.
        frameworks = select_frameworks(self.plan.frameworks) if stored.device_spans else ()
        write_scan_reports(stored, self.store.out_dir, self.plan.formats, self.plan.answers,
                           frameworks)
        return stored

    def stop(self) -> None:
        """Stop scanning (Ctrl-C); ``run`` then writes the partial report."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()

    async def _scan(self) -> None:
        discovery = self.plan.profile.discovery
        try:  # bounded as a whole: devices on the link cannot stall the scan
            async with asyncio.timeout(4 * discovery.lan_wait + 15):
                self.lan_facts, notes = await lan.discover_links(
                    self.network, arp=discovery.arp, mdns=discovery.mdns,
                    ssdp=discovery.ssdp and 1900 in self.plan.udp_ports,
                    wait=discovery.lan_wait)
        except Exception as exc:  # link-local discovery is a bonus; the sweep still runs
            notes = [f"link-local discovery failed: {_one_line(exc)}"]
        if discovery.nmap and not shutil.which("nmap"):
            notes.append("nmap requested by the profile but not installed; skipped")
        self.meta.discovery_notes.extend(notes)
        workers = max(1, min(MAX_HOST_WORKERS, self.plan.scope.size,
                             self.plan.limits.concurrency // self.plan.limits.per_host or 1))
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=workers * 2)

        async def worker() -> None:
            while (address := await queue.get()) is not None:
                await self._scan_host_guarded(address)

        tasks = [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            for address in self.plan.scope.addresses():
                await queue.put(address)
            for _ in tasks:
                await queue.put(None)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _scan_host_guarded(self, address: str) -> None:
        try:
            async with asyncio.timeout(self.plan.profile.timing.host_budget):
                await self._scan_host(address)
        except TimeoutError:
            self._record_error("host-scan", address, None, TimeoutError(
                f"host budget of {self.plan.profile.timing.host_budget:.0f} s used up"))
        except Exception as exc:  # an engine bug on one host must not end the scan
            self._record_error("host-scan", address, None, exc)

    async def _port(self, address: str, port: int, identify: bool,
                    ) -> tuple[str, Service | None]:
        """"open" (with the service identified on the same connection when asked), "closed"
        (refused: the host is up) or "filtered" (no answer)."""
        try:
            conn = await self.network.open_tcp(address, port)
        except ConnectionRefusedError:
            return "closed", None
        except (TimeoutError, OSError):
            return "filtered", None
        if not identify:
            await conn.close()
            return "open", None
        # The sweep's connection is the identification's first: one connect per open port.
        return "open", await fingerprint.identify_tcp(self.network, address, port, conn)

    async def sweep(self, address: str, identify: bool = True,
                    ) -> tuple[bool, dict[int, Service | None]]:
        """Liveness first, on the chosen ports the profile names (or the first few chosen); an
        empty liveness list means treat every host as up, like nmap -Pn. Returns whether the
        host is up and its open TCP ports (identified, when asked)."""
        wanted = self.plan.profile.discovery.liveness_ports
        first = [p for p in self.plan.tcp_ports if p in wanted] or self.plan.tcp_ports[:4]
        states = dict(zip(first, await asyncio.gather(
            *(self._port(address, port, identify) for port in first)), strict=True))
        alive = (not wanted or address in self.lan_facts or not self.plan.tcp_ports
                 or any(state != "filtered" for state, _ in states.values()))
        if not alive:
            return False, {}
        rest = [p for p in self.plan.tcp_ports if p not in states]
        states.update(zip(rest, await asyncio.gather(
            *(self._port(address, port, identify) for port in rest)), strict=True))
        return True, {port: service for port, (state, service) in sorted(states.items())
                      if state == "open"}

    async def _scan_host(self, address: str) -> None:
        alive, found = await self.sweep(address)
        if not alive:
            self.progress.host_done(False, None)
            return
        open_ports = sorted(found)
        services = [service for service in found.values() if service is not None]
        services += await fingerprint.identify_all_udp(self.network, address,
                                                       self.plan.udp_ports)
        facts = self.lan_facts.get(address, lan.LanFacts())
        if 1900 in self.plan.udp_ports and not facts.upnp:
            try:
                unicast = await lan.ssdp_unicast(self.network, address, wait=1.0)
                facts.merge(unicast.get(address, lan.LanFacts()))
            except Exception as exc:  # enrichment only: the device is kept without it
                self._record_error("ssdp", address, 1900, exc)
        if facts.upnp and not any(s.port == 1900 and s.transport == "udp" for s in services):
            services.append(Service(port=1900, transport="udp", protocol="ssdp",
                                    banner=facts.upnp.get("server", ""), sources=["ssdp"]))
        if not services and not facts.sources:
            self.progress.host_done(True, None)
            return
        device = self._device(address, services, facts)
        self.store.device(device)  # recorded now, so a later budget expiry cannot lose it
        if self.plan.profile.discovery.nmap and open_ports and shutil.which("nmap"):
            merged = await self._merge_nmap(address, open_ports, services)
            if merged != services:
                device = self._device(address, merged, facts)
                self.store.device(device)
        self.progress.host_done(True, device)
        await self._run_probes(device)

    async def _merge_nmap(self, address: str, ports: list[int],
                          services: list[Service]) -> list[Service]:
        try:
            found = await nmap_services(self.network, address, ports)
        except Exception as exc:  # nmap output is external input; keep our own findings
            self._record_error("nmap", address, None, exc)
            return services
        merged = []
        for service in services:
            extra = found.get(service.port) if service.transport == "tcp" else None
            if extra:
                update: dict[str, Any] = {"sources": [*service.sources, "nmap"]}
                if service.protocol in ("unknown", "tls") and extra.get("name"):
                    update["protocol"] = extra["name"]
                if not service.product and extra.get("product"):
                    update["product"] = extra["product"]
                if not service.version and extra.get("version"):
                    update["version"] = extra["version"]
                service = service.model_copy(update=update)
            merged.append(service)
        return merged

    def _device(self, address: str, services: list[Service], facts: lan.LanFacts) -> Device:
        upnp, props = facts.upnp, facts.properties
        snmp = next((s.banner for s in services if s.protocol == "snmp"), None)
        hostnames = sorted(facts.hostnames | ({self.plan.scope.hostnames[address]}
                                              if address in self.plan.scope.hostnames else set()))
        return Device(
            address=address, mac=facts.mac, vendor=facts.vendor, hostnames=hostnames,
            manufacturer=upnp.get("manufacturer") or props.get("manufacturer")
            or props.get("vendor"),
            model=upnp.get("modelName") or props.get("model") or props.get("md"),
            firmware=props.get("firmware") or props.get("fw") or props.get("fwversion"),
            serial=upnp.get("serialNumber"),
            os_guess=snmp,
            services=sorted(services, key=lambda s: (s.transport, s.port)),
            mdns_services=sorted(facts.mdns_services),
            mdns_properties=dict(props),
            upnp=upnp,
            discovered_by=sorted(facts.sources | {"banner" for s in services
                                                  if s.transport == "tcp"}),
        )

    async def _run_probes(self, device: Device) -> None:
        runs = [(loaded.probe, Target(device, service))
                for loaded in self.plan.probes for service in device.services
                if self._applies(loaded.probe, Target(device, service))]
        self.progress.probes_planned(len(runs))
        admission = WeightedSlots(self.plan.limits.per_host)
        shared = SharedCollections()

        async def run_one(probe: Probe, target: Target) -> None:
            # Reserve every connection the probe may hold at once, so two probes that each
            # need a second socket cannot wait on each other until their budgets run out.
            async with admission.hold(min(probe.metadata.max_connections,
                                          self.plan.limits.per_host)):
                await self._run_probe(probe, target, shared)

        try:
            await asyncio.gather(*(run_one(probe, target) for probe, target in runs))
        finally:
            shared.close()

    async def _run_probe(self, probe: Probe, target: Target,
                         shared: SharedCollections | None = None) -> None:
        metadata = probe.metadata
        transcript = Transcript(show_secrets=self.plan.show_secrets)
        ctx = ProbeContext(target, self.network, transcript, self.settings, shared=shared)
        started, clock = utc_now(), time.monotonic()
        status, count, details = CheckStatus.ERROR, 0, {}
        try:
            async with asyncio.timeout(self.plan.limits.probe_budget):
                facts = await probe.collect(ctx)
            observations = probe.evaluate(target, facts)
            details = {str(k)[:64]: str(v)[:256] for k, v in
                       list(probe.summarize(facts).items())[:16]}
            for observation in observations[:100]:
                self.store.finding(self._finding(probe, target, observation,
                                                 transcript.exchanges))
            count = min(len(observations), 100)
            status = CheckStatus.FAIL if observations else CheckStatus.PASS
            self._keep_for_fleet(metadata.check_id, target, facts, transcript)
        except NotApplicable:
            self.progress.probe_done(metadata.check_id, 0)
            return
        except TimeoutError:
            self._record_error(metadata.check_id, target.address, target.port, TimeoutError(
                f"probe budget of {self.plan.limits.probe_budget:.1f} s used up"))
        except asyncio.CancelledError:  # host budget or Ctrl-C: leave a trace, then go
            self._record_error(metadata.check_id, target.address, target.port,
                               asyncio.CancelledError("cancelled before it finished"))
            self._record_run(probe, target, CheckStatus.ERROR, 0, started, clock, details)
            raise
        except Exception as exc:  # plugins are third-party code: contain every failure
            self._record_error(metadata.check_id, target.address, target.port, exc)
        self._record_run(probe, target, status, count, started, clock, details)

    def _record_run(self, probe: Probe, target: Target, status: CheckStatus, count: int,
                    started: datetime, clock: float, details: dict[str, str]) -> None:
        self.store.check_run(CheckRun(
            check_id=probe.metadata.check_id, device=target.address, port=target.port,
            transport=target.service.transport, status=status, findings=count,
            started_at=started, duration_s=round(time.monotonic() - clock, 3),
            details=details))
        self.progress.probe_done(probe.metadata.check_id, count)

    def _keep_for_fleet(self, check_id: str, target: Target, facts: Facts,
                        transcript: Transcript) -> None:
        readers = [check for check in self._fleet if check.reads == check_id]
        if not readers:
            return
        span = self.store.evidence(transcript.exchanges)
        for check in readers:
            try:
                kept = check.fleet_facts(facts)
            except Exception as exc:  # a plugin's bug loses this device for this check only
                self._record_error(check.metadata.check_id, target.address, target.port, exc)
                continue
            self._fleet_samples[check.metadata.check_id].append((target, kept, span))

    def _run_fleet_checks(self) -> None:
        """Checks across devices, once every host is done (or the scan was stopped)."""
        for check in self._fleet:
            samples = self._fleet_samples[check.metadata.check_id]
            if not samples:
                continue
            started, clock = utc_now(), time.monotonic()
            try:
                failed = check.evaluate_fleet([(target, facts) for target, facts, _ in samples])
            except Exception as exc:  # a plugin's bug loses this check only
                self._record_error(check.metadata.check_id, "-", None, exc)
                continue
            evidence = {(t.address, t.port, t.service.transport): span
                        for t, _, span in samples}
            counts: dict[tuple[str, int, str], int] = {}
            for target, observation in failed[:1000]:
                where = (target.address, target.port, target.service.transport)
                counts[where] = counts.get(where, 0) + 1
                span = evidence.get(where)
                self.store.finding(self._finding(check, target, observation, [] if span is None
                                                 else self.store.read_evidence(span)))
            for target, _, _ in samples:
                count = counts.get((target.address, target.port, target.service.transport), 0)
                self._record_run(check, target, CheckStatus.FAIL if count else CheckStatus.PASS,
                                 count, started, clock, {"devices compared": str(len(samples))})

    def _finding(self, probe: Probe, target: Target, observation: Observation,
                 evidence: list[Exchange]) -> Finding:
        metadata = probe.metadata
        return Finding(
            id=finding_id(metadata.check_id, target.address, target.port,
                          target.service.transport, observation.key),
            check_id=metadata.check_id, title=metadata.title,
            summary=observation.summary[:MAX_SUMMARY],
            severity=observation.severity or metadata.severity,
            confidence=observation.confidence, device=target.address, port=target.port,
            transport=target.service.transport, protocol=target.service.protocol,
            clauses=self._clauses.get(metadata.check_id, {}),
            evidence=list(evidence), facts={
                str(k)[:64]: str(v)[:MAX_FACT] for k, v in
                list(observation.facts.items())[:MAX_FACTS]},
            remediation=metadata.remediation, references=list(metadata.references),
            found_at=utc_now(),
        )

    def _record_error(self, check_id: str, address: str, port: int | None,
                      exc: BaseException) -> None:
        kind = _probe_error_kind(exc)
        text = "".join(traceback.format_exception(exc)) if exc.__traceback__ else ""
        self.store.error(ProbeError(check_id=check_id, device=address, port=port,
                                    reason=_one_line(exc), kind=kind,
                                    traceback=text[-8000:], at=utc_now()))
        log.info("%s on %s%s: %s", check_id, address, f":{port}" if port else "",
                 _one_line(exc))

    def _applies(self, probe: Probe, target: Target) -> bool:
        try:
            return bool(probe.applies_to(target))
        except Exception as exc:  # a plugin's applies_to bug skips that plugin, not the scan
            self._record_error(probe.metadata.check_id, target.address, target.port, exc)
            return False
