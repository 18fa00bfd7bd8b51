"""Report formats: each renderer turns one immutable ScanResult into one file, and evaluates
nothing (verdicts are already in the result). A format is a module here plus a line below.

A scan's own ``report.json`` is the exception: it is streamed from the scan's journal, record
by record, with each device's verdicts computed as it is written, so that writing the report of
thousands of devices does not hold all of their evidence in memory at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from reports.compliance import Framework
from reports.renderers import csv_report, html, junit, markdown, oscal, sarif
from reports.renderers.base import Renderer
from reports.verdicts import AnswerKey, device_rollup, device_verdicts
from scanner.models import SCHEMA_VERSION, DeviceVerdict, ManualAnswer, ScanResult
from scanner.storage import REPORT_NAME, StoredScan, load_report, private_file, write_private


def _json(result: ScanResult) -> str:
    return result.model_dump_json(indent=2)


RENDERERS: dict[str, Renderer] = {
    "json": Renderer("json", REPORT_NAME, _json),
    **{r.name: r for r in (html.RENDERER, markdown.RENDERER, csv_report.RENDERER,
                           junit.RENDERER, sarif.RENDERER, oscal.RENDERER)},
}


def write_reports(result: ScanResult, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write each requested format (JSON always) owner-only; returns the paths written."""
    written = []
    for name in dict.fromkeys(["json", *formats]):
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
    others = [name for name in dict.fromkeys(formats) if name != "json"]
    return [path, *(write_reports(load_report(path), out_dir, others)[1:] if others else [])]


def _items(out: IO[str], key: str, records: Iterable[dict[str, Any]], last: bool = False
           ) -> None:
    out.write(f'  "{key}": [')
    for index, record in enumerate(records):
        out.write(("," if index else "") + "\n    " + json.dumps(record, ensure_ascii=False))
    out.write("\n  ]" + ("\n" if last else ",\n"))


def _stream_json(stored: StoredScan, out: IO[str], answers: Mapping[AnswerKey, ManualAnswer],
                 frameworks: Iterable[Framework]) -> None:
    """The same document as ``ScanResult.model_dump_json``, one record per line."""
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

    out.write("{\n" + f'  "schema_version": {json.dumps(SCHEMA_VERSION)},\n  "meta": '
              + json.dumps(stored.meta.model_dump(mode="json"), ensure_ascii=False) + ",\n")
    _items(out, "devices", stored.raw(stored.sorted_device_spans))
    _items(out, "findings", stored.raw(stored.finding_spans))
    _items(out, "check_runs", stored.raw(stored.run_spans))
    _items(out, "errors", stored.raw(stored.error_spans))
    _items(out, "verdicts", verdicts())
    _items(out, "device_verdicts", (r.model_dump(mode="json") for r in rollups), last=True)
    out.write("}\n")
