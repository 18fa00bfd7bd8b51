"""Where results go while the scan runs: an append-only journal, then the final JSON report.

Each device, finding, check run and probe error is appended (and flushed) to ``scan.jsonl`` the
moment it exists, so a crash or a kill loses nothing already found. Only a small index stays in
memory (where each record sits in the journal, and what verdicts and summaries need); the full
records, with their evidence, are read back one at a time when the report is written. That keeps
a scan of thousands of devices within a memory bound that does not grow with their evidence.
``report.json`` is written atomically at the end, or on interruption with ``complete: false``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from scanner.models import (
    CheckRun,
    CheckStatus,
    Device,
    Exchange,
    Finding,
    Model,
    ProbeError,
    ScanMeta,
    ScanResult,
    Severity,
)

JOURNAL_NAME = "scan.jsonl"
REPORT_NAME = "report.json"

RecordModel = TypeVar("RecordModel", bound=Model)
Span = tuple[int, int]  # (offset, length) of one journal line


@contextlib.contextmanager
def private_file(path: Path) -> Iterator[IO[str]]:
    """An owner-only file written whole or not at all: reports hold evidence about devices (and
    maybe secrets), and a reader must never see half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    # A leftover temporary (a killed run) or a planted symlink keeps its own mode or target
    # under O_CREAT alone: remove it, then create afresh and never follow a link.
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_private(path: Path, text: str) -> None:
    with private_file(path) as handle:
        handle.write(text)


@dataclass(frozen=True)
class FindingRef:
    """What verdicts and summaries need of a finding, without its evidence, and where the whole
    finding sits in the journal."""

    id: str
    check_id: str
    severity: Severity
    device: str
    port: int | None
    summary: str
    span: Span


@dataclass(repr=False)
class StoredScan:
    """A finished scan as an index over its journal: counts in memory, records on disk."""

    journal: Path
    meta: ScanMeta
    device_spans: dict[str, Span]  # address -> its latest record
    device_models: dict[str, str | None]
    ordered_findings: list[FindingRef]  # in report order
    finding_refs: dict[str, list[FindingRef]]  # the same, by device
    run_spans: list[Span]
    run_refs: dict[str, list[tuple[str, CheckStatus]]]  # by device: (check id, status)
    error_spans: list[Span]
    severity_counts: Counter[Severity] = field(default_factory=Counter)

    def __repr__(self) -> str:  # short: asyncio may format a finished main task's result
        return (f"StoredScan({self.journal}, {len(self.device_spans)} devices, "
                f"{len(self.ordered_findings)} findings)")

    @property
    def addresses(self) -> list[str]:
        return sorted(self.device_spans, key=_address_key)

    @property
    def finding_spans(self) -> list[Span]:
        return [ref.span for ref in self.ordered_findings]

    def raw(self, spans: list[Span]) -> Iterator[dict[str, Any]]:
        """The journal's records at ``spans``, one at a time, as the JSON they were written."""
        with self.journal.open("rb") as journal:
            for span in spans:
                yield _read_record(journal, span)

    def _models(self, spans: list[Span], model: type[RecordModel]) -> Iterator[RecordModel]:
        return (model.model_validate(data) for data in self.raw(spans))

    @property
    def sorted_device_spans(self) -> list[Span]:
        return [self.device_spans[address] for address in self.addresses]

    def devices(self) -> Iterator[Device]:
        return self._models(self.sorted_device_spans, Device)

    def findings(self) -> Iterator[Finding]:
        return self._models(self.finding_spans, Finding)

    def check_runs(self) -> Iterator[CheckRun]:
        return self._models(self.run_spans, CheckRun)

    def errors(self) -> Iterator[ProbeError]:
        return self._models(self.error_spans, ProbeError)

    def load(self) -> ScanResult:
        """Everything in memory, before any verdict (for callers that want the whole model)."""
        return ScanResult(meta=self.meta, devices=list(self.devices()),
                          findings=list(self.findings()), check_runs=list(self.check_runs()),
                          errors=list(self.errors()))


class ResultStore:
    def __init__(self, out_dir: Path, replace: bool = False) -> None:
        """``replace``: start the journal afresh (a redelivered scan job runs again)."""
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.journal_path = out_dir / JOURNAL_NAME
        mode = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if replace else 0)
        self._fd = os.open(self.journal_path, mode, 0o600)
        self._device_spans: dict[str, Span] = {}
        self._device_models: dict[str, str | None] = {}
        self._findings: list[tuple[tuple[int, tuple[int, int], int, str], FindingRef]] = []
        self._run_spans: list[Span] = []
        self._run_refs: dict[str, list[tuple[str, CheckStatus]]] = defaultdict(list)
        self._error_spans: list[Span] = []

    @property
    def finding_count(self) -> int:
        return len(self._findings)

    def _append(self, kind: str, payload: dict[str, object]) -> Span:
        """One unbuffered write per record, its offset read from the file: a failed write (a
        full disk) leaves at worst a broken line that no later record's span points into."""
        record = {"kind": kind, "data": payload}
        text = json.dumps(record, ensure_ascii=True)
        if "\\ud" in text:  # a surrogate: a lone one (hostile device text) cannot be read back
            text = json.dumps(without_lone_surrogates(record), ensure_ascii=True)
        line = (text + "\n").encode("ascii")
        offset = os.lseek(self._fd, 0, os.SEEK_END)
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        return offset, len(line)

    def start(self, meta: ScanMeta) -> None:
        self._append("meta", meta.model_dump(mode="json"))

    def device(self, device: Device) -> None:
        self._device_spans[device.address] = self._append("device", device.model_dump(mode="json"))
        self._device_models[device.address] = device.model

    def finding(self, finding: Finding) -> None:
        span = self._append("finding", finding.model_dump(mode="json"))
        key = (-finding.severity.rank, _address_key(finding.device), finding.port or 0,
               finding.check_id)
        self._findings.append((key, FindingRef(
            id=finding.id, check_id=finding.check_id, severity=finding.severity,
            device=finding.device, port=finding.port,
            summary=without_lone_surrogates(finding.summary[:200]), span=span)))

    def check_run(self, run: CheckRun) -> None:
        self._run_spans.append(self._append("check_run", run.model_dump(mode="json")))
        self._run_refs[run.device].append((run.check_id, run.status))

    def error(self, error: ProbeError) -> None:
        self._error_spans.append(self._append("error", error.model_dump(mode="json")))

    def evidence(self, exchanges: list[Exchange]) -> Span:
        """Park a transcript that may become a finding's evidence later (a fleet check's, at the
        scan's end): on disk, not in memory, until then."""
        return self._append("evidence", {"exchanges": [e.model_dump(mode="json")
                                                       for e in exchanges]})

    def read_evidence(self, span: Span) -> list[Exchange]:
        with self.journal_path.open("rb") as journal:
            return [Exchange.model_validate(item)
                    for item in _read_record(journal, span)["exchanges"]]

    def finish(self, meta: ScanMeta) -> StoredScan:
        """The scan as found, before any verdict: assessing and rendering come after."""
        self._append("end", {"complete": meta.complete})
        os.close(self._fd)
        ordered = [ref for _, ref in sorted(self._findings, key=lambda entry: entry[0])]
        refs: dict[str, list[FindingRef]] = defaultdict(list)  # stable sort: journal order kept
        for ref in ordered:
            refs[ref.device].append(ref)
        return StoredScan(
            journal=self.journal_path, meta=meta, device_spans=self._device_spans,
            device_models=self._device_models, ordered_findings=ordered,
            finding_refs=dict(refs), run_spans=self._run_spans, run_refs=dict(self._run_refs),
            error_spans=self._error_spans,
            severity_counts=Counter(ref.severity for ref in ordered))


def _read_record(journal: IO[bytes], span: Span) -> dict[str, Any]:
    offset, length = span
    journal.seek(offset)
    record = json.loads(journal.read(length))
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise ValueError(f"{journal.name}: no journal record at byte {offset}")
    payload: dict[str, Any] = record["data"]
    return payload


def without_lone_surrogates(value: Any) -> Any:
    """``value`` (JSON-like data) with every unpaired UTF-16 surrogate in its strings replaced
    by U+FFFD. Device text can carry them (JSON ``\\ud800`` escapes, ``surrogateescape``
    decoding); no UTF-8 file can hold one, and no JSON parser this project uses reads one back."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {key: without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_lone_surrogates(item) for item in value]
    return value


def _address_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
        return ip.version, int(ip)
    except ValueError:
        return 9, 0


def load_report(path: Path) -> ScanResult:
    return ScanResult.model_validate_json(path.read_bytes())
