"""Report formats: each renderer turns one immutable ScanResult into one file, and evaluates
nothing (verdicts are already in the result). A format is a module here plus a line below."""

from __future__ import annotations

from pathlib import Path

from reports.renderers import csv_report, html, junit, markdown, oscal, sarif
from reports.renderers.base import Renderer
from scanner.models import ScanResult
from scanner.storage import write_private


def _json(result: ScanResult) -> str:
    return result.model_dump_json(indent=2)


RENDERERS: dict[str, Renderer] = {
    "json": Renderer("json", "report.json", _json),
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
