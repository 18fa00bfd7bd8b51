"""What every renderer is: a name, a file name and a function of one immutable ScanResult."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scanner.models import ScanResult


@dataclass(frozen=True)
class Renderer:
    name: str
    filename: str
    render: Callable[[ScanResult], str]
