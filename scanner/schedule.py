"""Recurring scans: schedules in the store, and the loop that runs them when they are due.

Cron expressions are the classic five fields, evaluated in UTC with ``cronsim`` (typed, no
dependencies, maintained for Healthchecks.io's cron monitoring). A schedule keeps ``next_run``
and ``last_run`` in the store; when it is due the scheduler first moves ``next_run`` to the next
time *after now*, then runs the scan, so a service that was down for several periods runs a
missed schedule once, not once per missed period, and a schedule still scanning is not started
again. At most ``max_concurrent`` scans run at once; the rest wait their turn. Each scan goes
through ``scanner.jobs`` (the one way to run a scan) and is followed by ``scanner.drift``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from cronsim import CronSim, CronSimError
from pydantic import ValidationError

from reports.renderers import RENDERERS
from scanner.agents import dispatch
from scanner.jobs import ScanJob, check_authorised, job_profile
from scanner.models import utc_now
from scanner.store import ScanStore, Schedule, ScheduleWebhook
from scanner.targets import Scope, parse_ports
from scanner.webhooks import DEFAULT_RETRY, RetryPolicy, WebhookTarget

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

Runner = Callable[[ScanJob], Awaitable[None]]

log = logging.getLogger(__name__)


def next_run_after(cron: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` names (UTC); a bad expression is
    a one-line ValueError."""
    if len(cron.split()) != 5:
        raise ValueError(f"cron {cron[:100]!r}: need 5 fields (minute hour day month weekday)")
    try:
        return next(CronSim(cron, after))
    except CronSimError as exc:
        raise ValueError(f"cron {cron[:100]!r}: {exc}") from None
    except StopIteration:
        raise ValueError(f"cron {cron[:100]!r} never fires") from None


def job_for(schedule: Schedule, excluded_ports: Sequence[int] = ()) -> ScanJob:
    """The scan job one run of the schedule is."""
    return ScanJob(targets=schedule.targets, excludes=schedule.excludes,
                   excluded_ports=list(excluded_ports), profile=schedule.profile,
                   ports=schedule.ports, formats=schedule.formats,
                   segment=schedule.segment or "default", schedule_id=schedule.id,
                   requested_by=f"schedule {schedule.name}")


def add_schedule(store: ScanStore, name: str, cron: str, targets: Sequence[str], *,
                 excludes: Sequence[str] = (), profile: str = "safe", ports: str | None = None,
                 formats: Sequence[str] = ("json", "html"), segment: str | None = None,
                 webhooks: Sequence[WebhookTarget] = (), now: datetime | None = None) -> Schedule:
    """Validate everything a run would need (cron, targets, profile, ports, formats, segment)
    and save the schedule, first due at the cron's next time after ``now``. Errors are one
    line: ValueError, TargetError or the profile's DataFileError."""
    if not NAME_PATTERN.match(name):
        raise ValueError(f"schedule name {name[:100]!r}: letters, digits, '.', '_' or '-'")
    next_run = next_run_after(cron, now or utc_now())
    unknown = [item for item in formats if item not in RENDERERS]
    if unknown:
        raise ValueError(f"unknown report format {unknown[0]!r} "
                         f"(available: {', '.join(RENDERERS)})")
    try:
        job = ScanJob(targets=list(targets), excludes=list(excludes), profile=profile,
                      ports=ports, formats=list(formats), segment=segment or "default")
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    check_authorised(job, None)
    if ports:
        parse_ports(ports)
    job_profile(profile)
    return store.create_schedule(
        name, cron, list(targets), profile, excludes=excludes, ports=ports or None,
        formats=sorted(set(formats) | {"json"}), segment=segment,
        webhooks=[ScheduleWebhook(w.url, w.secret_env) for w in webhooks], next_run=next_run)


def schedule_named(store: ScanStore, name: str) -> Schedule:
    for schedule in store.list_schedules():
        if schedule.name == name:
            return schedule
    raise LookupError(f"no schedule named {name[:100]!r}")


class Scheduler:
    """Runs the store's enabled schedules when they are due; ``iotbaseline serve`` drives
    ``run_forever``, tests drive ``run_due`` with their own clock."""

    def __init__(self, store_url: str, out_root: Path, authorised_scope: Scope | None, *,
                 clock: Callable[[], datetime] = utc_now, max_concurrent: int = 2,
                 poll_s: float = 30.0, excluded_ports: Sequence[int] = (),
                 runner: Runner | None = None,
                 webhook_policy: RetryPolicy = DEFAULT_RETRY) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.store_url, self.out_root, self.authorised = store_url, out_root, authorised_scope
        self.store = ScanStore(store_url)
        self.clock, self.poll_s, self.excluded_ports = clock, poll_s, tuple(excluded_ports)
        self.runner, self.webhook_policy = runner or self.run_here, webhook_policy
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: set[int] = set()

    def close(self) -> None:
        self.store.close()

    async def run_due(self, now: datetime) -> list[str]:
        """Start every schedule due at ``now`` and wait for their scans (and drift): the ids
        of the jobs that ran; a scan that fails is logged and left out."""
        due = await asyncio.to_thread(self._claim_due, now)
        self._running.update(schedule.id for schedule in due)  # in one step, on the loop
        ran = await asyncio.gather(*(self._run(schedule) for schedule in due))
        return [job_id for job_id in ran if job_id is not None]

    async def run_here(self, job: ScanJob) -> None:
        """Queue the scan for its segment's agents when a broker is configured (the worker
        then records drift); otherwise run it in this process, then its drift and webhooks."""
        await dispatch(job, store_url=self.store_url, out_root=self.out_root,
                       authorised=self.authorised, webhook_policy=self.webhook_policy)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Check for due schedules every ``poll_s`` seconds until ``stop`` is set; scans still
        running then are cancelled; a check that fails (the store unreachable) is logged and
        tried again at the next poll."""
        ticks: set[asyncio.Task[list[str]]] = set()

        def finished(tick: asyncio.Task[list[str]]) -> None:
            ticks.discard(tick)
            failure = None if tick.cancelled() else tick.exception()
            if failure is not None:
                log.error("checking for due schedules failed: %s: %s",
                          type(failure).__name__, str(failure)[:300])

        try:
            while not stop.is_set():
                tick = asyncio.create_task(self.run_due(self.clock()))
                ticks.add(tick)
                tick.add_done_callback(finished)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
        finally:
            for tick in ticks:
                tick.cancel()
            await asyncio.gather(*ticks, return_exceptions=True)

    def _claim_due(self, now: datetime) -> list[Schedule]:
        """The schedules to run now, each moved on to its next time first. Each is claimed on
        its own: one that cannot be (a bad cron, a store error) is logged and skipped, and those
        claimed before it still run. ``run_due`` marks them running."""
        due = []
        for schedule in self.store.list_schedules(enabled_only=True):
            if schedule.id in self._running:
                continue
            try:
                claimed = self._claim(schedule, now)
            except Exception as exc:  # one schedule's failure must not stop the others
                log.warning("schedule %s skipped: %s: %s", schedule.name, type(exc).__name__,
                            str(exc)[:300])
                continue
            if claimed is not None:
                due.append(claimed)
        return due

    def _claim(self, schedule: Schedule, now: datetime) -> Schedule | None:
        """The schedule moved on to its next time if it is due at ``now``, else None."""
        upcoming = next_run_after(schedule.cron, now)
        if schedule.next_run is None:  # saved without one (by hand or an older client)
            self.store.update_schedule(schedule.id, next_run=upcoming)
            return None
        if schedule.next_run > now:
            return None
        return self.store.update_schedule(schedule.id, last_run=now, next_run=upcoming)

    async def _run(self, schedule: Schedule) -> str | None:
        try:
            async with self._slots:
                job = job_for(schedule, self.excluded_ports)
                await self.runner(job)
                return job.job_id
        except Exception as exc:  # one schedule's failure must not stop the others
            log.warning("scheduled scan %s failed: %s: %s", schedule.name,
                        type(exc).__name__, str(exc)[:300])
            return None
        finally:
            self._running.discard(schedule.id)
