"""Where results go while the scan runs: an append-only journal, then the final JSON report.

Each device, finding, check run and probe error is appended (and flushed) to ``scan.jsonl`` the
moment it exists, so a crash or a kill loses nothing already found; ``report.json`` is written
atomically at the end, or on interruption with ``complete: false``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from scanner.models import CheckRun, Device, Finding, ProbeError, ScanMeta, ScanResult

JOURNAL_NAME = "scan.jsonl"
REPORT_NAME = "report.json"


def write_private(path: Path, text: str) -> None:
    """Atomic, owner-only write: reports hold evidence about devices (and maybe secrets)."""
    temporary = path.with_name(f".{path.name}.tmp")
    # A leftover temporary (a killed run) or a planted symlink keeps its own mode or target
    # under O_CREAT alone: remove it, then create afresh and never follow a link.
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


class ResultStore:
    def __init__(self, out_dir: Path, replace: bool = False) -> None:
        """``replace``: start the journal afresh (a redelivered scan job runs again)."""
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if replace else 0)
        fd = os.open(out_dir / JOURNAL_NAME, mode, 0o600)
        self._journal = os.fdopen(fd, "a", encoding="utf-8")
        self.devices: dict[str, Device] = {}
        self.findings: list[Finding] = []
        self.check_runs: list[CheckRun] = []
        self.errors: list[ProbeError] = []

    def _append(self, kind: str, payload: dict[str, object]) -> None:
        self._journal.write(json.dumps({"kind": kind, "data": payload}, ensure_ascii=True) + "\n")
        self._journal.flush()

    def start(self, meta: ScanMeta) -> None:
        self._append("meta", meta.model_dump(mode="json"))

    def device(self, device: Device) -> None:
        self.devices[device.address] = device
        self._append("device", device.model_dump(mode="json"))

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)
        self._append("finding", finding.model_dump(mode="json"))

    def check_run(self, run: CheckRun) -> None:
        self.check_runs.append(run)
        self._append("check_run", run.model_dump(mode="json"))

    def error(self, error: ProbeError) -> None:
        self.errors.append(error)
        self._append("error", error.model_dump(mode="json"))

    def finish(self, meta: ScanMeta) -> ScanResult:
        """The scan as found, before any verdict: assessing and rendering come after."""
        devices = sorted(self.devices.values(), key=lambda d: _address_key(d.address))
        result = ScanResult(meta=meta, devices=devices,
                            findings=sorted(self.findings, key=lambda f: (
                                -f.severity.rank, _address_key(f.device), f.port or 0,
                                f.check_id)),
                            check_runs=self.check_runs, errors=self.errors)
        self._append("end", {"complete": meta.complete})
        self._journal.close()
        return result


def _address_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
        return ip.version, int(ip)
    except ValueError:
        return 9, 0


def load_report(path: Path) -> ScanResult:
    return ScanResult.model_validate_json(path.read_bytes())
