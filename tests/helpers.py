"""Test helpers shared by several modules (conftest keeps only fixtures)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema

from profiles import ScanProfile, load_profile
from reports.schema_tools import committed_schema
from scanner.models import ScanResult
from scanner.targets import Scope, build_scope

NEVER_TOUCH_PORTS = (2024,)


def safe_scope(*targets: str, excludes: list[str] | None = None) -> Scope:
    return build_scope(list(targets), excludes, excluded_ports=NEVER_TOUCH_PORTS)


def validate_report(path: Path) -> dict[str, Any]:
    """Every report a test writes must validate against the committed schema."""
    document = json.loads(path.read_text())
    jsonschema.validate(document, committed_schema())
    return document


def fast_profile(**changes: Any) -> ScanProfile:
    """The safe profile with test-speed timing and no link-local discovery."""
    base = load_profile("safe").model_dump()
    base["timing"].update(connect_timeout=1.0, read_timeout=1.5, probe_budget=8.0,
                          rate=500.0)
    base["discovery"].update(arp=False, mdns=False, ssdp=False, lan_wait=0.0)
    for key, value in changes.items():
        if isinstance(value, dict):
            base[key].update(value)
        else:
            base[key] = value
    return ScanProfile.model_validate(base)


ScanRunner = Callable[..., Awaitable[ScanResult]]
