"""Shared collections (one network collection for a family of checks) and fleet checks
(conditions between devices), through the real engine against loopback fakes (127.120.0.x)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from probes.api import Facts, FleetCheck, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.registry import LoadedProbe
from profiles import ProfileError, load_profile
from scanner.models import CheckStatus, Intrusiveness, Severity
from tests import fakes
from tests.helpers import ScanRunner

PORT = 4000
collections: list[str] = []


def _metadata(check_id: str) -> ProbeMetadata:
    return ProbeMetadata(check_id=check_id, title="A demo condition holds", description="d",
                         severity=Severity.LOW, intrusiveness=Intrusiveness.SAFE,
                         protocols=("unknown",), remediation="r")


async def _read_banner(ctx: ProbeContext) -> str:
    collections.append(ctx.target.address)
    async with await ctx.connect() as conn:
        data = await conn.recv_until(lambda b: b"\n" in b, max_bytes=256, timeout=1.0)
    if not data:
        raise ConnectionError("no banner")
    return data.decode().strip()


class _BannerA(Probe):
    metadata = _metadata("demo-banner-a")

    async def collect(self, ctx: ProbeContext) -> Facts:
        return {"banner": await ctx.shared("demo-banner", _read_banner), "bulk": "x" * 4096}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return []


class _BannerB(_BannerA):
    metadata = _metadata("demo-banner-b")

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return [Observation(summary=f"banner {facts['banner']}")]


class _SameBanner(FleetCheck):
    metadata = _metadata("demo-same-banner")
    reads = "demo-banner-a"

    def fleet_facts(self, facts: Facts) -> Facts:
        return {"banner": facts["banner"]}  # all this check compares: kept till the end

    def evaluate_fleet(self, samples: Sequence[tuple[Target, Facts]],
                       ) -> list[tuple[Target, Observation]]:
        by_banner: dict[str, list[Target]] = {}
        for target, facts in samples:
            assert set(facts) == {"banner"}, "the engine must hand over fleet_facts only"
            by_banner.setdefault(facts["banner"], []).append(target)
        return [(target, Observation(summary=f"{len(group)} devices share {banner}",
                                     key=banner))
                for banner, group in by_banner.items() if len(group) > 1 for target in group]


class _Broken(FleetCheck):
    metadata = _metadata("demo-broken-fleet")
    reads = "demo-banner-a"

    def evaluate_fleet(self, samples: Sequence[tuple[Target, Facts]],
                       ) -> list[tuple[Target, Observation]]:
        raise RuntimeError("plugin bug")


class _BrokenKeep(_SameBanner):
    metadata = _metadata("demo-broken-keep")

    def fleet_facts(self, facts: Facts) -> Facts:
        raise ValueError("keep bug")


def _loaded(*probes: Probe) -> list[LoadedProbe]:
    return [LoadedProbe(probe, "tests 0", False) for probe in probes]


async def test_one_collection_feeds_every_asking_check_and_fleet_compares_devices(
        run_scan: ScanRunner) -> None:
    collections.clear()
    servers = [await fakes.banner("127.120.0.1", PORT, b"KEY-1\n"),
               await fakes.banner("127.120.0.2", PORT, b"KEY-1\n"),
               await fakes.banner("127.120.0.3", PORT, b"KEY-2\n")]
    try:
        result = await run_scan("127.120.0.1-3", tcp=[PORT],
                                probes=_loaded(_BannerA(), _BannerB(), _SameBanner(),
                                               _Broken(), _BrokenKeep()))
    finally:
        for server in servers:
            await server.close()
    assert sorted(collections) == ["127.120.0.1", "127.120.0.2", "127.120.0.3"]  # once each
    b_findings = [f for f in result.findings if f.check_id == "demo-banner-b"]
    assert len(b_findings) == 3
    assert all(any("KEY-" in e.data for e in f.evidence) for f in b_findings)  # shared evidence
    shared = sorted(f.device for f in result.findings if f.check_id == "demo-same-banner")
    assert shared == ["127.120.0.1", "127.120.0.2"]
    fleet = next(f for f in result.findings if f.check_id == "demo-same-banner")
    assert any("KEY-1" in e.data for e in fleet.evidence)
    # The fleet bug, and a bug keeping one device's facts, each lose that check only.
    assert sorted(e.reason for e in result.errors) == [
        "RuntimeError: plugin bug", *["ValueError: keep bug"] * 3]
    runs = {r.device: r.status for r in result.check_runs if r.check_id == "demo-same-banner"}
    assert runs == {"127.120.0.1": CheckStatus.FAIL, "127.120.0.2": CheckStatus.FAIL,
                    "127.120.0.3": CheckStatus.PASS}


async def test_a_failing_collection_and_a_broken_fleet_check_are_recorded_errors(
        run_scan: ScanRunner) -> None:
    server = await fakes.banner("127.120.0.4", PORT, b"")  # silent: the collection fails
    try:
        result = await run_scan("127.120.0.4", tcp=[PORT],
                                probes=_loaded(_BannerA(), _BannerB(), _Broken()))
    finally:
        await server.close()
    reasons = {e.check_id: e.reason for e in result.errors}
    assert reasons["demo-banner-a"] == reasons["demo-banner-b"] == "ConnectionError: no banner"
    assert not result.findings
    assert "demo-broken-fleet" not in reasons  # no samples: a fleet check with nothing to read
    assert result.meta.complete


def test_profile_ca_files_are_relative_to_the_profile_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "site-ca.pem").write_text("not checked here")
    (tmp_path / "p.yaml").write_text("name: p\nextends: safe\ntls:\n  ca_files: [site-ca.pem]\n")
    assert load_profile(str(tmp_path / "p.yaml")).tls.ca_files == [str(tmp_path / "site-ca.pem")]
    (tmp_path / "q.yaml").write_text("name: q\nextends: safe\ntls:\n  ca_files: [gone.pem]\n")
    with pytest.raises(ProfileError, match=r"tls\.ca_files: no such file"):
        load_profile(str(tmp_path / "q.yaml"))
