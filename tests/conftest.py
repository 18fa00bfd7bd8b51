"""Shared fixtures. Safety: tests only ever target 127.0.0.0/8 or namespaces they create, and
port 2024 (an unrelated service on this machine) is excluded from every scope they build."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.registry import LoadedProbe, load_probes
from profiles import ScanProfile
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import ScanResult
from scanner.storage import REPORT_NAME, ResultStore
from tests.helpers import NEVER_TOUCH_PORTS, ScanRunner, fast_profile, safe_scope, validate_report


@pytest.fixture(autouse=True)
def _never_touch_2024(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTBASELINE_EXCLUDE_PORTS", ",".join(map(str, NEVER_TOUCH_PORTS)))


@pytest.fixture
def run_scan(tmp_path: Path) -> ScanRunner:
    """Scan targets in-process with chosen ports and probes; the report is schema-checked."""
    counter = iter(range(1000))

    async def run(*targets: str, tcp: list[int], udp: list[int] | None = None,
                  profile: ScanProfile | None = None,
                  probes: list[LoadedProbe] | None = None) -> ScanResult:
        plan = ScanPlan.build(safe_scope(*targets), profile or fast_profile(),
                              probes if probes is not None else load_probes()[0],
                              ports={"tcp": tcp, "udp": udp or []})
        out = tmp_path / f"scan-{next(counter)}"
        result = await ScanEngine(plan, ResultStore(out)).run()
        validate_report(out / REPORT_NAME)
        return result

    return run
