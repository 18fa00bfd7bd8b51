"""Evidence bundles: transcripts per finding, capture or a note, a manifest of SHA-256 hashes that
``verify_evidence`` checks, owner-only permissions; and the packet capture itself on loopback
(root only: it needs raw sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reports import capture as capture_module
from reports.capture import Capture, bpf_for, capture_traffic, capture_unavailable
from reports.evidence import (
    CAPTURE_NAME,
    CAPTURE_NOTE,
    MANIFEST,
    EvidenceError,
    transcript,
    transcript_name,
    verify_evidence,
    write_evidence,
)
from scanner.models import ScanResult
from tests.report_fixtures import HOSTILE, hostile_result, sample_result

CREATED = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
LAB_HOST, OTHER_HOST = "127.86.0.1", "127.86.0.2"  # never port 2024: servers take port 0


@pytest.fixture
def credentials(tmp_path: Path) -> list[Path]:
    path = tmp_path / "extra-creds.yaml"
    path.write_text("entries: []\n", "utf-8")
    return [path]


@pytest.fixture
def bundle(tmp_path: Path, credentials: list[Path]) -> Path:
    return write_evidence(sample_result(), tmp_path / "evidence", None, credentials,
                          "profiles/scan/safe.yaml", created_at=CREATED)


def _manifest(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / MANIFEST).read_text("utf-8"))
    return data


def test_sample_bundle_verifies(bundle: Path, credentials: list[Path]) -> None:
    assert verify_evidence(bundle, check_permissions=True) == []
    manifest = _manifest(bundle)
    result = sample_result()
    assert manifest["scan_id"] == result.meta.scan_id
    assert manifest["tool_version"] == result.meta.tool_version
    assert manifest["profile"] == "safe"
    assert manifest["profile_source"] == "profiles/scan/safe.yaml"
    assert manifest["created_at"] == "2026-11-29T10:00:00.000000Z"
    assert manifest["capture"] is None
    assert manifest["credential_files"] == [{
        "path": str(credentials[0]), "bytes": 12,
        "sha256": hashlib.sha256(b"entries: []\n").hexdigest()}]
    files = manifest["files"]
    assert isinstance(files, dict)
    assert set(files) == {CAPTURE_NOTE, "report.json",
                          *(f"findings/{f.id}.txt" for f in result.findings)}
    for relative, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((bundle / relative).read_bytes()).hexdigest()
    assert ScanResult.model_validate_json((bundle / "report.json").read_bytes()) == result


def test_permissions_are_owner_only(bundle: Path) -> None:
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700
    assert stat.S_IMODE((bundle / "findings").stat().st_mode) == 0o700
    for path in bundle.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_transcripts_hold_every_exchange(bundle: Path) -> None:
    finding = next(f for f in sample_result().findings if f.id == "IOTB-TELNET5XX")
    text = (bundle / "findings" / "IOTB-TELNET5XX.txt").read_text("utf-8")
    assert "Check:      telnet-exposed" in text and "Target:     192.0.2.5:23/tcp" in text
    for exchange in finding.evidence:
        stamp = exchange.at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        head = next(line for line in text.splitlines() if line.startswith(stamp))
        assert exchange.direction in head and exchange.endpoint in head
    assert "2026-11-29T09:00:10.000000Z  event     tcp://192.0.2.5:23" in text
    assert "    \\xff\\xfb\\x01BusyBox v1.19\n    login: " in text
    assert "no packet capture" in (bundle / CAPTURE_NOTE).read_text("utf-8").lower()


def test_tampering_one_byte_is_detected(bundle: Path) -> None:
    target = bundle / "findings" / "IOTB-CRED0001.txt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    assert verify_evidence(bundle) == [
        "altered: findings/IOTB-CRED0001.txt (SHA-256 differs from the manifest)"]


def test_missing_extra_and_manifest_problems(bundle: Path) -> None:
    (bundle / "report.json").unlink()
    (bundle / "findings" / "planted.txt").write_text("x", "utf-8")
    assert verify_evidence(bundle) == ["missing: report.json",
                                       "extra: findings/planted.txt (not in the manifest)"]
    manifest = _manifest(bundle)
    files = manifest["files"]
    assert isinstance(files, dict)
    files["../outside"] = {"sha256": "0" * 64}
    (bundle / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    assert "manifest: unsafe path '../outside'" in verify_evidence(bundle)
    (bundle / MANIFEST).unlink()
    assert verify_evidence(bundle) == [
        "manifest: manifest.json is missing or unreadable (FileNotFoundError)"]


def test_loose_permissions_are_reported_when_asked(bundle: Path) -> None:
    (bundle / "report.json").chmod(0o644)
    assert verify_evidence(bundle) == []
    assert verify_evidence(bundle, check_permissions=True) == [
        "permissions: report.json is 0644, open beyond its owner"]


def test_capture_file_is_included(tmp_path: Path) -> None:
    pcap = tmp_path / "scan.pcap"
    pcap.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(20))
    folder = write_evidence(sample_result(), tmp_path / "b", pcap, [], "safe",
                            created_at=CREATED)
    assert (folder / CAPTURE_NAME).read_bytes() == pcap.read_bytes()
    assert not (folder / CAPTURE_NOTE).exists()
    assert _manifest(folder)["capture"] == CAPTURE_NAME
    assert verify_evidence(folder, check_permissions=True) == []


def test_capture_note_gives_the_reason(tmp_path: Path) -> None:
    folder = write_evidence(sample_result(), tmp_path / "b", None, [], "safe",
                            capture_note="packet capture needs raw sockets: run as root")
    assert (folder / CAPTURE_NOTE).read_text("utf-8") == \
        "packet capture needs raw sockets: run as root\n"


def test_refuses_a_folder_in_use(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x", "utf-8")
    with pytest.raises(EvidenceError, match="not empty"):
        write_evidence(sample_result(), used, None, [], "safe")
    (tmp_path / "file").write_text("x", "utf-8")
    with pytest.raises(EvidenceError, match="not a folder"):
        write_evidence(sample_result(), tmp_path / "file", None, [], "safe")


def test_hostile_text_and_ids_stay_inside_and_inert(tmp_path: Path) -> None:
    hostile = hostile_result()
    evil = hostile.findings[0].model_copy(update={"id": "../../etc/" + HOSTILE})
    result = hostile.model_copy(update={"findings": [*hostile.findings, evil]})
    folder = write_evidence(result, tmp_path / "b", None, [], "safe")
    assert verify_evidence(folder) == []
    names = sorted(p.name for p in (folder / "findings").iterdir())
    assert len(names) == 2 and all("/" not in n and not n.startswith(".") for n in names)
    assert not (tmp_path / "etc").exists()
    for path in (folder / "findings").iterdir():
        text = path.read_text("utf-8")
        raw = [c for c in text if c not in "\n\t"
               and unicodedata.category(c) in ("Cc", "Cf", "Cs")]
        assert raw == [], path.name
        assert "\\x1b" in text and "\\u202e" in text


def test_transcript_names_are_safe_and_unique() -> None:
    taken: set[str] = set()
    assert transcript_name("IOTB-ABC", taken) == "IOTB-ABC.txt"
    assert transcript_name("IOTB-ABC", taken) == "IOTB-ABC-2.txt"
    assert transcript_name("../..", taken) == "_...txt"  # no separator, no leading dot
    assert transcript_name("", taken) == "finding.txt"
    assert transcript(sample_result().findings[0]).endswith("\n")


# --- packet capture ------------------------------------------------------------------------

def test_bpf_lists_hosts_up_to_the_cap() -> None:
    assert bpf_for(["127.0.0.1", "127.0.0.2"]) == "host 127.0.0.1 or host 127.0.0.2"
    assert bpf_for(["127.0.0.1", "127.0.0.2"], limit=1) is None
    with pytest.raises(ValueError):
        bpf_for(["127.0.0.1 or net 0.0.0.0/0"])


async def test_no_capture_without_raw_sockets(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "capture_unavailable",
                        lambda: "packet capture needs raw sockets: run as root")
    ran = False
    async with capture_traffic([LAB_HOST], tmp_path / "c.pcap") as result:
        ran = True
        assert result.path is None and "raw sockets" in result.reason
    assert ran and not (tmp_path / "c.pcap").exists()


needs_capture = pytest.mark.skipif(
    capture_unavailable() is not None,
    reason=f"packet capture unavailable: {capture_unavailable()}")


async def _echo_server(host: str) -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _exchange(host: str, port: int, payload: bytes) -> bytes:
    assert port != 2024
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    writer.write(payload)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    await writer.wait_closed()
    return answer


async def _capture_lab_exchange(path: Path, *, max_filter_hosts: int = 64,
                                max_packets: int = 200_000) -> Capture:
    servers = [_echo_server(LAB_HOST), _echo_server(OTHER_HOST)]
    lab_port, other_port = [await anext(server) for server in servers]
    try:
        async with capture_traffic([LAB_HOST], path, max_filter_hosts=max_filter_hosts,
                                   max_packets=max_packets) as result:
            assert result.path == path
            assert await _exchange(LAB_HOST, lab_port, b"in-scope hello") == b"in-scope hello"
            assert await _exchange(OTHER_HOST, other_port, b"out of scope") == b"out of scope"
        return result
    finally:
        for server in servers:
            with pytest.raises(StopAsyncIteration):
                await anext(server)


def _read(path: Path) -> list[tuple[set[str], bytes]]:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    packets = []
    for packet in rdpcap(str(path)):
        if packet.haslayer(IP):
            payload = bytes(packet[TCP].payload) if packet.haslayer(TCP) else b""
            packets.append(({packet[IP].src, packet[IP].dst}, payload))
    return packets


@needs_capture
@pytest.mark.parametrize("filter_hosts", [64, 0], ids=["bpf", "python-filter"])
async def test_loopback_capture_keeps_only_in_scope_traffic(tmp_path: Path,
                                                            filter_hosts: int) -> None:
    path = tmp_path / "scan.pcap"
    result = await _capture_lab_exchange(path, max_filter_hosts=filter_hosts)
    assert result.interfaces == ["lo"]
    assert (result.bpf == f"host {LAB_HOST}") == (filter_hosts > 0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    packets = _read(path)
    assert packets and result.packets >= len(packets) and not result.truncated
    assert all(LAB_HOST in hosts for hosts, _ in packets)
    assert not any(OTHER_HOST in hosts for hosts, _ in packets)
    assert any(b"in-scope hello" in payload for _, payload in packets)
    assert not any(b"out of scope" in payload for _, payload in packets)


@needs_capture
async def test_capture_stops_at_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "scan.pcap"
    result = await _capture_lab_exchange(path, max_packets=3)
    assert result.truncated and result.packets == 3 and "bound" in result.reason
    assert len(_read(path)) == 3


@needs_capture
async def test_capture_for_a_large_scope_filters_by_scope(tmp_path: Path) -> None:
    from reports.capture import capture_scope
    from scanner.targets import build_scope

    scope = build_scope(["127.86.0.0/31", "127.86.0.1"], excluded_ports=[2024])
    servers = [_echo_server(LAB_HOST), _echo_server("127.86.0.5")]
    lab_port, other_port = [await anext(server) for server in servers]
    try:
        async with capture_scope(scope, tmp_path / "scan.pcap", max_filter_hosts=1) as result:
            assert await _exchange(LAB_HOST, lab_port, b"in-scope hello") == b"in-scope hello"
            assert await _exchange("127.86.0.5", other_port, b"out of scope") == b"out of scope"
    finally:
        for server in servers:
            with pytest.raises(StopAsyncIteration):
                await anext(server)
    assert result.bpf == "" and result.interfaces == ["lo"]
    packets = _read(tmp_path / "scan.pcap")
    assert any(b"in-scope hello" in payload for _, payload in packets)
    assert not any("127.86.0.5" in hosts for hosts, _ in packets)


# --- the scan flag (needs the cli.py patch) --------------------------------------------------

async def test_scan_evidence_flag_writes_a_verified_bundle(tmp_path: Path) -> None:
    import subprocess
    import sys

    from scanner import cli
    from tests import fakes

    try:
        cli.build_parser().parse_args(["scan", "127.0.0.1", "--evidence", "x"])
    except SystemExit:
        pytest.skip("scanner/cli.py has no --evidence flag yet (apply the cli patch)")
    device = await fakes.banner("127.86.1.1", 2323, b"\xff\xfb\x01\r\nlogin: ")
    try:
        env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scanner", "scan", "127.86.1.1", "--ports", "2323",
            "--timeout", "1.5", "--profile", "quick", "--out", str(tmp_path / "report"),
            "--evidence", str(tmp_path / "evidence"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await device.close()
    assert process.returncode == 1, err.decode()  # the telnet finding is high
    assert out == b"" and b"Evidence: " in err
    bundle = tmp_path / "evidence"
    assert verify_evidence(bundle, check_permissions=True) == []
    manifest = _manifest(bundle)
    files = manifest["files"]
    assert isinstance(files, dict)
    assert any(name.startswith("findings/") for name in files)
    assert manifest["credential_files"]  # the built-in lists at least
    if capture_unavailable() is None:
        assert manifest["capture"] == CAPTURE_NAME
        packets = _read(bundle / CAPTURE_NAME)
        assert packets and all("127.86.1.1" in hosts for hosts, _ in packets)
        assert any(b"login: " in payload for _, payload in packets)
    else:
        assert (bundle / CAPTURE_NOTE).exists()
    code = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "scanner", "scan", "127.86.1.1", "--ports", "2323",
        "--evidence", str(bundle)], capture_output=True, text=True, env=env, timeout=60)
    assert code.returncode == 2 and "must be a new or empty folder" in code.stderr
