"""Telnet: a cleartext remote login; default credentials; a shell offered with no login."""

from __future__ import annotations

import secrets

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import (
    Attempt,
    BruteForceProtection,
    CredentialProbe,
    Outcome,
    brute_force_metadata,
)
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import Connection
from scanner.protocols import telnet

PROMPT_WAIT = 5.0
FAILURE_WORDS = (b"incorrect", b"invalid", b"failed", b"denied", b"bad password", b"wrong")
MIRAI_REFERENCE = ("https://www.cisa.gov/news-events/alerts/2016/10/14/heightened-ddos-threat-"
                   "posed-mirai-and-other-botnets")


async def confirm_shell(conn: Connection) -> bool:
    """Ask the shell for arithmetic: the answer "42iotb" never appears in what we typed, so an
    echoing login prompt cannot fake it."""
    marker = f"iotb{secrets.token_hex(3)}"
    await conn.send(f"echo $((6*7)){marker}\r\n".encode())
    output = await conn.recv_until(lambda data: f"42{marker}".encode() in data,
                                   max_bytes=8192, timeout=3.0)
    return f"42{marker}".encode() in output


class TelnetExposed(Probe):
    metadata = ProbeMetadata(
        check_id="telnet-exposed",
        title="No Telnet remote login is exposed",
        description="Telnet carries user names, passwords and the whole session unencrypted, "
                    "and IoT botnets (Mirai and its heirs) log in through it with default "
                    "credentials.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("telnet",),
        remediation="Disable Telnet in the device settings or firmware; use SSH with per-device "
                    "credentials or keys for remote administration, if it is needed at all.",
        references=("https://www.rfc-editor.org/rfc/rfc854", MIRAI_REFERENCE),
        categories=("cleartext", "unneeded-interface"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        async with await ctx.connect() as conn:
            text, prompt = await telnet.read_until_prompt(conn, timeout=PROMPT_WAIT)
        return {"prompt": prompt, "text": text.decode("utf-8", "replace")[-300:],
                "answered": bool(text) or prompt is not None}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if not facts.get("answered"):
            return []
        prompt = facts.get("prompt")
        if prompt == "shell":
            summary = (f"Telnet on port {target.port} offers a command prompt in cleartext "
                       "before any login.")
        elif prompt in ("login", "password"):
            summary = (f"Telnet on port {target.port} asks for a {prompt} in cleartext: "
                       "credentials can be read by anyone on the path.")
        else:
            summary = f"Telnet on port {target.port} answers with a cleartext session."
        return [Observation(summary=summary, facts={"prompt": str(prompt or "none"),
                                                    "last_text": facts.get("text", "")[-120:]})]


class TelnetUnauthenticatedShell(Probe):
    metadata = ProbeMetadata(
        check_id="telnet-unauthenticated-shell",
        title="Telnet does not offer a shell without authentication",
        description="A Telnet service that drops straight into a shell gives anyone on the "
                    "network full control of the device.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("telnet",),
        remediation="Remove the debug shell from the firmware or require authentication; turn "
                    "Telnet off.",
        references=(MIRAI_REFERENCE,),
        categories=("unauthenticated-access",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        async with await ctx.connect() as conn:
            _, prompt = await telnet.read_until_prompt(conn, timeout=PROMPT_WAIT)
            confirmed = prompt == "shell" and await confirm_shell(conn)
        return {"prompt": prompt, "confirmed": confirmed}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("prompt") != "shell":
            return []
        confirmed = bool(facts.get("confirmed"))
        proof = "it evaluated a harmless echo" if confirmed else "a shell prompt was shown"
        return [Observation(
            summary=f"Telnet on port {target.port} gives a command shell with no login "
                    f"({proof}).",
            confidence=Confidence.CONFIRMED if confirmed else Confidence.FIRM,
            key="unauthenticated-access", facts={"kind": "unauthenticated-access"})]


class TelnetDefaultCredentials(CredentialProbe):
    credential_protocol = "telnet"
    metadata = ProbeMetadata(
        check_id="telnet-default-credentials",
        title="Telnet does not accept default credentials",
        description="Factory-default Telnet logins are the first thing IoT botnets try; a "
                    "device that accepts one is taken over in minutes once reachable.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("telnet",),
        remediation="Change the default password (unique per device), or disable Telnet.",
        references=(MIRAI_REFERENCE, "https://www.etsi.org/deliver/etsi_en/303600_303699/303645/"
                    "02.01.01_60/en_303645v020101p.pdf"),
        categories=("default-credentials",),
    )

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        async with await ctx.connect() as conn:
            text, prompt = await telnet.read_until_prompt(conn, timeout=PROMPT_WAIT)
            if prompt is None and not text.strip():
                raise ConnectionError("closed or silent before any prompt")
            if prompt == "shell":
                return Attempt(Outcome.SUCCESS, "a shell prompt before any login")
            if prompt == "login":
                await conn.send(username.encode() + b"\r\n")
                text, prompt = await telnet.read_until_prompt(conn, timeout=PROMPT_WAIT)
            if prompt != "password":
                return Attempt(Outcome.FAILURE, f"no password prompt (got {prompt or 'none'})")
            await conn.send(password.encode() + b"\r\n")
            text, prompt = await telnet.read_until_prompt(conn, timeout=PROMPT_WAIT)
            lowered = text.lower()
            if prompt == "shell" and not any(word in lowered for word in FAILURE_WORDS):
                proof = "shell evaluated a harmless echo" if await confirm_shell(conn) \
                    else "shell prompt after login"
                return Attempt(Outcome.SUCCESS, proof)
            return Attempt(Outcome.FAILURE, f"refused ({prompt or 'closed'})")


class TelnetBruteForceProtection(BruteForceProtection):
    login = TelnetDefaultCredentials
    metadata = brute_force_metadata("telnet-brute-force-protection", "Telnet", ("telnet",))
