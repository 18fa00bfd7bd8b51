"""Interfaces a device should not expose by default, from a maintained table (data, not code).

Each service that matches an entry of probes/data/interfaces.yaml is confirmed by a fresh
exchange (a TCP connect for fragile and industrial ports, a short banner read, the entry's
identification request, or a UDP request and its recognised reply), so the finding carries
evidence an assessor can replay. Device profiles may declare, MUD-style (RFC 8520), the services
a family needs (``expected_services``); only what is exposed beyond the declaration is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.interfaces import Interface, interface_table
from profiles.devices import DeviceProfile, load_device_profiles, matching_profiles
from scanner.discovery.fingerprint import udp_request
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.protocols import iot_tcp, telnet

BANNER_WAIT = 1.5
MAX_BANNER = 1024
PORT_GUESS = "port number only"


def _printable(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()[-limit:]


async def _confirm(ctx: ProbeContext, interface: Interface) -> dict[str, Any]:
    """One fresh exchange that shows the interface answering now."""
    confirm = interface.confirm
    if confirm.method == "udp":
        request = interface_table().udp_request(confirm.udp_request or "")
        details = await udp_request(ctx.network, ctx.target.address, ctx.target.port, request,
                                    ctx.transcript)
        if details is None:
            return {"confirmed": False, "detail": f"no recognised reply to {request.request}"}
        return {"confirmed": True, "detail": "; ".join(
            f"{key}={value}" for key, value in details.items() if value)[:400]
            or f"answered {request.request}"}
    if confirm.method == "http":
        response = await ctx.http("GET", confirm.path, follow_redirects=False)
        body = response.body.decode("utf-8", "replace").lower()
        found = not confirm.contains or any(marker in body for marker in confirm.contains)
        return {"confirmed": found, "detail": f"GET {confirm.path}: HTTP {response.status}"}
    async with await ctx.connect() as conn:
        if confirm.method == "connect":
            return {"confirmed": True, "detail": "TCP connection accepted; no payload sent"}
        if confirm.method == "tcp-request":
            protocol = iot_tcp.PROTOCOLS[interface_table().tcp_request(interface).recogniser]
            await conn.send(protocol.request)
            reply = await conn.recv_until(protocol.complete, max_bytes=protocol.max_reply,
                                          timeout=BANNER_WAIT * 2)
            details = protocol.recognise(reply)
            return {"confirmed": details is not None, "detail": "; ".join(
                f"{key}={value}" for key, value in (details or {}).items())[:400]
                or "reply not recognised"}
        banner = await conn.recv_until(
            lambda data: telnet.classify_prompt(telnet.split_negotiation(data)[0]) is not None,
            max_bytes=MAX_BANNER, timeout=BANNER_WAIT)
    text = telnet.split_negotiation(banner)[0]
    if confirm.prompt == "shell":
        shell = telnet.classify_prompt(text) == "shell"
        return {"confirmed": shell, "detail": f"prompt: {_printable(text, 80) or '(none)'}"}
    return {"confirmed": True, "detail": f"banner: {_printable(text) or '(none)'}"}


class UnneededInterfaceExposed(Probe):
    metadata = ProbeMetadata(
        check_id="unneeded-interface-exposed",
        title="No interface is exposed beyond what the device needs",
        description="Debug shells, vendor management and discovery protocols, industrial "
                    "protocols and general-purpose servers that a device exposes by default "
                    "widen its attack surface; each is a table entry with the reason and the "
                    "advisories behind it. A device profile's expected_services are not "
                    "reported.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=tuple(sorted({protocol for interface in interface_table().interfaces
                                for protocol in interface.protocols})),
        remediation="Disable the interface in the device settings or firmware, or, if the "
                    "device needs it, restrict it to a management network and declare it in "
                    "the device profile's expected_services.",
        references=("https://www.etsi.org/deliver/etsi_en/303600_303699/303645/03.01.03_60/"
                    "en_303645v030103p.pdf",
                    "https://www.rfc-editor.org/rfc/rfc8520"),
        categories=("unneeded-interface", "attack-surface"),
    )

    def __init__(self, profiles: Sequence[DeviceProfile] | None = None) -> None:
        # None: the built-in device profiles (entry points instantiate without arguments).
        self._profiles = tuple(profiles) if profiles is not None else None

    @property
    def profiles(self) -> tuple[DeviceProfile, ...]:
        return self._profiles if self._profiles is not None else load_device_profiles()

    def applies_to(self, target: Target) -> bool:
        return bool(interface_table().matching(target.service))

    async def collect(self, ctx: ProbeContext) -> Facts:
        results: dict[str, dict[str, Any]] = {}
        problems: list[BaseException] = []
        for interface in interface_table().matching(ctx.target.service):
            try:
                results[interface.id] = await _confirm(ctx, interface)
            except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
                problems.append(exc)
                results[interface.id] = {"confirmed": False,
                                         "detail": f"{type(exc).__name__}: {exc}"[:200]}
            ctx.note(f"{interface.id}: {results[interface.id]['detail']}")
        if problems and len(problems) == len(results):
            raise problems[-1]  # nothing could be checked: an error, not a pass
        return {"interfaces": results}

    def _declared_by(self, target: Target, interface: Interface) -> list[str]:
        return [profile.id for profile in matching_profiles(self.profiles, target.device)
                if any(expected.covers(target.service, interface.id)
                       for expected in profile.expected_services)]

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        results: dict[str, dict[str, Any]] = facts.get("interfaces") or {}
        profiles = [profile.id for profile in matching_profiles(self.profiles, target.device)]
        by_port_only = target.service.details.get("guess") == PORT_GUESS
        found = []
        for interface in interface_table().matching(target.service):
            result = results.get(interface.id) or {}
            if not result.get("confirmed") or self._declared_by(target, interface):
                continue
            where = f"{target.service.transport.upper()} {target.port}"
            beyond = (f", beyond the services device profile {', '.join(profiles)} declares"
                      if profiles else "")
            found.append(Observation(
                summary=f"{interface.name} is exposed on {where}{beyond}: {interface.why}",
                severity=interface.severity, key=interface.id,
                confidence=Confidence.FIRM if by_port_only else Confidence.CONFIRMED,
                facts={"interface": interface.id, "evidence": str(result.get("detail", "")),
                       "device_profile": ", ".join(profiles) or "none matched",
                       "identified_by": PORT_GUESS if by_port_only else "protocol exchange",
                       "references": " ".join(interface.references)}))
        return found

    def summarize(self, facts: Facts) -> dict[str, str]:
        results: dict[str, dict[str, Any]] = facts.get("interfaces") or {}
        return {"interfaces_checked": ", ".join(sorted(results)),
                "confirmed": ", ".join(sorted(k for k, v in results.items()
                                              if v.get("confirmed"))) or "none"}
