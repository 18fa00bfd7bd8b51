"""SSH algorithm quality: key exchange, host keys, ciphers, MACs, SSH-1, Terrapin, password
logins and host keys shared across devices.

One collection per service (``ssh-kex``) feeds every check: it reads the server's banner and
KEXINIT, then runs just enough of one key exchange per host key the server offers to receive
that key in the clear (what ssh-audit does). The ratings with their reasons live in
probes/data/ssh_algorithms.yaml; a name the table does not know is shown as unknown, never
flagged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, ClassVar

from probes.api import (
    Facts,
    FleetCheck,
    Observation,
    Probe,
    ProbeContext,
    ProbeMetadata,
    Target,
)
from probes.ssh import PASSWORD_METHODS, SSH_REFERENCES, collect_auth_methods
from profiles.yamldata import parse_yaml
from scanner.models import Intrusiveness, Severity
from scanner.protocols.sshwire import (
    HOST_KEY_FAMILIES,
    KexInit,
    SshProtocolError,
    SshWire,
    choose_kex,
    fetch_host_key,
    host_key_targets,
    start,
)

SSH_KEX = "ssh-kex"  # the shared collection every check here reads
MAX_HOST_KEYS = 6  # connections for host keys, at most (one per key the server offers)
EXCHANGE_READS = 3  # read timeouts one connection may take: banner, KEXINIT, reply
STRICT_KEX = "kex-strict-s-v00@openssh.com"
RATINGS_FILE = "data/ssh_algorithms.yaml"
MAX_LISTED = 40  # algorithms named in one observation's facts

CRYPTO_REFERENCES = (
    "https://www.rfc-editor.org/rfc/rfc9142",
    "https://csrc.nist.gov/pubs/sp/800/131/a/r2/final",
    *SSH_REFERENCES[1:],
)


# ----------------------------------------------------------------------------- ratings


@dataclass(frozen=True)
class Rating:
    status: str  # fail, warn, ok, info, unknown
    reason: str
    reference: str
    severity: Severity | None = None  # a fail worse than the check's own severity

    def describe(self) -> str:
        return f"{self.status}: {self.reason} [{self.reference}]"


UNKNOWN = Rating("unknown", "not in the algorithm table", "")


@dataclass(frozen=True)
class RatingTable:
    categories: dict[str, dict[str, Rating]]
    minimum_key_bits: dict[str, int]
    key_size_reason: str

    def rate(self, category: str, name: str) -> Rating:
        table = self.categories[category]
        found = table.get(name)
        if found is not None:
            return found
        prefix = next((key for key in table if key.endswith("-") and name.startswith(key)), None)
        return table[prefix] if prefix else UNKNOWN


def parse_ratings(document: dict[str, Any]) -> RatingTable:
    references: dict[str, str] = document["references"]
    categories = {}
    for category in ("kex", "host_key", "cipher", "mac"):
        categories[category] = {
            name: Rating(entry["status"], entry["reason"], references[entry["ref"]],
                         Severity(entry["severity"]) if "severity" in entry else None)
            for name, entry in document[category].items()}
    return RatingTable(categories, dict(document["minimum_key_bits"]),
                       document["key_size_reason"])


@functools.cache
def ratings() -> RatingTable:
    text = files("probes").joinpath(RATINGS_FILE).read_text(encoding="utf-8")
    return parse_ratings(parse_yaml(text, RATINGS_FILE))


# ----------------------------------------------------------------------------- collection


def _connection_deadline(ctx: ProbeContext) -> float:
    limits = ctx.network.limits
    return min(ctx.deadline,
               time.monotonic() + limits.connect_timeout + EXCHANGE_READS * limits.read_timeout)


def _server_facts(server: KexInit) -> Facts:
    return {
        "kex": list(server.kex), "host_key_algorithms": list(server.host_key),
        "ciphers_c2s": list(server.ciphers_c2s), "ciphers_s2c": list(server.ciphers_s2c),
        "macs_c2s": list(server.macs_c2s), "macs_s2c": list(server.macs_s2c),
        "compression": list(dict.fromkeys(server.compression_c2s + server.compression_s2c)),
    }


async def _host_key(ctx: ProbeContext, wire: SshWire, server: KexInit, kex: str,
                    algorithm: str, facts: Facts) -> None:
    """Fetch one host key into the facts; a server that refuses records an error instead."""
    try:
        key = await fetch_host_key(wire, server, kex, algorithm)
    except (SshProtocolError, ConnectionError, TimeoutError) as exc:
        facts["host_key_errors"].append(f"{algorithm}: {exc}"[:300])
        ctx.note(f"host key {algorithm} not received: {exc}")
        return
    facts["host_keys"].append({"algorithm": algorithm, "type": key.key_type, "bits": key.bits,
                               "fingerprint": key.fingerprint})
    ctx.note(f"host key {algorithm}: {key.key_type} {key.bits} bits {key.fingerprint}")


async def collect_kex(ctx: ProbeContext) -> Facts:
    """Banner, KEXINIT name-lists and every offered host key (one connection per key)."""
    facts: Facts = {"host_keys": [], "host_key_errors": []}
    async with await ctx.connect() as conn:
        wire, banner, server = await start(conn, _connection_deadline(ctx))
        facts.update(banner=banner.line[:255], protocol=banner.protocol, ssh1=banner.ssh1,
                     ssh2=banner.ssh2, pre_banner=[line[:255] for line in banner.before])
        if server is None:
            ctx.note(f"SSH-{banner.protocol} only: the server offers no SSH-2 key exchange")
            return facts
        facts.update(_server_facts(server))
        kex = choose_kex(server.kex)
        targets = host_key_targets(server.host_key)[:MAX_HOST_KEYS]
        facts["kex_used"] = kex or ""
        if kex is None:
            facts["host_key_errors"].append("no key exchange method we can perform is offered")
            return facts
        if targets:
            await _host_key(ctx, wire, server, kex, targets[0], facts)
    for algorithm in targets[1:]:
        async with await ctx.connect() as conn:
            wire, _, again = await start(conn, _connection_deadline(ctx))
            if again is None:
                raise SshProtocolError("the server stopped offering SSH-2")
            await _host_key(ctx, wire, again, kex, algorithm, facts)
    return facts


# ----------------------------------------------------------------------------- checks


def _offered(facts: Facts, *keys: str) -> list[str]:
    """The union of some name-lists, in the server's order."""
    names: list[str] = []
    for key in keys:
        names += [str(name) for name in facts.get(key) or []]
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Graded:
    name: str
    rating: Rating


def grade(category: str, names: Iterable[str]) -> list[Graded]:
    table = ratings()
    return [Graded(name, table.rate(category, name)) for name in names]


def _listing(items: Sequence[Graded]) -> dict[str, str]:
    return {item.name: item.rating.describe() for item in items[:MAX_LISTED]}


class SshCryptoCheck(Probe):
    """Shared collection; an algorithm check subclass names its table category and lists."""

    category: ClassVar[str] = ""
    fact_keys: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str] = ""

    async def collect(self, ctx: ProbeContext) -> Facts:
        return await ctx.shared(SSH_KEX, collect_kex)

    def graded(self, facts: Facts) -> list[Graded]:
        """What the observations judge: the offered names (and, for host keys, their sizes)."""
        return grade(self.category, _offered(facts, *self.fact_keys))

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return self.observations(target, facts, self.graded(facts))

    def observations(self, target: Target, facts: Facts,
                     graded: list[Graded]) -> list[Observation]:
        """One observation for the failing names (at the worst severity any of them carries),
        one LOW one for the deprecated ones."""
        found = []
        fails = [item for item in graded if item.rating.status == "fail"]
        warns = [item for item in graded if item.rating.status == "warn"]
        server = {"server": str(facts.get("banner", ""))}
        if fails:
            overrides = [item.rating.severity for item in fails if item.rating.severity]
            severity = max([self.metadata.severity, *overrides], key=lambda s: s.rank)
            names = ", ".join(item.name for item in fails)
            found.append(Observation(
                summary=f"SSH on port {target.port} offers weak {self.noun}: {names}.",
                severity=severity, key="weak", facts={**_listing(fails), **server}))
        if warns:
            names = ", ".join(item.name for item in warns)
            found.append(Observation(
                summary=f"SSH on port {target.port} offers deprecated {self.noun}: {names}.",
                severity=Severity.LOW, key="deprecated", facts={**_listing(warns), **server}))
        return found

    def summarize(self, facts: Facts) -> dict[str, str]:
        if not facts.get("ssh2", True):
            return {"server": str(facts.get("banner", "")), self.noun: "none (SSH-1 only)"}
        graded = grade(self.category, _offered(facts, *self.fact_keys))
        counts = {status: sum(item.rating.status == status for item in graded)
                  for status in ("fail", "warn", "unknown")}
        summary = {"server": str(facts.get("banner", "")),
                   self.noun: ", ".join(item.name for item in graded) or "none offered",
                   "rated": ", ".join(f"{count} {status}" for status, count in counts.items())}
        unknown = [item.name for item in graded if item.rating.status == "unknown"]
        if unknown:
            summary["unknown"] = ", ".join(unknown)
        return summary


def _metadata(check_id: str, title: str, description: str, severity: Severity,
              remediation: str, *, categories: tuple[str, ...] = ("weak-crypto",),
              intrusiveness: Intrusiveness = Intrusiveness.SAFE) -> ProbeMetadata:
    return ProbeMetadata(check_id=check_id, title=title, description=description,
                         severity=severity, intrusiveness=intrusiveness, protocols=("ssh",),
                         remediation=remediation, references=CRYPTO_REFERENCES,
                         max_connections=1, categories=categories)


class SshWeakKex(SshCryptoCheck):
    category, fact_keys, noun = "kex", ("kex",), "key exchange methods"
    metadata = _metadata(
        "ssh-weak-kex", "SSH offers only strong key exchange methods",
        "A key exchange over a 1024-bit group or hashed with SHA-1 lets a well-resourced "
        "attacker recover session keys (Logjam) or forge the exchange; a downgrade-capable "
        "attacker can pick any method the server still offers.",
        Severity.MEDIUM,
        "Offer only sntrup761x25519-sha512 / mlkem768x25519-sha256, curve25519-sha256 and "
        "diffie-hellman-group16/18 (OpenSSH: KexAlgorithms; Dropbear: build options); update "
        "the firmware.")


class SshWeakCipher(SshCryptoCheck):
    category, fact_keys, noun = "cipher", ("ciphers_c2s", "ciphers_s2c"), "ciphers"
    metadata = _metadata(
        "ssh-weak-cipher", "SSH offers only strong ciphers",
        "CBC-mode ciphers allow plaintext recovery in SSH, 64-bit block ciphers (3DES, "
        "Blowfish) leak data over long sessions (Sweet32), RC4 is biased and 'none' sends "
        "everything in the clear.",
        Severity.MEDIUM,
        "Offer only chacha20-poly1305@openssh.com, aes128/256-gcm@openssh.com and aes*-ctr "
        "(OpenSSH: Ciphers); update the firmware.")


class SshWeakMac(SshCryptoCheck):
    category, fact_keys, noun = "mac", ("macs_c2s", "macs_s2c"), "MACs"
    metadata = _metadata(
        "ssh-weak-mac", "SSH offers only strong message authentication codes",
        "MD5-based, truncated (-96) and short-tag MACs weaken the integrity of the session; "
        "'none' removes it.",
        Severity.MEDIUM,
        "Offer only hmac-sha2-256/512-etm@openssh.com and umac-128-etm@openssh.com (OpenSSH: "
        "MACs); update the firmware.")


class SshWeakHostKey(SshCryptoCheck):
    category, fact_keys, noun = "host_key", ("host_key_algorithms",), "host key algorithms"
    metadata = _metadata(
        "ssh-weak-host-key", "SSH host keys use strong algorithms and sizes",
        "The host key is what lets a client tell the device from an impostor. RSA or DSA keys "
        "under 2048 bits, DSA at all, and RSA signatures over SHA-1 (ssh-rsa) let an "
        "attacker with enough resources impersonate the device.",
        Severity.MEDIUM,
        "Generate an Ed25519 (or RSA ≥ 3072-bit) host key per device at first boot, remove DSA "
        "and small RSA keys, and stop offering ssh-rsa (OpenSSH: HostKey, HostKeyAlgorithms).")

    def graded(self, facts: Facts) -> list[Graded]:
        table = ratings()
        graded = super().graded(facts)
        for key in facts.get("host_keys") or []:
            family = HOST_KEY_FAMILIES.get(str(key.get("algorithm")), "")
            minimum = table.minimum_key_bits.get(family, 0)
            bits = int(key.get("bits") or 0)
            if bits and bits < minimum:
                graded.append(Graded(
                    f"{key.get('type')} {bits}-bit key {key.get('fingerprint')}",
                    Rating("fail", table.key_size_reason, "NIST SP 800-131A Rev. 2")))
        return graded

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = super().summarize(facts)
        keys = facts.get("host_keys") or []
        summary["host keys"] = "; ".join(
            f"{key['type']} {key['bits']}-bit {key['fingerprint']}" for key in keys) or \
            "none received"
        if facts.get("host_key_errors"):
            summary["host key errors"] = "; ".join(facts["host_key_errors"])
        return summary


class SshProtocol1(SshCryptoCheck):
    metadata = _metadata(
        "ssh-protocol-1", "SSH protocol version 1 is not offered",
        "SSH-1 has broken integrity protection (CRC-32 compensation attack, session hijacking) "
        "and was abandoned in 2001; OpenSSH removed it in 7.6.",
        Severity.HIGH,
        "Disable SSH protocol 1 (OpenSSH: Protocol 2; Dropbear never had it); update the "
        "firmware.", categories=("weak-crypto", "obsolete-protocol"))

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if not facts.get("ssh1"):
            return []
        only = "" if facts.get("ssh2") else " and nothing else"
        return [Observation(
            summary=f"SSH on port {target.port} announces protocol {facts.get('protocol')}: "
                    f"it speaks the broken SSH-1{only}.",
            key="ssh-1", facts={"banner": str(facts.get("banner", ""))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"server": str(facts.get("banner", "")),
                "protocol": str(facts.get("protocol", ""))}


class SshTerrapin(SshCryptoCheck):
    metadata = _metadata(
        "ssh-terrapin", "SSH is not open to the Terrapin prefix truncation attack",
        "With chacha20-poly1305@openssh.com, or a CBC cipher with an encrypt-then-MAC MAC, and "
        "no strict key exchange, a man in the middle can delete the first messages after the "
        "key exchange (downgrading extension negotiation, e.g. keystroke timing "
        "obfuscation and server-sig-algs).",
        Severity.MEDIUM,
        "Update the SSH server to a release with strict key exchange (OpenSSH 9.6, Dropbear "
        "2024.84, or the distribution's backport); until then disable chacha20-poly1305 and "
        "the -etm MACs with CBC ciphers.")

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if STRICT_KEX in (facts.get("kex") or []):
            return []
        ciphers = _offered(facts, "ciphers_c2s", "ciphers_s2c")
        macs = _offered(facts, "macs_c2s", "macs_s2c")
        chacha = [name for name in ciphers if name == "chacha20-poly1305@openssh.com"]
        cbc = [name for name in ciphers if name.endswith("-cbc") or "-cbc@" in name]
        etm = [name for name in macs if name.endswith("-etm@openssh.com")]
        exposed = chacha + (cbc + etm if cbc and etm else [])
        if not exposed:
            return []
        return [Observation(
            summary=f"SSH on port {target.port} offers {', '.join(exposed)} without strict key "
                    "exchange: open to the Terrapin attack (CVE-2023-48795).",
            key="terrapin",
            facts={"algorithms": ", ".join(exposed), "strict kex": "not offered",
                   "server": str(facts.get("banner", "")),
                   "reference": "https://terrapin-attack.com/ (CVE-2023-48795)"})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        strict = STRICT_KEX in (facts.get("kex") or [])
        return {"server": str(facts.get("banner", "")),
                "strict kex": "offered" if strict else "not offered"}


class SshPasswordAuth(Probe):
    metadata = ProbeMetadata(
        check_id="ssh-password-auth",
        title="SSH does not accept password logins",
        description="A server that accepts passwords (or keyboard-interactive prompts) can be "
                    "brute-forced from the network; IoT botnets do exactly that. Keys cannot "
                    "be guessed.",
        severity=Severity.LOW,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("ssh",),
        remediation="Use public keys only (OpenSSH: PasswordAuthentication no, "
                    "KbdInteractiveAuthentication no; Dropbear: -s -g); if passwords must stay, "
                    "enforce unique strong ones and rate limiting.",
        references=SSH_REFERENCES,
        categories=("brute-force-exposure",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        # Not a shared collection: a cancelled paramiko exchange must stop with its probe.
        return await collect_auth_methods(ctx)

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        methods = facts.get("allowed_methods") or []
        offered = [method for method in methods if method in PASSWORD_METHODS]
        if not offered:
            return []
        keys_usable = "publickey" in methods
        return [Observation(
            summary=f"SSH on port {target.port} accepts {' and '.join(offered)} logins"
                    + ("" if keys_usable else " and no public keys at all")
                    + ": passwords can be guessed from the network.",
            severity=Severity.LOW if keys_usable else Severity.MEDIUM, key="password-login",
            facts={"methods": ", ".join(methods), "server": str(facts.get("banner", ""))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        methods = facts.get("allowed_methods")
        return {"server": str(facts.get("banner", "")),
                "auth methods": "not listed" if methods is None
                else ", ".join(methods) or "none listed"}


class SshSharedHostKey(FleetCheck):
    reads = "ssh-weak-host-key"
    metadata = _metadata(
        "ssh-shared-host-key", "Each device has its own SSH host key",
        "When several devices present the same host key, the private key is in the firmware: "
        "anyone who extracts it from one unit can impersonate every unit and read their "
        "sessions.",
        Severity.HIGH,
        "Generate host keys on each device at first boot (never ship them in the image); "
        "rotate the keys of devices already deployed.",
        categories=("weak-crypto", "shared-secret"))

    def fleet_facts(self, facts: Facts) -> Facts:
        return {"host_keys": facts.get("host_keys") or []}

    def evaluate_fleet(self, samples: Sequence[tuple[Target, Facts]],
                       ) -> list[tuple[Target, Observation]]:
        holders: dict[str, list[tuple[Target, dict[str, Any]]]] = {}
        for target, facts in samples:
            for key in facts.get("host_keys") or []:
                holders.setdefault(str(key["fingerprint"]), []).append((target, key))
        found = []
        for fingerprint, users in holders.items():
            devices = {target.address for target, _ in users}
            if len(devices) < 2:
                continue  # one device on several ports may well share its own key
            for target, key in users:
                others = sorted({_describe(other) for other, _ in users
                                 if other.address != target.address})
                found.append((target, Observation(
                    summary=f"The {key['type']} host key {fingerprint} of {target.address} is "
                            f"also presented by {len(others)} other device(s): "
                            f"{', '.join(others[:5])}{' …' if len(others) > 5 else ''}.",
                    key=fingerprint,
                    facts={"fingerprint": fingerprint, "key type": str(key["type"]),
                           "bits": str(key["bits"]), "devices": str(len(devices)),
                           "shared with": ", ".join(others[:MAX_LISTED])})))
        return found


def _describe(target: Target) -> str:
    model = " ".join(part for part in (target.device.manufacturer, target.device.model) if part)
    where = f"{target.address}:{target.port}"
    return f"{where} ({model})" if model else where
