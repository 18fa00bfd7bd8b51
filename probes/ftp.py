"""FTP: anonymous login (with a bounded look at the top directory) and default credentials.

The control dialogue (RFC 959) is spoken here directly over ``ctx.connect``: replies are read
line by line, multi-line replies (``nnn-`` … ``nnn ``) bounded in lines, bytes and time. Nothing
is ever written to the device: no STOR, DELE, MKD, RNFR or SITE. A passive-mode reply naming an
address other than the target is a scope attack (or a NAT mistake): it is recorded and no data
connection is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import (
    Attempt,
    BruteForceProtection,
    CredentialProbe,
    Outcome,
    brute_force_metadata,
)
from scanner.models import Intrusiveness, Severity
from scanner.net import Connection, escape_bytes

ANONYMOUS_USERS = ("anonymous", "ftp")
ANONYMOUS_PASSWORD = "iotbaseline@example.com"  # RFC 1635: an e-mail address as the password
MAX_REPLY_BYTES = 16 * 1024
MAX_REPLY_LINES = 100
MAX_LISTING_BYTES = 64 * 1024
MAX_LISTING_LINES = 200
SAMPLE_NAMES = 10
MAX_NAME = 120
DATA_SLOT_WAIT = 5.0  # the data connection needs a second slot; never wait for it forever

_PASV = re.compile(r"(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3}),\s*(\d{1,3})")
_EPSV = re.compile(r"\((.)\1\1(\d{1,5})\1\)")
_WORLD_WRITABLE_DIR = re.compile(r"^d.{7}w.")

FTP_REFERENCES = ("https://www.rfc-editor.org/rfc/rfc959",
                  "https://www.rfc-editor.org/rfc/rfc1635",
                  "https://www.rfc-editor.org/rfc/rfc2577")


class FtpProtocolError(ConnectionError):
    """The service does not speak FTP (garbage, an endless line, a missing reply code)."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)[:300]


def _printable(text: str, limit: int) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


def parse_reply(buffer: bytes) -> tuple[Reply, int] | None:
    """The first complete reply in ``buffer`` and the bytes it used; None if it is incomplete.

    Raises FtpProtocolError when the first line is not ``nnn`` followed by a space, a hyphen or
    the end of the line, or when a multi-line reply exceeds the line cap. Of a long reply the
    first 20 lines and the last are kept."""
    kept: list[str] = []
    code = ""
    position = count = 0
    while True:
        end = buffer.find(b"\n", position)
        if end < 0:
            if not count and len(buffer) >= 4 and not _starts_reply(buffer[:4]):
                raise FtpProtocolError("not an FTP reply: " + escape_bytes(buffer[:40]))
            return None
        line = buffer[position:end].rstrip(b"\r").decode("utf-8", "replace")
        position = end + 1
        count += 1
        final = len(line) == 3 or line[3:4] == " "
        if count == 1:
            if not (line[:3].isascii() and line[:3].isdigit() and (final or line[3:4] == "-")):
                raise FtpProtocolError("not an FTP reply: " + escape_bytes(buffer[:min(end, 40)]))
            code = line[:3]
        elif count > MAX_REPLY_LINES:
            raise FtpProtocolError(f"a reply of more than {MAX_REPLY_LINES} lines")
        else:
            final = final and line[:3] == code
        if len(kept) < 20 or final:
            kept.append(_printable(line, 200))
        if final:
            return Reply(int(code), tuple(kept)), position


def _starts_reply(head: bytes) -> bool:
    return head[:3].isdigit() and head[3:4] in (b" ", b"-", b"\r", b"\n")


class FtpControl:
    """The control connection: commands out, bounded replies in (leftover bytes kept)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._buffer = b""

    async def reply(self, timeout: float | None = None) -> Reply:
        limit = timeout if timeout is not None else self.conn.limits.read_timeout
        deadline = time.monotonic() + limit
        while True:
            parsed = parse_reply(self._buffer)
            if parsed is not None:
                reply, used = parsed
                self._buffer = self._buffer[used:]
                return reply
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise FtpProtocolError(f"a reply longer than {MAX_REPLY_BYTES} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete FTP reply within {limit:.1f} s")
            try:
                chunk = await self.conn.recv(MAX_REPLY_BYTES, timeout=remaining)
            except TimeoutError:
                raise TimeoutError(f"no complete FTP reply within {limit:.1f} s") from None
            if not chunk:
                raise ConnectionError("the FTP server closed the connection")
            self._buffer += chunk

    async def command(self, line: str, timeout: float | None = None) -> Reply:
        await self.conn.send(line.encode("utf-8") + b"\r\n")
        return await self.reply(timeout)

    async def quit(self) -> None:
        """A polite goodbye; its failure changes nothing."""
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            await self.command("QUIT", timeout=1.0)


async def open_control(ctx: ProbeContext) -> tuple[Connection, FtpControl, Reply]:
    """Connect and read the greeting (a 120 "wait" is followed by the real one)."""
    conn = await ctx.connect()
    control = FtpControl(conn)
    try:
        greeting = await control.reply()
        if greeting.code == 120:
            greeting = await control.reply()
    except BaseException:
        await conn.close()
        raise
    return conn, control, greeting


def greeting_refusal(greeting: Reply) -> Exception | None:
    """Why a session cannot go on after this greeting (busy, not FTP), or None."""
    if greeting.code == 421:
        return ConnectionError(f"FTP service refused the session: {greeting.text}")
    if greeting.code // 100 != 2:
        return FtpProtocolError(f"unexpected FTP greeting: {greeting.text}")
    return None


async def login(control: FtpControl, username: str, password: str
                ) -> tuple[bool, list[tuple[str, Reply]]]:
    """USER/PASS; (logged in, the replies seen). 421 anywhere raises ConnectionError."""
    seen: list[tuple[str, Reply]] = []
    reply = await control.command(f"USER {username}")
    seen.append(("USER", reply))
    if reply.code == 331:
        reply = await control.command(f"PASS {password}")
        seen.append(("PASS", reply))
    if reply.code == 421:
        raise ConnectionError(f"FTP service is closing the session: {reply.text}")
    return reply.code == 230, seen


def _safe_command_text(text: str) -> str:
    """User names come from data files and devices' own words: never a second command."""
    if any(ch in text for ch in "\r\n\x00"):
        raise ValueError("a line break in an FTP argument")
    return text


# ---------------------------------------------------------------- ftp-anonymous


def parse_pasv(text: str) -> tuple[str, int] | None:
    match = _PASV.search(text)
    if not match:
        return None
    numbers = [int(group) for group in match.groups()]
    if any(number > 255 for number in numbers):
        return None
    port = numbers[4] * 256 + numbers[5]
    return ".".join(map(str, numbers[:4])), port


def parse_epsv(text: str) -> int | None:
    match = _EPSV.search(text)
    return int(match.group(2)) if match else None


def _same_address(announced: str, target: str) -> bool:
    try:
        return ipaddress.ip_address(announced) == ipaddress.ip_address(target)
    except ValueError:
        return False


def summarize_listing(data: bytes, truncated: bool) -> dict[str, Any]:
    """Entries, a sample of names (as data, not as text to act on) and world-writable dirs."""
    lines = [line.rstrip("\r") for line in data.decode("utf-8", "replace").split("\n")]
    lines = [line for line in lines if line.strip() and not line.lower().startswith("total ")]
    names: list[str] = []
    writable: list[str] = []
    for line in lines[:MAX_LISTING_LINES]:
        parts = line.split(None, 8)
        name = parts[8] if len(parts) == 9 and parts[0][:1] in "-dlbcps" else line.strip()
        name = _printable(name, MAX_NAME)
        names.append(name)
        if _WORLD_WRITABLE_DIR.match(parts[0] if parts else ""):
            writable.append(name)
    return {"entries": min(len(lines), MAX_LISTING_LINES),
            "truncated": truncated or len(lines) > MAX_LISTING_LINES,
            "sample": names[:SAMPLE_NAMES], "world_writable": writable[:SAMPLE_NAMES],
            "world_writable_count": len(writable), "bytes": len(data)}


class FtpAnonymous(Probe):
    metadata = ProbeMetadata(
        check_id="ftp-anonymous",
        title="FTP does not allow anonymous login",
        description="An FTP service that accepts the anonymous account exposes its files to "
                    "anyone on the network, in cleartext; a world-writable directory also lets "
                    "them store files on the device.",
        severity=Severity.MEDIUM,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("ftp",),
        remediation="Disable anonymous FTP (vsftpd: anonymous_enable=NO); better, disable FTP "
                    "and use an authenticated, encrypted transfer (SFTP/HTTPS).",
        references=FTP_REFERENCES,
        max_connections=2,  # control plus one passive data connection
        categories=("unauthenticated-access", "cleartext"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        facts: Facts = {"greeting": "", "login": "refused", "replies": [], "listing": None,
                        "listing_error": "", "pasv": None}
        conn, control, greeting = await open_control(ctx)
        async with conn:
            facts["greeting"] = greeting.text
            refusal = greeting_refusal(greeting)
            if refusal is not None:
                raise refusal
            logged_in, seen = await login(control, "anonymous", ANONYMOUS_PASSWORD)
            facts["replies"] = [f"{command} {reply.code} {reply.text[:120]}"
                                for command, reply in seen]
            if not logged_in:
                await control.quit()
                return facts
            facts["login"] = "accepted"
            try:
                await self._list(ctx, control, facts)
            except (ConnectionError, TimeoutError, OSError) as exc:
                facts["listing_error"] = f"{type(exc).__name__}: {exc}"[:200]
            await control.quit()
        return facts

    async def _list(self, ctx: ProbeContext, control: FtpControl, facts: Facts) -> None:
        target = ctx.target.address
        if ipaddress.ip_address(target).version == 6:
            reply = await control.command("EPSV")
            port = parse_epsv(reply.text) if reply.code == 229 else None
            facts["pasv"] = {"reply": reply.text[:120], "address": target, "port": port,
                             "in_scope": port is not None}
        else:
            reply = await control.command("PASV")
            parsed = parse_pasv(reply.text) if reply.code == 227 else None
            address, port = parsed if parsed else ("", None)
            same = parsed is not None and _same_address(address, target)
            facts["pasv"] = {"reply": reply.text[:120], "address": address, "port": port,
                             "in_scope": same}
            if parsed is not None and not same:
                ctx.note(f"PASV named {address}:{port}, not the target: no data connection "
                         "opened (a bounce to another host is refused)")
                facts["listing_error"] = f"PASV pointed to {address}, not {target}; not followed"
                return
        if port is None or not 1 <= port <= 65535:
            facts["listing_error"] = f"no usable passive-mode reply ({reply.code})"
            return
        try:
            data = await asyncio.wait_for(ctx.connect(port=port), DATA_SLOT_WAIT)
        except TimeoutError:
            facts["listing_error"] = "no data connection within the time or connection limits"
            return
        async with data:
            reply = await control.command("LIST")
            if reply.code not in (125, 150):
                facts["listing_error"] = f"LIST refused: {reply.code} {reply.text[:120]}"
                return
            raw = await data.recv_until(lambda got: False, max_bytes=MAX_LISTING_BYTES + 1,
                                        timeout=2 * data.limits.read_timeout)
        truncated = len(raw) > MAX_LISTING_BYTES
        facts["listing"] = summarize_listing(raw[:MAX_LISTING_BYTES], truncated)
        if not truncated:
            try:
                done = await control.reply(timeout=min(2.0, control.conn.limits.read_timeout))
                facts["listing"]["end_reply"] = done.code
            except (ConnectionError, TimeoutError, OSError):
                pass

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if facts.get("login") != "accepted":
            return []
        listing = facts.get("listing") or {}
        writable = list(listing.get("world_writable") or [])
        detail = ""
        if listing:
            entries = listing.get("entries", 0)
            detail = f" Its top directory lists {entries} entr{'y' if entries == 1 else 'ies'}"
            detail += (f", {listing.get('world_writable_count', len(writable))} of them "
                       "world-writable directories." if writable else ".")
        elif facts.get("listing_error"):
            detail = f" The directory was not listed ({facts['listing_error']})."
        return [Observation(
            summary=f"FTP on port {target.port} accepts anonymous login.{detail}",
            severity=Severity.HIGH if writable else None, key="anonymous-ftp",
            facts={"kind": "anonymous-ftp", "greeting": str(facts.get("greeting", ""))[:200],
                   "entries": str(listing.get("entries", "not listed")),
                   "sample_names": json.dumps(listing.get("sample", []), ensure_ascii=True),
                   "world_writable_dirs": json.dumps(writable, ensure_ascii=True),
                   "listing_truncated": str(bool(listing.get("truncated", False))).lower(),
                   "pasv": json.dumps(facts.get("pasv"), ensure_ascii=True)})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = {"greeting": str(facts.get("greeting", ""))[:200],
                   "anonymous login": str(facts.get("login", ""))}
        if facts.get("listing_error"):
            summary["listing"] = str(facts["listing_error"])[:200]
        return summary


# ---------------------------------------------------------------- ftp-default-credentials


class FtpDefaultCredentials(CredentialProbe):
    credential_protocol = "ftp"
    metadata = ProbeMetadata(
        check_id="ftp-default-credentials",
        title="FTP does not accept default credentials",
        description="An FTP login that accepts a factory-default user name and password gives "
                    "anyone on the network the device's files — often its configuration and "
                    "firmware — and the password crosses the network in cleartext.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("ftp",),
        remediation="Set a unique password per device, or disable FTP and use SFTP/HTTPS.",
        references=FTP_REFERENCES,
        categories=("default-credentials", "cleartext"),
    )

    def skip(self, username: str, password: str) -> bool:
        # ftp-anonymous's question: its pairs must not use this service's attempt budget.
        return username.lower() in ANONYMOUS_USERS

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        try:
            _safe_command_text(username)
            _safe_command_text(password)
        except ValueError:
            return Attempt(Outcome.FAILURE, "not sent: a line break in the credential")
        conn, control, greeting = await open_control(ctx)
        async with conn:
            refusal = greeting_refusal(greeting)
            if refusal is not None:
                raise refusal
            logged_in, seen = await login(control, username, password)
            await control.quit()
        command, last = seen[-1]
        if logged_in:
            how = "without a password" if command == "USER" else "after PASS"
            return Attempt(Outcome.SUCCESS, f"230 {how}: {last.text[:100]}")
        return Attempt(Outcome.FAILURE, f"{command} {last.code}: {last.text[:100]}")


class FtpBruteForceProtection(BruteForceProtection):
    login = FtpDefaultCredentials
    metadata = brute_force_metadata("ftp-brute-force-protection", "FTP", ("ftp",))
