"""Real daemons from Debian packages, for integration tests of credential probes.

Each daemon runs as root from its own config (templates beside this file, ``{{name}}``
placeholders filled at run time) inside a private mount namespace made by
``unshare --mount --propagation private``. Inside that namespace only, test-made files are
bind-mounted over ``/etc/passwd``, ``/etc/shadow``, ``/etc/group``, ``/etc/nsswitch.conf`` and
``/home``, so the daemons see the accounts below while the host's files are never written.

    name              address:port        transport  accepts
    dropbear          127.95.0.1:22       tcp        password admin/admin (shell /bin/sh)
    telnetd-login     127.95.0.2:23       tcp        login admin/admin (busybox telnetd, login)
    telnetd-shell     127.95.0.12:23      tcp        anyone: a root /bin/sh, no login at all
    lighttpd-basic    127.95.0.3:80       tcp        HTTP Basic admin/admin, realm "IPCamera"
    lighttpd-digest   127.95.0.13:80      tcp        HTTP Digest (MD5) admin/12345, realm "IPCamera"
    vsftpd            127.95.0.4:21       tcp        anonymous (list/read only), ftpuser/ftppass
    vsftpd-ftps       127.95.0.22:21      tcp        ftpuser/ftppass only after AUTH TLS; 3DES and
                                                 static-RSA suites, expired self-signed
                                                 RSA-1024 SHA-1 cert (Daemon.extra["cert"])
    mosquitto-anon    127.95.0.5:1883     tcp        anonymous MQTT clients
    mosquitto-auth    127.95.0.15:1883    tcp        iot/iot only (anonymous gets CONNACK 5)
    snmpd             127.95.0.6:161      udp        v1/v2c public (ro), private (rw) from 127/8
    coap-server       127.95.0.40:5683    udp        CoAP without DTLS (libcoap example resources)
    openssh-keyonly   127.95.0.7:22       tcp        public key only (Daemon.extra["client_key"])
    stunnel-weak      127.95.0.20:443     tcp        TLS 1.0-1.2, NULL/anon/static-RSA suites,
                                                 expired self-signed RSA-1024 SHA-1 cert
    stunnel-strong    127.95.0.21:443     tcp        TLS 1.2+, ECDHE-AEAD only, test-CA cert naming
                                                 the address (Daemon.extra["ca_file"]), HSTS
    openssh-weak      127.95.0.31:22      tcp        admin/admin; legacy algorithms, RSA-1024 + DSA
    openssh-hardened  127.95.0.32:22      tcp        keys only; modern algorithms, Ed25519

Every address is in 127.95.0.0/24 and no port is 2024 (both are asserted). One daemon of a
given name at a time on a machine, since the address is fixed; different names can run together.

    reason = available("dropbear")          # None when usable, else why not (skip with it)
    with running("dropbear", tmp_path) as d:  # started and listening, or DaemonError
        ...                                   # d.address, d.port, d.username, d.password, d.log
    # stopped: process group SIGTERM (SIGKILL after 5 s), then any process left in its namespace

or, as a pytest fixture that skips with the reason: ``dropbear = daemon_fixture("dropbear")``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

HERE = Path(__file__).resolve().parent
NETWORK = ipaddress.ip_network("127.95.0.0/24")
FORBIDDEN_PORTS = frozenset({2024})
START_TIMEOUT = 10.0  # seconds until the port must listen
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
POLL_INTERVAL = 0.05
LOG_TAIL_LINES = 60
DAEMON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ADMIN = ("admin", "admin")  # dropbear, telnetd-login, lighttpd-basic; exists for openssh too
FTP_USER = ("ftpuser", "ftppass")
MQTT_USER = ("iot", "iot")
DIGEST_USER = ("admin", "12345")
HTTP_REALM = "IPCamera"
SNMP_SYSDESCR = "IoT-DVR test"


class DaemonError(RuntimeError):
    """A daemon did not start (its log tail is in the message) or could not be stopped."""


class DaemonUnavailable(DaemonError):
    """running() was asked for a daemon that available() says cannot run here."""


@dataclass(frozen=True)
class Daemon:
    name: str
    address: str
    port: int
    transport: str  # "tcp" or "udp"
    pid: int  # the daemon's own pid (also its process group id)
    log: Path  # stdout+stderr of the daemon (and of its namespace set-up)
    username: str | None = None  # the credential it accepts, if any
    password: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass(frozen=True)
class _Account:
    name: str
    password: str
    uid: int
    shell: str = "/bin/sh"

    @property
    def home(self) -> str:
        return f"/home/{self.name}"


@dataclass
class _Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    binds: list[tuple[Path, str]] = field(default_factory=list)  # (file in tmp, path in the ns)
    username: str | None = None
    password: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Spec:
    address: str
    port: int
    transport: str
    needs: tuple[tuple[str, str], ...]  # (binary, Debian package)
    prepare: Callable[[_Work], _Launch]
    check: Callable[[], str | None] = lambda: None  # a further reason it cannot run


@dataclass(frozen=True)
class _Work:
    name: str
    dir: Path
    address: str
    port: int
    accounts: tuple[_Account, ...]

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def home(self, user: str) -> Path:
        """Host path of a home directory; the daemon sees it as /home/<user>."""
        return self.dir / "home" / user

    def account(self, user: str) -> _Account:
        return next(a for a in self.accounts if a.name == user)

    def render(self, template: str, **values: str | int | Path) -> Path:
        """Fill ``{{key}}`` placeholders of tests/daemons/<template> into the work dir."""
        values = {"address": self.address, "port": self.port, "workdir": self.dir, **values}
        text = (HERE / template).read_text()

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise DaemonError(f"{template}: no value for placeholder {{{{{key}}}}}")
            return str(values[key])

        out = self.dir / template
        out.write_text(re.sub(r"\{\{(\w+)\}\}", fill, text))
        out.chmod(0o644)
        return out


# ----------------------------------------------------------------------------- helpers


def _which(binary: str) -> str | None:
    return shutil.which(binary, path=DAEMON_PATH)


def _run(argv: list[str], *, input: str | None = None, timeout: float = 20.0) -> str:
    argv = [_which(argv[0]) or argv[0], *argv[1:]]
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              env={"PATH": DAEMON_PATH, "LANG": "C"})
    except subprocess.TimeoutExpired as exc:
        raise DaemonError(f"{argv[0]} timed out after {timeout} s") from exc
    if done.returncode != 0:
        raise DaemonError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


@functools.cache
def _crypt(password: str) -> str:
    """SHA-512 crypt hash, as ``openssl passwd -6`` makes it (password on stdin, not argv)."""
    return _run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n").strip()


def _read_host(path: str) -> list[list[str]]:
    """The host's colon-separated account file, read only."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


@functools.cache
def _accounts() -> tuple[_Account, ...]:
    used = {int(r[2]) for r in _read_host("/etc/passwd") if len(r) > 2 and r[2].isdigit()}
    used |= {int(r[2]) for r in _read_host("/etc/group") if len(r) > 2 and r[2].isdigit()}
    free = (uid for uid in range(4242, 4342) if uid not in used)
    return (_Account(*ADMIN, uid=next(free)), _Account(*FTP_USER, uid=next(free)))


def _write_account_files(work: _Work) -> list[tuple[Path, str]]:
    """passwd/shadow/group: the host's entries (shadow ones locked, no host hash is copied) plus
    ours; nsswitch.conf forcing plain files; the /home tree. Returns the bind list."""
    ours = {a.name for a in work.accounts}
    passwd = [r for r in _read_host("/etc/passwd") if r[0] not in ours]
    group = [r for r in _read_host("/etc/group") if r[0] not in ours]
    shadow = [[r[0], "*", "19000", "0", "99999", "7", "", "", ""] for r in passwd]
    for a in work.accounts:
        passwd.append([a.name, "x", str(a.uid), str(a.uid), a.name, a.home, a.shell])
        group.append([a.name, "x", str(a.uid), ""])
        shadow.append([a.name, _crypt(a.password), "19000", "0", "99999", "7", "", "", ""])
    files = {"passwd": (passwd, 0o644), "group": (group, 0o644), "shadow": (shadow, 0o600)}
    binds: list[tuple[Path, str]] = []
    for name, (rows, mode) in files.items():
        path = work.path(name)
        path.write_text("".join(":".join(r) + "\n" for r in rows))
        path.chmod(mode)
        binds.append((path, f"/etc/{name}"))
    nsswitch = work.path("nsswitch.conf")
    nsswitch.write_text("passwd: files\ngroup: files\nshadow: files\ngshadow: files\n"
                        "hosts: files dns\nnetworks: files\nprotocols: files\n"
                        "services: files\nethers: files\nrpc: files\n")
    nsswitch.chmod(0o644)
    binds.append((nsswitch, "/etc/nsswitch.conf"))
    home_root = work.path("home")
    home_root.mkdir(mode=0o755)
    home_root.chmod(0o755)
    for a in work.accounts:
        home = work.home(a.name)
        home.mkdir(mode=0o755)
        (home / "README.txt").write_text(f"home of {a.name}\n")
        for p in (home, home / "README.txt"):
            os.chown(p, a.uid, a.uid)
    binds.append((home_root, "/home"))
    return binds


def _hex_addr(address: str, port: int) -> str:
    # /proc/net/{tcp,udp} print the address as the native-endian value of the network bytes
    (value,) = struct.unpack("=I", socket.inet_aton(address))
    return f"{value:08X}:{port:04X}"


def _listening(address: str, port: int, transport: str) -> bool:
    wanted = _hex_addr(address, port)
    state = "0A" if transport == "tcp" else "07"  # TCP_LISTEN / UDP unconnected
    try:
        lines = Path(f"/proc/net/{transport}").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        cols = line.split()
        if len(cols) > 3 and cols[1] == wanted and cols[3] == state:
            return True
    return False


def _wildcard_listener(port: int, transport: str) -> bool:
    """Something of the machine's own (an sshd on 0.0.0.0:22, say) holds the port on every
    address, so our daemon cannot bind it on 127.95.0.x: skip rather than fail."""
    state = "0A" if transport == "tcp" else "07"
    suffix = f":{port:04X}"
    for table, wildcard in ((transport, "00000000"), (f"{transport}6", "0" * 32)):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[1] == wildcard + suffix and cols[3] == state:
                return True
    return False


def _mount_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _check_safe(name: str, address: str, port: int) -> None:
    if ipaddress.ip_address(address) not in NETWORK or port in FORBIDDEN_PORTS:
        raise DaemonError(f"{name}: {address}:{port} is outside {NETWORK} or a forbidden port")


# ----------------------------------------------------------------------------- daemons


def _dropbear(w: _Work) -> _Launch:
    key = w.path("dropbear_ed25519_host_key")
    _run(["dropbearkey", "-t", "ed25519", "-f", str(key)])
    argv = [_which("dropbear") or "dropbear", "-F", "-E", "-p", f"{w.address}:{w.port}",
            "-r", str(key), "-P", str(w.path("dropbear.pid"))]
    return _Launch(argv, username=ADMIN[0], password=ADMIN[1], extra={"host_key": str(key)})


def _telnetd(w: _Work, login: str) -> list[str]:
    issue = w.path("issue")
    issue.write_text((HERE / "issue").read_text())
    return [_which("busybox") or "busybox", "telnetd", "-F", "-K", "-b", f"{w.address}:{w.port}",
            "-f", str(issue), "-l", login]


def _telnetd_login(w: _Work) -> _Launch:
    # Debian's /bin/login (PAM: pam_unix reads the bind-mounted /etc/shadow as root).
    # A failed login costs 3 s (pam_faildelay in /etc/pam.d/login).
    return _Launch(_telnetd(w, "/bin/login"), username=ADMIN[0], password=ADMIN[1],
                   extra={"login_prompt": "login:", "password_prompt": "Password:"})


def _telnetd_shell(w: _Work) -> _Launch:
    return _Launch(_telnetd(w, "/bin/sh"), extra={"prompt": "# "})


def _lighttpd(w: _Work, method: str) -> _Launch:
    docroot = w.path("www")
    docroot.mkdir()
    (docroot / "index.html").write_text(
        "<html><head><title>IPCamera</title></head><body>protected: live view</body></html>\n")
    (docroot / "public.html").write_text(
        "<html><head><title>IPCamera</title></head><body>public page</body></html>\n")
    users = w.path("lighttpd.users")
    if method == "basic":
        user, password = ADMIN
        users.write_text(f"{user}:{password}\n")
    else:
        user, password = DIGEST_USER
        ha1 = hashlib.md5(f"{user}:{HTTP_REALM}:{password}".encode()).hexdigest()
        users.write_text(f"{user}:{HTTP_REALM}:{ha1}\n")
    users.chmod(0o600)
    conf = w.render(f"lighttpd-{method}.conf", docroot=docroot, userfile=users)
    return _Launch([_which("lighttpd") or "lighttpd", "-D", "-f", str(conf)],
                   username=user, password=password,
                   extra={"realm": HTTP_REALM, "method": method, "protected_path": "/",
                          "public_path": "/public.html"})


def _vsftpd(w: _Work) -> _Launch:
    anon_root, empty = w.path("ftp-anon"), w.path("vsftpd-empty")
    anon_root.mkdir()
    (anon_root / "readme.txt").write_text("IoT-DVR firmware notes\n")
    (anon_root / "readme.txt").chmod(0o644)
    anon_root.chmod(0o555)  # vsftpd refuses an anonymous root the ftp user can write
    empty.mkdir(mode=0o755)
    conf = w.render("vsftpd.conf", anon_root=anon_root, empty_dir=empty)
    return _Launch([_which("vsftpd") or "vsftpd", str(conf)],
                   username=FTP_USER[0], password=FTP_USER[1],
                   extra={"anonymous": "yes", "anonymous_file": "readme.txt",
                          "user_home": w.account(FTP_USER[0]).home})


def _vsftpd_ftps(w: _Work) -> _Launch:
    from tests.tls_certs import weak_self_signed

    certs = weak_self_signed(w.dir, w.address)
    empty = w.path("vsftpd-empty")
    empty.mkdir(mode=0o755)
    conf = w.render("vsftpd-ftps.conf", cert=certs.cert, key=certs.key, empty_dir=empty)
    # vsftpd loads its certificate before its cipher list: only an OpenSSL default of security
    # level 0 lets it load an RSA-1024 SHA-1 one (Debian's default level is 2).
    openssl_conf = w.path("openssl.cnf")
    openssl_conf.write_text("openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl\n"
                            "[ssl]\nsystem_default = tls\n[tls]\n"
                            "CipherString = DEFAULT:@SECLEVEL=0\n")
    return _Launch([_which("vsftpd") or "vsftpd", str(conf)],
                   env={"OPENSSL_CONF": str(openssl_conf)},
                   username=FTP_USER[0], password=FTP_USER[1], extra={"cert": str(certs.cert)})


def _mosquitto(w: _Work, auth: bool) -> _Launch:
    binary = _which("mosquitto") or "mosquitto"
    if not auth:
        conf = w.render("mosquitto-anon.conf")
        return _Launch([binary, "-c", str(conf)], extra={"anonymous": "yes"})
    password_file = w.path("mosquitto.passwd")
    _run(["mosquitto_passwd", "-c", "-b", str(password_file), *MQTT_USER])
    password_file.chmod(0o600)
    conf = w.render("mosquitto-auth.conf", password_file=password_file)
    return _Launch([binary, "-c", str(conf)], username=MQTT_USER[0], password=MQTT_USER[1],
                   extra={"anonymous": "no"})


def _snmpd(w: _Work) -> _Launch:
    persist = w.path("snmp-persist")
    persist.mkdir(mode=0o700)
    conf = w.render("snmpd.conf")
    argv = [_which("snmpd") or "snmpd", "-f", "-Lo", "-C", "-c", str(conf),
            "-I", "-smux,mteTrigger,mteTriggerConf", "-p", str(w.path("snmpd.pid"))]
    # the listening address is the config's agentAddress (giving it here too binds it twice)
    # MIBS="" : no MIB files needed (Debian ships none without the non-free downloader)
    env = {"SNMP_PERSISTENT_DIR": str(persist), "SNMPCONFPATH": str(w.dir), "MIBS": ""}
    return _Launch(argv, env=env, extra={"ro_community": "public", "rw_community": "private",
                                         "sysdescr": SNMP_SYSDESCR})


def _coap_server(w: _Work) -> _Launch:
    # libcoap's example server: /.well-known/core lists /time, /async, /example_data
    return _Launch([_which("coap-server-notls") or "coap-server-notls", "-A", w.address,
                    "-p", str(w.port)])


def _openssh(w: _Work) -> _Launch:
    host_key, client_key = w.path("ssh_host_ed25519_key"), w.path("client_ed25519")
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "iotbaseline-host",
          "-f", str(host_key)])
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "iotbaseline-client",
          "-f", str(client_key)])
    admin = w.account(ADMIN[0])
    ssh_dir = w.home(admin.name) / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    for p in (ssh_dir, authorized):
        os.chown(p, admin.uid, admin.uid)
    # sshd's compiled-in privilege separation dir; on a booted Debian it is made by tmpfiles.d
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        privsep.mkdir(mode=0o755, parents=True)
    conf = w.render("sshd_config", host_key=host_key)
    return _Launch([_which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                   username=ADMIN[0], password=None,
                   extra={"client_key": str(client_key), "host_key": str(host_key),
                          "auth_methods": "publickey"})


def _openssh_crypto(w: _Work, template: str, host_keys: tuple[tuple[str, int], ...],
                    password_login: bool) -> _Launch:
    """An sshd whose algorithm offer comes from ``template`` and whose host keys are made here
    (type, bits; 0 for the type's only size)."""
    paths = []
    for key_type, bits in host_keys:
        path = w.path(f"ssh_host_{key_type}_{bits or 'key'}")
        _run(["ssh-keygen", "-q", "-t", key_type, *(["-b", str(bits)] if bits else []),
              "-N", "", "-C", "iotbaseline-host", "-f", str(path)])
        paths.append(path)
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        privsep.mkdir(mode=0o755, parents=True)
    conf = w.render(template, host_keys="\n".join(f"HostKey {p}" for p in paths))
    return _Launch([_which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                   username=ADMIN[0], password=ADMIN[1] if password_login else None,
                   extra={"host_keys": ",".join(str(p) for p in paths)})


def _stunnel(w: _Work, strong: bool) -> _Launch:
    from tests.tls_certs import ca_signed, weak_self_signed

    certs = ca_signed(w.dir, [w.address]) if strong else weak_self_signed(w.dir, w.address)
    hsts = "Strict-Transport-Security: max-age=31536000\\r\\n" if strong else ""
    responder = w.path("respond.sh")  # one bounded HTTP answer per TLS connection
    responder.write_text("timeout 5 head -n 1 >/dev/null\n"  # the request line, if any
                         f"printf 'HTTP/1.0 200 OK\\r\\n{hsts}"
                         "Content-Length: 3\\r\\n\\r\\nok\\n'\n")
    conf = w.render(f"stunnel-{'strong' if strong else 'weak'}.conf", cert=certs.cert,
                    key=certs.key, responder=responder)
    extra = {"cert": str(certs.cert)}
    if certs.ca is not None:
        extra["ca_file"] = str(certs.ca)
    return _Launch([_which("stunnel4") or "stunnel4", str(conf)], extra=extra)


@functools.cache
def _busybox_telnetd() -> str | None:
    """Debian's dynamic `busybox` package has no telnetd applet; `busybox-static` has."""
    try:
        applets = _run(["busybox", "--list"]).split()
    except DaemonError as exc:
        return str(exc)
    if "telnetd" not in applets:
        return "this busybox has no telnetd applet (install Debian package busybox-static)"
    return None


SPECS: Mapping[str, _Spec] = MappingProxyType({
    "dropbear": _Spec("127.95.0.1", 22, "tcp",
                      (("dropbear", "dropbear-bin"), ("dropbearkey", "dropbear-bin")),
                      _dropbear),
    "telnetd-login": _Spec("127.95.0.2", 23, "tcp",
                           (("busybox", "busybox-static"), ("login", "login")),
                           _telnetd_login, _busybox_telnetd),
    "telnetd-shell": _Spec("127.95.0.12", 23, "tcp", (("busybox", "busybox-static"),),
                           _telnetd_shell, _busybox_telnetd),
    "lighttpd-basic": _Spec("127.95.0.3", 80, "tcp", (("lighttpd", "lighttpd"),),
                            lambda w: _lighttpd(w, "basic")),
    "lighttpd-digest": _Spec("127.95.0.13", 80, "tcp", (("lighttpd", "lighttpd"),),
                             lambda w: _lighttpd(w, "digest")),
    "vsftpd": _Spec("127.95.0.4", 21, "tcp", (("vsftpd", "vsftpd"),), _vsftpd),
    "vsftpd-ftps": _Spec("127.95.0.22", 21, "tcp", (("vsftpd", "vsftpd"),), _vsftpd_ftps),
    "mosquitto-anon": _Spec("127.95.0.5", 1883, "tcp", (("mosquitto", "mosquitto"),),
                            lambda w: _mosquitto(w, auth=False)),
    "mosquitto-auth": _Spec("127.95.0.15", 1883, "tcp",
                            (("mosquitto", "mosquitto"), ("mosquitto_passwd", "mosquitto")),
                            lambda w: _mosquitto(w, auth=True)),
    "snmpd": _Spec("127.95.0.6", 161, "udp", (("snmpd", "snmpd"),), _snmpd),
    "coap-server": _Spec("127.95.0.40", 5683, "udp", (("coap-server-notls", "libcoap3-bin"),),
                         _coap_server),
    "openssh-keyonly": _Spec("127.95.0.7", 22, "tcp",
                             (("sshd", "openssh-server"), ("ssh-keygen", "openssh-client")),
                             _openssh),
    "openssh-weak": _Spec("127.95.0.31", 22, "tcp",
                          (("sshd", "openssh-server"), ("ssh-keygen", "openssh-client")),
                          lambda w: _openssh_crypto(w, "sshd-weak.conf",
                                                    (("rsa", 1024), ("dsa", 1024)), True)),
    "openssh-hardened": _Spec("127.95.0.32", 22, "tcp",
                              (("sshd", "openssh-server"), ("ssh-keygen", "openssh-client")),
                              lambda w: _openssh_crypto(w, "sshd-hardened.conf",
                                                        (("ed25519", 0),), False)),
    "stunnel-weak": _Spec("127.95.0.20", 443, "tcp", (("stunnel4", "stunnel4"),),
                          lambda w: _stunnel(w, strong=False)),
    "stunnel-strong": _Spec("127.95.0.21", 443, "tcp", (("stunnel4", "stunnel4"),),
                            lambda w: _stunnel(w, strong=True)),
})
NAMES: tuple[str, ...] = tuple(SPECS)
DEBIAN_PACKAGES: tuple[str, ...] = tuple(sorted({pkg for s in SPECS.values() for _, pkg in s.needs}
                                                | {"util-linux", "mount", "openssl"}))

for _name, _spec in SPECS.items():  # the network safety rule, checked at import
    _check_safe(_name, _spec.address, _spec.port)
assert len({(s.address, s.port, s.transport) for s in SPECS.values()}) == len(SPECS)


# ----------------------------------------------------------------------------- API


@functools.cache
def _namespace_problem() -> str | None:
    for tool in ("unshare", "mount", "openssl"):
        if not _which(tool):
            return f"{tool} not found"
    try:
        done = subprocess.run([_which("unshare") or "unshare", "--mount", "--propagation",
                               "private", "--", "/bin/true"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot make a mount namespace: {exc}"
    if done.returncode != 0:
        return f"cannot make a mount namespace: {done.stderr.strip() or done.returncode}"
    return None


def available(name: str) -> str | None:
    """None when ``name`` can run here, else the reason (for pytest.skip)."""
    spec = SPECS[name]  # KeyError for an unknown name: a typo is not a skip
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (mount namespace with bind-mounted accounts, ports below 1024)"
    missing = [(b, p) for b, p in spec.needs if not _which(b)]
    if missing:
        bins = ", ".join(b for b, _ in missing)
        pkgs = " ".join(sorted({p for _, p in missing}))
        return f"{bins} not installed (Debian package {pkgs}; see `make system-deps`)"
    if _wildcard_listener(spec.port, spec.transport):
        return (f"port {spec.port}/{spec.transport} is held on every address by a service of "
                "this machine")
    return spec.check() or _namespace_problem()


# The namespace's first process binds each "src dst" pair, then execs the daemon.
_BIND_SCRIPT = (
    'set -e; while [ "$1" != "--" ]; do mount --bind "$1" "$2"; shift 2; done; shift; '
    'exec "$@"'
)


@contextmanager
def running(name: str, tmp_path: Path) -> Iterator[Daemon]:
    """Start ``name`` in its own mount namespace, wait (at most START_TIMEOUT) until its port
    listens, yield it, then stop every process it left. Raises DaemonUnavailable when
    available() gives a reason, DaemonError (with the log tail) when it does not start."""
    reason = available(name)
    if reason:
        raise DaemonUnavailable(f"{name}: {reason}")
    spec = SPECS[name]
    _check_safe(name, spec.address, spec.port)
    # The same daemon from the previous test may still be exiting: give it a moment.
    for _ in range(50):
        if not _listening(spec.address, spec.port, spec.transport):
            break
        time.sleep(0.2)
    else:
        raise DaemonError(f"{name}: {spec.address}:{spec.port}/{spec.transport} is already in "
                          "use (a daemon left by another run?)")
    workdir = _new_workdir(Path(tmp_path), name)
    work = _Work(name, workdir, spec.address, spec.port, _accounts())
    log = workdir / "daemon.log"
    binds = _write_account_files(work)
    launch = spec.prepare(work)
    binds += launch.binds
    argv = [_which("unshare") or "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _BIND_SCRIPT, "sh"]
    for src, dst in binds:
        argv += [str(src), dst]
    argv += ["--", *launch.argv]
    env = {"PATH": DAEMON_PATH, "LANG": "C", "HOME": "/root", "TERM": "vt100", **launch.env}
    with log.open("w") as fh:
        fh.write(f"# {name} on {spec.address}:{spec.port}/{spec.transport}\n"
                 f"# binds: {', '.join(f'{s} -> {d}' for s, d in binds)}\n"
                 f"# exec: {' '.join(launch.argv)}\n")
    own_ns = _mount_ns("self")
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                start_new_session=True, close_fds=True)
    namespace: str | None = None
    try:
        namespace = _wait_ready(name, spec, proc, log, own_ns)
        daemon = Daemon(name, spec.address, spec.port, spec.transport, proc.pid, log,
                        launch.username, launch.password, MappingProxyType(dict(launch.extra)))
        try:
            yield daemon
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit | KeyboardInterrupt | SystemExit):
                exc.add_note(f"--- {name} log ({log}) ---\n{_tail(log)}")
            raise
    finally:
        _stop(proc, namespace, own_ns)


def daemon_fixture(name: str, scope: str = "function") -> Any:
    """A pytest fixture yielding a running ``name``; skips with available()'s reason.
    Use in a test module: ``dropbear = daemon_fixture("dropbear")`` (any scope)."""
    import pytest

    SPECS[name]

    @pytest.fixture(scope=scope)  # type: ignore[misc]
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
        reason = available(name)
        if reason:
            pytest.skip(f"{name}: {reason}")
        with running(name, tmp_path_factory.mktemp(name.replace("-", "_"))) as daemon:
            yield daemon

    return _fixture


def _new_workdir(tmp_path: Path, name: str) -> Path:
    for n in range(1, 101):
        path = tmp_path / (f"daemon-{name}" if n == 1 else f"daemon-{name}-{n}")
        try:
            path.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            continue
        return path
    raise DaemonError(f"{name}: no free work directory under {tmp_path}")


def _wait_ready(name: str, spec: _Spec, proc: subprocess.Popen[bytes], log: Path,
                own_ns: str | None) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT
    namespace = None
    for _ in range(int(START_TIMEOUT / POLL_INTERVAL) + 1):
        if proc.poll() is not None:
            raise DaemonError(f"{name} exited ({proc.returncode}) before listening on "
                              f"{spec.address}:{spec.port}\n--- log ({log}) ---\n{_tail(log)}")
        ns = _mount_ns(proc.pid)
        if ns and ns != own_ns:
            namespace = ns
        if namespace and _listening(spec.address, spec.port, spec.transport):
            return namespace
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL)
    raise DaemonError(f"{name} did not listen on {spec.address}:{spec.port}/{spec.transport} "
                      f"within {START_TIMEOUT:.0f} s\n--- log ({log}) ---\n{_tail(log)}")


def _stop(proc: subprocess.Popen[bytes], namespace: str | None, own_ns: str | None) -> None:
    """SIGTERM the process group (SIGKILL after STOP_TIMEOUT), reap it, then SIGKILL anything
    still in the daemon's private mount namespace (telnet/ssh sessions call setsid)."""
    if proc.poll() is None:
        ns = _mount_ns(proc.pid)
        if ns and ns != own_ns:
            namespace = ns
    # Snapshot the namespace first: a process that is exiting has already left its namespace
    # (no /proc/PID/ns/mnt), so it is waited for by pid.
    members = set(_members(namespace)) if namespace and namespace != own_ns else set()
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the group still has its leader: the pgid is ours
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=STOP_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                continue
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise DaemonError(f"pid {proc.pid} survived SIGKILL") from exc
    if not namespace or namespace == own_ns:
        return
    killed = members
    left: list[str] = []
    for _ in range(100):  # bounded: 100 sweeps, 50 ms apart
        left = _members(namespace)
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        killed.update(left)
        left += [pid for pid in killed - set(left) if not _dead(pid)]
        if not left:
            return
        time.sleep(POLL_INTERVAL)
    raise DaemonError(f"processes {left} of mount namespace {namespace} survived SIGKILL")


def _dead(pid: str) -> bool:
    """Gone, or a zombie (its parent, often init, reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] in (["Z"], ["X"])


def _members(namespace: str) -> list[str]:
    me = str(os.getpid())
    return [p for p in os.listdir("/proc")
            if p.isdigit() and p != me and _mount_ns(p) == namespace]
