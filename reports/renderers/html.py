"""The HTML report: one self-contained file (inline CSS, no script, no fetches) to read on a
laptop or print.

It presents what the result holds and evaluates nothing: verdicts come from
``reports.verdicts``, clause texts from the framework files. Every device-supplied string is
hostile: Jinja2 autoescapes it, ``_finalize`` turns control characters, bidi overrides and lone
surrogates into visible escapes (``\\x1b``, ``\\u202e``) on every ``{{ … }}`` output, table cells
are capped (``cell``) and evidence blocks are clipped at 16 KiB (``clip``).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from reports.compliance import load_frameworks
from reports.renderers.base import Renderer
from scanner.models import (
    ClauseVerdict,
    Device,
    Finding,
    ProbeError,
    ScanResult,
    Severity,
    Verdict,
)

TEMPLATE = "report.html.j2"
CELL_LIMIT = 160  # characters of a device string in a table cell
TEXT_LIMIT = 1000  # a paragraph (finding summary, clause reason)
EVIDENCE_LIMIT = 16 * 1024  # one evidence block (one exchange's data, one traceback)
HARD_LIMIT = 20 * 1024  # any other single output: nothing device-supplied can grow past it
LIST_LIMIT = 50  # items of a device-supplied list shown in one cell (hostnames, SANs)

SEVERITIES = sorted(Severity, key=lambda s: s.rank, reverse=True)  # critical first
VERDICTS = [Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.MANUAL, Verdict.PASS,
            Verdict.NOT_APPLICABLE]
VERDICT_LABEL = {Verdict.FAIL: "FAIL", Verdict.PASS: "PASS", Verdict.INCONCLUSIVE: "INCONCLUSIVE",
                 Verdict.MANUAL: "MANUAL", Verdict.NOT_APPLICABLE: "NOT APPLICABLE"}
ARROWS = {"sent": "→", "received": "←", "event": "•"}


def _escape_table() -> dict[int, str]:
    table = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
    bidi_and_separators = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                           0x2028, 0x2029, 0xFEFF, *range(0xFFF9, 0xFFFC)]
    table.update({code: f"\\u{code:04x}" for code in bidi_and_separators})
    table.update({code: f"\\u{code:04x}" for code in range(0xD800, 0xE000)})  # lone surrogates
    return table


_ESCAPES = _escape_table()
_ESCAPE_NEAR_END = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4})")
_ESCAPES_KEEP_LINES = {k: v for k, v in _ESCAPES.items() if k not in (0x09, 0x0A)}


def neutralise(text: str, keep_lines: bool = False) -> str:
    """Control characters, bidi overrides and lone surrogates as visible escapes."""
    return text.translate(_ESCAPES_KEEP_LINES if keep_lines else _ESCAPES)


@dataclass(frozen=True)
class Clipped:
    text: str
    omitted: int  # characters left out (after neutralising)


def clip(value: object, limit: int = EVIDENCE_LIMIT, keep_lines: bool = True) -> Clipped:
    text = neutralise(str(value), keep_lines)
    if len(text) <= limit:
        return Clipped(text, 0)
    cut = limit
    for escape in _ESCAPE_NEAR_END.finditer(text, max(0, cut - 5), cut + 5):
        if escape.start() < cut < escape.end():  # never cut an escape in half
            cut = escape.start()
    return Clipped(text[:cut], len(text) - cut)


def cell(value: object, limit: int = CELL_LIMIT) -> str:
    """One line of device text for a table cell: newlines shown as escapes, long text capped."""
    clipped = clip(value, limit, keep_lines=False)
    if not clipped.omitted:
        return clipped.text
    return f"{clipped.text}… [{clipped.omitted:,} more characters not shown]"


def _finalize(value: object) -> object:
    """Applied to every ``{{ … }}`` output: a second line of defence behind the filters."""
    if isinstance(value, Markup) or value is None:
        return "" if value is None else value
    if isinstance(value, bool | int | float):
        return value
    text = neutralise(str(value), keep_lines=True)
    if len(text) > HARD_LIMIT:
        text = f"{text[:HARD_LIMIT]}… [{len(text) - HARD_LIMIT:,} more characters not shown]"
    return text


def _when(value: datetime | None, with_ms: bool = False) -> str:
    if value is None:
        return "—"
    value = value.astimezone(UTC)
    if with_ms:
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _upto(items: Iterable[str], limit: int = LIST_LIMIT) -> list[str]:
    items = list(items)
    return items[:limit] + ([f"… and {len(items) - limit} more"] if len(items) > limit else [])


@cache
def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, finalize=_finalize)
    env.filters.update(cell=cell, when=_when, upto=_upto)
    env.globals.update(clip=clip, verdict_label=VERDICT_LABEL, arrows=ARROWS,
                       cell_limit=CELL_LIMIT, text_limit=TEXT_LIMIT,
                       evidence_limit=EVIDENCE_LIMIT)
    return env


@dataclass
class Column:
    """A device as the report addresses it: an anchor-safe id and the device record, if any."""

    anchor: str
    address: str
    device: Device | None
    findings: list[Finding] = field(default_factory=list)
    errors: list[ProbeError] = field(default_factory=list)
    verdicts: dict[str, list[ClauseVerdict]] = field(default_factory=dict)  # by framework


@dataclass
class ClauseText:
    id: str
    title: str
    intent: str = ""
    questions: list[str] = field(default_factory=list)


@dataclass
class FrameworkView:
    id: str
    anchor: str  # "fw1", "fw2": ids in the page never hold data text
    title: str
    short: str  # the title up to its dash: a column heading
    clauses: list[ClauseText]
    cells: dict[tuple[str, str], ClauseVerdict]  # (clause, device) -> verdict
    device_verdicts: dict[str, Verdict]
    counts: dict[Verdict, int]


def _frameworks(result: ScanResult) -> list[FrameworkView]:
    known = {f.id: f for f in load_frameworks()}
    views = []
    for index, framework_id in enumerate(dict.fromkeys(v.framework for v in result.verdicts)):
        data = known.get(framework_id)
        texts = {c.id: ClauseText(c.id, c.title, c.intent, list(c.questions))
                 for c in data.clauses} if data else {}
        mine = [v for v in result.verdicts if v.framework == framework_id]
        order = [c for c in texts if any(v.clause == c for v in mine)]
        order += [c for c in dict.fromkeys(v.clause for v in mine) if c not in texts]
        clauses = [texts.get(c) or ClauseText(c, next(v.title for v in mine if v.clause == c))
                   for c in order]
        counts = Counter(v.verdict for v in mine)
        title = data.title if data else framework_id
        views.append(FrameworkView(
            id=framework_id, anchor=f"fw{index + 1}", title=title,
            short=title.split(" — ")[0], clauses=clauses,
            cells={(v.clause, v.device): v for v in mine},
            device_verdicts={d.device: d.verdict for d in result.device_verdicts
                             if d.framework == framework_id},
            counts={verdict: counts[verdict] for verdict in VERDICTS}))
    return views


def _columns(result: ScanResult) -> list[Column]:
    addresses = dict.fromkeys([*(d.address for d in result.devices),
                               *(v.device for v in result.verdicts),
                               *(f.device for f in result.findings),
                               *(e.device for e in result.errors)])
    records = {d.address: d for d in result.devices}
    columns = {address: Column(f"dev-{index + 1}", address, records.get(address))
               for index, address in enumerate(addresses)}
    rank = {severity: index for index, severity in enumerate(SEVERITIES)}
    for finding in sorted(result.findings, key=lambda f: (rank[f.severity], f.check_id,
                                                          f.port or 0, f.id)):
        columns[finding.device].findings.append(finding)
    for error in result.errors:
        columns[error.device].errors.append(error)
    for verdict in result.verdicts:
        columns[verdict.device].verdicts.setdefault(verdict.framework, []).append(verdict)
    return list(columns.values())


def _probes(result: ScanResult) -> list[dict[str, Any]]:
    runs: dict[str, Counter[str]] = defaultdict(Counter)
    for run in result.check_runs:
        runs[run.check_id][run.status.value] += 1
    ids = sorted({*result.meta.probes, *runs})
    return [{"id": check_id, "source": result.meta.probes.get(check_id, "—"),
             "runs": sum(runs[check_id].values()), "pass": runs[check_id]["pass"],
             "fail": runs[check_id]["fail"], "error": runs[check_id]["error"]}
            for check_id in ids]


def render(result: ScanResult) -> str:
    meta = result.meta
    columns = _columns(result)
    severity_counts = Counter(f.severity for f in result.findings)
    finding_anchor = {f.id: f"f-{index + 1}"
                      for index, f in enumerate(f for c in columns for f in c.findings)}
    duration = _duration((meta.finished_at - meta.started_at).total_seconds()) \
        if meta.finished_at else None
    return _environment().get_template(TEMPLATE).render(
        meta=meta, result=result, columns=columns, frameworks=_frameworks(result),
        severities=[(s.value, severity_counts[s]) for s in SEVERITIES],
        verdicts=VERDICTS, finding_anchor=finding_anchor, duration=duration,
        probes=_probes(result), devices_scanned=len(result.devices))


RENDERER: Renderer = Renderer("html", "report.html", render)
