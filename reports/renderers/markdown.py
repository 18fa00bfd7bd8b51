"""Markdown report for tickets and wikis: summary, verdicts, findings with their evidence.

Every string a device could have chosen (banners, titles, evidence, hostnames, UPnP fields) is
neutralised before it reaches the page:

- control, format (bidi, zero-width), separator and surrogate characters are written visibly as
  ``\\x1b`` / ``\\u202e`` so an ANSI or OSC sequence cannot act on a terminal and a bidi override
  cannot reorder what a reader sees;
- in running text and table cells, Markdown punctuation is backslash-escaped, ``|`` included, and
  ``<``, ``>`` and ``&`` become entities, so no raw HTML, link, image or emphasis passes through;
- evidence sits in fenced code blocks whose fence is longer than any backtick run inside, so the
  data cannot close it; inside, a ``<`` that could open an HTML tag is written ``\\x3c`` for
  renderers that mishandle code blocks;
- long strings are cut (the full text stays in report.json);
- the only angle brackets the renderer writes itself are CommonMark autolinks around reference
  URLs from probe metadata, and only for URLs made of plain URL characters.

The renderer evaluates nothing: verdicts and counts come from the ScanResult as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from reports.compliance import Framework, load_frameworks
from reports.renderers.base import Renderer
from reports.renderers.text import cap, visible
from scanner.models import (
    ClauseVerdict,
    Device,
    Exchange,
    Finding,
    ScanResult,
    Severity,
    Verdict,
)

CELL_MAX = 160  # characters of device text in a table cell
TEXT_MAX = 1000  # … in a paragraph or list item
EVIDENCE_MAX = 4096  # … in one evidence exchange
EVIDENCE_ITEMS_MAX = 40  # exchanges shown per finding

# Markdown (CommonMark + GFM) punctuation that can start or end markup inline.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_VERDICT_ORDER = [Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.MANUAL, Verdict.PASS,
                  Verdict.NOT_APPLICABLE]
_VERDICT_LABEL = {Verdict.FAIL: "**FAIL**", Verdict.INCONCLUSIVE: "INCONCLUSIVE",
                  Verdict.MANUAL: "MANUAL", Verdict.PASS: "PASS",
                  Verdict.NOT_APPLICABLE: "N/A"}




def _entities(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md(text: object, limit: int = TEXT_MAX) -> str:
    """Untrusted text for running Markdown: one line, escaped, capped."""
    raw = cap(str(text), limit).replace("\r\n", "\n").replace("\n", "\\n")
    return _entities(_MD_SPECIAL.sub(r"\\\1", visible(raw)))


def link(url: str) -> str:
    """A reference URL as a CommonMark autolink when it is a plain URL, else escaped text."""
    if len(url) <= 500 and _PLAIN_URL.fullmatch(url):
        return f"<{url}>"
    return md(url, 500)


def cell(text: object, limit: int = CELL_MAX) -> str:
    """Untrusted text for a table cell (``|`` is escaped by ``md``); never empty."""
    return md(text, limit) or " "


def fenced(body: str, info: str = "text") -> list[str]:
    """A code block no content can break out of."""
    body = _TAG_OPEN.sub(r"\\x3c", visible(body, keep="\n\t"))
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", *body.split("\n"), fence]


def _time(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _device_label(device: Device | None, address: str) -> str:
    if device is None:
        return md(address, CELL_MAX)
    name = " ".join(part for part in (device.manufacturer, device.model) if part)
    return md(address, CELL_MAX) + (f" — {md(name, CELL_MAX)}" if name else "")


def _service(finding: Finding) -> str:
    if finding.port is None:
        return "device"
    protocol = f" {finding.protocol}" if finding.protocol else ""
    return f"{finding.port}/{finding.transport or 'tcp'}{protocol}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _summary(result: ScanResult) -> list[str]:
    meta = result.meta
    severities = Counter(f.severity for f in result.findings)
    runs = Counter(r.status.value for r in result.check_runs)
    by_severity = ", ".join(f"{severities.get(s, 0)} {s.value}" for s in reversed(Severity))
    lines = ["## Summary", ""]
    lines += _table(["", "count"], [
        ["devices", str(len(result.devices))],
        ["findings", f"{len(result.findings)} ({by_severity})"],
        ["check runs", f"{len(result.check_runs)} ("
         + ", ".join(f"{runs.get(s, 0)} {s}" for s in ("pass", "fail", "error")) + ")"],
        ["probe errors", str(len(result.errors))],
    ])
    for framework_id in dict.fromkeys(v.framework for v in result.verdicts):
        counts = Counter(v.verdict for v in result.verdicts if v.framework == framework_id)
        lines += ["", f"Clause verdicts ({md(framework_id)}): " + ", ".join(
            f"{counts.get(v, 0)} {v.value}" for v in _VERDICT_ORDER) + "."]
    if not meta.complete:
        lines += ["", f"**The scan is incomplete** (stopped: {md(meta.stop_reason or 'unknown')}"
                  + (f" — {md(meta.interrupted_reason)}" if meta.interrupted_reason else "")
                  + "): missing results are not passes."]
    return lines


def _header(result: ScanResult) -> list[str]:
    meta = result.meta
    lines = [f"# iotbaseline report — scan {md(meta.scan_id, 100)}", ""]
    lines.append(f"- Tool: {md(meta.tool)} {md(meta.tool_version)}, profile {md(meta.profile)}, "
                 f"report schema {md(result.schema_version)}")
    targets = ", ".join(md(t, 200) for t in meta.targets[:50])
    if len(meta.targets) > 50:
        targets += f" and {len(meta.targets) - 50} more"
    lines.append(f"- Targets: {targets} ({meta.scope_size} addresses in scope)")
    if meta.excluded:
        lines.append("- Excluded: " + ", ".join(md(t, 200) for t in meta.excluded[:50]))
    lines.append(f"- Started {_time(meta.started_at)}, finished {_time(meta.finished_at)}, "
                 f"complete: {'yes' if meta.complete else 'no'}")
    lines += [f"- Note: {md(note)}" for note in meta.discovery_notes]
    return [*lines, ""]


def _device_verdicts(result: ScanResult) -> list[str]:
    frameworks = list(dict.fromkeys(v.framework for v in result.device_verdicts))
    if not frameworks:
        return []
    verdicts = {(v.framework, v.device): v.verdict for v in result.device_verdicts}
    devices = {d.address: d for d in result.devices}
    addresses = list(dict.fromkeys([*devices, *(v.device for v in result.device_verdicts)]))
    rows = [[cell(address), cell(" ".join(p for p in (devices[address].manufacturer,
                                                       devices[address].model) if p))
             if address in devices else " ",
             *(_VERDICT_LABEL[verdicts[(f, address)]] if (f, address) in verdicts else "—"
               for f in frameworks)]
            for address in addresses]
    return ["## Device verdicts", "", *_table(["device", "model", *map(cell, frameworks)], rows),
            ""]


def _clause_table(framework_id: str, verdicts: list[ClauseVerdict],
                  frameworks: dict[str, Framework]) -> list[str]:
    framework = frameworks.get(framework_id)
    title = framework.title if framework else framework_id
    devices = list(dict.fromkeys(v.device for v in verdicts))
    clauses = list(dict.fromkeys(v.clause for v in verdicts))
    titles = {v.clause: v.title for v in verdicts}
    by_key = {(v.clause, v.device): v for v in verdicts}
    rows = [[cell(clause), cell(titles[clause]),
             *(_VERDICT_LABEL[by_key[(clause, d)].verdict] if (clause, d) in by_key else "—"
               for d in devices)]
            for clause in clauses]
    lines = [f"## Clause verdicts — {md(title)}", "",
             *_table(["clause", "title", *map(cell, devices)], rows), ""]
    notable = [v for v in verdicts if v.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)]
    if notable:
        lines += ["Why (FAIL and INCONCLUSIVE):", ""]
        for v in notable:
            extra = f" Findings: {', '.join(md(i, 40) for i in v.findings)}." if v.findings \
                else ""
            lines.append(f"- {md(v.clause)} on {md(v.device)} — {v.verdict.value}: "
                         f"{md(v.reason)}{extra}")
        lines.append("")
    answered = [v for v in verdicts if v.answer is not None]
    if answered:
        lines += ["Assessor answers:", ""]
        for v in answered:
            answer = v.answer
            assert answer is not None
            who = f" ({md(answer.assessor, 100)})" if answer.assessor else ""
            evidence = f" Evidence: {'; '.join(md(e, 200) for e in answer.evidence)}." \
                if answer.evidence else ""
            lines.append(f"- {md(v.clause)} on {md(v.device)} — {answer.verdict.value}{who}: "
                         f"{md(answer.justification)}{evidence}")
        lines.append("")
    return lines


def _exchange(exchange: Exchange) -> list[str]:
    arrow = {"sent": "→ sent", "received": "← received", "event": "· event"}.get(
        exchange.direction, exchange.direction)
    cut = " (truncated by the scanner)" if exchange.truncated else ""
    head = f"{_time(exchange.at)} {arrow} {md(exchange.endpoint, 200)}{cut}"
    return [head, "", *fenced(cap(exchange.data.replace("\r\n", "\n"), EVIDENCE_MAX)), ""]


def _finding(finding: Finding) -> list[str]:
    lines = [f"#### [{finding.severity.value.upper()}] {md(finding.title, 300)}", "",
             f"- ID: {md(finding.id, 100)}; check {md(finding.check_id, 100)}; "
             f"confidence {finding.confidence.value}",
             f"- Service: {md(_service(finding), 200)}; found {_time(finding.found_at)}"]
    for framework_id, clause_ids in finding.clauses.items():
        lines.append(f"- Clauses ({md(framework_id, 100)}): "
                     + ", ".join(md(c, 40) for c in clause_ids))
    lines += ["", f"**Summary:** {md(finding.summary)}", ""]
    if finding.remediation:
        lines += [f"**Remediation:** {md(finding.remediation)}", ""]
    if finding.references:
        lines += ["**References:**", ""]
        lines += [f"- {link(ref)}" for ref in finding.references]
        lines.append("")
    if finding.facts:
        lines += ["**Facts:**", "", *_table(["fact", "value"], (
            [cell(key, 80), cell(value, 400)] for key, value in sorted(finding.facts.items()))),
            ""]
    if finding.evidence:
        lines += ["**Evidence:**", ""]
        for exchange in finding.evidence[:EVIDENCE_ITEMS_MAX]:
            lines += _exchange(exchange)
        if len(finding.evidence) > EVIDENCE_ITEMS_MAX:
            lines += [f"… {len(finding.evidence) - EVIDENCE_ITEMS_MAX} more exchange(s) in "
                      "report.json.", ""]
    return lines


def _findings(result: ScanResult) -> list[str]:
    lines = ["## Findings", ""]
    if not result.findings:
        return [*lines, "No findings: the checks that ran found no counterexample.", ""]
    devices = {d.address: d for d in result.devices}
    by_device: dict[str, list[Finding]] = {address: [] for address in devices}
    for finding in result.findings:
        by_device.setdefault(finding.device, []).append(finding)
    for address, unsorted in by_device.items():
        findings = sorted(unsorted, key=lambda f: (-f.severity.rank, f.port or 0, f.check_id,
                                                   f.id))
        if not findings:
            continue
        lines += [f"### {_device_label(devices.get(address), address)}", ""]
        device = devices.get(address)
        if device is not None:
            facts = [f"{label}: {md(value, 200)}" for label, value in (
                ("firmware", device.firmware), ("MAC", device.mac), ("vendor", device.vendor),
                ("hostnames", ", ".join(device.hostnames))) if value]
            if facts:
                lines += ["; ".join(facts), ""]
        for finding in findings:
            lines += _finding(finding)
    return lines


def _errors(result: ScanResult) -> list[str]:
    if not result.errors:
        return []
    rows = ([cell(e.check_id), cell(e.device), str(e.port) if e.port is not None else "—",
             cell(e.kind), cell(e.reason, 300)] for e in result.errors)
    return ["## Probe errors", "",
            "Checks that could not complete (error, timeout, cut short); the clause verdicts "
            "above say where that left a clause INCONCLUSIVE.", "",
            *_table(["check", "device", "port", "kind", "reason"], rows), ""]


_METHOD = [
    "## How to read this report", "",
    "- Verdicts are per device and clause. PASS means the checks that apply ran and found no "
    "counterexample: a black-box scan cannot prove a clause is met. FAIL means at least one "
    "reproducible finding (or an assessor's FAIL). INCONCLUSIVE means a check errored or "
    "assessor questions are unanswered. MANUAL means the clause cannot be observed from the "
    "network and awaits the checklist. N/A means the precondition was absent.",
    "- Device text (banners, titles, evidence) is shown escaped: control and bidi characters "
    "as `\\xNN`/`\\uNNNN`, and in evidence blocks a `<` that could open an HTML tag as "
    "`\\x3c`. Long text is cut; report.json holds it in full.",
    "",
]


def render(result: ScanResult) -> str:
    frameworks = {f.id: f for f in load_frameworks()}
    lines = _header(result) + _summary(result) + [
        "", "> A PASS means no counterexample was found by a black-box scan; it is not proof "
        "that a clause is met.", ""]
    lines += _device_verdicts(result)
    for framework_id in dict.fromkeys(v.framework for v in result.verdicts):
        lines += _clause_table(framework_id,
                               [v for v in result.verdicts if v.framework == framework_id],
                               frameworks)
    lines += _findings(result) + _errors(result) + _METHOD
    return "\n".join(lines).rstrip("\n") + "\n"


RENDERER = Renderer("markdown", "report.md", render)
