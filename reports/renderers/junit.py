"""Clause verdicts as JUnit XML, so CI systems show a compliance run like a test run.

One ``<testsuite>`` per framework; one ``<testcase classname="<device>" name="<clause> <title>">``
per device × clause, in the order the result holds them:

- FAIL → ``<failure type="FAIL">`` with the reason and the findings behind it;
- INCONCLUSIVE → ``<error type="INCONCLUSIVE">`` with the reason and the device's probe errors
  for the checks that ran on the clause;
- MANUAL and NOT_APPLICABLE → ``<skipped>`` with the reason;
- PASS → a plain testcase (no counterexample found; not proof).

Suite counts are counts of those elements. The document is built with xml.etree (which escapes
``& < > "``); before that, every string loses what XML 1.0 cannot carry — control characters
other than tab, newline and carriage return, lone surrogates, U+FFFE/U+FFFF — by being written
visibly (``\\x1b``), as are bidi and other format characters. Evaluates nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime

from reports.compliance import load_frameworks
from reports.renderers.base import Renderer
from reports.renderers.text import cap, visible
from scanner.models import ClauseVerdict, Finding, ProbeError, ScanResult, Verdict

TEXT_MAX = 2000  # characters of one device-derived string
_ELEMENT = {Verdict.FAIL: "failure", Verdict.INCONCLUSIVE: "error",
            Verdict.MANUAL: "skipped", Verdict.NOT_APPLICABLE: "skipped"}


def xml_text(value: object, limit: int = TEXT_MAX, keep: str = "\n\t") -> str:
    """Text XML 1.0 can carry and a reader can see: capped, invisible characters escaped."""
    return visible(cap(str(value).replace("\r\n", "\n"), limit), keep)


def attribute(value: object, limit: int = 500) -> str:
    """An attribute value on one line (newlines and tabs visible)."""
    return xml_text(str(value).replace("\r\n", "\n").replace("\n", " "), limit, keep="")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _timestamp(moment: datetime) -> str:
    # The JUnit/Ant convention: ISO 8601 without a zone; these are UTC.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _duration(result: ScanResult) -> str:
    meta = result.meta
    if meta.finished_at is None:
        return "0.000"
    return f"{max(0.0, (meta.finished_at - meta.started_at).total_seconds()):.3f}"


def _failure_body(verdict: ClauseVerdict, findings: dict[str, Finding]) -> str:
    lines = [verdict.reason]
    if verdict.findings:
        lines.append("Findings: " + ", ".join(verdict.findings))
    for finding_id in verdict.findings:
        finding = findings.get(finding_id)
        if finding is None:
            continue
        where = f"{finding.transport or 'tcp'}/{finding.port}" if finding.port is not None \
            else "device"
        lines.append(f"- {finding.id} [{finding.severity.value}] {finding.check_id} on "
                     f"{finding.device} {where}: {finding.title}. {_cut(finding.summary, 500)}")
    answer = verdict.answer
    if answer is not None:
        lines.append(f"Assessor {answer.assessor or '(unnamed)'} answered "
                     f"{answer.verdict.value}" + (f"; evidence: {', '.join(answer.evidence)}"
                                                  if answer.evidence else ""))
    return "\n".join(lines)


def _error_body(verdict: ClauseVerdict, errors: Mapping[str, list[ProbeError]]) -> str:
    """``errors`` by device: one look-up per verdict keeps big scans linear."""
    lines = [verdict.reason]
    relevant = [e for e in errors.get(verdict.device, []) if e.check_id in verdict.checks]
    if relevant:
        lines.append("Probe errors:")
        lines += [f"- {e.check_id} port {e.port if e.port is not None else '-'} ({e.kind}): "
                  f"{_cut(e.reason, 500)}" for e in relevant]
    return "\n".join(lines)


def _testcase(suite: ET.Element, verdict: ClauseVerdict, findings: dict[str, Finding],
              errors: Mapping[str, list[ProbeError]]) -> None:
    case = ET.SubElement(suite, "testcase", {
        "classname": attribute(verdict.device, 200),
        "name": attribute(f"{verdict.clause} {verdict.title}", 300),
        "time": "0"})
    element = _ELEMENT.get(verdict.verdict)
    if element is None:  # PASS: no counterexample found
        return
    child = ET.SubElement(case, element, {"message": attribute(
        f"{verdict.verdict.value}: {verdict.reason}")})
    if element == "skipped":  # a skip says why in its message
        return
    child.set("type", verdict.verdict.value)
    body = _failure_body(verdict, findings) if verdict.verdict is Verdict.FAIL \
        else _error_body(verdict, errors)
    child.text = xml_text(body, limit=4 * TEXT_MAX)


def _suite(parent: ET.Element, framework_id: str, verdicts: list[ClauseVerdict],
           result: ScanResult, titles: dict[str, str]) -> dict[str, int]:
    counts = {"tests": len(verdicts),
              "failures": sum(v.verdict is Verdict.FAIL for v in verdicts),
              "errors": sum(v.verdict is Verdict.INCONCLUSIVE for v in verdicts),
              "skipped": sum(v.verdict in (Verdict.MANUAL, Verdict.NOT_APPLICABLE)
                             for v in verdicts)}
    suite = ET.SubElement(parent, "testsuite", {
        "name": attribute(framework_id, 200),
        **{key: str(value) for key, value in counts.items()},
        "time": _duration(result),
        "timestamp": _timestamp(result.meta.started_at)})
    properties = ET.SubElement(suite, "properties")
    meta = result.meta
    for name, value in (("framework", titles.get(framework_id, framework_id)),
                        ("scan_id", meta.scan_id), ("profile", meta.profile),
                        ("tool_version", meta.tool_version),
                        ("complete", "true" if meta.complete else "false"),
                        ("started_at", meta.started_at.astimezone(UTC).isoformat())):
        ET.SubElement(properties, "property", {"name": name, "value": attribute(value)})
    findings = {f.id: f for f in result.findings}
    errors: dict[str, list[ProbeError]] = defaultdict(list)
    for error in result.errors:
        errors[error.device].append(error)
    for verdict in verdicts:
        _testcase(suite, verdict, findings, errors)
    return counts


def render(result: ScanResult) -> str:
    titles = {f.id: f.title for f in load_frameworks()}
    root = ET.Element("testsuites", {"name": attribute(f"iotbaseline {result.meta.scan_id}")})
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for framework_id in dict.fromkeys(v.framework for v in result.verdicts):
        counts = _suite(root, framework_id,
                        [v for v in result.verdicts if v.framework == framework_id],
                        result, titles)
        for key in totals:
            totals[key] += counts[key]
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _duration(result))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


RENDERER = Renderer("junit", "junit.xml", render)
