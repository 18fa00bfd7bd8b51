"""The scale benchmark's farm and driver, kept working (issue 10): a farm of 8 devices starts and
matches its truth file, and benchmarks/scale.py parses its arguments and completes a dry run.

Safety: the farm binds only 127.100.0.1-127.100.0.8 (the benchmark farm's block) on its four
ports, never 2024; every connection and every child process has a time limit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import farm  # noqa: E402  (benchmarks/ is not a package)

SCALE = [sys.executable, str(BENCHMARKS / "scale.py")]
READ_TIMEOUT = 5.0


async def _exchange(address: str, port: int, request: bytes) -> bytes:
    async with asyncio.timeout(READ_TIMEOUT):
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read(4096)
        finally:
            writer.close()


def _basic(user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n".encode()


async def _serve_and_check(devices: list[farm.FarmDevice]) -> dict[str, Any]:
    served = farm.Farm(devices)
    await served.start()
    try:
        checked: dict[str, Any] = {"servers": len(served._servers), "http": [], "ssh": []}
        for device in devices:
            for svc in device.services:
                if svc.protocol == "ssh":
                    checked["ssh"].append(await _exchange(device.address, svc.port,
                                                          b"SSH-2.0-test\r\n"))
                if svc.protocol == "http":
                    default = svc.accepts or ("admin", "admin")
                    reply = await _exchange(device.address, svc.port, _basic(*default))
                    wrong = await _exchange(device.address, svc.port, _basic("admin", "x" * 9))
                    checked["http"].append((svc.accepts is not None, reply, wrong))
        checked["stats"] = served.counters.summary()
        return checked
    finally:
        await served.stop()


def test_farm_of_eight_serves_what_its_truth_says(tmp_path: Path) -> None:
    devices = farm.build_devices(8, seed=1)
    truth_path = tmp_path / "truth.json"
    farm.write_truth(truth_path, devices, seed=1, latency=0.0)
    document = json.loads(truth_path.read_text())

    assert [d["address"] for d in document["inventory"]] == [
        f"127.100.0.{i}" for i in range(1, 9)]
    routers = [d for d in document["inventory"] if d["kind"] == "router"]
    assert routers and all({"protocol": "ssh", "port": farm.SSH_PORT} in d["services"]
                           for d in routers)
    assert not any(s["port"] in farm.FORBIDDEN_PORTS for d in document["inventory"]
                   for s in d["services"])
    for entry in document["entries"]:  # every expected pair is one the safe budget reaches
        if isinstance(entry["expected"], dict):
            pair = [entry["expected"]["username"], entry["expected"]["password"]]
            assert pair in document["candidates"][entry["protocol"]]

    checked = asyncio.run(_serve_and_check(devices))
    assert checked["servers"] == sum(len(d.services) for d in devices)
    assert checked["ssh"] and all(b.startswith(b"SSH-2.0-dropbear") for b in checked["ssh"])
    assert checked["http"]
    for vulnerable, reply, wrong in checked["http"]:
        assert reply.startswith(b"HTTP/1.1 200" if vulnerable else b"HTTP/1.1 401")
        assert wrong.startswith(b"HTTP/1.1 401")  # negative control: a wrong pair is refused
    assert checked["stats"]["handler_errors"] == {}


def test_scale_help_and_argument_checks() -> None:
    shown = subprocess.run([*SCALE, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0
    for option in ("--skip-nmap", "--skip-hydra", "--sizes", "--latency-ms", "--json"):
        assert option in shown.stdout
    for bad in (["--sizes", "many"], ["--latency-ms", "9000"], ["--sizes", "0"],
                ["--skip-ours", "everything"]):
        refused = subprocess.run([*SCALE, *bad], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 2, bad


def test_scale_dry_run_of_eight_devices_is_correct_and_polite(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    run = subprocess.run(
        [*SCALE, "--sizes", "8", "--latency-ms", "0", "--skip-nmap", "--skip-hydra",
         "--timeout", "25", "--out", str(tmp_path / "out"), "--json", str(out_json)],
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {row["tool"]: row for row in json.loads(out_json.read_text())["rows"]}
    assert set(rows) == {"floor", "sweep", "discovery", "audit"}
    for row in rows.values():
        assert not row["timed_out"]
        assert (row["open_recall"], row["open_fp"]) == (1.0, 0)
    audit = rows["audit"]["score"]
    assert audit["positives"] > 0
    assert (audit["recall"], audit["false_positives"]) == (1.0, 0)
    for tool in ("sweep", "discovery", "audit"):  # the profile's per_host (2) held
        assert 1 <= rows[tool]["max_conn_per_device"] <= 2
    assert rows["audit"]["max_attempts_per_account"] <= 3
    assert "N=8, latency 0 ms" in run.stdout
