"""Scan agents: scans run by Celery workers near the devices, saved to one central store.

A coordinator (the scheduler, the service API) hands each ``ScanJob`` to ``dispatch``. With a
broker URL (``broker_url=`` or ``IOTBASELINE_BROKER``, e.g. ``redis://host:6379/0``) the job is
queued on its segment's queue, ``scan.<segment>``, and one ``iotbaseline worker --segment
<segment> --authorised CIDR…`` in that network segment runs it (a job reaching outside the
worker's own scope fails there, whatever was queued); without one it runs here, in-process (the
embedded default). Either way the scan runs through ``scanner.jobs.run_job`` and then
``record_drift``, so a scan of a schedule gets its drift and webhooks wherever it ran.

Delivery is at-least-once, the store makes it exactly-once: a worker acknowledges a job only
after the scan is saved (``task_acks_late``, ``task_reject_on_worker_lost``, prefetch 1), so a
worker killed mid-scan loses nothing — Redis hands the unacknowledged job to another worker of
the segment once the *visibility timeout* has passed — and the job id is the scan id, which the
store replaces by id: a redelivered or twice-run job is one scan row.

The visibility timeout (``IOTBASELINE_VISIBILITY_TIMEOUT``, seconds; default 6 hours) must
exceed the longest scan: a job unacknowledged for longer is handed to a second worker while the
first still runs it (harmless, one row, but the devices are scanned twice). It is also how long
a killed worker's job waits before redelivery; tests set a few seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.jobs import SEGMENT_PATTERN, ScanJob, check_authorised, run_job
from scanner.models import ScanResult
from scanner.targets import Scope, build_scope
from scanner.webhooks import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from celery import Celery

    from scanner.engine import ScanEngine

BROKER_ENV = "IOTBASELINE_BROKER"
VISIBILITY_ENV = "IOTBASELINE_VISIBILITY_TIMEOUT"
DEFAULT_VISIBILITY_TIMEOUT_S = 6 * 3600
SCAN_TASK = "iotbaseline.scan"
BROKER_TIMEOUT_S = 10.0  # connect and socket timeout towards the broker
PUBLISH_RETRIES = 3
RESULT_EXPIRY_S = 7 * 24 * 3600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatched:
    """Where a job went: ``queue`` is None when it ran in-process, and then ``result`` is set."""

    job_id: str
    queue: str | None
    result: ScanResult | None = None


def segment_queue(segment: str) -> str:
    return f"scan.{segment}"


def valid_segment(name: str) -> bool:
    """A segment name as ``ScanJob`` accepts it (one rule, the job's)."""
    return re.fullmatch(SEGMENT_PATTERN, name) is not None


def configured_broker(broker_url: str | None = None) -> str | None:
    """The broker URL given, else ``IOTBASELINE_BROKER``; None (or empty) means in-process."""
    return broker_url or os.environ.get(BROKER_ENV) or None


def visibility_timeout() -> int:
    text = os.environ.get(VISIBILITY_ENV, "")
    try:
        value = int(text) if text else DEFAULT_VISIBILITY_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{VISIBILITY_ENV} is not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise ValueError(f"{VISIBILITY_ENV} must be at least 1 second: {text!r}")
    return value


@functools.cache
def celery_app(broker_url: str) -> Celery:
    """The Celery app for a broker (results on the same Redis), one per URL per process.

    Celery loads only here, so the in-process default does not need it."""
    from celery import Celery

    timeout = visibility_timeout()
    app = Celery("iotbaseline", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_default_queue=segment_queue("default"), result_expires=RESULT_EXPIRY_S,
        broker_connection_retry_on_startup=True, broker_connection_timeout=BROKER_TIMEOUT_S,
        worker_hijack_root_logger=False, worker_send_task_events=False,
        broker_transport_options={
            "visibility_timeout": timeout,
            # kombu sweeps for abandoned jobs every interval × throttle seconds (100 s by
            # default): sweep often enough that redelivery follows the timeout closely
            "unacked_restore_interval": min(10, max(1, timeout // 5)),
            "unacked_restore_throttle": 1,
            "socket_timeout": BROKER_TIMEOUT_S, "socket_connect_timeout": BROKER_TIMEOUT_S,
        },
        result_backend_transport_options={"socket_timeout": BROKER_TIMEOUT_S,
                                          "socket_connect_timeout": BROKER_TIMEOUT_S},
    )
    app.task(name=SCAN_TASK, bind=True)(_scan_task)
    return app


async def run_and_record(job: ScanJob, out_root: Path, store_url: str | None,
                         authorised: Scope | None = None,
                         on_engine: Callable[[ScanEngine], None] | None = None,
                         webhook_policy: RetryPolicy = DEFAULT_RETRY) -> ScanResult:
    """What every place that runs a job does: the scan, then the schedule's drift."""
    result = await run_job(job, out_root, store_url, authorised, on_engine)
    if store_url is not None and job.schedule_id is not None:
        await asyncio.to_thread(record_drift, store_url, job.job_id, webhook_policy)
    return result


def record_drift(store_url: str, scan_id: str, policy: RetryPolicy = DEFAULT_RETRY) -> None:
    """Drift and webhooks for a scheduled scan, wherever it ran."""
    from scanner.drift import after_scan  # the store's dependencies load only when used
    from scanner.store import ScanStore

    with ScanStore(store_url) as store:
        after_scan(store, scan_id, policy)


async def dispatch(job: ScanJob, broker_url: str | None = None, store_url: str | None = None,
                   out_root: Path = Path("."), authorised: Scope | None = None,
                   on_engine: Callable[[ScanEngine], None] | None = None,
                   webhook_policy: RetryPolicy = DEFAULT_RETRY) -> Dispatched:
    """Run the job in-process, or queue it for its segment's workers when a broker is set.

    The scope is checked here either way, so a job outside ``authorised`` is refused before it
    reaches a queue (and each worker checks it again against its own). ``store_url``,
    ``out_root``, ``on_engine`` (see ``run_job``) and ``webhook_policy`` apply in-process only:
    a worker saves to the store and folder it was started with."""
    scope = check_authorised(job, authorised)
    broker = configured_broker(broker_url)
    if broker is None:
        return Dispatched(job.job_id, None, await run_and_record(
            job, out_root, store_url, authorised, on_engine, webhook_policy))
    queue = segment_queue(job.segment)
    queued = job.model_copy(update={"excluded_ports": sorted(scope.excluded_ports)})
    await asyncio.to_thread(_publish, broker, queued, queue)
    return Dispatched(job.job_id, queue)


def _publish(broker_url: str, job: ScanJob, queue: str) -> None:
    """Queue the job under its own id as the task id, retrying a lost broker a few times."""
    celery_app(broker_url).send_task(
        SCAN_TASK, args=[job.model_dump(mode="json")], task_id=job.job_id, queue=queue,
        retry=True, retry_policy={"max_retries": PUBLISH_RETRIES, "interval_start": 0.5,
                                  "interval_step": 1.0, "interval_max": 3.0})


def _scan_task(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The worker side: a malformed payload, or a job reaching outside the scope this worker
    was authorised for, fails the task (acknowledged, never retried)."""
    job = ScanJob.model_validate(payload)
    conf = task.app.conf
    if job.segment != conf.iotbaseline_segment:
        raise ValueError(f"job {job.job_id} is for segment {job.segment!r}, this worker serves "
                         f"{conf.iotbaseline_segment!r}")
    authorised = build_scope(conf.iotbaseline_authorised,
                             excluded_ports=conf.iotbaseline_excluded_ports)
    result = asyncio.run(run_and_record(job, Path(conf.iotbaseline_out),
                                        conf.iotbaseline_store, authorised))
    return {"scan_id": result.meta.scan_id, "complete": result.meta.complete,
            "worker": task.request.hostname, "segment": job.segment}


def run_worker(segment: str, broker_url: str, store_url: str, out_root: Path,
               authorised: Scope, concurrency: int = 1, name: str | None = None) -> None:
    """Serve ``scan.<segment>`` until stopped (SIGTERM finishes the running scans first); only
    jobs inside ``authorised`` run, never touching its excluded ports.

    One process per concurrent scan (Celery's prefork pool), each with its own event loop."""
    app = celery_app(broker_url)
    app.conf.update(iotbaseline_segment=segment, iotbaseline_store=store_url,
                    iotbaseline_out=str(out_root.resolve()),
                    iotbaseline_authorised=list(authorised.target_specs),
                    iotbaseline_excluded_ports=sorted(authorised.excluded_ports))
    hostname = name or f"{segment}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    app.worker_main(["worker", "--queues", segment_queue(segment), "--hostname", hostname,
                     "--concurrency", str(concurrency), "--loglevel", "INFO",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
