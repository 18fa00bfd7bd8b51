"""Findings as CSV, one row per finding, for spreadsheets and ticket imports.

- RFC 4180 through the csv module: every field quoted, CRLF row ends, quotes doubled.
- UTF-8 with a byte-order mark. Excel opens a BOM-less CSV in the machine's ANSI code page, which
  garbles every non-ASCII character (device names, « », evidence escapes); with the BOM it reads
  UTF-8. Spreadsheets are this format's audience; programs should read report.json or the
  SARIF file instead (Python: ``encoding="utf-8-sig"`` reads either form).
- Formula injection (OWASP "CSV Injection"): a cell starting with ``=``, ``+``, ``-``, ``@``,
  tab or carriage return (or their full-width forms, or any of them after leading spaces) gets
  a leading ``'`` so a spreadsheet shows it as text instead of evaluating it.
- Control, format (bidi) and surrogate characters are written visibly (``\\x1b``), NUL
  included; newlines inside a cell are kept (quoted, which RFC 4180 allows); long cells are cut
  below Excel's 32,767-character limit.

Evaluates nothing: it lists the findings the result holds.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from reports.renderers.base import Renderer
from reports.renderers.text import visible
from scanner.models import Finding, ScanResult

COLUMNS = ["finding_id", "check_id", "title", "severity", "confidence", "device", "port",
           "transport", "protocol", "summary", "clauses", "remediation", "references",
           "found_at"]
CELL_MAX = 4000
BOM = "\ufeff"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")



def safe_cell(value: object) -> str:
    """One cell: capped, control characters visible, formula triggers defused."""
    text = "" if value is None else str(value)
    if len(text) > CELL_MAX:
        text = text[:CELL_MAX] + f"… [{len(text) - CELL_MAX} more characters in report.json]"
    text = visible(text.replace("\r\n", "\n"), keep="\n")
    if text.lstrip(" ").startswith(_FORMULA_START) or text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(finding: Finding) -> list[str]:
    clauses = ";".join(f"{framework}:{clause}" for framework, ids in finding.clauses.items()
                       for clause in ids)
    values: list[object] = [
        finding.id, finding.check_id, finding.title, finding.severity.value,
        finding.confidence.value, finding.device, finding.port, finding.transport,
        finding.protocol, finding.summary, clauses, finding.remediation,
        # URLs cannot hold a raw space (RFC 3986), so a space separates them unambiguously
        " ".join(finding.references), _time(finding.found_at)]
    return [safe_cell(value) for value in values]


def render(result: ScanResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for finding in result.findings:  # the scanner's order: severity, device, port, check
        writer.writerow(row(finding))
    return BOM + buffer.getvalue()


RENDERER = Renderer("csv", "findings.csv", render)
