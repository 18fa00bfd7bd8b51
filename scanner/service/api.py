"""The REST API (/api/…): scans, reports, jobs, devices, schedules, drift. Documented in
openapi.yaml; every answer is JSON except the reports themselves."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from profiles.yamldata import DataFileError
from reports.renderers import RENDERERS
from scanner.engine import PlanError
from scanner.jobs import OutsideScope, ScanJob, check_authorised
from scanner.schedule import add_schedule
from scanner.service import keys
from scanner.service.auth import require_operator
from scanner.service.models import NewScan, NewSchedule
from scanner.service.openapi import openapi_document
from scanner.service.runner import JobState
from scanner.service.webhook_hosts import check_webhook_url
from scanner.store import ScanSummary
from scanner.targets import TargetError
from scanner.webhooks import WebhookTarget

# URL suffix -> (renderer, media type)
REPORT_FORMATS = {
    "json": ("json", "application/json"), "html": ("html", "text/html"),
    "md": ("markdown", "text/markdown"), "csv": ("csv", "text/csv"),
    "sarif": ("sarif", "application/sarif+json"), "junit": ("junit", "application/xml"),
    "oscal": ("oscal", "application/json"),
}
# A stored HTML report carries its own inline style: allow that, and nothing else.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
MAX_LIMIT = 500
MAX_ID = 2**31 - 1


def error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason[:500]}, status=status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, default=lambda value: value.isoformat())


def job_json(state: JobState) -> dict[str, Any]:
    return {"job_id": state.job.job_id, "status": state.status, "reason": state.reason,
            "submitted_at": state.submitted_at, "targets": state.job.targets,
            "requested_by": state.job.requested_by, "queue": state.queue}


def _int_query(request: web.Request, name: str, default: int | None, low: int,
               high: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=_dumps({"error": f"{name} must be a whole number"}),
                                 content_type="application/json") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=_dumps({"error": f"{name} must be {low}..{high}"}),
                                 content_type="application/json")
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=_dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=_dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return body


def _validation_error(exc: ValidationError) -> web.Response:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return error(400, f"{where}: {first['msg']}")


async def get_openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def list_scans(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 50, 1, MAX_LIMIT) or 50
    offset = _int_query(request, "offset", 0, 0, 1_000_000) or 0
    schedule = _int_query(request, "schedule", None, 0, MAX_ID)
    scans = await asyncio.to_thread(request.app[keys.STORE].list_scans, limit, offset, schedule)
    return _json({"scans": [asdict(scan) for scan in scans]})


async def trigger_scan(request: web.Request) -> web.Response:
    """Vet the job against the authorised scope before anything is contacted, then start it
    under a new job id (a caller names what to scan, never which stored scan it becomes)."""
    token = require_operator(request)
    try:
        body = NewScan.model_validate(await _body(request))
    except ValidationError as exc:
        return _validation_error(exc)
    job = ScanJob(**body.model_dump(exclude={"formats"}),
                  formats=[REPORT_FORMATS[name][0] for name in body.formats],
                  requested_by=f"api:{token.name}")
    try:
        state = await request.app[keys.RUNNER].submit(job)
    except OutsideScope as exc:
        return error(403, str(exc))
    except (TargetError, DataFileError, PlanError) as exc:
        return error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except ValueError as exc:
        return error(409, str(exc))
    return _json(job_json(state), status=202)


async def list_jobs(request: web.Request) -> web.Response:
    return _json({"jobs": [job_json(state) for state in request.app[keys.RUNNER].states()]})


async def _stored_summary(request: web.Request, scan_id: str) -> ScanSummary | None:
    """The store's summary of one scan, from its canonical record and its schedule."""
    store = request.app[keys.STORE]
    try:
        result = await asyncio.to_thread(store.get_scan, scan_id)
        schedule = await asyncio.to_thread(store.scan_schedule, scan_id)
    except LookupError:
        return None
    meta = result.meta
    return ScanSummary(meta.scan_id, meta.started_at, meta.finished_at, meta.complete,
                       meta.profile, schedule, len(result.devices), len(result.findings),
                       len(result.errors))


async def get_scan(request: web.Request) -> web.Response:
    scan_id = request.match_info["scan_id"]
    stored = await _stored_summary(request, scan_id)
    state = request.app[keys.RUNNER].get(scan_id)
    if stored is None and state is None:
        return error(404, f"no scan {scan_id!r}")
    reports = ({suffix: f"/api/scans/{scan_id}/report.{suffix}" for suffix in REPORT_FORMATS}
               if stored else {})
    return _json({"scan_id": scan_id, "stored": asdict(stored) if stored else None,
                  "job": job_json(state) if state else None, "reports": reports})


async def cancel_scan(request: web.Request) -> web.Response:
    require_operator(request)
    try:
        state = await request.app[keys.RUNNER].cancel(request.match_info["scan_id"])
    except LookupError as exc:
        return error(404, str(exc))
    except ValueError as exc:
        return error(409, str(exc))
    return _json(job_json(state))


async def get_report(request: web.Request) -> web.Response:
    """Rendered now from the stored ScanResult, so every format matches the canonical record."""
    scan_id, suffix = request.match_info["scan_id"], request.match_info["format"]
    if suffix not in REPORT_FORMATS:
        return error(404, f"no report format {suffix!r}")
    renderer, media_type = REPORT_FORMATS[suffix]
    try:
        result = await asyncio.to_thread(request.app[keys.STORE].get_scan, scan_id)
    except LookupError as exc:
        return error(404, str(exc))
    text = await asyncio.to_thread(RENDERERS[renderer].render, result)
    response = web.Response(text=text, content_type=media_type, charset="utf-8")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    response.headers["Content-Disposition"] = (
        f'inline; filename="{scan_id}-{RENDERERS[renderer].filename}"')
    return response


async def get_drift(request: web.Request) -> web.Response:
    scan_id = request.match_info["scan_id"]
    drift = await asyncio.to_thread(request.app[keys.STORE].get_drift, scan_id)
    if drift is None:
        return error(404, f"no drift recorded for scan {scan_id!r}")
    return _json(asdict(drift))


async def list_devices(request: web.Request) -> web.Response:
    devices = await asyncio.to_thread(request.app[keys.STORE].devices)
    return _json({"devices": [asdict(device) for device in devices]})


async def device_history(request: web.Request) -> web.Response:
    store = request.app[keys.STORE]
    try:
        history = await asyncio.to_thread(
            lambda: store.device_history(store.find_device(request.match_info["device"])))
    except LookupError as exc:
        return error(404, str(exc))
    return _json(asdict(history))


async def list_schedules(request: web.Request) -> web.Response:
    schedules = await asyncio.to_thread(request.app[keys.STORE].list_schedules)
    return _json({"schedules": [asdict(schedule) for schedule in schedules]})


def _schedule_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["schedule_id"])
    except ValueError:
        raise web.HTTPNotFound(text=_dumps({"error": "no such schedule"}),
                               content_type="application/json") from None
    if not 0 <= value <= MAX_ID:
        raise web.HTTPNotFound(text=_dumps({"error": "no such schedule"}),
                               content_type="application/json")
    return value


async def get_schedule(request: web.Request) -> web.Response:
    try:
        schedule = await asyncio.to_thread(request.app[keys.STORE].get_schedule,
                                           _schedule_id(request))
    except LookupError as exc:
        return error(404, str(exc))
    return _json(asdict(schedule))


async def create_schedule(request: web.Request) -> web.Response:
    """Saved by ``scanner.schedule.add_schedule`` (which vets cron, profile, ports and
    formats) once its targets are known to lie inside the authorised scope."""
    require_operator(request)
    config = request.app[keys.CONFIG]
    try:
        body = NewSchedule.model_validate(await _body(request))
        check_authorised(ScanJob(targets=body.targets, excludes=body.excludes),
                         config.authorised)
    except ValidationError as exc:
        return _validation_error(exc)
    except OutsideScope as exc:
        return error(403, str(exc))
    except TargetError as exc:
        return error(400, str(exc))
    formats = [REPORT_FORMATS[name][0] for name in body.formats]
    try:
        webhooks = [WebhookTarget(hook.url, hook.secret_env) for hook in body.webhooks]
        for hook in webhooks:
            await check_webhook_url(hook.url, config.authorised, config.webhook_allow)
        schedule = await asyncio.to_thread(
            add_schedule, request.app[keys.STORE], body.name, body.cron, body.targets,
            excludes=body.excludes, profile=body.profile, ports=body.ports, formats=formats,
            segment=body.segment, webhooks=webhooks)
    except (ValueError, TargetError, DataFileError) as exc:
        status = 409 if "exists already" in str(exc) else 400
        return error(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return _json(asdict(schedule), status=201)


async def delete_schedule(request: web.Request) -> web.Response:
    require_operator(request)
    try:
        await asyncio.to_thread(request.app[keys.STORE].delete_schedule, _schedule_id(request))
    except LookupError as exc:
        return error(404, str(exc))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", get_openapi)
    app.router.add_get("/api/scans", list_scans)
    app.router.add_post("/api/scans", trigger_scan)
    app.router.add_get("/api/jobs", list_jobs)
    app.router.add_get("/api/scans/{scan_id}", get_scan)
    app.router.add_post("/api/scans/{scan_id}/cancel", cancel_scan)
    app.router.add_get("/api/scans/{scan_id}/report.{format}", get_report)
    app.router.add_get("/api/scans/{scan_id}/drift", get_drift)
    app.router.add_get("/api/devices", list_devices)
    app.router.add_get("/api/devices/{device}/history", device_history)
    app.router.add_get("/api/schedules", list_schedules)
    app.router.add_post("/api/schedules", create_schedule)
    app.router.add_get("/api/schedules/{schedule_id}", get_schedule)
    app.router.add_delete("/api/schedules/{schedule_id}", delete_schedule)
