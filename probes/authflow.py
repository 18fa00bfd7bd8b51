"""The shared credential-attempt flow every login probe uses, so safety rules live in one place.

Per service: candidates from the credential data (the device's vendor first), at most
``max_per_account`` passwords per user name and ``max_per_service`` attempts in all, spaced;
stop at the first success; stop at the first sign of lockout (the service starts refusing, or
answers much slower). A success is reported only after a negative control — a random user name
and password — fails; a service that accepts the control is reported as not enforcing
authentication, never as a default credential (RouterSploit's false positives).
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import statistics
import time
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import REDACTED


class Outcome(enum.StrEnum):
    SUCCESS = "success"  # logged in: a shell, a 200, a CONNACK 0 …
    FAILURE = "failure"  # a clear refusal of these credentials
    BLOCKED = "blocked"  # the service stopped talking to us: a lockout sign
    NOT_OFFERED = "not-offered"  # no password login exists here (keys only): nothing to try


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    detail: str = ""  # what proved it: "shell prompt '# '", "HTTP 200", "CONNACK 5"


SERVICE_NAMES = {"http": "The web interface", "ssh": "SSH", "telnet": "Telnet", "ftp": "FTP",
                 "mqtt": "The MQTT broker", "rtsp": "RTSP", "snmp": "SNMP"}


def random_credentials() -> tuple[str, str]:
    return f"iotb{secrets.token_hex(4)}", secrets.token_urlsafe(12)


class CredentialProbe(Probe):
    """A probe that tries credentials; subclasses say how one attempt goes."""

    credential_protocol: ClassVar[str]  # key into the credential data: "ssh", "http", …
    # False where there are no accounts to lock out (SNMP communities all share the user "").
    per_account_limit: ClassVar[bool] = True

    @abstractmethod
    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        """One login attempt; raise ConnectionError/TimeoutError when the service won't talk."""

    def skip(self, username: str, password: str) -> bool:
        """Candidates another check owns (FTP's anonymous account): never tried here."""
        return False

    async def collect(self, ctx: ProbeContext) -> Facts:
        return await run_attempts(self, ctx)

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return evaluate_attempts(target, facts)

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = {"attempts": f"{len(facts.get('attempts', []))} of budget "
                               f"{facts.get('budget', '?')}"}
        if facts.get("lockout") or facts.get("stopped"):
            summary["stopped"] = str(facts.get("lockout") or facts.get("stopped"))
        return summary


def _shown(ctx: ProbeContext, password: str) -> str:
    if ctx.settings.show_secrets:
        return password
    return REDACTED if password else "(empty)"


async def _try(probe: CredentialProbe, ctx: ProbeContext, username: str, password: str,
               first: bool) -> Attempt:
    """An attempt in which a refused or silent service is a lockout sign, unless it is the first
    (then the service simply does not work, and the error is the probe's)."""
    try:
        return await probe.attempt(ctx, username, password)
    except (ConnectionError, TimeoutError, OSError) as exc:
        if first:
            raise
        return Attempt(Outcome.BLOCKED, f"{type(exc).__name__}: {exc}"[:200])


async def run_attempts(probe: CredentialProbe, ctx: ProbeContext) -> Facts:
    budget = ctx.settings.authentication
    candidates = [c for c in ctx.credentials(probe.credential_protocol)
                  if not probe.skip(c.username, c.password)]
    per_account: Counter[str] = Counter()
    attempts: list[dict[str, Any]] = []
    durations: list[float] = []
    slow_in_a_row = 0
    facts: Facts = {"candidates": len(candidates), "attempts": attempts, "success": None,
                    "lockout": None, "control": None,
                    "budget": f"{budget.max_per_account} per account, "
                              f"{budget.max_per_service} per service"}
    for credential in candidates:
        if len(attempts) >= budget.max_per_service:
            break
        slowest = max(durations, default=0.0)
        if ctx.time_left() < 2 * slowest + budget.spacing + 1.0:
            facts["lockout"] = None
            facts["stopped"] = "time budget nearly used: stopped early to keep the results"
            break
        if probe.per_account_limit and per_account[credential.username] >= budget.max_per_account:
            continue
        if attempts and budget.spacing:
            await asyncio.sleep(budget.spacing)
        ctx.secret(credential.password)
        started = time.monotonic()
        result = await _try(probe, ctx, credential.username, credential.password,
                            first=not attempts)
        elapsed = time.monotonic() - started
        per_account[credential.username] += 1
        attempts.append({"username": credential.username,
                         "password": _shown(ctx, credential.password),
                         "outcome": result.outcome.value, "seconds": round(elapsed, 3),
                         "detail": result.detail})
        if result.outcome is Outcome.SUCCESS:
            facts["success"] = {
                "username": credential.username, "password": _shown(ctx, credential.password),
                "vendor": credential.vendor, "product": credential.product,
                "source": credential.source, "detail": result.detail}
            break
        if result.outcome is Outcome.NOT_OFFERED:
            facts["password_login"] = "not offered"
            break
        if result.outcome is Outcome.BLOCKED:
            facts["lockout"] = f"service stopped answering after {len(attempts) - 1} " \
                               f"attempt(s): {result.detail}"
            break
        # Two slow answers in a row, not one: a single slow attempt is as likely our own
        # scanner being busy (queued for a slot, a stalled loop) as the device backing off.
        baseline = statistics.median(durations) if len(durations) >= 2 else None
        if baseline is not None and elapsed > 1.0 and elapsed > budget.slowdown_factor * baseline:
            slow_in_a_row += 1
            if slow_in_a_row >= 2:
                facts["lockout"] = (f"answers slowed from {baseline:.2f} s to {elapsed:.2f} s "
                                    "twice in a row: backing off")
                break
            continue
        slow_in_a_row = 0
        durations.append(elapsed)
    if facts["success"] is not None:
        username, password = random_credentials()
        ctx.secret(password)
        if budget.spacing:
            await asyncio.sleep(budget.spacing)
        control = await _try(probe, ctx, username, password, first=False)
        facts["control"] = {"outcome": control.outcome.value, "detail": control.detail,
                            "username": username}
    return facts


def evaluate_attempts(target: Target, facts: Facts) -> list[Observation]:
    success = facts.get("success")
    if not success:
        return []
    name = SERVICE_NAMES.get(target.service.protocol, target.service.protocol.upper())
    service = f"{name} on port {target.port}"
    control = facts.get("control") or {}
    if control.get("outcome") == Outcome.SUCCESS.value:
        return [Observation(
            summary=f"{service} accepted a random user name and password "
                    f"({control.get('username')}): it does not enforce authentication.",
            severity=Severity.CRITICAL, key="authentication-not-enforced",
            facts={"kind": "authentication-not-enforced", "control": str(control),
                   "first_accepted": str(success.get("username"))})]
    confidence = Confidence.CONFIRMED if control.get("outcome") == Outcome.FAILURE.value \
        else Confidence.FIRM
    vendor = success.get("vendor", "")
    return [Observation(
        summary=f"{service} accepts the default credential {success['username']}:"
                f"{success['password']} ({vendor} default; {success.get('detail', '')}).",
        confidence=confidence, key="default-credential",
        facts={"kind": "default-credential", "username": str(success["username"]),
               "password": str(success["password"]), "vendor": str(vendor),
               "product": str(success.get("product", "")),
               "credential_source": str(success.get("source", "")),
               "negative_control": str(control.get("outcome", "not run")),
               "attempts": str(len(facts.get("attempts", []))),
               "budget": str(facts.get("budget", ""))})]


def brute_force_metadata(check_id: str, service: str, protocols: tuple[str, ...]
                         ) -> ProbeMetadata:
    """The metadata every brute-force protection probe shares, worded for its service."""
    return ProbeMetadata(
        check_id=check_id,
        title=f"{service} slows down or locks out repeated failed logins",
        description=f"Without a lockout, delay or back-off after failed logins, {service} "
                    "lets an attacker guess passwords at network speed (ETSI EN 303 645 "
                    "provision 5.1-5).",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.INTRUSIVE,
        protocols=protocols,
        remediation="Add an increasing delay or a temporary lockout after a few failed logins, "
                    "and log the failures.",
        references=("https://www.etsi.org/deliver/etsi_en/303600_303699/303645/02.01.01_60/"
                    "en_303645v020101p.pdf",
                    "https://owasp.org/www-community/controls/Blocking_Brute_Force_Attacks"),
        categories=("brute-force",),
    )


class BruteForceProtection(Probe):
    """Intrusive profile only: N wrong passwords for one likely account, each timed.

    A refusal to talk (lockout) or answers that slow down markedly (back-off) pass; steady,
    fast failures to the end fail, with the timing table as evidence."""

    login: ClassVar[type[CredentialProbe]]

    async def collect(self, ctx: ProbeContext) -> Facts:
        login = self.login()
        candidates = ctx.credentials(login.credential_protocol)
        username = candidates[0].username if candidates else "admin"
        attempts: list[dict[str, Any]] = []
        for number in range(ctx.settings.authentication.brute_force_attempts):
            _, password = random_credentials()
            ctx.secret(password)
            started = time.monotonic()
            result = await _try(login, ctx, username, password, first=not attempts)
            attempts.append({"attempt": number + 1, "outcome": result.outcome.value,
                             "seconds": round(time.monotonic() - started, 3)})
            if result.outcome is not Outcome.FAILURE:
                break
        return {"username": username, "attempts": attempts,
                "planned": ctx.settings.authentication.brute_force_attempts}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        attempts = facts.get("attempts") or []
        outcomes = {a["outcome"] for a in attempts}
        if len(attempts) < 3 or outcomes != {Outcome.FAILURE.value}:
            return []  # locked out, or accepted a random password (another check's finding)
        times = [float(a["seconds"]) for a in attempts]
        third = max(1, len(times) // 3)
        early, late = statistics.median(times[:third]), statistics.median(times[-third:])
        if late > 1.0 and late >= 2 * early:
            return []  # back-off observed
        table = "; ".join(f"#{a['attempt']} {a['seconds']:.2f}s" for a in attempts)
        return [Observation(
            summary=f"{len(attempts)} wrong passwords for '{facts.get('username')}' on port "
                    f"{target.port} were all refused at a steady pace (median {early:.2f} s "
                    f"early, {late:.2f} s late): no lockout, delay or back-off.",
            key="no-brute-force-protection",
            facts={"kind": "no-brute-force-protection", "timing": table,
                   "username": str(facts.get("username"))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"attempts": f"{len(facts.get('attempts', []))} of {facts.get('planned', '?')}"}
