"""The scan's results live in its journal, not in memory, and the report streamed from that
journal is the same document the in-memory path (assess + model_dump_json) produces."""

from __future__ import annotations

import gc
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from reports.compliance import select_frameworks
from reports.renderers import RENDERERS, write_scan_reports
from reports.verdicts import assess
from scanner.models import (
    CheckRun,
    CheckStatus,
    Confidence,
    Device,
    Exchange,
    Finding,
    ManualAnswer,
    ScanResult,
    Service,
    Severity,
    Verdict,
)
from scanner.storage import JOURNAL_NAME, REPORT_NAME, ResultStore, StoredScan, load_report
from tests.helpers import validate_report
from tests.report_fixtures import hostile_result, sample_result

ANSWERS = {("iso-iec-27402-2023", "5.1.3", "CAM-9000"): ManualAnswer(
    verdict=Verdict.FAIL, justification="No disclosure policy is published.",
    evidence=["https://acme.example/support"], assessor="A. Assessor", source="answers.yaml")}


def _journal(result: ScanResult, out: Path) -> StoredScan:
    """Replay a result through the store in an order unlike the report's (findings least
    severe first, devices last) so the store's own sorting is what is tested."""
    store = ResultStore(out)
    store.start(result.meta)
    for finding in reversed(result.findings):
        store.finding(finding)
    for run in result.check_runs:
        store.check_run(run)
    for error in result.errors:
        store.error(error)
    for device in reversed(result.devices):
        store.device(device.model_copy(update={"model": "stale"}))  # a later record wins
        store.device(device)
    return store.finish(result.meta)


def test_streamed_report_equals_the_in_memory_report(tmp_path: Path) -> None:
    for name, source in (("sample", sample_result()), ("hostile", hostile_result())):
        bare = source.model_copy(update={"verdicts": [], "device_verdicts": []})
        out = tmp_path / name
        stored = _journal(bare, out)
        frameworks = select_frameworks(["iso-iec-27402-2023", "etsi-en-303-645"])
        write_scan_reports(stored, out, ["json", "csv"], ANSWERS, frameworks)
        expected = assess(bare, ANSWERS, frameworks)
        streamed = load_report(out / REPORT_NAME)
        assert streamed == expected, name
        assert validate_report(out / REPORT_NAME)["findings"]
        assert (out / RENDERERS["csv"].filename).exists()
        assert oct((out / REPORT_NAME).stat().st_mode & 0o777) == "0o600"
        if name == "sample":  # the assessor's answer for the model came through
            verdicts = {(v.framework, v.device, v.clause): v for v in streamed.verdicts}
            answered = verdicts[("iso-iec-27402-2023", "192.0.2.5", "5.1.3")]
            assert answered.verdict is Verdict.FAIL and answered.answer is not None


def test_summary_and_counts_come_from_the_index(tmp_path: Path) -> None:
    result = sample_result()
    stored = _journal(result, tmp_path)
    assert [d.address for d in stored.devices()] == [d.address for d in result.devices]
    assert [f.id for f in stored.ordered_findings] == [f.id for f in result.findings]
    assert list(stored.findings()) == result.findings
    assert stored.severity_counts == {Severity.CRITICAL: 1, Severity.HIGH: 1}
    assert stored.load() == result.model_copy(update={"verdicts": [], "device_verdicts": []})
    kinds = [json.loads(line)["kind"] for line in
             (tmp_path / JOURNAL_NAME).read_text().splitlines()]
    assert kinds[0] == "meta" and kinds[-1] == "end"


def test_the_store_does_not_hold_the_evidence(tmp_path: Path) -> None:
    """500 findings carrying 32 KiB of evidence each (16 MiB) leave well under 2 MiB in memory:
    the evidence is on disk until the report is written."""
    at = datetime(2026, 11, 29, tzinfo=UTC)
    store = ResultStore(tmp_path)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(500):
            address = f"127.1.{index // 250}.{index % 250 + 1}"
            store.device(Device(address=address, services=[
                Service(port=23, transport="tcp", protocol="telnet", banner="login:")]))
            store.finding(Finding(
                id=f"IOTB-{index:04d}", check_id="telnet-default-credentials", title="t",
                summary="s", severity=Severity.CRITICAL, confidence=Confidence.CONFIRMED,
                device=address, port=23,
                transport="tcp", evidence=[Exchange(at=at, direction="received",
                                                    endpoint=f"tcp://{address}:23",
                                                    data="x" * 32768)], found_at=at))
            store.check_run(CheckRun(check_id="telnet-default-credentials", device=address,
                                     port=23, transport="tcp", status=CheckStatus.FAIL,
                                     findings=1, started_at=at, duration_s=0.1))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * 1024 * 1024, held
    stored = store.finish(sample_result().meta)
    assert len(stored.finding_spans) == 500
    assert next(stored.findings()).evidence[0].data == "x" * 32768



def test_report_json_is_the_same_file_whatever_other_formats_are_asked_for(
        tmp_path: Path) -> None:
    """The streamed report.json is the report: asking for HTML too must not rewrite it."""
    bare = sample_result().model_copy(update={"verdicts": [], "device_verdicts": []})
    frameworks = select_frameworks(None)
    texts = []
    for formats in (["json"], ["json", "html", "sarif"]):
        out = tmp_path / "-".join(formats)
        write_scan_reports(_journal(bare, out), out, formats, {}, frameworks)
        texts.append((out / REPORT_NAME).read_bytes())
    assert texts[0] == texts[1]


def test_text_no_utf8_file_can_hold_becomes_a_replacement_character(tmp_path: Path) -> None:
    """A lone surrogate (a device's JSON "\\ud800", undecodable argv bytes) must not make the
    report unreadable: it becomes U+FFFD; a real pair (an emoji) stays what it is."""
    base = sample_result()
    finding = base.findings[0].model_copy(update={
        "summary": "alias \ud800 and \U0001f600",
        "facts": {"alias": "\udc80"}})
    meta = base.meta.model_copy(update={"command_line": ["iotbaseline", "scan", "\udcff"]})
    bare = base.model_copy(update={"meta": meta, "findings": [finding],
                                   "verdicts": [], "device_verdicts": []})
    stored = _journal(bare, tmp_path)
    write_scan_reports(stored, tmp_path, ["json", "html"], {}, select_frameworks(None))
    report = load_report(tmp_path / REPORT_NAME)
    assert report.findings[0].summary == "alias \ufffd and \U0001f600"
    assert report.findings[0].facts == {"alias": "\ufffd"}
    assert report.meta.command_line[-1] == "\ufffd"
    assert stored.ordered_findings[0].summary == "alias \ufffd and \U0001f600"


def test_a_broken_journal_line_does_not_shift_later_records(tmp_path: Path) -> None:
    """A write that failed half-way (a full disk) leaves a broken line; the records after it
    are still found where the index says."""
    result = sample_result()
    store = ResultStore(tmp_path)
    store.start(result.meta)
    store.device(result.devices[0])
    with (tmp_path / JOURNAL_NAME).open("ab") as journal:
        journal.write(b'{"kind": "finding", "data": {"id": "IOTB-')  # no end, no newline
    for finding in result.findings:
        store.finding(finding)
    store.device(result.devices[1])
    stored = store.finish(result.meta)
    assert list(stored.findings()) == result.findings
    assert [d.address for d in stored.devices()] == [d.address for d in result.devices]


def test_parked_evidence_comes_back_whole_and_stays_out_of_the_report(tmp_path: Path) -> None:
    """A fleet check's evidence waits in the journal until the scan's end."""
    result = sample_result()
    exchanges = result.findings[1].evidence
    store = ResultStore(tmp_path)
    store.start(result.meta)
    span = store.evidence(exchanges)
    store.device(result.devices[0])
    assert store.read_evidence(span) == exchanges
    stored = store.finish(result.meta)
    write_scan_reports(stored, tmp_path, ["json"], {}, select_frameworks(None))
    assert load_report(tmp_path / REPORT_NAME).findings == []
