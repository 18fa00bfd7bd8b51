"""Signed webhook deliveries: how a schedule tells the operator's own systems what drifted.

Each delivery is a JSON POST whose raw body is signed with HMAC-SHA256 under a secret read from
an environment variable at send time (``X-Iotbaseline-Signature: sha256=<hex>``): the store only
ever holds the variable's *name*, so a copy of the database signs nothing. A failed attempt
(connection error, timeout, 429 or 5xx) is retried with exponential back-off and full jitter,
bounded in attempts and in total time; any other answer is final. Every attempt is logged in the
returned ``Delivery`` so the outcome can be kept with the drift it announced. Webhook URLs are
the operator's endpoints, not scan targets: nothing here probes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from scanner import __version__
from scanner.models import utc_now

SIGNATURE_HEADER = "X-Iotbaseline-Signature"
EVENT_HEADER = "X-Iotbaseline-Event"
DELIVERY_HEADER = "X-Iotbaseline-Delivery"  # the same on every retry: receivers de-duplicate
_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True)
class WebhookTarget:
    """Where to post and which environment variable holds the signing secret."""

    url: str
    secret_env: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname or " " in self.url:
            raise ValueError(f"webhook URL must be http(s)://host/…: {self.url[:200]!r}")
        if not self.secret_env or not set(self.secret_env) <= _ENV_NAME_CHARS \
                or self.secret_env[0].isdigit():
            raise ValueError(f"not an environment variable name: {self.secret_env[:100]!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on one delivery: attempts, back-off between them and total time."""

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    total_s: float = 300.0
    request_timeout_s: float = 10.0

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max, first × 2^(failures-1))]."""
        return rng() * min(self.max_delay_s, self.first_delay_s * 2.0 ** (failures - 1))


DEFAULT_RETRY = RetryPolicy()


class Attempt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str  # ISO 8601 UTC
    status: int | None = None  # HTTP status, None when no answer
    error: str = ""


class Delivery(BaseModel):
    """The log of one webhook delivery, kept with the drift it announced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_id: str
    url: str
    event: str
    delivered: bool
    attempts: list[Attempt] = Field(default_factory=list)
    error: str = ""  # why it was given up, when it was


def not_sent(url: str, event: str, reason: str) -> Delivery:
    """The log of a delivery given up before any attempt (no secret, an invalid stored URL)."""
    return Delivery(delivery_id=str(uuid.uuid4()), url=url[:2000], event=event, delivered=False,
                    error=reason)


def sign(secret: bytes, body: bytes) -> str:
    """The signature header value for ``body``: receivers recompute it over the raw bytes and
    compare with ``hmac.compare_digest``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


async def deliver(target: WebhookTarget, event: str, payload: dict[str, Any],
                  policy: RetryPolicy = DEFAULT_RETRY) -> Delivery:
    """Post ``payload`` to one webhook until it is accepted (2xx), refused for good, or the
    policy's bounds are reached; never raises for a failed delivery."""
    secret = os.environ.get(target.secret_env)
    if not secret:
        return not_sent(target.url, event, f"signing secret variable {target.secret_env} is "
                                           "not set; not sent unsigned")
    delivery_id = str(uuid.uuid4())
    body = json.dumps({"event": event, "delivery_id": delivery_id,
                       "sent_at": utc_now().isoformat(), "data": payload},
                      sort_keys=True, ensure_ascii=True).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret.encode(), body),
               EVENT_HEADER: event, DELIVERY_HEADER: delivery_id,
               "User-Agent": f"iotbaseline/{__version__}"}
    deadline = time.monotonic() + policy.total_s
    attempts: list[Attempt] = []
    timeout = aiohttp.ClientTimeout(total=policy.request_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            attempt = await _post(session, target.url, body, headers)
            attempts.append(attempt)
            if attempt.status is not None and 200 <= attempt.status < 300:
                return Delivery(delivery_id=delivery_id, url=target.url, event=event,
                                delivered=True, attempts=attempts)
            if attempt.status is not None and not _retryable(attempt.status):
                reason = f"refused with HTTP {attempt.status}"
                break
            pause = policy.delay(len(attempts))
            if len(attempts) >= policy.attempts:
                reason = f"gave up after {len(attempts)} attempts"
                break
            if time.monotonic() + pause >= deadline:
                reason = f"gave up after {policy.total_s:g} s ({len(attempts)} attempts)"
                break
            await asyncio.sleep(pause)
    return Delivery(delivery_id=delivery_id, url=target.url, event=event, delivered=False,
                    attempts=attempts, error=reason)


async def _post(session: aiohttp.ClientSession, url: str, body: bytes,
                headers: dict[str, str]) -> Attempt:
    """One POST; redirects are not followed (the signed body goes only where configured) and
    the answer's body is not read."""
    at = utc_now().isoformat()
    try:
        async with session.post(url, data=body, headers=headers,
                                allow_redirects=False) as response:
            return Attempt(at=at, status=response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Attempt(at=at, error=f"{type(exc).__name__}: {str(exc)[:300]}")


async def deliver_all(targets: Sequence[WebhookTarget], event: str, payload: dict[str, Any],
                      policy: RetryPolicy = DEFAULT_RETRY) -> list[Delivery]:
    """Every webhook at once: one slow receiver does not hold back the others."""
    return list(await asyncio.gather(*(deliver(t, event, payload, policy) for t in targets)))
