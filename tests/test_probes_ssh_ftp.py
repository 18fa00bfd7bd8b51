"""SSH and FTP probes against in-process fake devices on 127.96.1.0/24 (never port 2024).

SSH fakes are paramiko servers in threads (one listener thread each, stopped and joined by the
fixture); hostile SSH and all FTP fakes are asyncio servers. Every fake counts what it was sent,
so the tests check the probes' behaviour at the device: no 4th attempt after a lockout, no
password sent where none is offered, no connection to an address a PASV reply names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paramiko
import pytest

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeSettings, Target
from probes.ftp import (
    ANONYMOUS_PASSWORD,
    FtpAnonymous,
    FtpDefaultCredentials,
    FtpProtocolError,
    parse_pasv,
    parse_reply,
    summarize_listing,
)
from probes.registry import LoadedProbe
from probes.ssh import MAX_SSH_BYTES, SshDefaultCredentials, SshNoneAuth
from profiles import Authentication
from profiles.credentials import CredentialEntry, CredentialStore
from scanner.models import Confidence, Device, Service, Severity
from scanner.net import REDACTED, BoundedSocket, Limits, Network, Transcript
from tests import fakes
from tests.helpers import NEVER_TOUCH_PORTS, ScanRunner, fast_profile, safe_scope

SSH_PORT = 2222
FTP_PORT = 2121
OUTSIDE = "127.96.2.9"  # where a hostile PASV reply points
HOLD = 20.0  # longest any fake here lives
SECRET = "s3cret-default"  # the fakes' default password: must never reach the evidence
assert SSH_PORT not in NEVER_TOUCH_PORTS and FTP_PORT not in NEVER_TOUCH_PORTS

_quiet = logging.getLogger("tests.fake-ssh")
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


# ------------------------------------------------------------------ driving a probe directly


@dataclass
class Run:
    facts: Facts
    observations: list[Observation]
    transcript: Transcript
    network: Network
    seconds: float

    @property
    def evidence(self) -> str:
        return "\n".join(f"{e.direction} {e.data}" for e in self.transcript.exchanges)

    @property
    def keys(self) -> list[str]:
        return [o.key for o in self.observations]


def _settings(protocol: str, pairs: list[tuple[str, str]], **budget: Any) -> ProbeSettings:
    entries = [CredentialEntry(vendor="generic", protocol=protocol, username=user,
                               password=password, source="tests: fake device")
               for user, password in pairs]
    return ProbeSettings(credentials=CredentialStore(entries),
                         authentication=Authentication(spacing=0, **budget))


def _target(address: str, port: int, protocol: str) -> Target:
    return Target(Device(address=address),
                  Service(port=port, transport="tcp", protocol=protocol))


async def collect(probe: Probe, address: str, port: int, protocol: str, *,
                  pairs: list[tuple[str, str]] | None = None, scope: tuple[str, ...] = (),
                  read_timeout: float = 1.0, per_host: int = 2, **budget: Any) -> Run:
    network = Network(safe_scope(address, *scope),
                      Limits(connect_timeout=1.0, read_timeout=read_timeout, rate=1000.0,
                             per_host=per_host))
    target = _target(address, port, protocol)
    transcript = Transcript()
    ctx = ProbeContext(target, network, transcript, _settings(protocol, pairs or [], **budget))
    started = time.monotonic()
    try:
        facts = await asyncio.wait_for(probe.collect(ctx), 15)
    finally:
        network.close()
    return Run(facts, probe.evaluate(target, facts), transcript, network,
               time.monotonic() - started)


def client_transports() -> list[threading.Thread]:
    """paramiko client threads still alive: the SSH probes must leave none behind."""
    return [t for t in threading.enumerate()
            if isinstance(t, paramiko.Transport) and not t.server_mode and t.is_alive()]


# ------------------------------------------------------------------ SSH fakes (paramiko)

HOST_KEY = paramiko.ECDSAKey.generate()


@dataclass
class SshRules:
    methods: str = "password"  # what get_allowed_auths answers
    users: dict[str, str] = field(default_factory=dict)
    accept_all: bool = False
    none_ok: bool = False
    prompt: str = "Password: "  # the keyboard-interactive question
    claimed_prompts: int | None = None  # a hostile question count sent instead of the real one
    auth_delay: float = 0.0
    lockout_after: int | None = None  # failures after which connections are closed at once
    hangup_at: int | None = None  # the failure at which the server drops the connection
    nones: list[str] = field(default_factory=list)
    passwords: list[tuple[str, str]] = field(default_factory=list)
    answers: list[tuple[str, list[str]]] = field(default_factory=list)
    channels: int = 0
    failures: int = 0
    connections: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ClaimedLength(list[tuple[str, bool]]):
    """No questions, but len() claims many: paramiko's server writes len() as the count."""

    def __init__(self, claimed: int) -> None:
        super().__init__()
        self.claimed = claimed

    def __len__(self) -> int:
        return self.claimed


class _SshInterface(paramiko.ServerInterface):  # type: ignore[misc]
    def __init__(self, rules: SshRules) -> None:
        self.rules = rules
        self.username = ""

    def get_allowed_auths(self, username: str) -> str:
        return self.rules.methods

    def _verdict(self, ok: bool) -> int:
        if ok:
            return paramiko.AUTH_SUCCESSFUL  # type: ignore[no-any-return]
        with self.rules.lock:
            self.rules.failures += 1
            failures = self.rules.failures
        if failures == self.rules.hangup_at:
            raise EOFError("the fake hangs up instead of answering")  # ends the transport
        return paramiko.AUTH_FAILED  # type: ignore[no-any-return]

    def check_auth_none(self, username: str) -> int:
        self.rules.nones.append(username)
        verdict: int = paramiko.AUTH_SUCCESSFUL if self.rules.none_ok else paramiko.AUTH_FAILED
        return verdict

    def check_auth_password(self, username: str, password: str) -> int:
        time.sleep(self.rules.auth_delay)
        with self.rules.lock:
            self.rules.passwords.append((username, password))
        return self._verdict("password" in self.rules.methods and (
            self.rules.accept_all or self.rules.users.get(username) == password))

    def check_auth_interactive(self, username: str, submethods: str) -> Any:
        if "keyboard-interactive" not in self.rules.methods:
            return paramiko.AUTH_FAILED
        self.username = username
        query = paramiko.InteractiveQuery("", "", (self.rules.prompt, False))
        if self.rules.claimed_prompts is not None:
            query.prompts = _ClaimedLength(self.rules.claimed_prompts)
        return query

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        self.rules.answers.append((self.username, list(responses)))
        return self._verdict(self.rules.accept_all or (
            len(responses) == 1 and self.rules.users.get(self.username) == responses[0]))

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self.rules.channels += 1
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED  # type: ignore[no-any-return]


class FakeSsh:
    """A paramiko SSH server on address:SSH_PORT served by one listener thread."""

    def __init__(self, address: str, rules: SshRules) -> None:
        self.address = address
        self.rules = rules
        self._stop = threading.Event()
        self._listener = socket.create_server((address, SSH_PORT), reuse_port=False)
        self._listener.settimeout(0.05)
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, name=f"fake-ssh {address}",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + HOLD
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            rules = self.rules
            rules.connections += 1
            if rules.lockout_after is not None and rules.failures >= rules.lockout_after:
                rules.refused += 1
                conn.close()  # locked out: hang up before the identification string
                continue
            transport = paramiko.Transport(conn)
            transport.set_log_channel("tests.fake-ssh")
            transport.add_server_key(HOST_KEY)
            transport.start_server(event=threading.Event(), server=_SshInterface(rules))
            self._transports.append(transport)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        for transport in self._transports:
            transport.close()
        for transport in self._transports:
            transport.join(2)
        assert not self._thread.is_alive()
        assert not [t for t in self._transports if t.is_alive()], "fake SSH threads left"


@pytest.fixture
def ssh_device() -> Iterator[Callable[..., FakeSsh]]:
    started: list[FakeSsh] = []

    def start(address: str, **rules: Any) -> FakeSsh:
        fake = FakeSsh(address, SshRules(**rules))
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture(autouse=True)
def _no_paramiko_client_left() -> Iterator[None]:
    yield
    assert not client_transports(), "an SSH probe left a paramiko thread running"


# ------------------------------------------------------------------ SSH: default credentials


async def test_ssh_default_credential_found_and_redacted(
        ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.11", users={"admin": SECRET})
    run = await collect(SshDefaultCredentials(), "127.96.1.11", SSH_PORT, "ssh",
                        pairs=[("root", "toor-wrong"), ("admin", SECRET)])
    assert run.keys == ["default-credential"]
    [finding] = run.observations
    assert finding.confidence is Confidence.CONFIRMED  # the random control was refused
    assert finding.facts["username"] == "admin" and finding.facts["password"] == REDACTED
    # root, admin, then the negative control; all by password, no session ever opened
    assert [user for user, _ in fake.rules.passwords][:2] == ["root", "admin"]
    assert len(fake.rules.passwords) == 3 and fake.rules.channels == 0
    assert run.facts["auth_methods"] == ["password"] and run.facts["password_offered"]
    assert run.facts["banner"].startswith("SSH-2.0-")
    evidence = run.evidence
    assert SECRET not in evidence and "toor-wrong" not in evidence and REDACTED in evidence
    assert "offered methods: password" in evidence and "authentication succeeded" in evidence
    assert "host key ecdsa-sha2-nistp256 SHA256:" in evidence
    assert run.seconds < 5


async def test_ssh_hardened_device_has_no_finding(ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.12", users={"admin": "a-unique-password"})
    run = await collect(SshDefaultCredentials(), "127.96.1.12", SSH_PORT, "ssh",
                        pairs=[("admin", "admin"), ("root", "root")])
    assert run.observations == []
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure", "failure"]
    assert len(fake.rules.passwords) == 2 and run.facts["control"] is None


async def test_ssh_accept_everything_is_not_a_default_credential(
        ssh_device: Callable[..., FakeSsh]) -> None:
    ssh_device("127.96.1.13", accept_all=True)
    run = await collect(SshDefaultCredentials(), "127.96.1.13", SSH_PORT, "ssh",
                        pairs=[("admin", "admin")])
    assert run.keys == ["authentication-not-enforced"]
    assert run.observations[0].severity is Severity.CRITICAL


async def test_ssh_keyboard_interactive_only(ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.14", methods="keyboard-interactive", users={"admin": SECRET})
    run = await collect(SshDefaultCredentials(), "127.96.1.14", SSH_PORT, "ssh",
                        pairs=[("admin", "wrong-one"), ("admin", SECRET)])
    assert run.keys == ["default-credential"]
    assert fake.rules.passwords == []  # "password" is not offered, so never used
    assert fake.rules.answers[:2] == [("admin", ["wrong-one"]), ("admin", [SECRET])]
    assert "keyboard-interactive authentication succeeded" in run.facts["success"]["detail"]
    assert SECRET not in run.evidence and "Password:" in run.evidence


async def test_ssh_keyboard_interactive_other_question_is_not_answered(
        ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.15", methods="keyboard-interactive", users={"admin": SECRET},
                      prompt="Verification code: ")
    run = await collect(SshDefaultCredentials(), "127.96.1.15", SSH_PORT, "ssh",
                        pairs=[("admin", SECRET)])
    assert run.observations == []
    [attempt] = run.facts["attempts"]
    assert attempt["outcome"] == "failure" and "other than a password" in attempt["detail"]
    assert fake.rules.answers == []  # the password was not typed into a code prompt


async def test_ssh_absurd_question_count_is_refused_quickly(
        ssh_device: Callable[..., FakeSsh]) -> None:
    """paramiko would loop 2**32 times over an empty message before asking our handler."""
    ssh_device("127.96.1.26", methods="keyboard-interactive", claimed_prompts=2**32 - 1)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="4294967295 questions"):
        await collect(SshDefaultCredentials(), "127.96.1.26", SSH_PORT, "ssh",
                      pairs=[("admin", SECRET)])
    assert time.monotonic() - started < 3


async def test_ssh_publickey_only_never_receives_a_password(
        ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.16", methods="publickey", users={"admin": SECRET})
    probe = SshDefaultCredentials()
    run = await collect(probe, "127.96.1.16", SSH_PORT, "ssh",
                        pairs=[("admin", SECRET), ("root", "root")])
    assert run.observations == []
    assert fake.rules.passwords == [] and fake.rules.answers == []
    assert run.facts["password_offered"] is False and run.facts["passwords_sent"] == 0
    assert run.facts["auth_methods"] == ["publickey"]
    assert all(a["detail"].startswith("password authentication not offered")
               for a in run.facts["attempts"])
    assert "no password method exists" in probe.summarize(run.facts)["password login"]


async def test_ssh_lockout_stops_the_flow(ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.17", users={"admin": SECRET}, lockout_after=3)
    pairs = [("admin", f"guess-{n}") for n in range(6)] + [("admin", SECRET)]
    run = await collect(SshDefaultCredentials(), "127.96.1.17", SSH_PORT, "ssh", pairs=pairs,
                        max_per_account=10)
    assert len(fake.rules.passwords) == 3  # never a 4th password on the account
    assert fake.rules.refused == 1  # the 4th connection was the last one
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure"] * 3 + ["blocked"]
    assert "stopped answering after 3" in run.facts["lockout"]
    assert run.observations == []


async def test_ssh_hangup_during_authentication_is_a_lockout_sign(
        ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.23", users={"admin": SECRET}, hangup_at=2)
    pairs = [("admin", "guess-1"), ("root", "guess-2"), ("admin", SECRET)]
    run = await collect(SshDefaultCredentials(), "127.96.1.23", SSH_PORT, "ssh", pairs=pairs)
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure", "blocked"]
    assert "closed the connection" in run.facts["lockout"]
    assert len(fake.rules.passwords) == 2 and run.observations == []


async def test_ssh_hangup_at_first_attempt_is_an_error(
        ssh_device: Callable[..., FakeSsh]) -> None:
    ssh_device("127.96.1.24", users={"admin": SECRET}, hangup_at=1)
    with pytest.raises(ConnectionError, match="during authentication"):
        await collect(SshDefaultCredentials(), "127.96.1.24", SSH_PORT, "ssh",
                      pairs=[("admin", "guess-1")])


async def test_ssh_budget_keeps_three_per_account(ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.18", users={"admin": SECRET}, lockout_after=3)
    pairs = [("admin", f"guess-{n}") for n in range(5)]
    run = await collect(SshDefaultCredentials(), "127.96.1.18", SSH_PORT, "ssh", pairs=pairs)
    assert len(fake.rules.passwords) == 3 and fake.rules.refused == 0
    assert len(run.facts["attempts"]) == 3 and run.facts["lockout"] is None


async def test_ssh_slow_device_still_judged(ssh_device: Callable[..., FakeSsh]) -> None:
    ssh_device("127.96.1.19", users={"admin": SECRET}, auth_delay=0.4)
    run = await collect(SshDefaultCredentials(), "127.96.1.19", SSH_PORT, "ssh",
                        pairs=[("admin", SECRET)])
    assert run.keys == ["default-credential"]


async def test_ssh_time_limit_starts_when_the_pool_runs_the_work(
        ssh_device: Callable[..., FakeSsh]) -> None:
    """A busy blocking pool delays an attempt; it must not turn the delay into a timeout."""
    ssh_device("127.96.1.25", none_ok=True)
    network = Network(safe_scope("127.96.1.25"), Limits(connect_timeout=0.5, read_timeout=0.3,
                                                         blocking_workers=1, rate=1000.0))
    ctx = ProbeContext(_target("127.96.1.25", SSH_PORT, "ssh"), network, Transcript())
    try:
        busy = asyncio.ensure_future(network.run_blocking(time.sleep, 2.5))  # > hard limit
        await asyncio.sleep(0.05)
        facts = await asyncio.wait_for(SshNoneAuth().collect(ctx), 10)
        await busy
    finally:
        network.close()
    assert facts["none_accepted"]


# ------------------------------------------------------------------ SSH: "none" method


async def test_ssh_none_auth_found(ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.20", none_ok=True)
    run = await collect(SshNoneAuth(), "127.96.1.20", SSH_PORT, "ssh")
    assert run.keys == ["unauthenticated-access"]
    assert fake.rules.nones == [run.facts["username"]] and run.facts["username"] != "root"
    assert fake.rules.passwords == [] and fake.rules.channels == 0
    assert "none accepted" in run.evidence


async def test_ssh_none_auth_refused_lists_methods(ssh_device: Callable[..., FakeSsh]) -> None:
    ssh_device("127.96.1.21", methods="publickey,password")
    probe = SshNoneAuth()
    run = await collect(probe, "127.96.1.21", SSH_PORT, "ssh")
    assert run.observations == []
    assert run.facts["allowed_methods"] == ["publickey", "password"]
    assert probe.summarize(run.facts)["auth methods"] == "publickey, password"


async def test_ssh_credential_probe_on_none_server_says_not_enforced(
        ssh_device: Callable[..., FakeSsh]) -> None:
    fake = ssh_device("127.96.1.22", none_ok=True)
    run = await collect(SshDefaultCredentials(), "127.96.1.22", SSH_PORT, "ssh",
                        pairs=[("admin", "admin")])
    assert run.keys == ["authentication-not-enforced"]
    assert fake.rules.passwords == []  # no password needed, so none was sent


# ------------------------------------------------------------------ SSH: hostile servers

HOSTILE_SSH: dict[str, Callable[[str, int], Awaitable[fakes.FakeServer]]] = {
    "garbage": fakes.garbage,
    "garbage-lines": lambda host, port: fakes.banner(host, port, b"HELLO THERE\r\n" * 120),
    "ssh-1-only": lambda host, port: fakes.banner(host, port, b"SSH-1.5-OldDropbear_0.1\r\n"),
    "reset": fakes.reset,
    "silent": fakes.silent,
    "endless": fakes.endless,
}


@pytest.mark.parametrize("probe_class", [SshDefaultCredentials, SshNoneAuth])
@pytest.mark.parametrize("kind", list(HOSTILE_SSH))
async def test_ssh_hostile_servers_end_in_a_recorded_error(kind: str,
                                                           probe_class: type[Probe]) -> None:
    address = f"127.96.1.{30 + list(HOSTILE_SSH).index(kind)}"
    server = await HOSTILE_SSH[kind](address, SSH_PORT)
    started = time.monotonic()
    try:
        with pytest.raises((ConnectionError, TimeoutError)) as info:
            await collect(probe_class(), address, SSH_PORT, "ssh", pairs=[("admin", "admin")],
                          read_timeout=0.5)
    finally:
        await server.close()
    assert time.monotonic() - started < 5
    assert not client_transports()
    expected = {"silent": TimeoutError, "ssh-1-only": ConnectionError}
    if kind in expected:
        assert isinstance(info.value, expected[kind])
    if kind == "ssh-1-only":
        assert "SSH-1" in str(info.value)
    if kind == "endless":
        assert str(MAX_SSH_BYTES) in str(info.value)


async def test_ssh_refused_port_is_an_error_not_a_hang() -> None:
    with pytest.raises(ConnectionRefusedError):
        await collect(SshNoneAuth(), "127.96.1.40", SSH_PORT, "ssh")


async def test_ssh_out_of_scope_target_opens_no_socket() -> None:
    network = Network(safe_scope("127.96.1.41"), Limits(connect_timeout=1.0))
    ctx = ProbeContext(_target("127.96.1.42", SSH_PORT, "ssh"), network, Transcript())
    with pytest.raises(ConnectionError, match="outside the authorised scope"):
        await SshNoneAuth().collect(ctx)
    assert network.connections_opened == 0


async def test_ssh_cancelled_probe_stops_paramiko_and_frees_the_slot() -> None:
    """The engine's probe budget cancels collect(): the worker's socket is shut, its paramiko
    thread joined, and the host's connection slot returned before the cancellation ends."""
    server = await fakes.silent("127.96.1.43", SSH_PORT)
    network = Network(safe_scope("127.96.1.43"), Limits(connect_timeout=1.0, read_timeout=8.0,
                                                         per_host=1, rate=1000.0))
    ctx = ProbeContext(_target("127.96.1.43", SSH_PORT, "ssh"), network, Transcript())
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(SshNoneAuth().collect(ctx), 0.5)
        assert time.monotonic() - started < 3
        assert not client_transports()
        release = await asyncio.wait_for(network.slot("127.96.1.43", SSH_PORT), 1)  # free
        release()
        for _ in range(20):  # the fake notices the hang-up on its next read
            if server.active == 0:
                break
            await asyncio.sleep(0.05)
        assert server.active == 0
    finally:
        network.close()
        await server.close()


def test_guarded_socket_ends_reads_at_cap_and_deadline() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"x" * 100)
        guarded = BoundedSocket(left, time.monotonic() + 5, cap=10)
        assert guarded.recv(64) == b"x" * 10
        assert guarded.recv(64) == b"" and guarded.stopped == "byte cap"
        late = BoundedSocket(left, time.monotonic() - 1, cap=1000)
        assert late.recv(64) == b"" and late.stopped == "deadline"
        with pytest.raises(ConnectionAbortedError):
            late.send(b"hello")


# ------------------------------------------------------------------ SSH: pure evaluation


def test_ssh_none_evaluate_is_pure() -> None:
    target = _target("127.96.1.50", 22, "ssh")
    assert SshNoneAuth().evaluate(target, {"none_accepted": False,
                                           "allowed_methods": ["password"]}) == []
    [found] = SshNoneAuth().evaluate(target, {"none_accepted": True, "username": "iotbx",
                                              "banner": "SSH-2.0-dropbear"})
    assert found.key == "unauthenticated-access" and found.facts["server"] == "SSH-2.0-dropbear"


def test_ssh_credentials_summary_names_missing_password_method() -> None:
    facts = {"attempts": [{}], "budget": "3 per account", "auth_methods": ["publickey"],
             "password_offered": False, "banner": "SSH-2.0-OpenSSH_9.6", "success": None}
    probe = SshDefaultCredentials()
    assert probe.evaluate(_target("127.96.1.50", 22, "ssh"), facts) == []
    summary = probe.summarize(facts)
    assert summary["auth methods"] == "publickey" and "not offered" in summary["password login"]


# ------------------------------------------------------------------ FTP fakes (asyncio)

LISTING = (b"total 16\r\n"
           b"drwxr-xr-x    2 0        0            4096 Jan 01  2020 config\r\n"
           b"drwxrwxrwx    2 0        0            4096 Jan 01  2020 upload\r\n"
           b"-rw-r--r--    1 0        0          123456 Jan 01  2020 firmware.bin\r\n"
           b"-rw-r--r--    1 0        0              42 Jan 01  2020 $(reboot)\x1b[31m.txt\r\n")
SAFE_LISTING = b"-rw-r--r--    1 0        0              42 Jan 01  2020 readme.txt\r\n"


@dataclass
class FtpRules:
    users: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    accept_all: bool = False
    listing: bytes = LISTING
    announce: tuple[str, int] | None = None  # what PASV names instead of the fake's own port
    lockout_after: int | None = None
    reply_delay: float = 0.0
    commands: list[str] = field(default_factory=list)
    passes: list[tuple[str, str]] = field(default_factory=list)
    failures: int = 0
    refused: int = 0
    data_connections: int = 0


async def start_ftp(address: str, rules: FtpRules) -> fakes.FakeServer:
    async def reply(writer: asyncio.StreamWriter, text: bytes) -> None:
        await asyncio.sleep(rules.reply_delay)
        writer.write(text)
        await writer.drain()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if rules.lockout_after is not None and rules.failures >= rules.lockout_after:
            rules.refused += 1
            await reply(writer, b"421 Too many login failures, closing control connection.\r\n")
            return
        await reply(writer, b"220-FakeCam FTP\r\n220-authorised use only\r\n220 ready.\r\n")
        user = ""
        data_server: asyncio.Server | None = None
        data_writer: asyncio.Future[asyncio.StreamWriter] = \
            asyncio.get_running_loop().create_future()

        async def on_data(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            rules.data_connections += 1
            if not data_writer.done():
                data_writer.set_result(w)

        try:
            for _ in range(30):
                line = await asyncio.wait_for(reader.readline(), HOLD)
                if not line:
                    return
                text = line.decode("utf-8", "replace").strip()
                rules.commands.append(text)
                verb, _, argument = text.partition(" ")
                verb = verb.upper()
                if verb == "USER":
                    user = argument
                    await reply(writer, b"331 Please specify the password.\r\n")
                elif verb == "PASS":
                    rules.passes.append((user, argument))
                    guest = rules.anonymous and user in ("anonymous", "ftp")
                    if rules.accept_all or guest or rules.users.get(user) == argument:
                        await reply(writer, b"230 Login successful.\r\n")
                    else:
                        rules.failures += 1
                        await reply(writer, b"530 Login incorrect.\r\n")
                elif verb == "PASV":
                    data_server = await asyncio.start_server(on_data, address, 0)
                    port = data_server.sockets[0].getsockname()[1]
                    assert port not in NEVER_TOUCH_PORTS
                    host, port = rules.announce or (address, port)
                    numbers = [*host.split("."), str(port // 256), str(port % 256)]
                    await reply(writer, f"227 Entering Passive Mode ({','.join(numbers)}).\r\n"
                                .encode())
                elif verb == "LIST":
                    await reply(writer, b"150 Here comes the directory listing.\r\n")
                    try:
                        out = await asyncio.wait_for(asyncio.shield(data_writer), 2)
                    except TimeoutError:
                        await reply(writer, b"425 Use PASV first.\r\n")
                        continue
                    out.write(rules.listing)
                    await out.drain()
                    out.close()
                    await reply(writer, b"226 Directory send OK.\r\n")
                elif verb == "QUIT":
                    await reply(writer, b"221 Goodbye.\r\n")
                    return
                else:
                    await reply(writer, b"502 Command not implemented.\r\n")
        finally:
            if data_writer.done():
                data_writer.result().transport.abort()
            if data_server is not None:
                data_server.close()

    return await fakes._serve(address, FTP_PORT, behaviour)


@contextlib.asynccontextmanager
async def ftp_device(address: str, **rules: Any) -> Any:
    state = FtpRules(**rules)
    server = await start_ftp(address, state)
    try:
        yield state
    finally:
        await server.close()


# ------------------------------------------------------------------ FTP: anonymous


async def test_ftp_anonymous_with_world_writable_dir() -> None:
    async with ftp_device("127.96.1.60", anonymous=True) as rules:
        run = await collect(FtpAnonymous(), "127.96.1.60", FTP_PORT, "ftp")
    assert run.keys == ["anonymous-ftp"]
    [finding] = run.observations
    assert finding.severity is Severity.HIGH
    listing = run.facts["listing"]
    assert listing["entries"] == 4 and listing["world_writable"] == ["upload"]
    assert listing["sample"][:3] == ["config", "upload", "firmware.bin"]
    assert listing["sample"][3] == "$(reboot)?[31m.txt"  # a device string, kept as inert data
    assert '"upload"' in finding.facts["world_writable_dirs"]
    assert ("anonymous", ANONYMOUS_PASSWORD) in rules.passes
    assert [c.split(" ")[0] for c in rules.commands] == ["USER", "PASS", "PASV", "LIST", "QUIT"]
    assert rules.data_connections == 1
    assert "220-FakeCam FTP" in run.facts["greeting"]
    assert run.seconds < 5


async def test_ftp_anonymous_read_only_is_medium() -> None:
    async with ftp_device("127.96.1.61", anonymous=True, listing=SAFE_LISTING):
        run = await collect(FtpAnonymous(), "127.96.1.61", FTP_PORT, "ftp")
    [finding] = run.observations
    assert finding.severity is None  # the metadata's MEDIUM
    assert FtpAnonymous.metadata.severity is Severity.MEDIUM
    assert run.facts["listing"]["world_writable"] == []


async def test_ftp_anonymous_refused_is_a_pass() -> None:
    async with ftp_device("127.96.1.62", users={"admin": SECRET}) as rules:
        run = await collect(FtpAnonymous(), "127.96.1.62", FTP_PORT, "ftp")
    assert run.observations == [] and run.facts["login"] == "refused"
    assert rules.data_connections == 0 and not any(c.startswith("PASV") for c in rules.commands)


async def test_ftp_pasv_to_another_host_is_not_followed() -> None:
    outside_hits = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal outside_hits
        outside_hits += 1
        writer.close()

    listener = await asyncio.start_server(count, OUTSIDE, 0)
    outside_port = listener.sockets[0].getsockname()[1]
    assert outside_port not in NEVER_TOUCH_PORTS
    try:
        # The scope even includes OUTSIDE: the probe itself must refuse the bounce.
        async with ftp_device("127.96.1.63", anonymous=True,
                              announce=(OUTSIDE, outside_port)) as rules:
            run = await collect(FtpAnonymous(), "127.96.1.63", FTP_PORT, "ftp",
                                scope=(OUTSIDE,))
    finally:
        listener.close()
        await listener.wait_closed()
    assert outside_hits == 0 and rules.data_connections == 0
    assert run.facts["pasv"] == {"reply": run.facts["pasv"]["reply"], "address": OUTSIDE,
                                 "port": outside_port, "in_scope": False}
    assert "not followed" in run.facts["listing_error"]
    assert run.network.connections_opened == 1  # the control connection only
    assert run.keys == ["anonymous-ftp"]  # the login itself is still the finding
    assert "no data connection opened" in run.evidence


async def test_ftp_listing_never_deadlocks_on_one_slot_per_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With one connection per host the data connection can never open: give up, bounded."""
    monkeypatch.setattr("probes.ftp.DATA_SLOT_WAIT", 0.5)
    async with ftp_device("127.96.1.59", anonymous=True) as rules:
        run = await collect(FtpAnonymous(), "127.96.1.59", FTP_PORT, "ftp", per_host=1)
    assert run.seconds < 3 and rules.data_connections == 0
    assert "connection limits" in run.facts["listing_error"]
    assert run.keys == ["anonymous-ftp"] and "not listed" in run.observations[0].summary


# ------------------------------------------------------------------ FTP: default credentials


async def test_ftp_default_credential_found_anonymous_pairs_skipped() -> None:
    async with ftp_device("127.96.1.64", users={"admin": SECRET}, anonymous=True) as rules:
        run = await collect(FtpDefaultCredentials(), "127.96.1.64", FTP_PORT, "ftp",
                            pairs=[("anonymous", "guest@"), ("ftp", ""), ("root", "root"),
                                   ("admin", SECRET)])
    assert run.keys == ["default-credential"]
    assert run.observations[0].confidence is Confidence.CONFIRMED
    users = [user for user, _ in rules.passes]
    assert users[:2] == ["root", "admin"] and len(users) == 3  # plus the random control
    assert not any(c.upper().startswith("USER ANONYMOUS") or c.upper() == "USER FTP"
                   for c in rules.commands)
    assert [a["username"] for a in run.facts["attempts"]] == ["root", "admin"]
    assert SECRET not in run.evidence and REDACTED in run.evidence


def test_ftp_anonymous_pairs_are_left_to_ftp_anonymous() -> None:
    probe = FtpDefaultCredentials()
    assert probe.skip("Anonymous", "me@example.com") and probe.skip("ftp", "")
    assert not probe.skip("admin", "admin")


async def test_ftp_hardened_device_has_no_finding() -> None:
    async with ftp_device("127.96.1.66", users={"admin": "unique-pass"}) as rules:
        run = await collect(FtpDefaultCredentials(), "127.96.1.66", FTP_PORT, "ftp",
                            pairs=[("admin", "admin"), ("admin", "1234")])
    assert run.observations == [] and len(rules.passes) == 2
    assert all("530" in a["detail"] for a in run.facts["attempts"])


async def test_ftp_accept_everything_is_not_a_default_credential() -> None:
    async with ftp_device("127.96.1.67", accept_all=True):
        run = await collect(FtpDefaultCredentials(), "127.96.1.67", FTP_PORT, "ftp",
                            pairs=[("admin", "admin")])
    assert run.keys == ["authentication-not-enforced"]


async def test_ftp_lockout_stops_the_flow() -> None:
    pairs = [("admin", f"guess-{n}") for n in range(6)] + [("admin", SECRET)]
    async with ftp_device("127.96.1.68", users={"admin": SECRET}, lockout_after=3) as rules:
        run = await collect(FtpDefaultCredentials(), "127.96.1.68", FTP_PORT, "ftp",
                            pairs=pairs, max_per_account=10)
    assert len(rules.passes) == 3 and rules.refused == 1
    assert [a["outcome"] for a in run.facts["attempts"]] == ["failure"] * 3 + ["blocked"]
    assert "421" in run.facts["lockout"] and run.observations == []


async def test_ftp_slow_device_still_judged() -> None:
    async with ftp_device("127.96.1.69", users={"admin": SECRET}, reply_delay=0.3):
        run = await collect(FtpDefaultCredentials(), "127.96.1.69", FTP_PORT, "ftp",
                            pairs=[("admin", SECRET)])
    assert run.keys == ["default-credential"]


# ------------------------------------------------------------------ FTP: hostile servers

HOSTILE_FTP: dict[str, Callable[[str, int], Awaitable[fakes.FakeServer]]] = {
    "garbage": fakes.garbage,
    "silent": fakes.silent,
    "drip": fakes.drip,
    "endless": fakes.endless,
    "reset": fakes.reset,
    "endless-reply": lambda host, port: fakes.banner(host, port,
                                                     b"220-" + b"x" * 100 + b"\r\n" * 300),
    "huge-line": lambda host, port: fakes.banner(host, port, b"220 " + b"y" * 40000),
    "not-ftp": lambda host, port: fakes.banner(host, port, b"SSH-2.0-OpenSSH_9.6\r\n"),
}


@pytest.mark.parametrize("probe_class", [FtpAnonymous, FtpDefaultCredentials])
@pytest.mark.parametrize("kind", list(HOSTILE_FTP))
async def test_ftp_hostile_servers_end_in_a_recorded_error(kind: str,
                                                           probe_class: type[Probe]) -> None:
    address = f"127.96.1.{70 + list(HOSTILE_FTP).index(kind)}"
    server = await HOSTILE_FTP[kind](address, FTP_PORT)
    started = time.monotonic()
    try:
        with pytest.raises((ConnectionError, TimeoutError)) as info:
            await collect(probe_class(), address, FTP_PORT, "ftp", pairs=[("admin", "admin")],
                          read_timeout=0.5)
    finally:
        await server.close()
    assert time.monotonic() - started < 5
    if kind in ("garbage", "not-ftp", "endless", "huge-line"):
        assert isinstance(info.value, FtpProtocolError)
    if kind in ("silent", "drip"):
        assert isinstance(info.value, TimeoutError)


# ------------------------------------------------------------------ FTP: parsing, pure


def test_parse_reply_multiline_and_leftover() -> None:
    data = b"220-Welcome\r\n220-second line\r\n 220 not the end\r\n220 Ready\r\n331 next"
    parsed = parse_reply(data)
    assert parsed is not None
    reply, used = parsed
    assert reply.code == 220 and reply.lines[-1] == "220 Ready" and len(reply.lines) == 4
    assert data[used:] == b"331 next"
    assert parse_reply(b"331 next") is None  # no line end yet
    assert parse_reply(b"230\r\n") is not None


@pytest.mark.parametrize("data", [b"HTTP/1.1 200 OK\r\n", b"\x00\xff\x00\xffgarbage",
                                  b"22 short\r\n", b"220-" + b"a\r\n" * 200])
def test_parse_reply_rejects_garbage(data: bytes) -> None:
    with pytest.raises(FtpProtocolError):
        parse_reply(data)


def test_parse_pasv() -> None:
    assert parse_pasv("227 Entering Passive Mode (127,96,1,9,204,16).") == ("127.96.1.9", 52240)
    assert parse_pasv("227 =127,0,0,1,4,1") == ("127.0.0.1", 1025)
    assert parse_pasv("227 Entering Passive Mode (300,1,1,1,1,1)") is None
    assert parse_pasv("227 nothing here") is None


def test_summarize_listing_caps_and_world_writable() -> None:
    many = b"".join(b"drwxrwxrwt 2 0 0 0 Jan 01 2020 dir%d\r\n" % n for n in range(250))
    summary = summarize_listing(many, truncated=False)
    assert summary["entries"] == 200 and summary["truncated"]
    assert len(summary["sample"]) == 10 and summary["world_writable_count"] == 200
    dos = summarize_listing(b"01-01-20  12:00AM       <DIR>          pub\r\n", False)
    assert dos["entries"] == 1 and dos["world_writable"] == []


def test_ftp_anonymous_evaluate_is_pure() -> None:
    target = _target("127.96.1.90", 21, "ftp")
    probe = FtpAnonymous()
    assert probe.evaluate(target, {"login": "refused"}) == []
    [found] = probe.evaluate(target, {"login": "accepted", "listing": None,
                                      "listing_error": "PASV pointed to 10.0.0.1"})
    assert found.key == "anonymous-ftp" and found.severity is None
    assert "not listed" in found.summary
    [high] = probe.evaluate(target, {"login": "accepted", "listing": {
        "entries": 2, "world_writable": ["incoming"], "world_writable_count": 1,
        "sample": ["incoming", "pub"]}})
    assert high.severity is Severity.HIGH and "world-writable" in high.summary


# ------------------------------------------------------------------ through the engine


async def test_engine_runs_ssh_none_and_ftp_anonymous(run_scan: ScanRunner,
                                                      ssh_device: Callable[..., FakeSsh]) -> None:
    ssh_device("127.96.1.95", none_ok=True)
    probes = [LoadedProbe(SshNoneAuth(), "tests 0", False),
              LoadedProbe(FtpAnonymous(), "tests 0", False)]
    async with ftp_device("127.96.1.95", anonymous=True):
        result = await asyncio.wait_for(run_scan(
            "127.96.1.95", tcp=[SSH_PORT, FTP_PORT], probes=probes,
            profile=fast_profile(max_intrusiveness="safe")), 30)
    assert result.errors == []
    found = {(f.check_id, f.port): f for f in result.findings}
    assert set(found) == {("ssh-none-auth", SSH_PORT), ("ftp-anonymous", FTP_PORT)}
    assert found[("ftp-anonymous", FTP_PORT)].severity is Severity.HIGH
    assert any("none accepted" in e.data for e in found[("ssh-none-auth", SSH_PORT)].evidence)
