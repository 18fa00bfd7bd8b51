"""The command line as a user meets it: exit codes, one-line errors, stdout kept for payloads,
progress on stderr, Ctrl-C keeping a partial report, and the demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanner.cli import main
from tests import fakes
from tests.helpers import validate_report

TELNET_PROMPT = b"\xff\xfb\x01\r\nlogin: "


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("args, message", [
    (["scan", "999.0.0.1"], "not an address"),
    (["scan", "8.8.8.8"], "globally routable"),
    (["scan", "10.0.0.0/8"], "--force"),
    (["scan", "@/nonexistent/list"], "cannot read target file"),
    (["scan", "127.0.0.1", "--ports", "0-5"], "port out of range"),
    (["scan", "127.0.0.1", "--profile", "nope"], "no profile 'nope'"),
    (["scan", "127.0.0.1", "--fail-on", "urgent"], "unknown severity"),
    (["scan", "127.0.0.1", "--format", "pdf"], "unknown report format"),
    (["scan", "127.0.0.1", "--per-host", "0"], "must be at least 1"),
    (["scan", "127.0.0.1", "--rate", "fast"], "not a number"),
    (["scan"], "required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    completed = run_cli(*args)
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert completed.stdout == ""


def test_unreadable_profile_file(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\ntiming:\n  rate: -1\n")
    completed = run_cli("scan", "127.0.0.1", "--profile", str(profile))
    assert completed.returncode == 2
    assert f"{profile}:3: timing.rate" in completed.stderr


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    completed = run_cli("scan", "127.0.0.1", "--ports", "40300", "--out", str(target))
    assert completed.returncode == 2 and "is not a folder" in completed.stderr


def test_version_and_plugins() -> None:
    assert run_cli("version").stdout.startswith("iotbaseline ")
    listing = run_cli("plugins").stdout
    assert "telnet-exposed" in listing and "safe" in listing


async def test_scan_exit_codes_and_streams(tmp_path: Path) -> None:
    device = await fakes.banner("127.91.1.1", 2323, TELNET_PROMPT)
    try:
        env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
        base = [sys.executable, "-m", "scanner", "scan", "127.91.1.1", "--ports", "2323",
                "--timeout", "1.5", "--profile", "quick"]  # no credential attempts: fast
        async def run(*extra: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                *base, *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=env)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()

        code, out, err = await run("--out", str(tmp_path / "a"))
        assert code == 1  # a high finding, default --fail-on high
        assert out == ""  # stdout is only for payloads
        assert "telnet-exposed" in err and "Report:" in err
        document = validate_report(tmp_path / "a" / "report.json")
        assert document["findings"][0]["check_id"] == "telnet-exposed"
        code, _, _ = await run("--out", str(tmp_path / "b"), "--fail-on", "critical")
        assert code == 0
    finally:
        await device.close()


def test_default_out_is_a_timestamped_folder(tmp_path: Path) -> None:
    env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
    completed = subprocess.run(
        [sys.executable, "-m", "scanner", "discover", "127.91.2.1", "--ports", "40301"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    [folder] = list(tmp_path.glob("iotbaseline-report-*"))
    validate_report(folder / "report.json")


async def test_ctrl_c_writes_a_partial_report(tmp_path: Path) -> None:
    silent = [await fakes.silent(f"127.91.3.{n}", 2323) for n in range(1, 30)]
    try:
        env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scanner", "scan", "127.91.3.1-29", "--ports", "2323",
            "--per-host", "1", "--concurrency", "2", "--out", str(tmp_path / "p"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        journal = tmp_path / "p" / "scan.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                journal.exists() and '"device"' in journal.read_text()):
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        for server in silent:
            await server.close()
    assert process.returncode == 130, err.decode()
    document = validate_report(tmp_path / "p" / "report.json")
    assert document["meta"]["complete"] is False
    assert document["devices"], "devices found before Ctrl-C are kept"
    assert "INCOMPLETE" in err.decode()


def test_demo_scans_the_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    document = validate_report(tmp_path / "demo" / "report.json")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Report:" in captured.err
    devices = {d["address"]: d for d in document["devices"]}
    assert set(devices) == {"127.77.0.11", "127.77.0.12", "127.77.0.13", "127.77.0.14"}
    protocols = {(d, s["port"]): s["protocol"] for d, dev in devices.items()
                 for s in dev["services"]}
    assert protocols[("127.77.0.11", 2323)] == "telnet"
    assert protocols[("127.77.0.12", 2222)] == "ssh"
    assert protocols[("127.77.0.13", 1883)] == "mqtt"
    assert protocols[("127.77.0.11", 8554)] == "rtsp"
    assert devices["127.77.0.12"]["manufacturer"] == "NETGEAR"
    assert devices["127.77.0.12"]["serial"] == "4A21B3C00F9E"
    hardened = {s["port"]: s for s in devices["127.77.0.14"]["services"]}
    assert hardened[8443]["tls"] and "thermostat.lab" in hardened[8443]["certificate"]["subject"]
    checks = {(f["device"], f["check_id"]) for f in document["findings"]}
    assert ("127.77.0.11", "telnet-exposed") in checks
    assert ("127.77.0.11", "telnet-default-credentials") in checks  # admin/admin on the camera
    assert ("127.77.0.12", "ssh-default-credentials") in checks  # admin/admin on the router
    assert document["errors"] == []  # every lab service speaks its protocol properly
    # The hardened device: nothing above informational (its SSH banner names OpenSSH 9.6) …
    assert {f["check_id"] for f in document["findings"] if f["device"] == "127.77.0.14"} == \
        {"version-disclosure"}
    # … its certificate chains to the lab CA the demo trusts, and it publishes security.txt.
    passed = {r["check_id"] for r in document["check_runs"]
              if r["device"] == "127.77.0.14" and r["status"] == "pass"}
    assert {"tls-certificate-untrusted", "security-txt", "https-hsts-missing",
            "ssh-weak-kex", "tls-legacy-protocols"} <= passed
    assert (tmp_path / "demo" / "lab-ca.pem").read_bytes().startswith(b"-----BEGIN CERT")
    assert json.dumps(document)  # the whole report is plain JSON


def test_flag_bounds_and_reused_out_folder(tmp_path: Path) -> None:
    completed = run_cli("scan", "127.0.0.1", "--ports", "40300", "--per-host", "500")
    assert completed.returncode == 2 and "--per-host" in completed.stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "report.json").write_text("{}")
    completed = run_cli("scan", "127.0.0.1", "--ports", "40300", "--out", str(used))
    assert completed.returncode == 2 and "already holds a scan" in completed.stderr


def test_internal_error_exits_3_with_a_partial_report(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: object) -> None:
        raise RuntimeError("engine bug")

    monkeypatch.setattr("scanner.engine.ScanEngine._scan", broken)
    code = main(["scan", "127.91.4.1", "--ports", "40302", "--out", str(tmp_path / "e")])
    assert code == 3
    document = validate_report(tmp_path / "e" / "report.json")
    assert document["meta"]["stop_reason"] == "error"
    assert "engine bug" in document["meta"]["interrupted_reason"]


def test_profiles_list_show_validate(tmp_path: Path) -> None:
    listing = run_cli("profiles", "list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == \
        ["intrusive", "quick", "safe", "standard"]
    shown = run_cli("profiles", "show", "quick")
    assert shown.returncode == 0 and "per_host: 2" in shown.stdout  # inherited from safe
    copy = tmp_path / "quick-copy.yaml"
    copy.write_text(shown.stdout)
    checked = run_cli("profiles", "validate", str(copy))
    assert checked.returncode == 0 and "valid (quick" in checked.stdout
    from profiles import load_profile

    assert load_profile(str(copy)).model_dump(exclude={"source"}) == \
        load_profile("quick").model_dump(exclude={"source", "extends"}) | {"extends": None}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nports:\n  tcp: [0]\n")
    refused = run_cli("profiles", "validate", str(bad))
    assert refused.returncode == 2 and f"{bad}:3: ports.tcp" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


USER_TEMPLATE = """\
id: acme-debug-page
title: The Acme debug page is not served
description: Acme firmware 1.x leaves a debug page with the device secrets on the web root.
finding: The Acme debug page is served without a login
severity: high
categories: [debug-interface]
references: [https://acme.example/advisories/2026-1]
remediation: Update to Acme firmware 2.0, which removes the page.
http:
  paths: ["/acme-debug"]
  matchers:
    - type: status
      status: [200]
    - type: word
      words: ["ACME DEBUG"]
"""


async def test_a_profile_adds_the_users_own_template_checks(tmp_path: Path) -> None:
    """checks.template_dirs (relative to the profile) loads the user's checks into a scan."""
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        if request.path == "/acme-debug":
            return web.Response(text="ACME DEBUG secret=1")
        return web.Response(status=404)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.120.1.1", 8080).start()
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "acme-debug-page.yaml").write_text(USER_TEMPLATE)
    (tmp_path / "site.yaml").write_text("name: site\nextends: safe\n"
                                        "checks: {template_dirs: [checks]}\n"
                                        "discovery: {arp: false, mdns: false, ssdp: false}\n")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scanner", "scan", "127.120.1.1", "--ports", "8080",
            "--profile", str(tmp_path / "site.yaml"), "--out", str(tmp_path / "out"),
            "--format", "json", env={**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await runner.cleanup()
    assert process.returncode == 1, err.decode()  # findings
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    [finding] = [f for f in document["findings"] if f["check_id"] == "acme-debug-page"]
    assert finding["severity"] == "high" and finding["port"] == 8080
    (tmp_path / "bad.yaml").write_text("name: bad\nextends: safe\n"
                                       "checks: {template_dirs: [nowhere]}\n")
    completed = run_cli("scan", "127.120.1.1", "--profile", str(tmp_path / "bad.yaml"))
    assert completed.returncode == 2 and "checks.template_dirs: no such folder" in \
        completed.stderr
