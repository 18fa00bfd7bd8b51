"""Schedules: cron validation, missed runs, the concurrency bound and the CLI commands
(schedules name only 127.137.0.0/16; the runner here is a fake, no scan is sent)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scanner.cli import EXIT_OK, EXIT_USAGE, main
from scanner.jobs import ScanJob
from scanner.schedule import Scheduler, add_schedule, job_for, next_run_after, schedule_named
from scanner.store import ScanStore
from scanner.webhooks import RetryPolicy

T0 = datetime(2030, 1, 1, 0, 10, tzinfo=UTC)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


class FakeRunner:
    """Records the jobs it is handed and how many ran at once."""

    def __init__(self, pause_s: float = 0.0) -> None:
        self.jobs: list[ScanJob] = []
        self.pause_s, self.in_flight, self.most_at_once = pause_s, 0, 0

    async def __call__(self, job: ScanJob) -> None:
        self.jobs.append(job)
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        await asyncio.sleep(self.pause_s)
        self.in_flight -= 1


def test_cron_is_five_utc_fields_and_errors_are_one_line() -> None:
    assert next_run_after("*/30 * * * *", T0) == T0.replace(minute=30)
    assert next_run_after("*/30 * * * *", T0.replace(minute=30)) == T0.replace(hour=1, minute=0)
    for bad in ("", "* * * *", "61 * * * *", "*/0 * * * *", "@hourly", "* * * * * *",
                "0 0 30 2 *"):
        with pytest.raises(ValueError, match="cron") as caught:
            next_run_after(bad, T0)
        assert "\n" not in str(caught.value)


def test_add_validates_everything_a_run_needs(store_url: str) -> None:
    with ScanStore(store_url) as store:
        for kwargs, message in (({"cron": "99 * * * *"}, "cron"),
                                ({"targets": ["not a target!"]}, "not an address"),
                                ({"ports": "99999"}, "port out of range"),
                                ({"profile": "no-such-profile"}, "no profile"),
                                ({"profile": "profiles/scan/quick.yaml"}, "profile"),
                                ({"formats": ["pdfx"]}, "report format"),
                                ({"segment": "Bad Segment"}, "segment")):
            arguments = {"cron": "0 * * * *", "targets": ["127.137.2.0/24"], **kwargs}
            with pytest.raises(ValueError, match=message) as caught:
                add_schedule(store, "hourly", **arguments)  # type: ignore[arg-type]
            assert "\n" not in str(caught.value)
        assert store.list_schedules() == []


async def test_a_missed_schedule_runs_once_then_keeps_its_cadence(store_url: str,
                                                                   tmp_path: Path) -> None:
    with ScanStore(store_url) as store:
        added = add_schedule(store, "every-30", "*/30 * * * *", ["127.137.2.1"], now=T0)
    assert added.next_run == T0.replace(minute=30)
    runner = FakeRunner()
    scheduler = Scheduler(store_url, tmp_path / "out", None, runner=runner)
    try:
        assert await scheduler.run_due(T0 + timedelta(minutes=5)) == []  # not yet due
        late = T0 + timedelta(hours=5, minutes=3)  # ten periods missed while "down"
        assert len(await scheduler.run_due(late)) == 1
        assert await scheduler.run_due(late) == []
        stored = scheduler.store.get_schedule(added.id)
        assert stored.last_run == late
        assert stored.next_run == datetime(2030, 1, 1, 5, 30, tzinfo=UTC)
        assert len(await scheduler.run_due(stored.next_run)) == 1
    finally:
        scheduler.close()
    assert len(runner.jobs) == 2
    job = runner.jobs[0]
    assert (job.targets, job.schedule_id, job.segment) == (["127.137.2.1"], added.id, "default")
    assert job.job_id != runner.jobs[1].job_id  # every run is its own scan


async def test_at_most_k_scans_at_once_and_a_failure_spares_the_others(
        store_url: str, tmp_path: Path) -> None:
    with ScanStore(store_url) as store:
        for index in range(4):
            add_schedule(store, f"s{index}", "0 * * * *", [f"127.137.2.{index + 1}"], now=T0)
    runner = FakeRunner(pause_s=0.05)

    async def sometimes_failing(job: ScanJob) -> None:
        if job.targets == ["127.137.2.3"]:
            raise ConnectionError("agent unreachable")
        await runner(job)

    scheduler = Scheduler(store_url, tmp_path / "out", None, max_concurrent=2,
                          runner=sometimes_failing)
    try:
        ran = await scheduler.run_due(T0 + timedelta(hours=1))
    finally:
        scheduler.close()
    assert len(ran) == 3 and len(runner.jobs) == 3
    assert runner.most_at_once == 2


async def test_run_forever_stops_on_the_event_without_rerunning(store_url: str,
                                                                tmp_path: Path) -> None:
    with ScanStore(store_url) as store:
        add_schedule(store, "hourly", "0 * * * *", ["127.137.2.1"], now=T0)
    runner = FakeRunner()
    late = T0 + timedelta(days=2)
    scheduler = Scheduler(store_url, tmp_path / "out", None, runner=runner, poll_s=0.02,
                          clock=lambda: late)
    stop = asyncio.Event()
    try:
        loop = asyncio.create_task(scheduler.run_forever(stop))
        await asyncio.sleep(0.3)  # about fifteen ticks
        stop.set()
        await asyncio.wait_for(loop, 5)
    finally:
        scheduler.close()
    assert len(runner.jobs) == 1


def test_cli_schedule_add_list_remove_end_to_end(store_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["schedule", "--store", store_url]
    assert main([*base, "add", "nightly", "--cron", "0 2 * * *", "--targets", "127.137.2.0/24",
                 "--exclude", "127.137.2.1", "--ports", "22,80", "--format", "json",
                 "--segment", "lab-a", "--webhook", "http://127.137.0.9:8080/hook",
                 "--webhook-secret-env", "HOOK_SECRET"]) == EXIT_OK
    assert "schedule nightly added" in capsys.readouterr().out
    assert main([*base, "list", "--json"]) == EXIT_OK
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["name"] == "nightly" and listed["cron"] == "0 2 * * *"
    assert (listed["targets"], listed["excludes"], listed["ports"]) == (
        ["127.137.2.0/24"], ["127.137.2.1"], "22,80")
    assert listed["webhooks"] == [{"url": "http://127.137.0.9:8080/hook",
                                   "secret_env": "HOOK_SECRET"}]
    assert main([*base, "list"]) == EXIT_OK
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("nightly ") and line.endswith(
        "lab-a  127.137.2.0/24 excluding 127.137.2.1 ports 22,80  webhooks 1")
    with ScanStore(store_url) as store:
        job = job_for(schedule_named(store, "nightly"), excluded_ports=[2024])
    assert (job.targets, job.excludes, job.ports, job.segment, job.excluded_ports) == (
        ["127.137.2.0/24"], ["127.137.2.1"], "22,80", "lab-a", [2024])

    for bad, message in ((["add", "x", "--cron", "0 2 * *", "--targets", "127.137.2.9"],
                          "need 5 fields"),
                         (["add", "nightly", "--cron", "0 2 * * *", "--targets", "127.137.2.9"],
                          "exists already"),
                         (["add", "y", "--cron", "0 2 * * *", "--targets", "127.137.2.9",
                           "--webhook", "http://127.137.0.9:8080/"], "every webhook is signed"),
                         (["add", "z", "--cron", "0 2 * * *", "--targets", "127.137.2.9",
                           "--webhook", "ftp://127.137.0.9/", "--webhook-secret-env", "S"],
                          "http"),
                         (["remove", "nope"], "no schedule named")):
        assert main([*base, *bad]) == EXIT_USAGE
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert main([*base, "remove", "nightly"]) == EXIT_OK
    assert capsys.readouterr().out == "schedule nightly removed\n"
    assert main([*base, "list", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []


async def test_with_a_broker_a_due_scan_is_queued_for_its_segment(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The coordinator hands scheduled scans to ``dispatch`` (which queues them for the agents
    when a broker is set), with the scheduler's webhook policy for an in-process run."""
    import scanner.schedule as schedule_module

    queued: list[tuple[ScanJob, object]] = []

    async def fake_dispatch(job: ScanJob, **options: object) -> None:
        queued.append((job, options["webhook_policy"]))

    monkeypatch.setenv("IOTBASELINE_BROKER", "redis://127.137.9.9:1/0")  # never contacted
    monkeypatch.setattr(schedule_module, "dispatch", fake_dispatch)
    with ScanStore(store_url) as store:
        add_schedule(store, "site-a", cron="0 * * * *", targets=["127.137.3.0/24"],
                     segment="site-a")
    policy = RetryPolicy(attempts=1)
    scheduler = Scheduler(store_url, tmp_path / "out", None, webhook_policy=policy)
    await scheduler.run_due(datetime.now(UTC) + timedelta(hours=2))
    assert [(job.segment, job.targets, used) for job, used in queued] == [
        ("site-a", ["127.137.3.0/24"], policy)]


async def test_a_schedule_that_cannot_be_claimed_spares_the_others(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store error moving one schedule on must neither stop the ones claimed before it nor
    leave them marked running for ever."""
    with ScanStore(store_url) as store:
        for index in range(3):
            add_schedule(store, f"s{index}", "0 * * * *", [f"127.137.4.{index + 1}"], now=T0)
    runner = FakeRunner()
    scheduler = Scheduler(store_url, tmp_path / "out", None, runner=runner)
    update = scheduler.store.update_schedule
    broken = {scheduler.store.list_schedules()[1].id}

    def flaky_update(schedule_id: int, **changes: object) -> object:
        if schedule_id in broken:
            raise ConnectionError("store unreachable")
        return update(schedule_id, **changes)

    monkeypatch.setattr(scheduler.store, "update_schedule", flaky_update)
    due = T0 + timedelta(hours=1)
    try:
        assert len(await scheduler.run_due(due)) == 2
        assert sorted(job.targets[0] for job in runner.jobs) == ["127.137.4.1", "127.137.4.3"]
        broken.clear()
        assert len(await scheduler.run_due(due)) == 1  # its turn, the others are not re-run
        assert runner.jobs[-1].targets == ["127.137.4.2"]
        assert len(await scheduler.run_due(due + timedelta(hours=1))) == 3  # none stuck
    finally:
        scheduler.close()


async def test_run_forever_logs_a_failed_check_and_keeps_polling(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler(store_url, tmp_path / "out", None, runner=FakeRunner(), poll_s=0.02)
    calls: list[bool] = []

    def unreachable(enabled_only: bool = False) -> list[object]:
        calls.append(enabled_only)
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(scheduler.store, "list_schedules", unreachable)
    stop = asyncio.Event()
    try:
        loop = asyncio.create_task(scheduler.run_forever(stop))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(loop, 5)
    finally:
        scheduler.close()
    assert len(calls) >= 2  # a failed check does not stop the loop
    failures = [r for r in caplog.records if "checking for due schedules failed" in r.message]
    assert failures and "ConnectionError: store unreachable" in failures[0].message
