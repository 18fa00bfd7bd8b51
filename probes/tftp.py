"""TFTP (RFC 1350): configuration files that anyone on the network can read, with no login.

TFTP has no authentication at all, so whatever a device's TFTP server serves, every host that
can reach it can read. IoT and network gear use it to hand out provisioning files (phones), to
back up configurations (routers, switches) and, on badly rooted servers, the whole file system.

The probe asks for a short list of well-known configuration names (plus one random name as a
negative control), reads at most ``MAX_FILE_BYTES`` of each and keeps only the name, the byte
count and a SHA-256 of what it read: the content never enters the facts, and the transcript
keeps packet headers, never file bytes. A TFTP server answers from a new port (its transfer id),
so the exchange uses the gate's UDP session, which accepts replies from the target host on any
port and from nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import ScopeViolation
from scanner.protocols.tftp import (
    BLOCK_SIZE,
    ERROR_NAMES,
    OP_DATA,
    OP_ERROR,
    ack,
    error_packet,
    parse_packet,
    read_request,
)

if TYPE_CHECKING:
    from scanner.net import UdpSession

MAX_FILE_BYTES = 64 * 1024  # read at most this much of one file, then abort the transfer
MAX_TOTAL_BYTES = 256 * 1024  # and at most this much across all files
REPLY_WAIT = 2.0  # per datagram (the profile's read timeout if shorter)
RETRANSMITS = 2  # resend the last request/ACK at most this often on silence
FILE_DEADLINE = 10.0  # one file, all blocks
TOTAL_DEADLINE = 24.0  # the whole probe, kept under the default 30 s probe budget
SILENT_LIMIT = 2  # consecutive names with no answer at all: the server is not talking
MAX_STRAY = 64  # datagrams from other transfer ids or duplicates ignored per file

# (file name, device family it is known from). At most 12: each costs a round trip.
CONFIG_FILES: tuple[tuple[str, str], ...] = (
    ("running-config", "Cisco IOS / IOS XE switches and routers (tftp-server alias)"),
    ("startup-config", "Cisco IOS / IOS XE (tftp-server nvram:startup-config)"),
    ("network-confg", "Cisco AutoInstall network configuration"),
    ("XMLDefault.cnf.xml", "Cisco IP phones provisioned by Unified CM (SCCP and SIP)"),
    ("SIPDefault.cnf", "Cisco 79xx SIP phones"),
    ("000000000000.cfg", "Polycom UC / SoundPoint phones (master configuration)"),
    ("sip.cfg", "Polycom SoundPoint phones (SIP application configuration)"),
    ("config.bin", "TP-Link and ZTE routers (configuration backup)"),
    ("romfile.cfg", "TrendChip-based DSL routers (TP-Link TD, ZTE, D-Link)"),
    ("rom-0", "ZyNOS routers (ZyXEL, TP-Link TD-W8xxx)"),
    ("config.xml", "pfSense / m0n0wall and other embedded appliances (configuration backup)"),
    ("etc/passwd", "embedded Linux tftpd serving the root file system (BusyBox)"),
)

class _Reader:
    """One lock-step read of one file over one session (one client transfer id)."""

    def __init__(self, ctx: ProbeContext, session: UdpSession, name: str, cap: int,
                 deadline: float, wait: float) -> None:
        self.ctx = ctx
        self.session = session
        self.name = name
        self.cap = cap
        self.deadline = deadline
        self.wait = wait
        self.endpoint = f"udp://{ctx.target.address}"
        self.server_port: int | None = None
        self.digest = hashlib.sha256()
        self.read = 0
        self.blocks = 0

    def _record(self, direction: str, port: int, text: str) -> None:
        self.ctx.transcript.record(direction, f"{self.endpoint}:{port}", text)

    def result(self, outcome: str, **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"name": self.name, "outcome": outcome, "bytes": self.read,
                                  "blocks": self.blocks}
        if self.read or outcome == "readable":
            result["sha256"] = self.digest.hexdigest()
        result.update(extra)
        return result

    def _abort(self, reason: str) -> None:
        if self.server_port is None:
            return
        packet = error_packet(0, reason)
        self._record("sent", self.server_port, f"ERROR 0 {reason!r} (transfer aborted)")
        self.session.send(packet, self.server_port, record=False)

    async def run(self) -> dict[str, Any]:
        last: tuple[bytes, int | None] = (read_request(self.name), None)
        self.session.send(last[0])  # the request is recorded by the session
        expected, retransmits, stray = 1, 0, 0
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._abort("timeout")
                return self.result("timeout" if self.server_port is None else "stalled")
            try:
                data, port = await self.session.recv(min(self.wait, remaining), record_bytes=0)
            except TimeoutError:
                if retransmits < RETRANSMITS and self.deadline - time.monotonic() > 0.5:
                    retransmits += 1
                    self.session.send(last[0], last[1], record=False)
                    continue
                return self.result("silent" if self.server_port is None else "stalled")
            if self.server_port is not None and port != self.server_port:
                stray += 1  # RFC 1350: another transfer id; not ours, not answered
                if stray > MAX_STRAY:
                    self._abort("too many stray packets")
                    return self.result("error", detail="too many stray packets")
                continue
            packet = parse_packet(data)
            if packet is None or packet.opcode not in (OP_DATA, OP_ERROR):
                self._record("received", port, f"unexpected reply ({len(data)} bytes): "
                             f"{data[:32].hex()}")
                self._abort("unexpected packet")
                return self.result("unexpected", detail=f"not DATA/ERROR: {data[:16].hex()}")
            if packet.opcode == OP_ERROR:
                message = packet.payload.decode("utf-8", "replace")
                self._record("received", port, f"ERROR {packet.block} {message!r}")
                return self.result("error", error_code=packet.block,
                                    error=ERROR_NAMES.get(packet.block, "unknown"),
                                    message=message[:120])
            if packet.block != expected & 0xFFFF:
                stray += 1  # a retransmitted earlier block: our ACK was lost or slow
                if stray > MAX_STRAY:
                    self._abort("too many duplicate blocks")
                    return self.result("error", detail="too many duplicate blocks")
                continue
            self.server_port = port
            take = packet.payload[: max(0, self.cap - self.read)]
            self.digest.update(take)
            self.read += len(take)
            self.blocks += 1
            if self.blocks == 1:
                self._record("received", port, f"DATA block 1, {len(packet.payload)} bytes "
                             "(file content not recorded)")
            if len(packet.payload) < BLOCK_SIZE:
                self.session.send(ack(packet.block), port, record=self.blocks == 1)
                self._record("event", port, f"{self.name}: read {self.read} bytes in "
                             f"{self.blocks} blocks, complete")
                return self.result("readable", complete=True)
            if self.read >= self.cap:
                self._abort("read limit reached")
                self._record("event", port, f"{self.name}: read {self.read} bytes in "
                             f"{self.blocks} blocks, stopped at the read limit")
                return self.result("readable", complete=False)
            last = (ack(packet.block), port)
            self.session.send(last[0], port, record=self.blocks == 1)
            expected += 1
            retransmits = 0


async def read_file(ctx: ProbeContext, name: str, cap: int, deadline: float,
                    wait: float = REPLY_WAIT) -> dict[str, Any]:
    """Read up to ``cap`` bytes of ``name``; a fresh session is a fresh client transfer id."""
    async with ctx.udp_session(max_datagrams=4 * (cap // BLOCK_SIZE) + 4 * MAX_STRAY) as session:
        reader = _Reader(ctx, session, name, cap, deadline, wait)
        try:
            return await reader.run()
        except ScopeViolation as exc:  # the server answered from an excluded port
            ctx.note(f"{name}: {exc}")
            return reader.result("out-of-scope", detail=str(exc)[:160])


class TftpConfigReadable(Probe):
    metadata = ProbeMetadata(
        check_id="tftp-config-readable",
        title="TFTP does not serve configuration files to unauthenticated clients",
        description="TFTP has no authentication: any file its server hands out can be read by "
                    "every host that reaches it. Configuration files and backups served this "
                    "way leak passwords, keys, SIP credentials and the network layout.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("tftp",),
        remediation="Turn the TFTP server off when it is not provisioning devices; otherwise "
                    "restrict it to the provisioning network, serve only files without secrets "
                    "(or encrypted ones), and never root it at the device's file system.",
        references=("https://www.rfc-editor.org/rfc/rfc1350",
                    "https://nmap.org/nsedoc/scripts/tftp-enum.html"),
        max_connections=1,
        categories=("cleartext", "information-disclosure", "unauthenticated-access"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        budget = min(TOTAL_DEADLINE, 0.8 * ctx.network.limits.probe_budget)
        stop = time.monotonic() + budget
        control_name = f"iotb-{secrets.token_hex(6)}.cfg"
        families = dict(CONFIG_FILES)
        files: list[dict[str, Any]] = []
        control: dict[str, Any] | None = None
        silent_run, total, answered = 0, 0, False
        wait = min(REPLY_WAIT, ctx.network.limits.read_timeout)
        for name in [control_name, *families]:
            now = time.monotonic()
            if now >= stop or total >= MAX_TOTAL_BYTES or silent_run >= SILENT_LIMIT:
                result: dict[str, Any] = {"name": name, "outcome": "skipped"}
            else:
                result = await read_file(ctx, name, min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - total),
                                         min(stop, now + FILE_DEADLINE), wait)
                total += int(result.get("bytes", 0))
                silent_run = silent_run + 1 if result["outcome"] in ("silent", "timeout") else 0
                answered = answered or result["outcome"] not in ("silent", "timeout")
            if name == control_name:
                control = result
            else:
                result["family"] = families[name]
                files.append(result)
        if not answered:
            raise TimeoutError("no TFTP reply to any read request")
        assert control is not None
        control_hash = control.get("sha256") if control["outcome"] == "readable" else None
        for entry in files:
            if control_hash and entry.get("sha256") == control_hash:
                entry["same_as_control"] = True
        return {"control": control, "files": files, "bytes_read": total}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        readable = [entry for entry in facts.get("files", [])
                    if entry.get("outcome") == "readable" and not entry.get("same_as_control")]
        if not readable:
            return []
        control = facts.get("control") or {}
        serves_anything = control.get("outcome") == "readable"
        listed = ", ".join(
            f"{entry['name']} ({entry.get('bytes', 0)} bytes"
            f"{'' if entry.get('complete') else '+, stopped at the read limit'})"
            for entry in readable)
        summary = (f"TFTP on port {target.port} hands out {len(readable)} configuration "
                   f"file(s) to anyone, with no authentication: {listed}.")
        if serves_anything:
            summary += " (It also answers a random file name, so some may be generated.)"
        observation_facts = {
            "files": "; ".join(entry["name"] for entry in readable)[:1024],
            "sha256": "; ".join(f"{entry['name']}={entry.get('sha256', '')}"
                                for entry in readable)[:2048],
            "families": "; ".join(sorted({str(entry.get("family", "")) for entry in readable}))
            [:1024],
            "bytes_read": str(sum(int(entry.get("bytes", 0)) for entry in readable)),
            "control": str(control.get("outcome", "none")),
        }
        return [Observation(summary=summary,
                            confidence=Confidence.FIRM if serves_anything
                            else Confidence.CONFIRMED,
                            key="tftp-config-readable", facts=observation_facts)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        files = facts.get("files", [])
        tried = [entry for entry in files if entry.get("outcome") != "skipped"]
        readable = [entry["name"] for entry in files if entry.get("outcome") == "readable"]
        control = facts.get("control") or {}
        return {"names_tried": f"{len(tried)} of {len(files)}",
                "readable": ", ".join(readable)[:256] or "none",
                "control": str(control.get("outcome", "none")),
                "bytes_read": str(facts.get("bytes_read", 0))}
