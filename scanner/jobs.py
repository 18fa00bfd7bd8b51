"""A scan as a job: what the scheduler, the service API and the scan agents hand on to be run.

One definition of "run this scan" for every caller, so a scheduled scan, an API-triggered scan
and one a Celery worker picks up behave the same: the job's targets must lie inside the
service's authorised scope, its id becomes the scan id (a job delivered twice to an agent is
stored once: the store replaces a scan by id), the report files are written under the job's
output folder, and the result is saved to the store when one is named.

A job names its profile, never a path: whoever can queue a job (an API token) must not make
the service read any YAML file on its disk. The names are the built-in profiles and, when the
administrator sets ``IOTBASELINE_PROFILES`` to a folder on the service or worker host, the
``NAME.yaml`` files in it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from probes.registry import load_probes
from profiles import ProfileError, ScanProfile, builtin_profile_names, load_profile
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import ScanResult
from scanner.storage import ResultStore
from scanner.targets import Scope, TargetError, build_scope, parse_ports

DEFAULT_FORMATS = ("json", "html")
PROFILES_ENV = "IOTBASELINE_PROFILES"
SEGMENT_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"  # a name: no '/', no '.'

log = logging.getLogger(__name__)


class OutsideScope(TargetError):
    """A job reaching outside the scope the service or agent is authorised for."""


class ScanJob(BaseModel):
    """Everything needed to run one scan somewhere else, as plain data (JSON on a queue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=8, max_length=64,
                        pattern=r"^[A-Za-z0-9-]+$")
    targets: list[str] = Field(min_length=1, max_length=256)
    excludes: list[str] = Field(default_factory=list, max_length=256)
    excluded_ports: list[int] = Field(default_factory=list, max_length=1024)
    profile: str = Field("safe", pattern=PROFILE_NAME_PATTERN)
    ports: str | None = None  # as --ports: "22,80,8000-8010,U:161" (bare numbers are TCP)
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS))
    segment: str = Field("default", pattern=SEGMENT_PATTERN)
    schedule_id: int | None = None
    requested_by: str = ""  # schedule name, API token name, "cli"


def job_profile(name: str) -> ScanProfile:
    """A built-in profile, else ``NAME.yaml`` in the folder ``IOTBASELINE_PROFILES`` names;
    a ProfileError otherwise (a path is never read)."""
    builtins = builtin_profile_names()
    if name in builtins:
        return load_profile(name)
    folder = os.environ.get(PROFILES_ENV)
    if folder and re.fullmatch(PROFILE_NAME_PATTERN, name) \
            and (Path(folder) / f"{name}.yaml").is_file():
        return load_profile(str(Path(folder) / f"{name}.yaml"))
    where = f"in {folder}" if folder else f"in a folder {PROFILES_ENV} names"
    raise ProfileError(f"no profile {name[:100]!r}: jobs name a built-in profile "
                       f"({', '.join(builtins)}) or a NAME.yaml {where}")


def check_authorised(job: ScanJob, authorised: Scope | None) -> Scope:
    """The job's scope, refused with a one-line TargetError when any of it lies outside the
    scope the service was configured with (an API caller cannot widen it); the ports the
    service never contacts stay excluded whatever the job says."""
    excluded_ports = {*job.excluded_ports, *(authorised.excluded_ports if authorised else ())}
    scope = build_scope(job.targets, job.excludes, excluded_ports=excluded_ports)
    if authorised is None:
        return scope
    for interval in scope.intervals:
        if not any(outer.version == interval.version and outer.first <= interval.first
                   and interval.last <= outer.last for outer in authorised.intervals):
            raise OutsideScope(f"targets {', '.join(job.targets)[:200]} are not all inside the "
                              "authorised scope")
    return scope


def build_plan(scope: Scope, profile: ScanProfile, *, with_checks: bool = True,
               ports: dict[str, list[int]] | None = None,
               overrides: dict[str, float] | None = None, show_secrets: bool = False,
               command_line: list[str] | None = None) -> ScanPlan:
    """The probes a profile asks for (its template folders included) and the plan: one way
    for the CLI and for jobs, so a scheduled scan runs the same checks as ``scan``."""
    probes, load_errors = load_probes(template_dirs=[
        Path(name) for name in profile.checks.template_dirs]) if with_checks else ([], [])
    for error in load_errors:
        log.warning("probe %s from %s not loaded: %s", error.entry_point, error.source,
                    error.reason)
    return ScanPlan.build(scope, profile, probes, ports=ports, overrides=overrides,
                          show_secrets=show_secrets, command_line=command_line)


def plan_for(job: ScanJob, authorised: Scope | None = None) -> ScanPlan:
    scope = check_authorised(job, authorised)
    ports = parse_ports(job.ports) if job.ports else None
    plan = build_plan(scope, job_profile(job.profile), ports=ports,
                      command_line=["iotbaseline", "job", job.job_id])
    plan.formats = sorted(set(job.formats) | {"json"})
    plan.scan_id = job.job_id
    return plan


async def run_job(job: ScanJob, out_root: Path, store_url: str | None = None,
                  authorised: Scope | None = None,
                  on_engine: Callable[[ScanEngine], None] | None = None) -> ScanResult:
    """Run the scan in this process; report files in ``out_root/<job id>``; saved to the store
    (idempotent by scan id) when a URL is given. A redelivered job overwrites its own folder.

    ``on_engine`` is handed the engine before it starts, so a caller can ``stop()`` it: the
    partial report is then written and stored (``complete`` false, stop reason "interrupted"),
    where cancelling the task would lose it."""
    plan = plan_for(job, authorised)
    engine = ScanEngine(plan, ResultStore(out_root / job.job_id, replace=True))
    if on_engine is not None:
        on_engine(engine)
    result = await engine.run()
    if store_url is not None:
        await asyncio.to_thread(_save, result, store_url, job)
    return result


def _save(result: ScanResult, store_url: str, job: ScanJob) -> None:
    from scanner.store import ScanStore  # the store's dependencies load only when used

    with ScanStore(store_url) as store:
        store.save_scan(result, schedule_id=job.schedule_id)
