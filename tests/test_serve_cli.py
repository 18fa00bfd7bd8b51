"""`iotbaseline token create` then `iotbaseline serve` as a user runs them: a real process on
127.138.5.1, over HTTPS with a test certificate; stopped by its pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.tls_certs import ca_signed

ADDRESS = "127.138.5.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ADDRESS, 0))
        port: int = sock.getsockname()[1]
    assert port != 2024
    return port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_serve_runs_the_api_over_tls_with_a_token_made_by_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "IOTBASELINE_STORE": f"sqlite:///{tmp_path / 'store.sqlite'}",
           "IOTBASELINE_EXCLUDE_PORTS": "2024"}
    made = _cli("token", "create", "ops", "--role", "viewer", env=env)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    cert = ca_signed(tmp_path, [ADDRESS], stem="service")
    assert cert.ca is not None
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "scanner", "serve", "--listen", f"{ADDRESS}:{port}",
         "--authorised", "127.138.6.0/24", "--out", str(tmp_path / "out"),
         "--tls-cert", str(cert.cert), "--tls-key", str(cert.key)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    context = ssl.create_default_context(cafile=str(cert.ca))
    url = f"https://{ADDRESS}:{port}/api/scans"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
                with urllib.request.urlopen(request, context=context, timeout=5) as answer:
                    assert answer.status == 200
                    assert isinstance(json.loads(answer.read()), (list, dict))
                break
            except (urllib.error.URLError, ConnectionError) as exc:
                if isinstance(exc, urllib.error.HTTPError) or process.poll() is not None \
                        or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not answer: {exc}; log: "
                                         f"{(tmp_path / 'serve.log').read_text()[-2000:]}") from exc
                time.sleep(0.3)
        try:  # no token: refused
            urllib.request.urlopen(url, context=context, timeout=5)
            raise AssertionError("answered without a token")
        except urllib.error.HTTPError as refused:
            assert refused.code == 401
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log.close()
