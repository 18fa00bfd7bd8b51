"""Scan jobs: one way to run a scan for the scheduler, the service API and the agents
(fakes on 127.136.0.0/24)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import scanner.jobs as jobs
from profiles import ProfileError
from scanner.engine import ScanEngine
from scanner.jobs import PROFILES_ENV, OutsideScope, ScanJob, check_authorised, plan_for, run_job
from scanner.storage import JOURNAL_NAME
from scanner.targets import TargetError, build_scope
from tests import fakes

TELNET = b"\xff\xfb\x01\r\nlogin: "


def test_targets_outside_the_authorised_scope_are_refused() -> None:
    authorised = build_scope(["127.136.0.0/24"])
    check_authorised(ScanJob(targets=["127.136.0.5-9"]), authorised)
    with pytest.raises(TargetError, match="not all inside the authorised scope"):
        check_authorised(ScanJob(targets=["127.136.0.250-127.136.1.3"]), authorised)
    with pytest.raises(OutsideScope):
        check_authorised(ScanJob(targets=["127.137.0.1"]), authorised)
    with pytest.raises(TargetError) as malformed:  # a bad target, not a scope violation
        check_authorised(ScanJob(targets=["not a target!"]), authorised)
    assert not isinstance(malformed.value, OutsideScope)


def test_the_authorised_scopes_excluded_ports_apply_to_every_job() -> None:
    """A job cannot drop the ports the service or agent never contacts (2024 here)."""
    authorised = build_scope(["127.136.0.0/24"], excluded_ports=[2024])
    scope = check_authorised(ScanJob(targets=["127.136.0.5"], excluded_ports=[9100]),
                             authorised)
    assert scope.excluded_ports == {2024, 9100}
    plan = plan_for(ScanJob(targets=["127.136.0.5"], ports="2024,2323"), authorised)
    assert plan.tcp_ports == [2323] and not plan.scope.allows("127.136.0.5", 2024)


def test_a_job_names_a_profile_and_never_reads_a_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "slow.yaml").write_text("name: slow\nextends: quick\n")
    with pytest.raises(ValueError, match="profile"):
        ScanJob(targets=["127.136.0.1"], profile=str(tmp_path / "slow.yaml"))
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    with pytest.raises(ProfileError, match="built-in"):
        plan_for(ScanJob(targets=["127.136.0.1"], profile="slow"))
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))
    assert plan_for(ScanJob(targets=["127.136.0.1"], profile="slow")).profile.name == "slow"
    assert plan_for(ScanJob(targets=["127.136.0.1"], profile="quick")).profile.name == "quick"


def test_a_jobs_plan_loads_the_profiles_templates(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Scheduled, API and agent scans run the user's templates as ``scan`` does."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (tmp_path / "mine.yaml").write_text("name: mine\nextends: quick\n"
                                        "checks:\n  template_dirs: [templates]\n")
    seen: list[list[Path]] = []

    def fake_load_probes(template_dirs: list[Path]) -> tuple[list[object], list[object]]:
        seen.append(list(template_dirs))
        return [], []

    monkeypatch.setattr(jobs, "load_probes", fake_load_probes)
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))
    plan_for(ScanJob(targets=["127.136.0.1"], profile="mine"))
    assert seen == [[templates]]


async def test_a_job_run_twice_is_one_scan_with_the_job_id(tmp_path: Path) -> None:
    device = await fakes.banner("127.136.0.1", 2323, TELNET)
    job = ScanJob(targets=["127.136.0.1"], ports="2323", profile="quick",
                  excluded_ports=[2024], formats=["json"])
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    try:
        first = await run_job(job, tmp_path / "out", store)
        second = await run_job(job, tmp_path / "out", store)
    finally:
        await device.close()
    assert first.meta.scan_id == second.meta.scan_id == job.job_id
    assert any(f.check_id == "telnet-exposed" for f in second.findings)
    journal = (tmp_path / "out" / job.job_id / JOURNAL_NAME).read_text().splitlines()
    assert sum(json.loads(line)["kind"] == "meta" for line in journal) == 1  # not appended
    from scanner.store import ScanStore
    with ScanStore(store) as saved:
        assert [s.id for s in saved.list_scans()] == [job.job_id]


async def test_a_job_stopped_through_its_engine_stores_the_partial_report(
        tmp_path: Path) -> None:
    """``on_engine`` hands the engine out before the scan starts; ``stop()`` keeps what was
    found (where cancelling the task would lose it)."""
    silent = await fakes.banner("127.136.0.2", 2323, b"")  # a slow device: never says a word
    job = ScanJob(targets=["127.136.0.2"], ports="2323", profile="safe", excluded_ports=[2024],
                  formats=["json"])
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    engines: list[ScanEngine] = []

    async def stop_once_under_way() -> None:
        deadline = time.monotonic() + 60
        while (silent.connections == 0 or not engines) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        engines[0].stop()

    try:
        stopper = asyncio.create_task(stop_once_under_way())
        result = await asyncio.wait_for(run_job(job, tmp_path / "out", store,
                                                on_engine=engines.append), 90)
        await stopper
    finally:
        await silent.close()
    assert len(engines) == 1 and silent.connections >= 1
    assert (result.meta.complete, result.meta.stop_reason) == (False, "interrupted")
    from scanner.store import ScanStore
    with ScanStore(store) as saved:
        meta = saved.get_scan(job.job_id).meta
    assert (meta.complete, meta.stop_reason) == (False, "interrupted")
