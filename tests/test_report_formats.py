"""Markdown, CSV, JUnit XML and SARIF reports.

Goldens come from the fixed ``sample_result()``; ``UPDATE_GOLDEN=1 pytest
tests/test_report_formats.py`` rewrites them (review the diff before committing). The hostile
result (every device string an attack) must render into output that parses, validates and carries
no control characters, raw HTML, live formulas or broken code fences. JUnit is validated against
the Jenkins xUnit plugin's junit-10.xsd and SARIF against the OASIS SARIF 2.1.0 schema, both in
``tests/schemas`` (sources in its README).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import xmlschema
from junitparser import Error, Failure, JUnitXml, Skipped
from markdown_it import MarkdownIt

from reports.renderers import RENDERERS, Renderer, csv_report, junit, markdown, sarif, write_reports
from reports.verdicts import assess
from scanner.models import Exchange, ScanResult, Severity, Verdict
from tests.report_fixtures import HOSTILE, hostile_result, sample_result

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
SCHEMAS = HERE / "schemas"
FORMATS = [markdown.RENDERER, csv_report.RENDERER, junit.RENDERER, sarif.RENDERER]
INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@pytest.fixture(scope="module")
def sample() -> ScanResult:
    return sample_result()


@pytest.fixture(scope="module")
def hostile() -> ScanResult:
    return hostile_result()


@pytest.fixture(scope="module")
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMAS / "junit-10.xsd"))


@pytest.fixture(scope="module")
def sarif_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text("utf-8"))
    return schema


def invisible(text: str, allowed: str = "\n") -> list[str]:
    """Characters a reader cannot see or a terminal would act on (bar ``allowed``)."""
    return [c for c in text if c not in allowed and (
        unicodedata.category(c) in INVISIBLE or ord(c) in (0xFFFE, 0xFFFF))]


def with_finding(result: ScanResult, **changes: Any) -> ScanResult:
    """The result with its first finding changed, unvalidated (strings pydantic would refuse)."""
    finding = result.findings[0].model_copy(update=changes)
    return result.model_copy(update={"findings": [finding, *result.findings[1:]]})


# --- goldens and registration --------------------------------------------------------------


@pytest.mark.parametrize("renderer", FORMATS, ids=lambda r: r.name)
def test_golden(renderer: Renderer, sample: ScanResult) -> None:
    text = renderer.render(sample)
    assert renderer.render(sample) == text, "rendering must be deterministic"
    path = GOLDEN / f"sample.{renderer.filename}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert path.exists(), f"no golden {path.name}: run with UPDATE_GOLDEN=1"
    assert text == path.read_bytes().decode("utf-8"), \
        f"{renderer.name} output changed: rerun with UPDATE_GOLDEN=1 and review the diff"


def test_renderer_objects() -> None:
    assert [(r.name, r.filename) for r in FORMATS] == [
        ("markdown", "report.md"), ("csv", "findings.csv"), ("junit", "junit.xml"),
        ("sarif", "report.sarif")]


def test_write_reports_keeps_bytes(sample: ScanResult, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for renderer in FORMATS:
        monkeypatch.setitem(RENDERERS, renderer.name, renderer)
    paths = write_reports(sample, tmp_path, [r.name for r in FORMATS])
    assert sorted(p.name for p in paths) == sorted(
        ["report.json", *(r.filename for r in FORMATS)])
    data = (tmp_path / "findings.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    assert (tmp_path / "report.sarif").stat().st_mode & 0o077 == 0


# --- Markdown --------------------------------------------------------------------------------


def _tables(text: str) -> list[list[list[str]]]:
    """Every table as rows of cell texts, as a CommonMark + GFM-tables parser sees them."""
    tables: list[list[list[str]]] = []
    row: list[str] = []
    in_cell = False
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            tables[-1].append(row)
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "inline" and in_cell:
            row.append("".join(child.content for child in token.children or []))
    return tables


def test_markdown_sample_content(sample: ScanResult) -> None:
    text = markdown.render(sample)
    assert "| findings | 2 (1 critical, 1 high, 0 medium, 0 low, 0 info) |" in text
    counts = Counter(v.verdict.value for v in sample.verdicts)
    assert (f"{counts['FAIL']} FAIL, {counts['INCONCLUSIVE']} INCONCLUSIVE, "
            f"{counts['MANUAL']} MANUAL, {counts['PASS']} PASS") in text
    tables = _tables(text)
    devices_table = next(t for t in tables if t[0][:2] == ["device", "model"])
    assert devices_table[1:] == [["192.0.2.5", "Acme CAM-9000", "FAIL"],
                                 ["192.0.2.7", "Acme Thermo 1", "INCONCLUSIVE"]]
    clause_table = next(t for t in tables if t[0][:2] == ["clause", "title"])
    devices = clause_table[0][2:]
    assert devices == ["192.0.2.5", "192.0.2.7"]
    shown = {(row[0], device): label for row in clause_table[1:]
             for device, label in zip(devices, row[2:], strict=True)}
    label = {Verdict.NOT_APPLICABLE: "N/A"}
    assert shown == {(v.clause, v.device): label.get(v.verdict, v.verdict.value)
                     for v in sample.verdicts}
    # findings grouped by device, each exchange in its own code block
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("<pre>") == sum(len(f.evidence) for f in sample.findings)
    assert text.index("### 192.0.2.5") < text.index("[CRITICAL]") < text.index("[HIGH]")
    assert "not proof" in text


def test_markdown_hostile(hostile: ScanResult) -> None:
    text = markdown.render(hostile)
    assert "<script" not in text.lower()
    assert not invisible(text), "control, bidi or surrogate characters leaked"
    assert "\\x1b" in text and "\\u202e" in text, "escapes must stay visible"
    assert len(text) < 64 * 1024, "64 KB device strings must be cut"
    # Even with raw HTML enabled, a renderer produces no element from device text.
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert "<script" not in html.lower()
    tags = set(re.findall(r"</?([a-z0-9]+)", html))
    assert tags <= {"h1", "h2", "h3", "h4", "p", "ul", "li", "table", "thead", "tbody", "tr",
                    "th", "td", "pre", "code", "strong", "blockquote", "a"}
    assert html.count("<pre>") == sum(len(f.evidence) for f in hostile.findings)
    # the pipes in the model do not split the device verdict row
    devices_table = next(t for t in _tables(text) if t[0][:2] == ["device", "model"])
    assert [row[-1] for row in devices_table[1:]] == ["FAIL", "INCONCLUSIVE"]
    assert all(len(row) == len(devices_table[0]) for row in devices_table)


def test_markdown_evidence_cannot_close_its_fence(sample: ScanResult) -> None:
    breakout = "x\n```\n# injected heading\n````\n<img src=x onerror=alert(1)>\n~~~\n"
    result = with_finding(sample, evidence=[Exchange(
        at=sample.meta.started_at, direction="received", endpoint="tcp://192.0.2.5:23",
        data=breakout)])
    text = markdown.render(result)
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert "injected heading</h1>" not in html and "<img" not in html
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)
    assert any("# injected heading" in b and "````" in b for b in blocks)
    assert markdown.fenced("a ```` b")[0] == "`````text"


def test_markdown_escapes_inline_markup() -> None:
    assert markdown.md("[x](javascript:alert(1)) *b* _i_ `c` <b>&amp; | #") == (
        "\\[x\\]\\(javascript:alert\\(1\\)\\) \\*b\\* \\_i\\_ \\`c\\` &lt;b&gt;&amp;amp; \\| \\#")
    assert markdown.md("a\nb\x1b[0m") == "a\\\\nb\\\\x1b\\[0m"
    assert markdown.cell("") == " "


# --- CSV -------------------------------------------------------------------------------------


def _csv_rows(text: str) -> list[list[str]]:
    assert text.startswith("\ufeff"), "UTF-8 BOM for Excel"
    return list(csv.reader(io.StringIO(text.encode("utf-8").decode("utf-8-sig"), newline="")))


def test_csv_sample(sample: ScanResult) -> None:
    text = csv_report.render(sample)
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")
    rows = _csv_rows(text)
    assert rows[0] == csv_report.COLUMNS
    assert len(rows) == 1 + len(sample.findings)
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    telnet = by_id["IOTB-TELNET5XX"]
    assert telnet["clauses"] == \
        "iso-iec-27402-2023:5.2.2;iso-iec-27402-2023:5.2.5;iso-iec-27402-2023:5.2.6"
    assert telnet["port"] == "23" and telnet["severity"] == "high"
    assert telnet["references"] == "https://www.rfc-editor.org/rfc/rfc854"
    assert telnet["found_at"] == "2026-11-29T09:00:11Z"


def test_csv_hostile(hostile: ScanResult) -> None:
    rows = _csv_rows(csv_report.render(hostile))
    assert len(rows) == 1 + len(hostile.findings)
    assert "more characters in report.json" in rows[1][csv_report.COLUMNS.index("summary")]
    for row in rows:
        for value in row:
            assert not invisible(value)
            assert len(value) < 32767, "Excel's cell limit"
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize(("attack", "cell"), [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(1)", "'@SUM(1)"),
    (" =1+1", "' =1+1"),
    ("\uff1d1+1", "'\uff1d1+1"),  # full-width equals sign
    ("\tcmd", "\\x09cmd"),  # tab and CR are written visibly, so nothing can trigger
    ("\rcmd", "\\x0dcmd"),
])
def test_csv_formulas_neutralised(hostile: ScanResult, attack: str, cell: str) -> None:
    result = with_finding(hostile, title=attack, summary=attack, remediation=attack,
                          protocol=attack, references=[attack], check_id=attack)
    rows = _csv_rows(csv_report.render(result))
    row = dict(zip(rows[0], rows[1], strict=True))
    for column in ("title", "summary", "remediation", "protocol", "references", "check_id"):
        assert row[column] == cell, column


def test_csv_strips_nul_and_controls(sample: ScanResult) -> None:
    result = with_finding(sample, summary="a\x00b\x1b[31mc\x7f\u2028d\ud800\ufffe\r\ne")
    value = dict(zip(*_csv_rows(csv_report.render(result))[:2], strict=True))["summary"]
    assert value == "a\\x00b\\x1b[31mc\\x7f\\u2028d\\ud800\\ufffe\ne"


# --- JUnit XML -------------------------------------------------------------------------------


def test_junit_sample_counts(sample: ScanResult, junit_schema: xmlschema.XMLSchema) -> None:
    text = junit.render(sample)
    junit_schema.validate(text)
    verdicts = Counter(v.verdict for v in sample.verdicts)
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    assert root.get("tests") == str(len(sample.verdicts))
    assert root.get("failures") == str(verdicts[Verdict.FAIL])
    assert root.get("errors") == str(verdicts[Verdict.INCONCLUSIVE])
    suites = list(JUnitXml.fromstring(text))
    assert [s.name for s in suites] == ["iso-iec-27402-2023"]
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
        len(sample.verdicts), verdicts[Verdict.FAIL], verdicts[Verdict.INCONCLUSIVE],
        verdicts[Verdict.MANUAL] + verdicts[Verdict.NOT_APPLICABLE])
    cases = list(suite)
    assert len(cases) == len(sample.verdicts)
    kinds = {Verdict.FAIL: Failure, Verdict.INCONCLUSIVE: Error, Verdict.MANUAL: Skipped,
             Verdict.NOT_APPLICABLE: Skipped}
    for case, verdict in zip(cases, sample.verdicts, strict=True):
        assert case.classname == verdict.device
        assert case.name == f"{verdict.clause} {verdict.title}"
        expected = kinds.get(verdict.verdict)
        if expected is None:
            assert case.is_passed
        else:
            assert [type(r) for r in case.result] == [expected]
            if verdict.verdict is Verdict.FAIL:
                assert case.result[0].type == "FAIL"
                assert all(i in (case.result[0].text or "") for i in verdict.findings)
    failed = [c for c in cases if any(isinstance(r, Failure) for r in c.result)]
    assert len(failed) == verdicts[Verdict.FAIL] == 4


def test_junit_inconclusive_lists_probe_errors(sample: ScanResult,
                                               junit_schema: xmlschema.XMLSchema) -> None:
    # Without its findings, the camera's clauses rest on the check that timed out.
    result = assess(sample.model_copy(update={"findings": [], "verdicts": [],
                                              "device_verdicts": []}))
    text = junit.render(result)
    junit_schema.validate(text)
    case = next(c for s in JUnitXml.fromstring(text) for c in s
                if c.classname == "192.0.2.5" and c.name == "5.2.2 Configuration")
    assert [type(r) for r in case.result] == [Error]
    assert case.result[0].type == "INCONCLUSIVE"
    assert "http-default-credentials port 80 (timeout): TimeoutError" in case.result[0].text


def _xml_strings(text: str) -> list[str]:
    strings = []
    for element in ET.fromstring(text).iter():
        strings += [element.text or "", element.tail or "", *element.attrib.values()]
    return strings


def test_junit_hostile(hostile: ScanResult, junit_schema: xmlschema.XMLSchema) -> None:
    text = junit.render(hostile)
    junit_schema.validate(text)
    assert not invisible(text, allowed="\n\t"), "XML 1.0 illegal or invisible characters"
    for value in _xml_strings(text):
        assert not invisible(value, allowed="\n\t")
    assert "<script" not in text  # escaped by ElementTree
    assert "\\x1b]0;pwned" in text
    errors = [c for s in JUnitXml.fromstring(text) for c in s
              if any(isinstance(r, Error) for r in c.result)]
    assert errors, "INCONCLUSIVE clauses become <error>"
    assert len(text) < 64 * 1024


def test_junit_illegal_xml_characters(sample: ScanResult,
                                      junit_schema: xmlschema.XMLSchema) -> None:
    nasty = "a\x00\x0b\x0c\x1b\ud800\udfff\ufffe\uffff\x85z"
    result = with_finding(sample, summary=nasty, title=nasty)
    text = junit.render(result)
    junit_schema.validate(text)
    ET.fromstring(text)
    text.encode("utf-8")  # no lone surrogates
    assert "a\\x00\\x0b\\x0c\\x1b\\ud800\\udfff\\ufffe\\uffff\\x85z" in text


# --- SARIF -----------------------------------------------------------------------------------


def _validate_sarif(document: dict[str, Any], schema: dict[str, Any]) -> None:
    # The OASIS schema declares draft-04; it is also checked as Draft 7, as consumers do.
    for validator in (jsonschema.validators.validator_for(schema), jsonschema.Draft7Validator):
        validator.check_schema(schema)
        errors = sorted(validator(schema).iter_errors(document), key=str)
        assert not errors, errors[0]


def _utc(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    return datetime.fromisoformat(text)


def test_sarif_sample(sample: ScanResult, sarif_schema: dict[str, Any]) -> None:
    document = json.loads(sarif.render(sample))
    _validate_sarif(document, sarif_schema)
    assert document["version"] == "2.1.0"
    run = document["runs"][0]
    driver = run["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("iotbaseline", sample.meta.tool_version)
    assert urlsplit(driver["informationUri"]).scheme
    rules = driver["rules"]
    assert [r["id"] for r in rules] == sorted({f.check_id for f in sample.findings})
    by_rule = {r["id"]: r for r in rules}
    credential = by_rule["telnet-default-credentials"]
    assert credential["shortDescription"]["text"] == "Telnet does not accept default credentials"
    assert credential["help"]["text"].startswith("Change the default password.")
    assert credential["properties"]["security-severity"] == "9.5"
    assert credential["properties"]["problem.severity"] == "error"
    assert "iso-iec-27402-2023:5.2.6" in credential["properties"]["tags"]
    assert "5.2.6 Interface access" in credential["fullDescription"]["text"]
    assert by_rule["telnet-exposed"]["properties"]["security-severity"] == "8.0"
    results = run["results"]
    assert len(results) == len(sample.findings)
    for item, finding in zip(results, sample.findings, strict=True):
        assert item["ruleId"] == finding.check_id
        assert rules[item["ruleIndex"]]["id"] == finding.check_id
        assert item["level"] == "error"
        assert item["message"]["text"] == finding.summary
        assert item["partialFingerprints"] == {"iotbaseline/v1": finding.id}
        location = item["locations"][0]
        assert location["physicalLocation"]["artifactLocation"]["uri"] == "tcp://192.0.2.5:23"
        assert [ll["kind"] for ll in location["logicalLocations"]] == ["device", "service"]
        properties = item["properties"]
        assert (properties["device"], properties["port"], properties["protocol"],
                properties["confidence"]) == ("192.0.2.5", 23, "telnet", "confirmed")
        assert properties["clauses"] == finding.clauses and properties["facts"] == finding.facts
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is True
    assert _utc(invocation["startTimeUtc"]) == sample.meta.started_at
    assert _utc(invocation["endTimeUtc"]) == sample.meta.finished_at
    notes = invocation["toolExecutionNotifications"]
    assert len(notes) == len(sample.errors) + len(sample.meta.discovery_notes)
    assert notes[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "tcp://192.0.2.5:80"
    assert "TimeoutError" in notes[0]["message"]["text"]
    assert run["automationDetails"]["guid"] == sample.meta.scan_id


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_sarif_hostile(hostile: ScanResult, sarif_schema: dict[str, Any]) -> None:
    text = sarif.render(hostile)
    text.encode("utf-8")
    document = json.loads(text)
    _validate_sarif(document, sarif_schema)
    for value in _strings(document):
        assert not invisible(value, allowed="\n\t"), value[:80]
    message = document["runs"][0]["results"][0]["message"]["text"]
    assert "\\x1b]0;pwned" in message and len(message) < 3000
    assert len(text) < 64 * 1024


def test_sarif_levels_and_incomplete_scan(sample: ScanResult,
                                          sarif_schema: dict[str, Any]) -> None:
    findings = [sample.findings[0].model_copy(update={
        "id": f"IOTB-{severity.value.upper()}", "severity": severity,
        "check_id": f"check-{severity.value}", "port": None, "transport": None})
        for severity in Severity]
    meta = sample.meta.model_copy(update={"complete": False, "finished_at": None,
                                          "stop_reason": "interrupted", "scan_id": "not-a-guid"})
    result = sample.model_copy(update={"findings": findings, "meta": meta})
    document = json.loads(sarif.render(result))
    _validate_sarif(document, sarif_schema)
    run = document["runs"][0]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert "endTimeUtc" not in run["invocations"][0]
    assert "guid" not in run["automationDetails"]
    levels = {r["properties"]["severity"]: r["level"] for r in run["results"]}
    assert levels == {"info": "note", "low": "note", "medium": "warning", "high": "error",
                      "critical": "error"}
    scores = {r["id"]: r["properties"]["security-severity"] for r in run["tool"]["driver"]["rules"]}
    assert scores == {"check-info": "0.0", "check-low": "3.0", "check-medium": "5.5",
                      "check-high": "8.0", "check-critical": "9.5"}
    assert run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] \
        == "ip://192.0.2.5"
    assert [ll["kind"] for ll in run["results"][0]["locations"][0]["logicalLocations"]] == \
        ["device"]


def test_service_uri() -> None:
    assert sarif.service_uri("192.0.2.5", 23, "tcp") == "tcp://192.0.2.5:23"
    assert sarif.service_uri("2001:db8::1", 161, "udp") == "udp://[2001:db8::1]:161"
    assert sarif.service_uri("fe80::1%eth0", 80, "tcp") == "tcp://[fe80::1%25eth0]:80"
    assert sarif.service_uri(HOSTILE, None, None).startswith("ip://%3Cscript%3E")
