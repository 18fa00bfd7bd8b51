"""The python-nmap path against the real nmap binary (installed by `make test` as root)."""

from __future__ import annotations

import shutil

import pytest

from scanner.lab import Lab, default_devices
from tests.helpers import ScanRunner, fast_profile

pytestmark = pytest.mark.skipif(shutil.which("nmap") is None,
                                reason="nmap is not installed (make test installs it as root)")


async def test_nmap_service_detection_merges_into_services(run_scan: ScanRunner) -> None:
    camera = default_devices("127.81.0")[0]
    async with Lab([camera]):
        result = await run_scan(camera.address, tcp=[8080],
                                profile=fast_profile(discovery={"nmap": True}))
    [device] = result.devices
    [http] = device.services
    assert "nmap" in http.sources and "banner" in http.sources
    assert http.protocol == "http" and http.product == "Boa/0.94.13"  # ours is kept
    assert not [e for e in result.errors if e.check_id == "nmap"]


async def test_missing_nmap_is_a_note_not_a_failure(run_scan: ScanRunner,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scanner.engine.shutil.which", lambda name: None)
    camera = default_devices("127.81.1")[0]
    async with Lab([camera]):
        result = await run_scan(camera.address, tcp=[8080],
                                profile=fast_profile(discovery={"nmap": True}))
    assert result.meta.complete and result.devices
    assert any("nmap requested" in note for note in result.meta.discovery_notes)
