"""Report formats: each renderer turns one immutable ScanResult into one file, and evaluates
nothing (verdicts are already in the result). A format is a module here plus a line below.

A scan's own ``report.json`` is the exception: it is streamed from the scan's journal, record
by record, with each device's verdicts computed as it is written, so that writing the report of
thousands of devices does not hold all of their evidence in memory at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from reports.compliance import Framework
from reports.renderers import csv_report, html, junit, markdown, oscal, sarif
from reports.renderers.base import Renderer
from reports.verdicts import AnswerKey, device_rollup, device_verdicts
from scanner.models import SCHEMA_VERSION, DeviceVerdict, ManualAnswer, ScanResult
from scanner.storage import (
    REPORT_NAME,
    StoredScan,
    load_report,
    private_file,
    without_lone_surrogates,
    write_private,
)


def _json(result: ScanResult) -> str:
    return result.model_dump_json(indent=2)


RENDERERS: dict[str, Renderer] = {
    "json": Renderer("json", REPORT_NAME, _json),
    **{r.name: r for r in (html.RENDERER, markdown.RENDERER, csv_report.RENDERER,
                           junit.RENDERER, sarif.RENDERER, oscal.RENDERER)},
}


def write_reports(result: ScanResult, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write each requested format (JSON always) owner-only; returns the paths written."""
    return _render(result, out_dir, ["json", *formats])


def _render(result: ScanResult, out_dir: Path, names: list[str]) -> list[Path]:
    written = []
    for name in dict.fromkeys(names):
        renderer = RENDERERS[name]
        path = out_dir / renderer.filename
        write_private(path, renderer.render(result))
        written.append(path)
    return written


def write_scan_reports(stored: StoredScan, out_dir: Path, formats: list[str],
                       answers: Mapping[AnswerKey, ManualAnswer],
                       frameworks: Iterable[Framework]) -> list[Path]:
    """A finished scan's reports: JSON streamed from the journal; any other format rendered
    from that JSON read back whole (those formats hold the whole scan in memory)."""
    path = out_dir / REPORT_NAME
    with private_file(path) as out:
        _stream_json(stored, out, answers, frameworks)
    others = [name for name in formats if name != "json"]
    return [path, *(_render(load_report(path), out_dir, others) if others else [])]


def _record(out: IO[str], prefix: str, record: dict[str, Any]) -> None:
    """One record as JSON; text no UTF-8 file can hold (a lone surrogate) becomes U+FFFD."""
    try:
        out.write(prefix + json.dumps(record, ensure_ascii=False))
    except UnicodeEncodeError:  # raised before anything of this record is written
        out.write(prefix + json.dumps(without_lone_surrogates(record), ensure_ascii=False))


def _items(out: IO[str], records: Iterable[dict[str, Any]]) -> None:
    out.write("[")
    for index, record in enumerate(records):
        _record(out, ("," if index else "") + "\n    ", record)
    out.write("\n  ]")


def _stream_json(stored: StoredScan, out: IO[str], answers: Mapping[AnswerKey, ManualAnswer],
                 frameworks: Iterable[Framework]) -> None:
    """The same document as ``ScanResult.model_dump_json``, one record per line. Every field
    of ScanResult must have a writer here: a new one fails every scan until it has."""
    rollups: list[DeviceVerdict] = []

    def verdicts() -> Iterator[dict[str, Any]]:
        for framework in frameworks:
            for address in stored.addresses:
                mine = device_verdicts(framework, address, stored.device_models.get(address),
                                       stored.finding_refs.get(address, []),
                                       stored.run_refs.get(address, []), answers)
                if mine:
                    rollups.append(DeviceVerdict(framework=framework.id, device=address,
                                                 verdict=device_rollup(mine)))
                yield from (verdict.model_dump(mode="json") for verdict in mine)

    writers: dict[str, Callable[[], object]] = {
        "schema_version": lambda: out.write(json.dumps(SCHEMA_VERSION)),
        "meta": lambda: _record(out, "", stored.meta.model_dump(mode="json")),
        "devices": lambda: _items(out, stored.raw(stored.sorted_device_spans)),
        "findings": lambda: _items(out, stored.raw(stored.finding_spans)),
        "check_runs": lambda: _items(out, stored.raw(stored.run_spans)),
        "errors": lambda: _items(out, stored.raw(stored.error_spans)),
        "verdicts": lambda: _items(out, verdicts()),
        "device_verdicts": lambda: _items(out, (r.model_dump(mode="json") for r in rollups)),
    }
    out.write("{")
    for index, field in enumerate(ScanResult.model_fields):
        out.write(("," if index else "") + f"\n  {json.dumps(field)}: ")
        writers[field]()
    out.write("\n}\n")
