"""HTTP(S) requests for probes, through aiohttp but inside the network gate.

One request holds one per-host slot; redirects are followed by hand, each hop scope-checked, so
a device cannot send us to a host the user did not authorise. Bodies and headers are capped.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import aiohttp

from scanner.net import Network, ScopeViolation, Transcript, insecure_tls_context
from scanner.protocols.textproto import USER_AGENT

MAX_BODY_BYTES = 256 * 1024
MAX_REDIRECTS = 3


class CertificateError(ConnectionError):
    """The server's certificate failed the verification a ``tls`` context asked for."""


@dataclass(frozen=True)
class HttpResponse:
    url: str
    status: int
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    truncated: bool = False
    redirects: tuple[str, ...] = field(default_factory=tuple)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def _format_request(method: str, url: str, headers: Mapping[str, str], data: bytes | None) -> str:
    lines = [f"{method} {url}"] + [f"{k}: {v}" for k, v in headers.items()]
    return "\n".join(lines) + ("\n\n" + data.decode("utf-8", "replace") if data else "")


async def request(network: Network, method: str, url: str, *, transcript: Transcript | None,
                  headers: Mapping[str, str] | None = None, data: bytes | None = None,
                  follow_redirects: bool = True, max_body: int = MAX_BODY_BYTES,
                  middlewares: tuple[aiohttp.ClientMiddlewareType, ...] = (),
                  tls: ssl.SSLContext | None = None,
                  sink: Callable[[bytes], None] | None = None) -> HttpResponse:
    """One HTTP exchange (plus in-scope redirects), recorded in the transcript.

    ``tls`` replaces the accept-anything context (to judge a certificate); ``sink`` receives
    the final (non-3xx) body in chunks instead of it being kept (to hash a firmware image of
    up to ``max_body`` bytes without holding it)."""
    history: list[str] = []
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        response = await _once(network, method, current, transcript=transcript,
                               headers=headers, data=data, max_body=max_body,
                               middlewares=middlewares, tls=tls, sink=sink)
        location = response.header("location")
        if not (follow_redirects and response.status in (301, 302, 303, 307, 308) and location):
            return HttpResponse(response.url, response.status, response.headers, response.body,
                                response.truncated, tuple(history))
        history.append(current)
        current = urljoin(current, location)
        host, port = _host_port(current)
        if not network.scope.allows(host, port):
            if transcript is not None:
                transcript.record("event", url, f"redirect to {current[:300]} is outside the "
                                  "scope; not followed")
            return HttpResponse(response.url, response.status, response.headers, response.body,
                                response.truncated, tuple(history))
        if response.status == 303:
            method, data = "GET", None
    raise ScopeViolation(f"more than {MAX_REDIRECTS} redirects from {url[:200]}")


async def _read_body(response: aiohttp.ClientResponse, max_body: int,
                     sink: Callable[[bytes], None] | None) -> bytes:
    if sink is None:
        return await response.content.read(max_body)
    left = max_body
    while left > 0 and (chunk := await response.content.read(min(left, 65536))):
        sink(chunk)
        left -= len(chunk)
    return b""


async def _once(network: Network, method: str, url: str, *, transcript: Transcript | None,
                headers: Mapping[str, str] | None, data: bytes | None, max_body: int,
                middlewares: tuple[aiohttp.ClientMiddlewareType, ...],
                tls: ssl.SSLContext | None = None,
                sink: Callable[[bytes], None] | None = None) -> HttpResponse:
    host, port = _host_port(url)
    release = await network.slot(host, port)
    sent_headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **(headers or {})}
    limits = network.limits
    timeout = aiohttp.ClientTimeout(total=limits.probe_budget, connect=limits.connect_timeout,
                                    sock_read=limits.read_timeout)
    connector = aiohttp.TCPConnector(
        force_close=True, limit=1,
        ssl=(tls or insecure_tls_context()) if url.startswith("https:") else False)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False, max_line_size=8190,
                                         max_field_size=8190) as session:
            if transcript is not None:
                transcript.record("sent", url, _format_request(method, url, sent_headers, data))
            async with session.request(method, url, headers=sent_headers, data=data,
                                       allow_redirects=False,
                                       middlewares=middlewares) as response:
                # A redirect's body is not the resource: it is kept (capped), never sunk,
                # so an image's digest covers the image alone.
                redirect = 300 <= response.status < 400
                body = await _read_body(response,
                                        min(max_body, MAX_BODY_BYTES) if redirect else max_body,
                                        None if redirect else sink)
                truncated = False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    truncated = not response.content.at_eof() and \
                        bool(await response.content.read(1))
                merged: dict[str, str] = {}
                for name, value in response.headers.items():
                    key = name.lower()
                    merged[key] = f"{merged[key]}, {value}"[:4096] if key in merged \
                        else value[:4096]
                if transcript is not None:
                    head = "\n".join([f"HTTP {response.status} {response.reason or ''}"] +
                                     [f"{k}: {v}" for k, v in merged.items()])
                    transcript.record("received", url, head + "\n\n" +
                                      body[:2048].decode("utf-8", "replace"))
                return HttpResponse(str(response.url), response.status, merged, body, truncated)
    except aiohttp.ClientError as exc:
        # No query string in the message: GET logins carry the password there, and this text
        # ends up in the report's errors, where the transcript's redaction does not reach.
        shown = urlsplit(url)._replace(query="", fragment="").geturl()
        detail = str(exc).replace(url, shown)
        failure = CertificateError if isinstance(
            exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)) \
            and tls is not None else ConnectionError
        raise failure(f"HTTP {method} {shown[:200]}: {type(exc).__name__}: {detail}"
                              [:300]) from None
    finally:
        release()
