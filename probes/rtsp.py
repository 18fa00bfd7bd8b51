"""RTSP (cameras, NVRs): a video stream described to anyone, and default credentials.

DESCRIBE is what every player sends first; a 200 with an SDP body means the stream's session
description — and so the stream — is available. We never SETUP or PLAY.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from base64 import b64encode
from dataclasses import dataclass

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import Attempt, CredentialProbe, Outcome, run_attempts
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import Connection
from scanner.protocols.textproto import USER_AGENT, Head, build_request, head_complete, parse_head

PATHS = ("/", "/live", "/stream1", "/h264", "/Streaming/Channels/101")  # at most 5 requests
MAX_RESPONSE = 64 * 1024
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')

RTSP_REFERENCES = (
    "https://www.rfc-editor.org/rfc/rfc2326",
    "https://www.rfc-editor.org/rfc/rfc7826",
    "https://www.rfc-editor.org/rfc/rfc2617",
)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "digest"
    params: dict[str, str]


def parse_challenges(values: list[str]) -> list[Challenge]:
    """WWW-Authenticate header values → challenges (one header per challenge, as cameras send;
    a header carrying several schemes is split where a new scheme word starts)."""
    found: list[Challenge] = []
    for value in values[:8]:
        for part in re.split(r",\s*(?=(?:Basic|Digest)\b)", value.strip()[:2048],
                             flags=re.IGNORECASE):
            scheme, _, rest = part.strip().partition(" ")
            if not scheme:
                continue
            params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None
                                           else m.group(3) or "")
                      for m in _PARAM.finditer(rest)}
            found.append(Challenge(scheme.lower(), params))
    return found


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """Digest when offered (it is what the server prefers to verify), else Basic."""
    for wanted in ("digest", "basic"):
        for challenge in challenges:
            if challenge.scheme == wanted:
                return challenge
    return None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def digest_response(username: str, password: str, realm: str, nonce: str, method: str,
                    uri: str, qop: str = "", nc: str = "00000001", cnonce: str = "") -> str:
    """RFC 2617 request-digest (MD5): with qop=auth when offered, else the RFC 2069 form."""
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def authorization(challenge: Challenge, username: str, password: str, method: str,
                  uri: str, cnonce: str | None = None) -> str:
    """The Authorization header value answering ``challenge``."""
    if challenge.scheme == "basic":
        token = b64encode(f"{username}:{password}".encode()).decode()
        return f"Basic {token}"
    params = challenge.params
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    offered = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else ""
    cnonce = cnonce or secrets.token_hex(8)
    response = digest_response(username, password, realm, nonce, method, uri, qop,
                               cnonce=cnonce)
    fields = [f'username="{_quote(username)}"', f'realm="{_quote(realm)}"',
              f'nonce="{_quote(nonce)}"', f'uri="{_quote(uri)}"', f'response="{response}"']
    if params.get("algorithm"):
        fields.append(f"algorithm={params['algorithm']}")
    if params.get("opaque"):
        fields.append(f'opaque="{_quote(params["opaque"])}"')
    if qop:
        fields += [f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
    return "Digest " + ", ".join(fields)


def is_sdp(body: bytes) -> bool:
    return body.lstrip().startswith(b"v=0")


def response_done(data: bytes) -> bool:
    if not head_complete(data):
        return False
    head = parse_head(data)
    if head is None:
        return True
    length = head.header("content-length").strip()
    if not length.isdigit():
        return True  # RTSP: no Content-Length, no body
    return len(head.body) >= min(int(length), MAX_RESPONSE)


def authenticate_values(data: bytes) -> list[str]:
    """Every WWW-Authenticate header (parse_head keeps only the last of repeated headers)."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    values = []
    for line in head.decode("latin-1").splitlines()[1:200]:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "www-authenticate":
            values.append(value.strip())
    return values


def stream_url(target: Target, path: str) -> str:
    host = f"[{target.address}]" if ":" in target.address else target.address
    return f"rtsp://{host}:{target.port}{path}"


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: not an RTSP response
    head: Head | None
    challenges: list[Challenge]
    raw: bytes


class RtspSession:
    """DESCRIBE requests on one connection, with CSeq numbering."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cseq = 0

    async def describe(self, url: str, auth: str | None = None) -> Reply:
        self.cseq += 1
        headers = {"CSeq": str(self.cseq), "Accept": "application/sdp",
                   "User-Agent": USER_AGENT}
        if auth:
            headers["Authorization"] = auth
        await self.conn.send(build_request("DESCRIBE", url, headers, protocol="RTSP/1.0"))
        data = await self.conn.recv_until(response_done, max_bytes=MAX_RESPONSE)
        if not data:
            raise ConnectionError("no RTSP response (closed or silent)")
        head = parse_head(data)
        if head is None or head.protocol != "RTSP":
            return Reply(None, None, [], data)
        return Reply(head.status, head, parse_challenges(authenticate_values(data)), data)


async def describe_once(ctx: ProbeContext, path: str, auth: str | None = None) -> Reply:
    async with await ctx.connect(tls=ctx.target.service.tls) as conn:
        return await RtspSession(conn).describe(stream_url(ctx.target, path), auth)


def _sdp_summary(body: bytes) -> dict[str, str]:
    lines = body.decode("utf-8", "replace").splitlines()[:200]
    session = next((line[2:] for line in lines if line.startswith("s=")), "")
    media = [line[2:].split(" ", 1)[0] for line in lines if line.startswith("m=")]
    return {"session_name": session[:80], "media": ",".join(media[:8])}


class RtspUnauthenticated(Probe):
    metadata = ProbeMetadata(
        check_id="rtsp-unauthenticated",
        title="RTSP streams require authentication",
        description="A camera or recorder that answers DESCRIBE without credentials lets "
                    "anyone on the network watch its video stream.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("rtsp",),
        remediation="Require authentication for every RTSP stream (Digest, not Basic), with "
                    "a unique password; disable RTSP if no client needs it, or use RTSPS.",
        references=RTSP_REFERENCES,
        categories=("unauthenticated-access", "privacy"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        tried: list[dict[str, object]] = []
        facts: Facts = {"tried": tried, "open": None}
        for path in PATHS:
            try:
                reply = await describe_once(ctx, path)
            except (ConnectionError, TimeoutError, OSError) as exc:
                if not tried:
                    raise
                tried.append({"path": path, "status": None, "error": type(exc).__name__})
                break  # the service stopped talking to us: do not press on
            body = reply.head.body if reply.head is not None else b""
            entry: dict[str, object] = {"path": path, "status": reply.status,
                                        "sdp": reply.status == 200 and is_sdp(body),
                                        "auth": ",".join(c.scheme for c in reply.challenges)}
            tried.append(entry)
            if reply.status is None:
                break  # not RTSP: nothing more to learn
            if entry["sdp"]:
                facts["open"] = {"path": path, **_sdp_summary(body)}
                break
        return facts

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        found = facts.get("open")
        if not found:
            return []
        url = stream_url(target, str(found["path"]))
        media = found.get("media") or "unnamed"
        return [Observation(
            summary=f"RTSP on port {target.port} describes the stream {url} to a client with "
                    f"no credentials (200 with an SDP session description; media: {media}).",
            confidence=Confidence.CONFIRMED, key="unauthenticated-access",
            facts={"kind": "unauthenticated-access", "url": url,
                   "session_name": str(found.get("session_name", "")),
                   "media": str(found.get("media", ""))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        tried = facts.get("tried", [])
        return {"paths": "; ".join(f"{t['path']} {t['status']}" for t in tried)[:250]}


class _RtspContext(ProbeContext):
    """A context carrying the protected path (and its first challenge) to every attempt."""

    def __init__(self, ctx: ProbeContext, path: str, challenge: Challenge) -> None:
        super().__init__(ctx.target, ctx.network, ctx.transcript, ctx.settings)
        self.path = path
        self.challenge = challenge


class RtspDefaultCredentials(CredentialProbe):
    credential_protocol = "rtsp"
    metadata = ProbeMetadata(
        check_id="rtsp-default-credentials",
        title="RTSP streams do not accept default credentials",
        description="Cameras shipped with a default RTSP password let anyone who knows the "
                    "vendor's manual watch the video stream.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("rtsp",),
        remediation="Set a unique strong password for the camera's RTSP/ONVIF users; prefer "
                    "Digest over Basic authentication and disable RTSP if unused.",
        references=RTSP_REFERENCES,
        categories=("default-credentials", "privacy"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        probed: list[str] = []
        for path in PATHS:
            try:
                reply = await describe_once(ctx, path)
            except (ConnectionError, TimeoutError, OSError) as exc:
                if not probed:
                    raise
                probed.append(f"{path} {type(exc).__name__}")
                break
            probed.append(f"{path} {reply.status}")
            if reply.status is None:
                break
            challenge = pick_challenge(reply.challenges)
            if reply.status == 401 and challenge is not None:
                facts = await run_attempts(self, _RtspContext(ctx, path, challenge))
                facts.update(path=path, scheme=challenge.scheme, probed=probed)
                return facts
        return {"skipped": "no path asked for credentials", "probed": probed, "attempts": [],
                "success": None}

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        path, challenge = "/", None
        if isinstance(ctx, _RtspContext):
            path, challenge = ctx.path, ctx.challenge
        url = stream_url(ctx.target, path)
        tls = ctx.target.service.tls
        conn = await ctx.connect(tls=tls)
        try:
            session = RtspSession(conn)
            if challenge is None or challenge.scheme == "digest":
                # a fresh nonce on this connection: servers may expire or bind them
                first = await session.describe(url)
                if first.status == 200:
                    return Attempt(Outcome.FAILURE, "the stream is open without credentials")
                challenge = pick_challenge(first.challenges)
                if first.status != 401 or challenge is None:
                    raise ConnectionError(f"no authentication challenge (status {first.status})")
                if first.head is not None and first.head.header("connection").lower() == "close":
                    await conn.close()
                    conn = await ctx.connect(tls=tls)
                    session = RtspSession(conn)
            header = authorization(challenge, username, password, "DESCRIBE", url)
            if challenge.scheme == "basic":
                ctx.secret(header.split(" ", 1)[1])  # base64 of user:password is the password
            reply = await session.describe(url, header)
        finally:
            await conn.close()
        if reply.status is None:
            raise ConnectionError("not an RTSP response")
        scheme = challenge.scheme.capitalize()
        if reply.status == 200:
            proof = "with an SDP body" if reply.head and is_sdp(reply.head.body) else "no SDP"
            return Attempt(Outcome.SUCCESS, f"RTSP 200 to DESCRIBE {path} ({scheme}, {proof})")
        return Attempt(Outcome.FAILURE, f"RTSP {reply.status} ({scheme})")

    def summarize(self, facts: Facts) -> dict[str, str]:
        if facts.get("skipped"):
            return {"skipped": str(facts["skipped"]),
                    "probed": "; ".join(facts.get("probed", []))[:250]}
        summary = super().summarize(facts)
        summary["scheme"] = str(facts.get("scheme", ""))
        return summary
