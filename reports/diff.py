"""What changed between two scans: findings, devices and clause verdicts.

Findings are matched by their stable id (same check, device, port and key give the same id). An
old finding missing from the new scan is *fixed* only when the new scan re-ran that check on that
device and port to completion; if the device was not seen, or the check did not run or errored,
the finding is *unverified* — gone from the report, but not shown to be gone from the device.

Clause verdicts are compared per framework × device × clause for devices and clauses present in
both scans, ordered FAIL < INCONCLUSIVE < MANUAL < NOT_APPLICABLE < PASS: a move down is a
regression, a move up an improvement. The diff re-reads the verdicts stored in each result; it
evaluates nothing itself.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scanner.models import CheckStatus, ClauseVerdict, Device, Finding, ScanResult, Verdict
from scanner.textsafe import terminal_safe

DIFF_FORMAT = "iotbaseline-diff/1"
VERDICT_ORDER = (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.MANUAL, Verdict.NOT_APPLICABLE,
                 Verdict.PASS)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScanRef(_Model):
    scan_id: str
    profile: str
    started_at: datetime
    finished_at: datetime | None = None
    complete: bool
    devices: int
    findings: int


class FindingRef(_Model):
    id: str
    check_id: str
    device: str
    port: int | None = None
    transport: str | None = None
    severity: str
    title: str


class DeviceRef(_Model):
    address: str
    label: str = ""  # manufacturer and model as the device describes itself


class VerdictChange(_Model):
    framework: str
    device: str
    clause: str
    title: str
    old: Verdict
    new: Verdict
    change: Literal["regressed", "improved"]


class ScanDiff(_Model):
    format: str = DIFF_FORMAT
    old_scan: ScanRef
    new_scan: ScanRef
    new_findings: list[FindingRef] = Field(default_factory=list)
    fixed_findings: list[FindingRef] = Field(default_factory=list)
    persisting_findings: list[FindingRef] = Field(default_factory=list)
    unverified_findings: list[FindingRef] = Field(default_factory=list)  # not re-checked
    new_devices: list[DeviceRef] = Field(default_factory=list)
    vanished_devices: list[DeviceRef] = Field(default_factory=list)
    verdict_changes: list[VerdictChange] = Field(default_factory=list)
    frameworks_added: list[str] = Field(default_factory=list)
    frameworks_removed: list[str] = Field(default_factory=list)

    @property
    def regressions(self) -> list[VerdictChange]:
        return [c for c in self.verdict_changes if c.change == "regressed"]

    @property
    def improvements(self) -> list[VerdictChange]:
        return [c for c in self.verdict_changes if c.change == "improved"]


def _address_key(address: str) -> tuple[int, int, str]:
    try:
        ip = ipaddress.ip_address(address)
        return ip.version, int(ip), ""
    except ValueError:
        return 9, 0, address


def _scan_ref(result: ScanResult) -> ScanRef:
    meta = result.meta
    return ScanRef(scan_id=meta.scan_id, profile=meta.profile, started_at=meta.started_at,
                   finished_at=meta.finished_at, complete=meta.complete,
                   devices=len(result.devices), findings=len(result.findings))


def _finding_ref(finding: Finding) -> FindingRef:
    return FindingRef(id=finding.id, check_id=finding.check_id, device=finding.device,
                      port=finding.port, transport=finding.transport,
                      severity=finding.severity.value, title=finding.title)


def _sorted_findings(findings: Iterable[Finding]) -> list[FindingRef]:
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, _address_key(f.device),
                                              f.port or 0, f.check_id, f.id))
    return [_finding_ref(f) for f in ordered]


def _device_ref(device: Device) -> DeviceRef:
    label = " ".join(part for part in (device.manufacturer, device.model) if part)
    return DeviceRef(address=device.address, label=label)


def _rechecked(result: ScanResult) -> set[tuple[str, str, int | None]]:
    """(check, device, port) that ran to completion in ``result``."""
    return {(run.check_id, run.device, run.port) for run in result.check_runs
            if run.status is not CheckStatus.ERROR}


def _verdicts(result: ScanResult) -> dict[tuple[str, str, str], ClauseVerdict]:
    return {(v.framework, v.device, v.clause): v for v in result.verdicts}


def diff_results(old: ScanResult, new: ScanResult) -> ScanDiff:
    """The changes from ``old`` to ``new`` (both as stored: verdicts are read, not made)."""
    old_findings = {f.id: f for f in old.findings}
    new_findings = {f.id: f for f in new.findings}
    rechecked = _rechecked(new)
    gone = [f for fid, f in old_findings.items() if fid not in new_findings]
    fixed = [f for f in gone if (f.check_id, f.device, f.port) in rechecked]
    unverified = [f for f in gone if (f.check_id, f.device, f.port) not in rechecked]

    old_devices = {d.address: d for d in old.devices}
    new_devices = {d.address: d for d in new.devices}

    old_verdicts, new_verdicts = _verdicts(old), _verdicts(new)
    changes = []
    for key in sorted(old_verdicts.keys() & new_verdicts.keys(),
                      key=lambda k: (k[0], _address_key(k[1]), k[2])):
        before, after = old_verdicts[key].verdict, new_verdicts[key].verdict
        if before is after:
            continue
        change: Literal["regressed", "improved"] = "regressed" \
            if VERDICT_ORDER.index(after) < VERDICT_ORDER.index(before) else "improved"
        changes.append(VerdictChange(framework=key[0], device=key[1], clause=key[2],
                                     title=new_verdicts[key].title, old=before, new=after,
                                     change=change))
    old_frameworks = dict.fromkeys(v.framework for v in old.verdicts)
    new_frameworks = dict.fromkeys(v.framework for v in new.verdicts)
    return ScanDiff(
        old_scan=_scan_ref(old), new_scan=_scan_ref(new),
        new_findings=_sorted_findings(f for fid, f in new_findings.items()
                                      if fid not in old_findings),
        fixed_findings=_sorted_findings(fixed),
        persisting_findings=_sorted_findings(f for fid, f in new_findings.items()
                                             if fid in old_findings),
        unverified_findings=_sorted_findings(unverified),
        new_devices=[_device_ref(new_devices[a]) for a in sorted(
            new_devices.keys() - old_devices.keys(), key=_address_key)],
        vanished_devices=[_device_ref(old_devices[a]) for a in sorted(
            old_devices.keys() - new_devices.keys(), key=_address_key)],
        verdict_changes=changes,
        frameworks_added=[f for f in new_frameworks if f not in old_frameworks],
        frameworks_removed=[f for f in old_frameworks if f not in new_frameworks],
    )


def _scan_line(label: str, scan: ScanRef) -> str:
    state = "complete" if scan.complete else "INCOMPLETE"
    return (f"{label} scan {terminal_safe(scan.scan_id, 60)}  "
            f"{scan.started_at:%Y-%m-%d %H:%M:%S %Z}  profile {terminal_safe(scan.profile, 40)}"
            f"  {state}, {scan.devices} device(s), {scan.findings} finding(s)")


def _finding_line(tag: str, finding: FindingRef) -> str:
    port = f":{finding.port}" if finding.port is not None else ""
    return (f"  {tag:<11} [{finding.severity:>8}] {terminal_safe(finding.device, 60)}{port} "
            f"{terminal_safe(finding.check_id, 60)}  {terminal_safe(finding.id, 40)}  "
            f"{terminal_safe(finding.title, 100)}")


def render_diff_text(diff: ScanDiff) -> str:
    """A summary for a terminal; every string from a scan passes ``terminal_safe``."""
    lines = ["iotbaseline diff", _scan_line("old:", diff.old_scan),
             _scan_line("new:", diff.new_scan)]
    if not (diff.old_scan.complete and diff.new_scan.complete):
        lines.append("warning: a scan is incomplete; missing findings and devices may only "
                     "mean they were not reached")
    lines += ["", f"Findings: {len(diff.new_findings)} new, {len(diff.fixed_findings)} fixed, "
                  f"{len(diff.persisting_findings)} persisting, "
                  f"{len(diff.unverified_findings)} not re-checked"]
    for tag, group in (("NEW", diff.new_findings), ("FIXED", diff.fixed_findings),
                       ("UNVERIFIED", diff.unverified_findings),
                       ("PERSISTING", diff.persisting_findings)):
        lines += [_finding_line(tag, f) for f in group]
    lines += ["", f"Devices: {len(diff.new_devices)} new, {len(diff.vanished_devices)} vanished"]
    for tag, devices in (("NEW", diff.new_devices), ("VANISHED", diff.vanished_devices)):
        lines += [f"  {tag:<11} {terminal_safe(d.address, 60)}"
                  + (f"  {terminal_safe(d.label, 80)}" if d.label else "") for d in devices]
    lines += ["", f"Clause verdicts: {len(diff.regressions)} regressed, "
                  f"{len(diff.improvements)} improved"]
    for change in [*diff.regressions, *diff.improvements]:
        lines.append(f"  {change.change.upper():<11} {terminal_safe(change.framework, 40)} "
                     f"{terminal_safe(change.clause, 20)} {terminal_safe(change.title, 60)} on "
                     f"{terminal_safe(change.device, 60)}: {change.old.value} -> "
                     f"{change.new.value}")
    for label, frameworks in (("added", diff.frameworks_added),
                              ("removed", diff.frameworks_removed)):
        if frameworks:
            lines.append(f"  frameworks {label}: "
                         + ", ".join(terminal_safe(f, 40) for f in frameworks))
    return "\n".join(lines) + "\n"


def render_diff_json(diff: ScanDiff) -> str:
    """The diff as JSON (the ScanDiff model), ASCII-only so no device text can act on a
    terminal."""
    return json.dumps(diff.model_dump(mode="json"), indent=2, ensure_ascii=True) + "\n"
