"""Findings as SARIF 2.1.0, for code-scanning dashboards and SARIF viewers.

- ``runs[0].tool.driver``: iotbaseline, the version that scanned, and one rule per check id that
  produced a finding: shortDescription = the check's title, fullDescription = the clauses it
  evidences (titles from the framework data), help = remediation and references, properties =
  tags (``security`` and ``<framework>:<clause>``), ``security-severity`` (a CVSS-like score as a
  string, as GitHub code scanning reads it: critical 9.5, high 8.0, medium 5.5, low 3.0, info 0.0)
  and ``problem.severity``.
- ``results``: one per finding; level error (critical, high), warning (medium) or note (low,
  info); message = the summary; the location is the service as a network URI
  (``tcp://192.0.2.5:23``; SARIF allows any URI) and as logical locations of kind ``device``
  and ``service``; ``partialFingerprints["iotbaseline/v1"]`` = the finding's stable id.
- ``invocations[0]``: executionSuccessful = the scan completed, start and end times, and a
  notification per probe error and discovery note.

Strings are JSON-escaped by the json module; before that, control, format (bidi), separator and
surrogate characters are written visibly (``\\x1b``) and long device text is cut, so a viewer
shows what a device sent without acting on it. Evaluates nothing.
"""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from reports.compliance import load_frameworks
from reports.renderers.base import Renderer
from reports.renderers.text import cap, visible
from scanner.models import Finding, ScanResult, Severity

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                "sarif-schema-2.1.0.json")
# The project has no public home page yet: a URN keeps the field a valid absolute URI without
# pointing readers at someone else's site. Replace with the project's URL once it has one.
INFORMATION_URI = "urn:iotbaseline"
FINGERPRINT_KEY = "iotbaseline/v1"
TEXT_MAX = 2000

SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                     Severity.LOW: "3.0", Severity.INFO: "0.0"}
LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.LOW: "note", Severity.INFO: "note"}
PROBLEM_SEVERITY = {Severity.CRITICAL: "error", Severity.HIGH: "error",
                    Severity.MEDIUM: "warning", Severity.LOW: "recommendation",
                    Severity.INFO: "recommendation"}

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-"
                   r"[0-9a-fA-F]{12}$")
_HOST_SAFE = re.compile(r"[^A-Za-z0-9.\-:]")
_URL = re.compile(r"^https?://[^\s<>\"]+$")


def clean(value: object, limit: int = TEXT_MAX) -> str:
    """Visible, capped text; newlines and tabs kept (JSON escapes them)."""
    return visible(cap(str(value).replace("\r\n", "\n"), limit), keep="\n\t")


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def service_uri(device: str, port: int | None, transport: str | None) -> str:
    """``tcp://192.0.2.5:23``, ``udp://[2001:db8::1]:161``, or ``ip://192.0.2.5`` for a device."""
    host = _HOST_SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), device)
    if ":" in host:
        host = f"[{host}]"
    scheme = transport if transport in ("tcp", "udp") else "ip"
    if port is None:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _rule_name(check_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", check_id) if part)


def _rules(result: ScanResult) -> list[dict[str, Any]]:
    frameworks = {f.id: f for f in load_frameworks()}
    by_check: dict[str, list[Finding]] = {}
    for finding in result.findings:
        by_check.setdefault(finding.check_id, []).append(finding)
    rules = []
    for check_id in sorted(by_check):
        findings = by_check[check_id]
        first = findings[0]
        worst = max((f.severity for f in findings), key=lambda s: s.rank)
        clauses: dict[str, list[str]] = {}
        for finding in findings:
            for framework_id, ids in finding.clauses.items():
                known = clauses.setdefault(framework_id, [])
                known += [i for i in ids if i not in known]
        described = []
        for framework_id, ids in clauses.items():
            framework = frameworks.get(framework_id)
            titles = {c.id: c.title for c in framework.clauses} if framework else {}
            described.append(f"{framework.title if framework else framework_id}: " + "; ".join(
                f"{i} {titles[i]}" if i in titles else i for i in ids))
        full = f"{first.title}." + (f" Evidence for {' | '.join(described)}." if described
                                     else "")
        help_text = first.remediation or "See the finding's summary and evidence."
        if first.references:
            help_text += "\nReferences:\n" + "\n".join(first.references)
        rule: dict[str, Any] = {
            "id": clean(check_id, 200),
            "name": _rule_name(check_id),
            "shortDescription": {"text": clean(first.title, 500)},
            "fullDescription": {"text": clean(full)},
            "help": {"text": clean(help_text)},
        }
        help_uri = next((r for r in first.references if _URL.match(r)), None)
        if help_uri:
            rule["helpUri"] = help_uri
        rule["defaultConfiguration"] = {"level": LEVEL[worst]}
        rule["properties"] = {
            "tags": ["security", *dict.fromkeys(
                clean(f"{fw}:{c}", 200) for fw, ids in clauses.items() for c in ids)],
            "security-severity": SECURITY_SEVERITY[worst],
            "problem.severity": PROBLEM_SEVERITY[worst],
        }
        rules.append(rule)
    return rules


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    uri = service_uri(finding.device, finding.port, finding.transport)
    logical: list[dict[str, Any]] = [
        {"name": clean(finding.device, 200), "fullyQualifiedName": clean(finding.device, 200),
         "kind": "device"}]
    if finding.port is not None:
        label = f"{finding.protocol or 'unknown'} {finding.port}/{finding.transport or 'tcp'}"
        logical.append({"name": clean(label, 200),
                        "fullyQualifiedName": clean(f"{finding.device}/"
                                                    f"{finding.transport or 'tcp'}/"
                                                    f"{finding.port}", 300),
                        "kind": "service"})
    return {
        "ruleId": clean(finding.check_id, 200),
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": LEVEL[finding.severity],
        "message": {"text": clean(f"{finding.summary}")},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}},
                       "logicalLocations": logical}],
        "partialFingerprints": {FINGERPRINT_KEY: clean(finding.id, 200)},
        "properties": {
            "findingId": clean(finding.id, 200),
            "title": clean(finding.title, 500),
            "severity": finding.severity.value,
            "confidence": finding.confidence.value,
            "device": clean(finding.device, 200),
            "port": finding.port,
            "transport": finding.transport,
            "protocol": clean(finding.protocol, 100) if finding.protocol else None,
            "clauses": {clean(fw, 200): [clean(c, 100) for c in ids]
                        for fw, ids in finding.clauses.items()},
            "facts": {clean(k, 200): clean(v) for k, v in sorted(finding.facts.items())},
            "foundAtUtc": _utc(finding.found_at),
            "evidenceExchanges": len(finding.evidence),
        },
    }


def _notifications(result: ScanResult) -> list[dict[str, Any]]:
    # Probe errors do not record the transport: take it from the check run that failed.
    transports: dict[tuple[str, str, int | None], str | None] = {}
    for run in result.check_runs:
        transports.setdefault((run.check_id, run.device, run.port), run.transport)
    notes: list[dict[str, Any]] = []
    for error in result.errors:
        where = error.device + (f":{error.port}" if error.port is not None else "")
        notes.append({
            "level": "error" if error.kind == "plugin" else "warning",
            "message": {"text": clean(f"{error.check_id} on {where} could not complete "
                                      f"({error.kind}): {error.reason}")},
            "timeUtc": _utc(error.at),
            "locations": [{"physicalLocation": {"artifactLocation": {
                "uri": service_uri(error.device, error.port, transports.get(
                    (error.check_id, error.device, error.port)))}}}],
            "properties": {"checkId": clean(error.check_id, 200),
                           "device": clean(error.device, 200), "port": error.port,
                           "kind": clean(error.kind, 100)},
        })
    for note in result.meta.discovery_notes:
        notes.append({"level": "note", "message": {"text": clean(note)}})
    return notes


def sarif_document(result: ScanResult) -> dict[str, Any]:
    meta = result.meta
    rules = _rules(result)
    index = {rule["id"]: position for position, rule in enumerate(rules)}
    invocation: dict[str, Any] = {
        "executionSuccessful": meta.complete,
        "startTimeUtc": _utc(meta.started_at),
    }
    if meta.finished_at is not None:
        invocation["endTimeUtc"] = _utc(meta.finished_at)
    if meta.command_line:
        invocation["commandLine"] = clean(shlex.join(meta.command_line))
        invocation["arguments"] = [clean(a, 500) for a in meta.command_line[1:]]
    invocation["toolExecutionNotifications"] = _notifications(result)
    invocation["properties"] = {
        "profile": clean(meta.profile, 200),
        "targets": [clean(t, 200) for t in meta.targets],
        "excluded": [clean(t, 200) for t in meta.excluded],
        "scopeSize": meta.scope_size,
        "stopReason": meta.stop_reason,
        "interruptedReason": clean(meta.interrupted_reason) if meta.interrupted_reason
        else None,
    }
    automation: dict[str, Any] = {"id": clean(f"iotbaseline/{meta.profile}/{meta.scan_id}", 300)}
    if _GUID.match(meta.scan_id):
        automation["guid"] = meta.scan_id
    counts: dict[str, dict[str, int]] = {}
    for framework_id in dict.fromkeys(v.framework for v in result.verdicts):
        tally = Counter(v.verdict.value for v in result.verdicts if v.framework == framework_id)
        counts[framework_id] = dict(sorted(tally.items()))
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "iotbaseline",
            "version": clean(meta.tool_version, 100),
            "informationUri": INFORMATION_URI,
            "rules": rules,
        }},
        "automationDetails": automation,
        "invocations": [invocation],
        "results": [_result(f, index[clean(f.check_id, 200)]) for f in result.findings],
        "properties": {
            "scanId": clean(meta.scan_id, 200),
            "reportSchemaVersion": clean(result.schema_version, 50),
            "deviceVerdicts": [{"framework": clean(v.framework, 200),
                                "device": clean(v.device, 200), "verdict": v.verdict.value}
                               for v in result.device_verdicts],
            "clauseVerdictCounts": counts,
        },
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render(result: ScanResult) -> str:
    return json.dumps(sarif_document(result), indent=2, ensure_ascii=False) + "\n"


RENDERER = Renderer("sarif", "report.sarif", render)
