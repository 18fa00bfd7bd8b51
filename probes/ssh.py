"""SSH: default credentials and the "none" authentication method, through paramiko.

paramiko is blocking and runs a thread of its own per connection, so every exchange here runs in
the scanner's bounded thread pool while the probe holds a network slot (whose grant is the scope
check). The TCP socket is opened only after that, inside the worker, and handed to paramiko
wrapped so that it can neither read more than a byte cap nor past a deadline; the transport is
closed and its thread joined before the slot is released. Nothing here opens a session channel
or runs a command: a completed authentication is the proof.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import paramiko

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.authflow import (
    Attempt,
    BruteForceProtection,
    CredentialProbe,
    Outcome,
    brute_force_metadata,
    random_credentials,
)
from scanner.models import Intrusiveness, Severity
from scanner.net import BoundedSocket, Limits

T = TypeVar("T")

# paramiko logs every device-caused failure with a traceback at ERROR; those failures reach the
# report as recorded errors, so its log goes to a channel of ours that stays quiet.
PARAMIKO_LOG_CHANNEL = "iotbaseline.paramiko"
_paramiko_log = logging.getLogger(PARAMIKO_LOG_CHANNEL)
_paramiko_log.propagate = False
_paramiko_log.addHandler(logging.NullHandler())

MAX_SSH_BYTES = 256 * 1024  # a handshake plus one authentication is a few KiB
JOIN_WAIT = 2.0  # how long a closed transport's thread gets to end
MAX_PROMPT_ROUNDS = 4  # keyboard-interactive question rounds we answer, at most
MAX_PROMPTS = 16  # questions in one keyboard-interactive round, at most
MAX_METHODS = 16
PASSWORD_METHODS = ("password", "keyboard-interactive")

SSH_REFERENCES = (
    "https://www.rfc-editor.org/rfc/rfc4252",
    "https://www.etsi.org/deliver/etsi_en/303600_303699/303645/02.01.01_60/"
    "en_303645v020101p.pdf",
)


def _clean(text: str, limit: int = 255) -> str:
    """A device string as data: printable, one line, capped."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


def _methods(values: Sequence[Any]) -> list[str]:
    return [_clean(str(value), 64) for value in list(values)[:MAX_METHODS]]



class _UnanswerablePrompt(Exception):
    """keyboard-interactive asked something other than one password."""


class _BoundedAuthHandler(paramiko.AuthHandler):  # type: ignore[misc]
    """paramiko loops over the question count a server claims (up to 2**32, on an exhausted
    message) before our handler sees the questions: refuse absurd counts first."""

    def _parse_userauth_info_request(self, m: paramiko.Message) -> None:
        m.get_text()  # name
        m.get_text()  # instructions
        m.get_binary()  # language tag
        count = m.get_int()
        if count > MAX_PROMPTS:
            raise paramiko.SSHException(f"keyboard-interactive sent {count} questions")
        m.rewind()
        super()._parse_userauth_info_request(m)


class _Transport(paramiko.Transport):  # type: ignore[misc]
    """paramiko's client transport with the bounded keyboard-interactive parser."""

    def auth_interactive(self, username: str, handler: Callable[..., list[str]],
                         submethods: str = "") -> list[str]:
        # As paramiko's own auth_interactive, with the bounded handler class.
        if not self.active or not self.initial_kex_done:
            raise paramiko.SSHException("No existing session")
        event = threading.Event()
        self.auth_handler = _BoundedAuthHandler(self)
        self.auth_handler.auth_interactive(username, handler, event, submethods)
        answer: list[str] = self.auth_handler.wait_for_response(event)
        return answer


class _SshSession:
    """One SSH connection driven from a worker thread; ``abort`` is safe from the event loop."""

    def __init__(self, host: str, port: int, limits: Limits) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.started: float | None = None  # set when a pool thread picks the work up
        self.deadline = 0.0
        self.events: list[tuple[str, str]] = []  # (direction, text) for the transcript
        self.banner = ""
        self.host_key = ""
        self.passwords_sent = 0
        self._lock = threading.Lock()
        self._aborted = False
        self._sock: BoundedSocket | None = None
        self._transport: paramiko.Transport | None = None

    @property
    def hard_limit(self) -> float:
        """Connect, identification, key exchange and two authentication waits at most."""
        return self.limits.connect_timeout + 5 * self.limits.read_timeout

    def note(self, direction: str, text: str) -> None:
        if len(self.events) < 32:
            self.events.append((direction, text))

    def open(self) -> paramiko.Transport:
        """Connect and negotiate; raise ConnectionError/TimeoutError/OSError when it fails.

        The clock starts here, not when the work was queued: a busy pool must not eat the time
        of an attempt (a spurious timeout would read as a lockout sign)."""
        with self._lock:
            if self._aborted:
                raise ConnectionAbortedError("SSH attempt cancelled before it started")
            self.started = time.monotonic()
            self.deadline = self.started + self.hard_limit
        raw = socket.create_connection((self.host, self.port),
                                       timeout=self.limits.connect_timeout)
        guarded = BoundedSocket(raw, self.deadline,
                                 min(MAX_SSH_BYTES, self.limits.max_read_bytes))
        with self._lock:
            self._sock = guarded
            if self._aborted:
                guarded.close()
                raise ConnectionAbortedError("SSH attempt cancelled")
        self.note("event", "connected")
        try:
            transport = _Transport(guarded)
        except Exception as exc:
            raise ConnectionError(f"SSH transport setup failed: {exc}") from None
        with self._lock:
            self._transport = transport
        transport.set_log_channel(PARAMIKO_LOG_CHANNEL)
        transport.banner_timeout = self.limits.read_timeout
        transport.handshake_timeout = 2 * self.limits.read_timeout
        transport.auth_timeout = 2 * self.limits.read_timeout
        negotiated = threading.Event()
        transport.start_client(event=negotiated)
        negotiated.wait(max(0.0, min(self.deadline - time.monotonic(),
                                     self.limits.read_timeout * 3)))
        self.banner = _clean(transport.remote_version or "")
        if self.banner:
            self.note("received", self.banner)
        if not transport.is_active():
            raise self._failure(transport.get_exception(), "SSH negotiation failed")
        if not negotiated.is_set():
            raise TimeoutError("SSH key exchange did not finish in time")
        with contextlib.suppress(Exception):
            key = transport.get_remote_server_key()
            self.host_key = _clean(f"{key.get_name()} {key.fingerprint}")
            self.note("event", f"host key {self.host_key}")
        return transport

    def _failure(self, exc: BaseException | None, what: str) -> Exception:
        """The exception a probe should see for a transport that died."""
        stopped = self._sock.stopped if self._sock is not None else ""
        if stopped == "deadline":
            return TimeoutError(f"{what}: no complete answer in {self.hard_limit:.1f} s")
        if stopped == "byte cap":
            return ConnectionError(f"{what}: the server sent more than {MAX_SSH_BYTES} bytes")
        if exc is None or isinstance(exc, EOFError):
            return ConnectionError(f"{what}: the server closed the connection")
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            return TimeoutError(f"{what}: the server did not answer in time")
        if isinstance(exc, paramiko.IncompatiblePeer):
            hint = "an SSH-1 only server?" if self.banner.startswith("SSH-1.") \
                else "no algorithm in common"
            return ConnectionError(f"{what}: {exc} ({hint})")
        if isinstance(exc, OSError):
            return exc
        text = (str(exc) or type(exc).__name__).replace("protocol banner[", "protocol banner: [")
        text = text.replace("protocol banner'", "protocol banner: '")
        return ConnectionError(f"{what}: {_clean(text, 200)}")

    def auth_failure(self, transport: paramiko.Transport,
                     exc: paramiko.AuthenticationException) -> Exception | None:
        """None for a clear refusal; the exception to raise when the server stopped talking."""
        if "timeout" in str(exc).lower():
            return TimeoutError("SSH server did not answer the authentication request in time")
        if not transport.is_active():
            return self._failure(transport.get_exception(), "during authentication")
        return None

    def abort(self) -> None:
        """Stop the worker's I/O now (from any thread); the worker then closes and joins."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            sock.shutdown()

    def close(self) -> None:
        """Close the transport and socket and join paramiko's thread (in the worker)."""
        with self._lock:
            self._aborted = True
            transport, sock = self._transport, self._sock
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if transport is not None and transport.is_alive() \
                and transport is not threading.current_thread():
            transport.join(JOIN_WAIT)


async def _run_session(ctx: ProbeContext, work: Callable[[_SshSession], T]) -> T:
    """Run ``work`` on a fresh SSH connection to the target in the blocking pool.

    The slot is taken (scope check included) before any socket exists and released only after
    the worker ended, so paramiko's thread never outlives the probe by more than JOIN_WAIT."""
    host, port = ctx.target.address, ctx.target.port
    release = await ctx.network.slot(host, port)
    session = _SshSession(host, port, ctx.network.limits)

    def worker() -> T:
        try:
            return work(session)
        finally:
            session.close()

    future = asyncio.ensure_future(ctx.run_blocking(worker))
    try:
        # asyncio.wait neither cancels the worker's future on a timeout nor when this task is
        # cancelled: the finally below stops the worker's I/O and waits for its clean-up. The
        # backstop counts from when a pool thread started the work, not from the queueing.
        while True:
            done, _ = await asyncio.wait({future}, timeout=0.25)
            if done:
                return future.result()
            started = session.started
            if started is not None and \
                    time.monotonic() > started + session.hard_limit + JOIN_WAIT:
                raise TimeoutError(f"SSH exchange exceeded {session.hard_limit:.1f} s")
    finally:
        if not future.done():
            session.abort()
            await asyncio.wait({future}, timeout=JOIN_WAIT + 1.0)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: the worker's error was already reported
        release()
        endpoint = f"ssh://{_host_for_url(host)}:{port}"
        for direction, text in session.events:
            ctx.transcript.record(direction, endpoint, text)


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class _MethodProbe:
    """What the "none" request told us about one user name."""

    accepted: bool = False
    partial: bool = False
    allowed: list[str] | None = None  # None: the server did not say


def _ask_methods(session: _SshSession, transport: paramiko.Transport,
                 username: str) -> _MethodProbe:
    """The "none" request every SSH client sends first: it lists the methods the server offers
    (and is accepted only by a server that needs no authentication)."""
    session.note("sent", f"userauth none user={username}")
    result = _MethodProbe()
    try:
        remaining = transport.auth_none(username)
    except paramiko.BadAuthenticationType as exc:
        result.allowed = _methods(exc.allowed_types)
    except paramiko.AuthenticationException as exc:
        problem = session.auth_failure(transport, exc)
        if problem is not None:
            raise problem from None
    else:
        result.accepted = transport.is_authenticated()
        result.partial = not result.accepted
        result.allowed = _methods(remaining or [])
    if result.accepted:
        session.note("received", "none accepted: authenticated with no credentials")
    elif result.allowed is not None:
        session.note("received", "offered methods: " + (", ".join(result.allowed) or "(none)"))
    else:
        session.note("received", "none refused; the server did not list its methods")
    return result


class _PasswordPrompts:
    """keyboard-interactive handler: one prompt mentioning "password" gets the password."""

    def __init__(self, session: _SshSession, password: str) -> None:
        self.session = session
        self.password = password
        self.rounds = 0
        self.unanswered = ""

    def __call__(self, title: str, instructions: str,
                 prompts: list[tuple[str, bool]]) -> list[str]:
        self.rounds += 1
        if self.rounds > MAX_PROMPT_ROUNDS:
            self.unanswered = f"more than {MAX_PROMPT_ROUNDS} rounds of questions"
            raise _UnanswerablePrompt(self.unanswered)
        if not prompts:
            return []
        shown = " | ".join(_clean(prompt, 80) for prompt, _ in prompts[:4])
        self.session.note("received", f"keyboard-interactive prompts: {shown}")
        if len(prompts) == 1 and "password" in prompts[0][0].lower():
            self.session.note("sent", f"keyboard-interactive answer {self.password}")
            self.session.passwords_sent += 1
            return [self.password]
        self.unanswered = f"asked something other than a password ({shown})"
        raise _UnanswerablePrompt(self.unanswered)


@dataclass
class _PasswordResult:
    attempt: Attempt
    allowed: list[str] | None = None


def _password_attempt(session: _SshSession, username: str, password: str) -> _PasswordResult:
    transport = session.open()
    methods = _ask_methods(session, transport, username)
    if methods.accepted:
        return _PasswordResult(Attempt(Outcome.SUCCESS, "the server accepted the 'none' method: "
                                                        "no credentials needed"), [])
    allowed = methods.allowed
    if allowed is not None and not any(method in allowed for method in PASSWORD_METHODS):
        offered = ", ".join(allowed) or "nothing"
        session.note("event", "password not sent: the server offers no password method")
        return _PasswordResult(Attempt(
            Outcome.NOT_OFFERED, f"password authentication not offered (offers {offered})"),
            allowed)
    if allowed is None or "password" in allowed:
        session.note("sent", f"userauth password user={username} password={password}")
        session.passwords_sent += 1
        try:
            remaining = transport.auth_password(username, password, fallback=False)
        except paramiko.BadAuthenticationType as exc:
            allowed = _methods(exc.allowed_types)
            if "keyboard-interactive" not in allowed:
                session.note("received", "password refused as a method; offers "
                             + (", ".join(allowed) or "nothing"))
                return _PasswordResult(Attempt(
                    Outcome.NOT_OFFERED, "password authentication not offered"), allowed)
        except paramiko.AuthenticationException as exc:
            problem = session.auth_failure(transport, exc)
            if problem is not None:
                raise problem from None
            session.note("received", "password refused")
            return _PasswordResult(Attempt(Outcome.FAILURE, "password refused"), allowed)
        else:
            return _PasswordResult(_outcome(session, transport, remaining, "password"), allowed)
    return _PasswordResult(_interactive_attempt(session, transport, username, password), allowed)


def _interactive_attempt(session: _SshSession, transport: paramiko.Transport, username: str,
                         password: str) -> Attempt:
    handler = _PasswordPrompts(session, password)
    session.note("sent", f"userauth keyboard-interactive user={username}")
    try:
        remaining = transport.auth_interactive(username, handler)
    except paramiko.AuthenticationException as exc:
        problem = session.auth_failure(transport, exc)
        if problem is not None and not handler.unanswered:
            raise problem from None
        detail = f"keyboard-interactive {handler.unanswered}" if handler.unanswered \
            else "keyboard-interactive password refused"
        session.note("received", detail)
        return Attempt(Outcome.FAILURE, detail)
    except (_UnanswerablePrompt, paramiko.SSHException):
        if not handler.unanswered:
            raise
        session.note("event", f"keyboard-interactive {handler.unanswered}")
        return Attempt(Outcome.FAILURE, f"keyboard-interactive {handler.unanswered}")
    return _outcome(session, transport, remaining, "keyboard-interactive")


def _outcome(session: _SshSession, transport: paramiko.Transport, remaining: Sequence[Any],
             method: str) -> Attempt:
    if transport.is_authenticated():
        session.note("received", f"authentication succeeded ({method})")
        return Attempt(Outcome.SUCCESS, f"SSH {method} authentication succeeded "
                                        f"(server {session.banner or 'unknown'})")
    further = ", ".join(_methods(remaining)) or "another method"
    session.note("received", f"{method} accepted, but the server still requires {further}")
    return Attempt(Outcome.FAILURE, f"{method} accepted but a further factor is required "
                                    f"({further})")


def _as_connection_error(exc: Exception) -> Exception:
    """paramiko raises its own types from odd servers; probes raise only the flow's types."""
    if isinstance(exc, ConnectionError | TimeoutError | OSError):
        return exc
    return ConnectionError(f"SSH: {_clean(str(exc) or type(exc).__name__, 200)}")


@dataclass
class _Seen:
    """What the attempts of one run learned about the server, for the facts."""

    banner: str = ""
    host_key: str = ""
    methods: list[str] | None = None
    not_offered: bool = False
    tried_passwords: int = 0


async def collect_auth_methods(ctx: ProbeContext) -> Facts:
    """One "none" request under a random user name: whether it is accepted, and the methods the
    server lists (what ssh-none-auth and ssh-password-auth judge)."""
    username, _ = random_credentials()

    def work(session: _SshSession) -> tuple[_MethodProbe, str, str]:
        try:
            result = _ask_methods(session, session.open(), username)
        except Exception as exc:
            raise _as_connection_error(exc) from None
        return result, session.banner, session.host_key

    result, banner, host_key = await _run_session(ctx, work)
    return {"username": username, "banner": banner, "host_key": host_key,
            "none_accepted": result.accepted, "partial": result.partial,
            "allowed_methods": result.allowed}


class SshDefaultCredentials(CredentialProbe):
    credential_protocol = "ssh"
    metadata = ProbeMetadata(
        check_id="ssh-default-credentials",
        title="SSH does not accept default credentials",
        description="A device whose SSH login accepts a factory-default user name and password "
                    "can be taken over by anyone who can reach it; IoT botnets try these lists "
                    "first.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.AUTH_ATTEMPT,
        protocols=("ssh",),
        remediation="Set a unique password per device (or disable password login and use keys); "
                    "remove factory accounts from the firmware.",
        references=SSH_REFERENCES,
        categories=("default-credentials",),
    )

    def __init__(self) -> None:
        # One instance serves concurrent runs on many targets: state is kept per context.
        self._runs: weakref.WeakKeyDictionary[ProbeContext, _Seen] = \
            weakref.WeakKeyDictionary()

    async def collect(self, ctx: ProbeContext) -> Facts:
        seen = self._runs[ctx] = _Seen()
        try:
            facts = await super().collect(ctx)
        finally:
            self._runs.pop(ctx, None)
        facts.update({"banner": seen.banner, "host_key": seen.host_key,
                      "auth_methods": seen.methods,
                      # False only when no attempt could send a password at all
                      "password_offered": not seen.not_offered or seen.tried_passwords > 0,
                      "passwords_sent": seen.tried_passwords})
        return facts

    async def attempt(self, ctx: ProbeContext, username: str, password: str) -> Attempt:
        seen = self._runs.get(ctx) or _Seen()

        def work(session: _SshSession) -> _PasswordResult:
            try:
                return _password_attempt(session, username, password)
            except Exception as exc:
                raise _as_connection_error(exc) from None
            finally:
                seen.banner = seen.banner or session.banner
                seen.host_key = seen.host_key or session.host_key
                seen.tried_passwords += session.passwords_sent

        result = await _run_session(ctx, work)
        if result.allowed is not None:
            seen.methods = result.allowed
        if result.attempt.detail.startswith("password authentication not offered"):
            seen.not_offered = True
        return result.attempt

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = super().summarize(facts)
        if facts.get("banner"):
            summary["server"] = str(facts["banner"])
        methods = facts.get("auth_methods")
        if methods is not None:
            summary["auth methods"] = ", ".join(methods) or "none listed"
        if facts.get("password_offered") is False:
            summary["password login"] = "not offered: no password method exists"
        return summary


class SshNoneAuth(Probe):
    metadata = ProbeMetadata(
        check_id="ssh-none-auth",
        title="SSH requires authentication",
        description="An SSH server that accepts the 'none' authentication method lets anyone "
                    "log in with any user name and no credentials at all.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("ssh",),
        remediation="Require password or key authentication for every account (for OpenSSH: no "
                    "PermitEmptyPasswords, no empty-password accounts; for Dropbear: no -B / "
                    "blank password logins); update the firmware.",
        references=SSH_REFERENCES,
        categories=("unauthenticated-access",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        return await collect_auth_methods(ctx)

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if not facts.get("none_accepted"):
            return []
        return [Observation(
            summary=f"SSH on port {target.port} authenticated a random user name "
                    f"({facts.get('username', '?')}) with the 'none' method: no credentials "
                    "are required.",
            severity=Severity.CRITICAL, key="unauthenticated-access",
            facts={"kind": "unauthenticated-access", "username": str(facts.get("username", "")),
                   "server": str(facts.get("banner", "")),
                   "host_key": str(facts.get("host_key", ""))})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = {"server": str(facts.get("banner", ""))}
        methods = facts.get("allowed_methods")
        summary["auth methods"] = "not listed" if methods is None \
            else ", ".join(methods) or "none listed"
        if facts.get("partial"):
            summary["note"] = "'none' was a partial success: another method is still required"
        return summary


class SshBruteForceProtection(BruteForceProtection):
    login = SshDefaultCredentials
    metadata = brute_force_metadata("ssh-brute-force-protection", "SSH", ("ssh",))
