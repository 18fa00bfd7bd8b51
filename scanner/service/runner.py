"""Scans the service started: dispatched through ``scanner.jobs`` and tracked until they end.

Every job goes through ``scanner.agents.dispatch``: queued for its segment's Celery workers when
a broker is configured (IOTBASELINE_BROKER), else run in this process, drift included. An
in-process job is a task of the service's event loop and its engine is kept while it runs, so a
cancel stops the engine, which writes and stores the partial report (``complete`` false); a job
whose engine does not stop in time is then cancelled outright. A queued job is revoked at the
broker. The service keeps the last ``MAX_TRACKED`` jobs' states in memory (the store keeps the
scans themselves).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scanner.agents import celery_app, configured_broker, dispatch
from scanner.engine import ScanEngine
from scanner.jobs import ScanJob, plan_for
from scanner.models import utc_now
from scanner.targets import Scope

MAX_TRACKED = 500
STOP_WAIT_S = 20.0  # for a stopped engine to write and store its partial report
CANCEL_WAIT_S = 10.0
log = logging.getLogger("iotbaseline.service")


@dataclass
class JobState:
    job: ScanJob
    submitted_at: datetime
    status: str = "running"  # running | queued | complete | partial | failed | cancelled
    queue: str | None = None
    reason: str | None = None


class JobRunner:
    """Start, follow and cancel scans for the API; every job is checked against ``authorised``."""

    def __init__(self, out_root: Path, store_url: str, authorised: Scope) -> None:
        self.out_root = out_root
        self.store_url = store_url
        self.authorised = authorised
        self._states: OrderedDict[str, JobState] = OrderedDict()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._engines: dict[str, ScanEngine] = {}
        self._stopping: dict[str, str] = {}  # job id -> why it is being stopped

    async def submit(self, job: ScanJob) -> JobState:
        """Refuse (OutsideScope, TargetError, DataFileError, PlanError, ValueError) before
        anything is contacted, else start the scan and return at once."""
        # scope, profile and ports vetted up front, off the event loop (files, imports)
        await asyncio.to_thread(plan_for, job, self.authorised)
        if job.job_id in self._states and self._states[job.job_id].status == "running":
            raise ValueError(f"job {job.job_id} is already running")
        state = JobState(job, utc_now())
        self._states[job.job_id] = state
        self._states.move_to_end(job.job_id)
        while len(self._states) > MAX_TRACKED:
            oldest = next(iter(self._states))
            if self._states[oldest].status == "running":
                break
            del self._states[oldest]
        self._tasks[job.job_id] = asyncio.create_task(self._run(state))
        return state

    async def _run(self, state: JobState) -> None:
        job_id = state.job.job_id

        def keep(engine: ScanEngine) -> None:
            self._engines[job_id] = engine

        try:
            sent = await dispatch(state.job, store_url=self.store_url, out_root=self.out_root,
                                  authorised=self.authorised, on_engine=keep)
            if sent.result is None:
                state.status, state.queue = "queued", sent.queue
            elif job_id in self._stopping:
                state.status = "cancelled"
                state.reason = f"{self._stopping[job_id]}; partial report stored"
            else:
                state.status = "complete" if sent.result.meta.complete else "partial"
                state.reason = sent.result.meta.interrupted_reason
        except asyncio.CancelledError:
            state.status, state.reason = "cancelled", self._stopping.get(job_id, "cancelled")
        except Exception as exc:  # the job failed: say why, keep the service up
            state.status, state.reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
            log.warning("scan job %s failed: %s", job_id, state.reason)
        finally:
            self._tasks.pop(job_id, None)
            self._engines.pop(job_id, None)
            self._stopping.pop(job_id, None)

    def get(self, job_id: str) -> JobState | None:
        return self._states.get(job_id)

    def states(self) -> list[JobState]:
        return list(reversed(self._states.values()))

    async def cancel(self, job_id: str) -> JobState:
        """Stop a running job; LookupError when the service does not know it, ValueError when
        it has ended already."""
        state = self._states.get(job_id)
        if state is None:
            raise LookupError(f"no job {job_id!r} started by this service")
        if state.status == "queued":
            await asyncio.to_thread(_revoke, job_id)
            state.status, state.reason = "cancelled", "revoked at the broker through the API"
            return state
        task = self._tasks.get(job_id)
        if task is None:
            raise ValueError(f"job {job_id} has ended already ({state.status})")
        await self._stop(job_id, task, "cancelled through the API")
        return state

    async def close(self) -> None:
        """Stop every running job (the service is stopping), keeping their partial reports."""
        await asyncio.gather(*(self._stop(job_id, task, "the service stopped")
                               for job_id, task in list(self._tasks.items())))

    async def _stop(self, job_id: str, task: asyncio.Task[None], why: str) -> None:
        """Stop the engine so the partial report is written and stored; a job with no engine
        yet (nothing scanned) or one that does not stop in time is cancelled outright."""
        self._stopping[job_id] = why
        engine = self._engines.get(job_id)
        if engine is not None:
            engine.stop()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_S)


def _revoke(job_id: str) -> None:
    """Tell the workers to drop a queued job (its task id is the job id)."""
    broker = configured_broker()
    if broker is not None:
        celery_app(broker).control.revoke(job_id)
