"""Telnet: a remote login whose credentials and session travel in cleartext."""

from __future__ import annotations

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.models import Intrusiveness, Severity
from scanner.protocols import telnet


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
        references=("https://www.rfc-editor.org/rfc/rfc854",
                    "https://www.cisa.gov/news-events/alerts/2016/10/14/heightened-ddos-threat-"
                    "posed-mirai-and-other-botnets"),
        categories=("cleartext", "unneeded-interface"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        async with await ctx.connect() as conn:
            text, prompt = await telnet.read_until_prompt(conn, timeout=5.0)
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
