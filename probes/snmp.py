"""SNMP v1/v2c: an agent that answers a default (or any) community string.

A community is a password sent in cleartext; agents silently drop requests with a wrong one, so
silence is an ordinary failure here, never a lockout sign. We only ever read: no SetRequest is
sent. Whether the community could also *write* is answered only when a read proves it — the
agent's own VACM tables (SNMP-VIEW-BASED-ACM-MIB, RFC 3415), read with that community, showing
the write view its group holds.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from probes.api import Facts, Observation, ProbeContext, ProbeMetadata, ProbeSettings, Target
from probes.authflow import Attempt, CredentialProbe, Outcome, run_attempts
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.protocols.udp import SYS_DESCR_OID, parse_snmp_response, snmp_get_sysdescr

ANSWER_WAIT = 1.0  # an agent on the LAN answers in milliseconds; wrong communities: silence
WALK_REQUESTS = 48  # GETNEXT requests for the whole write-capability read
WALK_ROWS = 24  # rows read per table
WALK_SECONDS = 8.0

VERSION_NAMES = {0: "v1", 1: "v2c"}
# SNMP-VIEW-BASED-ACM-MIB columns (RFC 3415)
VACM_GROUP_NAME = "1.3.6.1.6.3.16.1.2.1.3"  # index: securityModel, securityName
VACM_WRITE_VIEW = "1.3.6.1.6.3.16.1.4.1.6"  # index: group, contextPrefix, model, level
VACM_VIEW_TYPE = "1.3.6.1.6.3.16.1.5.2.1.4"  # index: viewName, subtree; 1 included, 2 excluded
COMMUNITY_MODELS = (0, 1, 2)  # any, SNMPv1, SNMPv2c

SNMP_REFERENCES = (
    "https://www.rfc-editor.org/rfc/rfc3584",
    "https://www.rfc-editor.org/rfc/rfc3415",
    "https://www.cisa.gov/news-events/alerts/2017/06/05/reducing-risk-snmp-abuse",
)


def get_request(community: str, version: int, oid: str = SYS_DESCR_OID,
                request_id: int | None = None, next_: bool = False) -> bytes:
    """GetRequest (or GetNextRequest) for one OID; version 0 is v1, 1 is v2c."""
    from scapy.asn1.asn1 import ASN1_OID
    from scapy.layers.snmp import SNMP, SNMPget, SNMPnext, SNMPvarbind

    if version == 1 and not next_ and oid == SYS_DESCR_OID:
        return snmp_get_sysdescr(community, request_id)
    pdu_class = SNMPnext if next_ else SNMPget
    pdu = pdu_class(id=request_id if request_id is not None else _request_id(),
                    varbindlist=[SNMPvarbind(oid=ASN1_OID(oid))])
    return bytes(SNMP(version=version, community=community.encode(), PDU=pdu))


def _request_id() -> int:
    return int.from_bytes(os.urandom(2), "big")


@dataclass(frozen=True)
class Varbind:
    oid: tuple[int, ...]
    value: str | int | None  # None: endOfMibView, noSuchObject or noSuchInstance


def parse_next_response(data: bytes) -> Varbind | None:
    """The single varbind of a GetResponse to a GETNEXT; None when it is not one, or the agent
    says the walk is over (v1 noSuchName)."""
    from scapy.layers.snmp import SNMP, SNMPresponse

    try:
        packet = SNMP(data)
        if not isinstance(packet.PDU, SNMPresponse) or int(packet.PDU.error.val) != 0:
            return None
        varbind = packet.PDU.varbindlist[0]
        oid = oid_tuple(str(varbind.oid.val))
        exceptional = any(getattr(varbind, name, None) is not None
                          for name in ("endOfMibView", "noSuchObject", "noSuchInstance"))
        raw = varbind.value
        value = getattr(raw, "val", raw)
    except Exception:  # scapy raises assorted decoding errors on malformed BER
        return None
    if exceptional or value is None:
        return Varbind(oid, None)
    if isinstance(value, bytes):
        return Varbind(oid, value.decode("utf-8", "replace")[:256])
    if isinstance(value, int) and not isinstance(value, bool):
        return Varbind(oid, value)
    return Varbind(oid, str(value)[:256])


def oid_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.strip(".").split("."))


def _octets(index: tuple[int, ...], start: int) -> tuple[str, int]:
    """A length-prefixed OCTET STRING index component: (text, next position)."""
    if start >= len(index):
        raise ValueError("index too short")
    length = index[start]
    end = start + 1 + length
    if length < 0 or end > len(index) or any(not 0 <= part < 256 for part in index[start + 1:end]):
        raise ValueError("bad octet string index")
    return bytes(index[start + 1:end]).decode("utf-8", "replace"), end


def decode_group_row(index: tuple[int, ...]) -> tuple[int, str]:
    """vacmSecurityToGroupTable index → (securityModel, securityName)."""
    name, _ = _octets(index, 1)
    return index[0], name


def decode_access_row(index: tuple[int, ...]) -> tuple[str, str, int, int]:
    """vacmAccessTable index → (groupName, contextPrefix, securityModel, securityLevel)."""
    group, position = _octets(index, 0)
    context, position = _octets(index, position)
    if position + 2 > len(index):
        raise ValueError("access index too short")
    return group, context, index[position], index[position + 1]


def decode_view_row(index: tuple[int, ...]) -> str:
    """vacmViewTreeFamilyTable index → viewName."""
    return _octets(index, 0)[0]


def write_capability(tables: dict[str, list[tuple[list[int], Any]]]) -> tuple[str, str]:
    """Pure: what the VACM tables (as read) prove about writing with a v1/v2c community.

    Returns ("write", why) only when a read proves the answering community has a write view;
    ("no-write", why) when no v1/v2c group holds any write view; ("unknown", why) otherwise.
    """
    groups: dict[str, str] = {}  # securityName -> group, v1/v2c models only
    for index, value in tables.get("groups", []):
        try:
            model, name = decode_group_row(tuple(index))
        except ValueError:
            continue
        if model in COMMUNITY_MODELS[1:] and isinstance(value, str):
            groups[name] = value
    if not groups:
        return "unknown", "the agent's VACM tables are not readable with this community"
    views: dict[str, bool] = {}
    for index, value in tables.get("views", []):
        try:
            view = decode_view_row(tuple(index))
        except ValueError:
            continue
        views[view] = views.get(view, False) or value == 1
    writable_groups: set[str] = set()
    for index, value in tables.get("access", []):
        try:
            group, _, model, _ = decode_access_row(tuple(index))
        except ValueError:
            continue
        if model in COMMUNITY_MODELS and isinstance(value, str) and value and views.get(value):
            writable_groups.add(group)
    community_groups = set(groups.values())
    if not community_groups & writable_groups:
        return "no-write", (f"VACM: none of the {len(community_groups)} v1/v2c group(s) "
                            f"({', '.join(sorted(community_groups))}) holds a write view")
    names = sorted(groups)
    if len(names) == 1:  # the agent answered our community, so it maps to the only name
        group = groups[names[0]]
        if group in writable_groups:  # (the name may be the community itself: not shown)
            return "write", (f"VACM: the only v1/v2c security name is in group {group}, whose "
                             "access entry has a write view")
    return "unknown", (f"VACM: {len(names)} v1/v2c security names; some group can write, but "
                       "the tables do not say which community is ours")


class _SnmpContext(ProbeContext):
    """A context that remembers which community answered (and with which version)."""

    def __init__(self, ctx: ProbeContext, settings: ProbeSettings) -> None:
        super().__init__(ctx.target, ctx.network, ctx.transcript, settings)
        self.accepted: list[tuple[str, int]] = []


async def _ask(ctx: ProbeContext, payload: bytes, timeout: float) -> list[bytes]:
    return await ctx.udp(payload, timeout=timeout)


async def walk_column(ctx: ProbeContext, community: str, version: int, column: str,
                      budget: list[int]) -> list[tuple[list[int], Any]]:
    """GETNEXT through one table column, bounded by rows and the shared request budget."""
    prefix = oid_tuple(column)
    rows: list[tuple[list[int], Any]] = []
    current = prefix
    timeout = min(ctx.network.limits.read_timeout, ANSWER_WAIT)
    while len(rows) < WALK_ROWS and budget[0] > 0:
        budget[0] -= 1
        replies = await _ask(ctx, get_request(community, version, ".".join(map(str, current)),
                                              next_=True), timeout)
        varbind = parse_next_response(replies[0]) if replies else None
        if varbind is None or varbind.value is None or varbind.oid[:len(prefix)] != prefix \
                or varbind.oid <= current:
            break
        rows.append((list(varbind.oid[len(prefix):]), varbind.value))
        current = varbind.oid
    return rows


class SnmpDefaultCommunity(CredentialProbe):
    credential_protocol = "snmp"
    metadata = ProbeMetadata(
        check_id="snmp-default-community",
        title="The SNMP agent does not answer default community strings",
        description="SNMP v1/v2c communities are cleartext passwords; an agent answering "
                    "'public' (or any community) discloses the device's configuration, "
                    "interfaces and often credentials to anyone on the network.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("snmp",),
        remediation="Disable SNMP v1/v2c, or at least replace the default communities; use "
                    "SNMPv3 with authPriv and restrict the agent to a management network.",
        references=SNMP_REFERENCES,
        categories=("default-credentials", "cleartext"),
    )

    per_account_limit = False  # a community is not an account; the service budget applies

    async def collect(self, ctx: ProbeContext) -> Facts:
        snmp_ctx = _SnmpContext(ctx, ctx.settings)
        facts = await run_attempts(self, snmp_ctx)
        facts["write"] = None
        if facts.get("success") and snmp_ctx.accepted:
            community, version = snmp_ctx.accepted[0]
            facts["write"] = await self._write_capability(ctx, community, version)
        return facts

    async def _write_capability(self, ctx: ProbeContext, community: str, version: int
                                ) -> dict[str, str]:
        budget = [WALK_REQUESTS]
        tables: dict[str, list[tuple[list[int], Any]]] = {}
        try:
            async with asyncio.timeout(WALK_SECONDS):
                tables["groups"] = await walk_column(ctx, community, version, VACM_GROUP_NAME,
                                                     budget)
                if tables["groups"]:
                    tables["access"] = await walk_column(ctx, community, version,
                                                         VACM_WRITE_VIEW, budget)
                    tables["views"] = await walk_column(ctx, community, version,
                                                        VACM_VIEW_TYPE, budget)
        except TimeoutError:
            ctx.note("VACM read stopped at its time limit")
        verdict, why = write_capability(tables)
        ctx.note(f"write capability (read-only evidence, no SetRequest sent): {verdict}: {why}")
        return {"verdict": verdict, "reason": why,
                "requests": str(WALK_REQUESTS - budget[0])}

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        timeout = min(ctx.network.limits.read_timeout, ANSWER_WAIT)
        request_id = _request_id()
        # v2c and v1 asked together: the same two datagrams a fallback sends, in half the time
        # (a wrong community costs a silent wait, and there may be fifteen to try); v2c's
        # answer is preferred, v1's is only waited for when v2c stays silent
        asks = [asyncio.create_task(_ask(ctx, get_request(password, version,
                                                          request_id=request_id), timeout))
                for version in (1, 0)]
        try:
            for version, task in zip((1, 0), asks, strict=True):
                for reply in await task:
                    values = parse_snmp_response(reply)
                    if values is None:
                        continue
                    descr = next(iter(values.values()), "")
                    if isinstance(ctx, _SnmpContext):
                        ctx.accepted.append((password, version))
                    return Attempt(Outcome.SUCCESS,
                                   f"SNMP{VERSION_NAMES[version]} GetResponse, sysDescr "
                                   f"{descr[:60]!r}")
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        return Attempt(Outcome.FAILURE, "no answer (the agent drops unknown communities)")

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        success = facts.get("success")
        if not success:
            return []
        control = facts.get("control") or {}
        write = facts.get("write") or {}
        verdict = write.get("verdict", "unknown")
        if verdict == "write":
            access = f"write access proven by a read of the agent's VACM tables ({write['reason']})"
        elif verdict == "no-write":
            access = f"read access confirmed; VACM grants no community write access " \
                     f"({write['reason']})"
        else:
            access = "read access confirmed; write access not tested (we never write)"
        severity = Severity.CRITICAL if verdict == "write" else Severity.HIGH
        details = {"access": access, "write_verdict": verdict,
                   "answered_by": str(success.get("detail", "")),
                   "negative_control": str(control.get("outcome", "not run")),
                   "attempts": str(len(facts.get("attempts", []))),
                   "budget": str(facts.get("budget", ""))}
        where = f"The SNMP agent on UDP port {target.port}"
        if control.get("outcome") == Outcome.SUCCESS.value:
            details["kind"] = "authentication-not-enforced"
            return [Observation(
                summary=f"{where} answers any community string (a random community was "
                        f"accepted): {access}.",
                severity=severity, key="authentication-not-enforced", facts=details)]
        confidence = Confidence.CONFIRMED if control.get("outcome") == Outcome.FAILURE.value \
            else Confidence.FIRM
        details.update(kind="snmp-default-community", community=str(success["password"]),
                       vendor=str(success.get("vendor", "")),
                       credential_source=str(success.get("source", "")))
        return [Observation(
            summary=f"{where} answers the default community {success['password']} "
                    f"({success.get('detail', '')}): {access}.",
            severity=severity, confidence=confidence, key="snmp-default-community",
            facts=details)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = super().summarize(facts)
        if facts.get("write"):
            summary["write"] = str(facts["write"].get("verdict"))
        return summary
