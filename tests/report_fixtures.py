"""Fixed scan results for renderer tests: one realistic, one hostile (every device string an
attack on some output format). Deterministic: fixed ids and timestamps, verdicts from assess()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reports.verdicts import assess
from scanner.models import (
    Certificate,
    CheckRun,
    CheckStatus,
    Confidence,
    Device,
    Exchange,
    Finding,
    ManualAnswer,
    ProbeError,
    ScanMeta,
    ScanResult,
    Service,
    Severity,
    Verdict,
)

T0 = datetime(2026, 11, 29, 9, 0, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _meta(**changes: object) -> ScanMeta:
    values: dict[str, object] = dict(
        tool_version="0.1.0", scan_id="00000000-0000-4000-8000-000000000001", profile="safe",
        targets=["192.0.2.0/28"], excluded=["192.0.2.9"], scope_size=13,
        ports={"tcp": [22, 23, 80, 443, 1883], "udp": [161, 1900]}, started_at=_at(0),
        finished_at=_at(95), complete=True, command_line=["iotbaseline", "scan", "192.0.2.0/28"],
        discovery_notes=["ARP skipped: raw sockets need root or CAP_NET_RAW"],
        probes={"telnet-exposed": "iotbaseline 0.1.0",
                "telnet-default-credentials": "iotbaseline 0.1.0",
                "http-default-credentials": "iotbaseline 0.1.0",
                "mqtt-anonymous": "iotbaseline 0.1.0"})
    values.update(changes)
    return ScanMeta.model_validate(values)


def _telnet_finding(device: str, banner: str, key: str = "") -> Finding:
    return Finding(
        id=f"IOTB-TELNET{device[-1]}{key[:2].upper() or 'XX'}", check_id="telnet-exposed",
        title="No Telnet remote login is exposed",
        summary=f"Telnet on port 23 asks for a login in cleartext: {banner}",
        severity=Severity.HIGH, confidence=Confidence.CONFIRMED, device=device, port=23,
        transport="tcp", protocol="telnet",
        clauses={"iso-iec-27402-2023": ["5.2.2", "5.2.5", "5.2.6"]},
        evidence=[Exchange(at=_at(10), direction="event", endpoint=f"tcp://{device}:23",
                           data="connected"),
                  Exchange(at=_at(10.1), direction="received", endpoint=f"tcp://{device}:23",
                           data=f"\\xff\\xfb\\x01{banner}\nlogin: "),
                  Exchange(at=_at(10.2), direction="sent", endpoint=f"tcp://{device}:23",
                           data="\\xff\\xfe\\x01")],
        facts={"prompt": "login"},
        remediation="Disable Telnet; use SSH with per-device credentials.",
        references=["https://www.rfc-editor.org/rfc/rfc854"], found_at=_at(11))


def _credential_finding(device: str) -> Finding:
    return Finding(
        id="IOTB-CRED0001", check_id="telnet-default-credentials",
        title="Telnet does not accept default credentials",
        summary="Telnet on port 23 accepts the default credential admin:«redacted» "
                "(Acme default; shell evaluated a harmless echo).",
        severity=Severity.CRITICAL, confidence=Confidence.CONFIRMED, device=device, port=23,
        transport="tcp", protocol="telnet",
        clauses={"iso-iec-27402-2023": ["5.2.2", "5.2.6"]},
        evidence=[Exchange(at=_at(20), direction="sent", endpoint=f"tcp://{device}:23",
                           data="admin\\r\n"),
                  Exchange(at=_at(20.5), direction="sent", endpoint=f"tcp://{device}:23",
                           data="«redacted»\\r\n"),
                  Exchange(at=_at(21), direction="received", endpoint=f"tcp://{device}:23",
                           data="# ")],
        facts={"kind": "default-credential", "username": "admin", "password": "«redacted»",
               "negative_control": "failure"},
        remediation="Change the default password.", references=[], found_at=_at(22))


def _devices(model: str, banner: str, title: str) -> list[Device]:
    return [
        Device(address="192.0.2.5", mac="24:6f:28:aa:bb:cc", vendor="Espressif Inc.",
               hostnames=["cam.local"], manufacturer="Acme", model=model, firmware="2.1.7",
               serial="SN123", services=[
                   Service(port=23, transport="tcp", protocol="telnet", banner=banner,
                           sources=["banner"], details={"prompt": "login"}),
                   Service(port=80, transport="tcp", protocol="http", banner="Boa/0.94.13",
                           product="Boa/0.94.13", sources=["banner"],
                           details={"status": "401", "auth": "basic", "title": title})],
               mdns_services=["_http._tcp"], discovered_by=["arp", "banner", "mdns"]),
        Device(address="192.0.2.7", manufacturer="Acme", model="Thermo 1", services=[
            Service(port=443, transport="tcp", protocol="http", tls=True, banner="nginx",
                    sources=["banner"], details={"title": "Thermostat", "status": "200"},
                    certificate=Certificate(
                        subject="CN=thermostat.lab", issuer="CN=thermostat.lab",
                        not_before=_at(-86400), not_after=_at(86400 * 365), serial="1f",
                        sha256="ab" * 32, self_signed=True,
                        subject_alt_names=["192.0.2.7"]))],
            discovered_by=["banner"]),
    ]


def _runs(devices: list[Device]) -> list[CheckRun]:
    first, second = devices[0].address, devices[1].address
    return [
        CheckRun(check_id="telnet-exposed", device=first, port=23, transport="tcp",
                 status=CheckStatus.FAIL, findings=1, started_at=_at(10), duration_s=0.4),
        CheckRun(check_id="telnet-default-credentials", device=first, port=23, transport="tcp",
                 status=CheckStatus.FAIL, findings=1, started_at=_at(12), duration_s=9.5,
                 details={"attempts": "3 of budget 3 per account, 15 per service"}),
        CheckRun(check_id="http-default-credentials", device=first, port=80, transport="tcp",
                 status=CheckStatus.ERROR, started_at=_at(13), duration_s=30.0),
        CheckRun(check_id="mqtt-anonymous", device=second, port=1883, transport="tcp",
                 status=CheckStatus.PASS, started_at=_at(14), duration_s=0.2),
    ]


def sample_result() -> ScanResult:
    """Two devices, a high and a critical finding, an error, a pass, one answered clause."""
    devices = _devices("CAM-9000", "BusyBox v1.19", "Network Camera")
    findings = [_credential_finding("192.0.2.5"), _telnet_finding("192.0.2.5", "BusyBox v1.19")]
    errors = [ProbeError(check_id="http-default-credentials", device="192.0.2.5", port=80,
                         reason="TimeoutError: probe budget of 30.0 s used up", kind="timeout",
                         at=_at(43))]
    result = ScanResult(meta=_meta(), devices=devices, findings=findings,
                        check_runs=_runs(devices), errors=errors)
    answers = {("iso-iec-27402-2023", "5.1.3", "CAM-9000"): ManualAnswer(
        verdict=Verdict.FAIL, justification="No disclosure policy is published.",
        evidence=["https://acme.example/support"], assessor="A. Assessor",
        source="answers.yaml")}
    return assess(result, answers)


HOSTILE = ("<script>alert(1)</script>\x1b]0;pwned\x07\x1b[31mRED\x1b[0m =cmd|' /C calc'!A0 "
           "\x00NUL \ufffd\u202eevil\u202c ")


def hostile_result() -> ScanResult:
    """Every device-controlled string carries HTML, JS, ANSI/OSC, NUL, bidi, a CSV formula and
    64 KB of padding."""
    huge = HOSTILE + "A" * 65536
    devices = _devices(model="=HYPERLINK(\"http://x\")" + HOSTILE, banner=huge, title=HOSTILE)
    devices[0] = devices[0].model_copy(update={
        "hostnames": [HOSTILE], "manufacturer": "+" + HOSTILE, "upnp": {"friendlyName": HOSTILE}})
    findings = [_telnet_finding("192.0.2.5", huge, key="zz")]
    result = ScanResult(meta=_meta(discovery_notes=[HOSTILE]), devices=devices,
                        findings=findings, check_runs=_runs(devices),
                        errors=[ProbeError(check_id="telnet-exposed", device="192.0.2.5",
                                           port=23, reason="-" + HOSTILE, kind="protocol",
                                           traceback=HOSTILE, at=_at(50))])
    return assess(result)
