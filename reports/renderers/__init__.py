"""Report formats: each renderer turns one immutable ScanResult into one file, and evaluates
nothing (verdicts are already in the result). A format is a module here plus a line below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scanner.models import ScanResult
from scanner.storage import write_private


@dataclass(frozen=True)
class Renderer:
    name: str
    filename: str
    render: Callable[[ScanResult], str]


def _json(result: ScanResult) -> str:
    return result.model_dump_json(indent=2)


RENDERERS: dict[str, Renderer] = {
    "json": Renderer("json", "report.json", _json),
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
