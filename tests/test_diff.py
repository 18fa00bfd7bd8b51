"""Scan diffs: findings new/fixed/persisting/unverified by id, devices by address, clause verdict
regressions and improvements, terminal-safe text, JSON through the model, and the CLI."""

from __future__ import annotations

import json
import unicodedata
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from reports.diff import (
    VERDICT_ORDER,
    ScanDiff,
    diff_results,
    render_diff_json,
    render_diff_text,
)
from reports.verdicts import assess
from scanner.models import (
    CheckRun,
    CheckStatus,
    Confidence,
    Device,
    Finding,
    ScanResult,
    Service,
    Severity,
    Verdict,
)
from tests.report_fixtures import HOSTILE, hostile_result, sample_result

ISO = "iso-iec-27402-2023"


def _rescan(old: ScanResult, **changes: object) -> ScanResult:
    """``old`` as a later scan with ``changes``, re-assessed like a real scan is."""
    meta = old.meta.model_copy(update={
        "scan_id": "00000000-0000-4000-8000-000000000002",
        "started_at": old.meta.started_at + timedelta(days=7),
        "finished_at": (old.meta.finished_at or old.meta.started_at) + timedelta(days=7)})
    bare = old.model_copy(update={"meta": meta, "verdicts": [], "device_verdicts": [],
                                  **changes})
    return assess(bare)


@pytest.fixture(scope="module")
def old() -> ScanResult:
    """The sample scan, plus a gateway that will be gone next time (it has no verdicts)."""
    sample = sample_result()
    gateway = Device(address="192.0.2.8", manufacturer="Acme", model="Gate 1",
                     discovered_by=["banner"])
    return sample.model_copy(update={"devices": [*sample.devices, gateway]})


@pytest.fixture(scope="module")
def new(old: ScanResult) -> ScanResult:
    """A week later: the camera's credential was changed (the check re-ran and passed) while
    Telnet is still exposed; the thermostat's MQTT check errored; the gateway left; a plug with
    an anonymous MQTT broker joined."""
    camera, thermostat, _gateway = old.devices
    plug = Device(address="192.0.2.9", manufacturer="Acme", model="Plug 2",
                  services=[Service(port=1883, transport="tcp", protocol="mqtt")],
                  discovered_by=["banner"])
    at = old.meta.started_at + timedelta(days=7, seconds=30)
    mqtt = Finding(id="IOTB-MQTTNEW", check_id="mqtt-anonymous", title="MQTT anonymous",
                   summary="anonymous CONNECT accepted", severity=Severity.HIGH,
                   confidence=Confidence.CONFIRMED, device=plug.address, port=1883,
                   transport="tcp", protocol="mqtt", found_at=at)
    telnet = next(f for f in old.findings if f.check_id == "telnet-exposed")
    runs = [
        CheckRun(check_id="telnet-exposed", device=camera.address, port=23, transport="tcp",
                 status=CheckStatus.FAIL, findings=1, started_at=at, duration_s=0.3),
        CheckRun(check_id="telnet-default-credentials", device=camera.address, port=23,
                 transport="tcp", status=CheckStatus.PASS, started_at=at, duration_s=9.0),
        CheckRun(check_id="http-default-credentials", device=camera.address, port=80,
                 transport="tcp", status=CheckStatus.PASS, started_at=at, duration_s=2.0),
        CheckRun(check_id="mqtt-anonymous", device=thermostat.address, port=1883,
                 transport="tcp", status=CheckStatus.ERROR, started_at=at, duration_s=10.0),
        CheckRun(check_id="mqtt-anonymous", device=plug.address, port=1883, transport="tcp",
                 status=CheckStatus.FAIL, findings=1, started_at=at, duration_s=0.2),
    ]
    return _rescan(old, devices=[camera, thermostat, plug], findings=[telnet, mqtt],
                   check_runs=runs, errors=[])


@pytest.fixture(scope="module")
def diff(old: ScanResult, new: ScanResult) -> ScanDiff:
    return diff_results(old, new)


def test_findings_by_id(diff: ScanDiff) -> None:
    assert [f.id for f in diff.new_findings] == ["IOTB-MQTTNEW"]
    assert [f.id for f in diff.fixed_findings] == ["IOTB-CRED0001"]
    assert [f.id for f in diff.persisting_findings] == ["IOTB-TELNET5XX"]
    assert diff.unverified_findings == []


def test_a_finding_not_rechecked_is_unverified_not_fixed(old: ScanResult) -> None:
    later = _rescan(old, findings=[], check_runs=[
        CheckRun(check_id="telnet-exposed", device="192.0.2.5", port=23, transport="tcp",
                 status=CheckStatus.ERROR, started_at=old.meta.started_at, duration_s=10.0)])
    changes = diff_results(old, later)
    assert changes.fixed_findings == []
    assert {f.id for f in changes.unverified_findings} == {f.id for f in old.findings}
    gone = _rescan(old, devices=[], findings=[], check_runs=[])
    assert {f.id for f in diff_results(old, gone).unverified_findings} == \
        {f.id for f in old.findings}


def test_devices_by_address(diff: ScanDiff) -> None:
    assert [(d.address, d.label) for d in diff.new_devices] == [("192.0.2.9", "Acme Plug 2")]
    assert [(d.address, d.label) for d in diff.vanished_devices] == [
        ("192.0.2.8", "Acme Gate 1")]


def test_verdict_changes(diff: ScanDiff, old: ScanResult) -> None:
    changes = {(c.framework, c.device, c.clause): c for c in diff.verdict_changes}
    # the thermostat's only check errored: interface access goes from PASS to INCONCLUSIVE
    regressed = changes[(ISO, "192.0.2.7", "5.2.6")]
    assert (regressed.old, regressed.new, regressed.change) == (
        Verdict.PASS, Verdict.INCONCLUSIVE, "regressed")
    # telnet-exposed still fails 5.2.6 on the camera: no change there
    assert (ISO, "192.0.2.5", "5.2.6") not in changes
    # a clause failed only by the fixed credential finding improves, in whichever framework
    only_credential = {key for key in (
        (v.framework, v.device, v.clause) for v in old.verdicts
        if v.verdict is Verdict.FAIL and v.findings == ["IOTB-CRED0001"])}
    assert only_credential <= {k for k, c in changes.items() if c.change == "improved"}
    for change in diff.verdict_changes:
        assert change.device in ("192.0.2.5", "192.0.2.7")  # devices in both scans only
        assert (VERDICT_ORDER.index(change.new) < VERDICT_ORDER.index(change.old)) == \
            (change.change == "regressed")
    assert all(c.change == "improved" for c in diff.improvements)
    assert all(c.change == "regressed" for c in diff.regressions)


def test_a_regression_is_marked(old: ScanResult) -> None:
    camera = old.devices[0]
    clean = _rescan(old, findings=[], check_runs=[
        CheckRun(check_id=check, device=camera.address, port=23, transport="tcp",
                 status=CheckStatus.PASS, started_at=old.meta.started_at, duration_s=1.0)
        for check in ("telnet-exposed", "telnet-default-credentials")], errors=[])
    back = diff_results(clean, old)
    regressed = {(c.framework, c.clause) for c in back.regressions if c.device == camera.address}
    assert (ISO, "5.2.6") in regressed and (ISO, "5.2.2") in regressed
    assert {f.id for f in back.new_findings} == {f.id for f in old.findings}


def test_order_is_the_documented_one() -> None:
    assert VERDICT_ORDER == (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.MANUAL,
                             Verdict.NOT_APPLICABLE, Verdict.PASS)


def test_identical_scans_have_no_changes(old: ScanResult) -> None:
    same = diff_results(old, old)
    assert not (same.new_findings or same.fixed_findings or same.unverified_findings
                or same.new_devices or same.vanished_devices or same.verdict_changes)
    assert len(same.persisting_findings) == len(old.findings)


def test_json_round_trips_through_the_model(diff: ScanDiff) -> None:
    text = render_diff_json(diff)
    assert text.isascii()
    assert ScanDiff.model_validate(json.loads(text)) == diff
    assert json.loads(text)["format"] == "iotbaseline-diff/1"


def test_text_summary(diff: ScanDiff) -> None:
    text = render_diff_text(diff)
    assert "Findings: 1 new, 1 fixed, 1 persisting, 0 not re-checked" in text
    assert "NEW" in text and "IOTB-MQTTNEW" in text and "192.0.2.9:1883" in text
    assert "VANISHED    192.0.2.8  Acme Gate 1" in text
    assert f"REGRESSED   {ISO} 5.2.6 Interface access on 192.0.2.7: PASS -> INCONCLUSIVE" in text


def test_text_is_terminal_safe_with_hostile_scans() -> None:
    hostile = hostile_result()
    finding = hostile.findings[0].model_copy(update={
        "id": HOSTILE, "title": HOSTILE, "check_id": HOSTILE, "device": HOSTILE})
    hostile = hostile.model_copy(update={"findings": [*hostile.findings, finding]})
    base = sample_result().model_copy(update={"devices": [], "findings": []})
    text = render_diff_text(diff_results(base, hostile)) + \
        render_diff_text(diff_results(hostile, base))
    controls = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]
    assert controls == []
    assert "\\x1b" in text and "\\u202e" in text  # shown, not acted on
    assert HOSTILE not in text and max(len(line) for line in text.splitlines()) < 600
    assert render_diff_json(diff_results(base, hostile)).isascii()


# --- CLI (needs the `diff` subcommand from the cli.py patch) ----------------------------------

def _cli() -> ModuleType:
    from scanner import cli

    try:
        cli.build_parser().parse_args(["diff", "a", "b"])
    except SystemExit:
        pytest.skip("scanner/cli.py has no `diff` subcommand yet (apply the cli patch)")
    return cli


def _write(path: Path, result: ScanResult) -> Path:
    path.write_text(result.model_dump_json(), "utf-8")
    return path


def test_cli_diff_text_and_json(tmp_path: Path, old: ScanResult, new: ScanResult,
                                capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli()
    a, b = _write(tmp_path / "old.json", old), _write(tmp_path / "new.json", new)
    assert cli.main(["diff", str(a), str(b)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("iotbaseline diff\n") and "IOTB-MQTTNEW" in out and err == ""
    assert cli.main(["diff", str(a), str(b), "--json"]) == 0
    out, _ = capsys.readouterr()
    assert ScanDiff.model_validate_json(out) == diff_results(old, new)


@pytest.mark.parametrize("content", [None, "not json", '{"schema_version": "1.0"}'])
def test_cli_diff_bad_file(tmp_path: Path, old: ScanResult, content: str | None,
                           capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli()
    good = _write(tmp_path / "old.json", old)
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, "utf-8")
    assert cli.main(["diff", str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("iotbaseline: error: ")
