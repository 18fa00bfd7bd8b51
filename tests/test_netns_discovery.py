"""Link-local discovery over real protocols, between two network namespaces joined by a veth pair.

    iotb-s-<pid>  10.231.7.1/24  <-- veth -->  10.231.7.2/24  iotb-d-<pid>
    (the scanner CLI)                         (tests/netns_device.py, MAC 24:6f:28:aa:bb:cc)

Nothing links either namespace to the host namespace: every packet (ARP, mDNS, SSDP multicast,
HTTP) stays on the veth pair or on a namespace's own loopback. The scanner runs as a subprocess
(``ip netns exec ... python -m scanner discover``), so scapy's route table, zeroconf's sockets and
the multicast SSDP socket are all the real ones inside the scanner namespace.

Needs root and ``ip netns``; skipped otherwise (CI runs as root, so there it runs).
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanner.storage import REPORT_NAME
from tests.helpers import NEVER_TOUCH_PORTS, validate_report

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parent.parent
DEVICE_SCRIPT = Path(__file__).resolve().parent / "netns_device.py"
PYTHON = sys.executable

SCANNER_ADDRESS, DEVICE_ADDRESS, PREFIX = "10.231.7.1", "10.231.7.2", 24
DEVICE_MAC = "24:6f:28:aa:bb:cc"  # Espressif Inc. OUI
READY_TIMEOUT = 20.0
SCAN_TIMEOUT = 45.0
DEVICE_LIFETIME = 90.0  # the device exits by itself even if teardown never runs


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "iproute2 'ip' command not installed"
    probe = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True,
                           timeout=10)
    if probe.returncode != 0:
        return f"'ip netns' unavailable: {probe.stderr.strip()[:200]}"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True,
                            timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def _wait_for_ready(process: subprocess.Popen[str], timeout: float) -> list[str]:
    """Read the device's stdout until READY, the process exits, or ``timeout`` passes."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(seen) < 100:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"device not READY within {timeout:.0f} s; stdout {seen}")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"device exited with {process.wait(5)} before READY; "
                                   f"stdout {seen}")
            seen.append(line.rstrip())
            if line.strip() == "READY":
                return seen
    raise RuntimeError(f"device printed too much before READY: {seen[-5:]}")


@dataclass
class Lan:
    scanner_ns: str
    device_ns: str
    device: subprocess.Popen[str]
    device_log: Path


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    pid = os.getpid()
    scanner_ns, device_ns = f"iotb-s-{pid}", f"iotb-d-{pid}"
    veth_s, veth_d = f"iotbs{pid}"[:15], f"iotbd{pid}"[:15]
    device_log = tmp_path_factory.mktemp("netns") / "device.log"
    created: list[str] = []
    device: subprocess.Popen[str] | None = None
    try:
        for ns in (scanner_ns, device_ns):
            _ip("netns", "add", ns)
            created.append(ns)
        # Create the pair inside the scanner namespace and move one end: it never exists in
        # the host namespace.
        _ip("-n", scanner_ns, "link", "add", veth_s, "type", "veth", "peer", "name", veth_d)
        _ip("-n", scanner_ns, "link", "set", veth_d, "netns", device_ns)
        _ip("-n", device_ns, "link", "set", veth_d, "address", DEVICE_MAC)
        for ns, dev, address in ((scanner_ns, veth_s, SCANNER_ADDRESS),
                                 (device_ns, veth_d, DEVICE_ADDRESS)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        with device_log.open("w") as log_file:
            device = subprocess.Popen(
                ["ip", "netns", "exec", device_ns, PYTHON, str(DEVICE_SCRIPT),
                 "--address", DEVICE_ADDRESS, "--lifetime", str(DEVICE_LIFETIME)],
                stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=REPO)
        _wait_for_ready(device, READY_TIMEOUT)
        yield Lan(scanner_ns, device_ns, device, device_log)
    finally:
        if device is not None and device.poll() is None:
            device.terminate()  # by pid: `ip netns exec` execs the script in place
            try:
                device.wait(10)
            except subprocess.TimeoutExpired:
                device.kill()
                device.wait(5)
        if device is not None and device.stdout is not None:
            device.stdout.close()
        for ns in reversed(created):  # deleting a namespace removes its veth end too
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True,
                           timeout=10)


def _profile(tmp_path: Path, lan_wait: float = 3.0) -> Path:
    path = tmp_path / "netns-profile.yaml"
    path.write_text(
        "name: netns-test\n"
        "extends: safe\n"
        "timing: {connect_timeout: 1.0, read_timeout: 2.0}\n"
        f"discovery: {{arp: true, mdns: true, ssdp: true, lan_wait: {lan_wait}, "
        "liveness_ports: [80]}\n")
    return path


def _discover(lan: Lan, tmp_path: Path, target: str, ports: str,
              name: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
    out = tmp_path / name
    env = dict(os.environ, IOTBASELINE_EXCLUDE_PORTS=",".join(map(str, NEVER_TOUCH_PORTS)))
    started = time.monotonic()
    result = subprocess.run(
        ["ip", "netns", "exec", lan.scanner_ns, PYTHON, "-m", "scanner", "discover", target,
         "--profile", str(_profile(tmp_path)), "--ports", ports,
         "--exclude-ports", ",".join(map(str, NEVER_TOUCH_PORTS)), "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=SCAN_TIMEOUT, cwd=REPO, env=env)
    elapsed = time.monotonic() - started
    context = (f"exit {result.returncode}\nstderr:\n{result.stderr[-4000:]}\n"
               f"device log:\n{lan.device_log.read_text()[-2000:]}")
    assert result.returncode == 0, context
    report = validate_report(out / REPORT_NAME)
    return result, report, elapsed


def test_link_local_discovery_over_real_protocols(lan: Lan, tmp_path: Path) -> None:
    _, report, elapsed = _discover(lan, tmp_path, DEVICE_ADDRESS, "80,U:1900", "full")
    notes = report["meta"]["discovery_notes"]
    assert not [n for n in notes if "failed" in n or "skipped" in n], notes
    assert [d["address"] for d in report["devices"]] == [DEVICE_ADDRESS], report["devices"]
    device = report["devices"][0]
    seen = f"device: {device}\ndevice log:\n{lan.device_log.read_text()[-2000:]}"

    # ARP (scapy, raw socket on the veth) -> MAC and OUI vendor.
    assert device["mac"] == DEVICE_MAC, seen
    assert "Espressif" in (device["vendor"] or ""), seen
    # mDNS/DNS-SD (zeroconf): service type without ".local.", server name without the dot.
    assert "_http._tcp" in device["mdns_services"], seen
    assert "labcam.local" in device["hostnames"], seen
    assert device["firmware"] == "2.1.7"  # TXT fw=
    # Multicast SSDP + description fetch (defusedxml). The engine's precedence for model is
    # UPnP modelName, then TXT model/md, so with both present the UPnP one wins; the TXT
    # model=CAM-9000 is asserted in test_txt_model_without_upnp below.
    assert device["model"] == "DS-2CD2042WD", seen
    assert device["manufacturer"] == "Hikvision", seen
    assert device["serial"] == "SN123", seen
    upnp = device["upnp"]
    assert upnp["manufacturer"] == "Hikvision"
    assert upnp["serialNumber"] == "SN123"
    assert upnp["location"] == f"http://{DEVICE_ADDRESS}:49152/rootDesc.xml"
    assert "LabCam" in upnp["server"]
    assert "Layer3Forwarding" in upnp.get("services", "")
    assert "location_note" not in upnp
    assert {"arp", "mdns", "ssdp"} <= set(device["discovered_by"]), device["discovered_by"]
    # The TCP sweep saw the web page; SSDP shows up as a udp/1900 service.
    services = {(s["transport"], s["port"]): s for s in device["services"]}
    assert ("tcp", 80) in services and ("udp", 1900) in services, services
    # The responder only answers M-SEARCHes addressed to the group: the UPnP facts above came
    # over multicast (the engine's unicast fallback is only tried when multicast found none).
    assert "answered multicast M-SEARCH" in lan.device_log.read_text()
    assert elapsed < SCAN_TIMEOUT


def test_txt_model_without_upnp(lan: Lan, tmp_path: Path) -> None:
    """Without U:1900 there is no SSDP at all, so model comes from the TXT record."""
    _, report, _ = _discover(lan, tmp_path, DEVICE_ADDRESS, "80", "txt")
    assert not [n for n in report["meta"]["discovery_notes"]
                if "failed" in n or "skipped" in n], report["meta"]["discovery_notes"]
    (device,) = report["devices"]
    assert device["model"] == "CAM-9000"
    assert device["firmware"] == "2.1.7"
    assert device["upnp"] == {}
    assert device["manufacturer"] is None
    assert set(device["discovered_by"]) >= {"arp", "mdns"}
    assert "ssdp" not in device["discovered_by"]


def test_lan_methods_skipped_off_link(lan: Lan, tmp_path: Path) -> None:
    """A target on no directly attached subnet: no ARP, mDNS or multicast SSDP is sent."""
    _, report, _ = _discover(lan, tmp_path, "127.0.0.1", "1", "offlink")
    notes = report["meta"]["discovery_notes"]
    assert any("skipped: no target is on a directly attached subnet" in n for n in notes), notes
    assert report["devices"] == []
