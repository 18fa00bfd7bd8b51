"""Scan jobs: one way to run a scan for the scheduler, the service API and the agents
(fakes on 127.136.0.0/24)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanner.jobs import ScanJob, check_authorised, run_job
from scanner.storage import JOURNAL_NAME
from scanner.targets import TargetError, build_scope
from tests import fakes

TELNET = b"\xff\xfb\x01\r\nlogin: "


def test_targets_outside_the_authorised_scope_are_refused() -> None:
    authorised = build_scope(["127.136.0.0/24"])
    check_authorised(ScanJob(targets=["127.136.0.5-9"]), authorised)
    with pytest.raises(TargetError, match="not all inside the authorised scope"):
        check_authorised(ScanJob(targets=["127.136.0.250-127.136.1.3"]), authorised)
    with pytest.raises(TargetError):
        check_authorised(ScanJob(targets=["127.137.0.1"]), authorised)


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
