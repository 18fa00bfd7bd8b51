"""The dashboard: server-rendered pages over the store (inventory, verdict matrix, findings over
time per clause and per severity, drift per scan), logged in with an API token."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from reports.compliance import PRIMARY_FRAMEWORK
from scanner.models import ScanResult, Severity
from scanner.service import keys
from scanner.service.api import REPORT_FORMATS
from scanner.service.auth import COOKIE, MAX_SECRET, current_token, own_origin
from scanner.service.charts import Series, line_chart
from scanner.store import DeviceSummary, ScanStore, ScanSummary

CHART_SCANS = 20  # the findings charts cover the newest scans only: bounded work per page
TOP_CLAUSES = 8
SEVERITY_COLOURS = {"critical": "#67001f", "high": "#d6604d", "medium": "#f4a582",
                    "low": "#4393c3", "info": "#878787"}

_templates = jinja2.Environment(loader=jinja2.PackageLoader("scanner.service", "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)


@dataclass
class Matrix:
    scan_id: str = ""
    clauses: list[str] = field(default_factory=list)
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@dataclass
class Overview:
    devices: list[DeviceSummary]
    scans: list[ScanSummary]
    results: list[ScanResult]  # the newest CHART_SCANS, oldest first
    drift: dict[str, list[tuple[str, object]]]


def _page(template: str, request: web.Request | None, **context: Any) -> web.Response:
    token = current_token(request) if request is not None else None
    html = _templates.get_template(template).render(token=token, **context)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


def _overview(store: ScanStore) -> Overview:
    scans = store.list_scans(CHART_SCANS)
    results = [store.get_scan(scan.id) for scan in reversed(scans)]
    drift = {}
    for scan in scans:
        recorded = store.get_drift(scan.id)
        drift[scan.id] = drift_counts(recorded.summary) if recorded else []
    return Overview(store.devices(), scans, results, drift)


def drift_counts(summary: dict[str, Any]) -> list[tuple[str, object]]:
    """What a drift summary says in brief: list sizes and plain numbers, by name."""
    return [(name.replace("_", " "), len(value) if isinstance(value, list) else value)
            for name, value in summary.items()
            if isinstance(value, list) or (isinstance(value, int) and value is not True
                                           and value is not False)]


def severity_chart(results: list[ScanResult]) -> Any:
    labels = [r.meta.started_at.strftime("%m-%d %H:%M") for r in results]
    counts = [Counter(f.severity.value for f in r.findings) for r in results]
    return line_chart("Findings per severity", labels, [
        Series(severity.value, [c[severity.value] for c in counts],
               SEVERITY_COLOURS[severity.value])
        for severity in sorted(Severity, key=lambda s: -s.rank)
        if any(c[severity.value] for c in counts)] or [Series("findings", [0] * len(labels))])


def clause_chart(results: list[ScanResult]) -> Any:
    labels = [r.meta.started_at.strftime("%m-%d %H:%M") for r in results]
    counts = [Counter(clause for f in r.findings for clause in f.clauses.get(PRIMARY_FRAMEWORK, []))
              for r in results]
    total = sum(counts, Counter())
    clauses = sorted(clause for clause, _ in total.most_common(TOP_CLAUSES))
    return line_chart("Findings per ISO/IEC 27402 clause", labels,
                      [Series(clause, [c[clause] for c in counts]) for clause in clauses]
                      or [Series("findings", [0] * len(labels))])


def verdict_matrix(result: ScanResult | None) -> Matrix:
    if result is None:
        return Matrix()
    rows: dict[str, dict[str, str]] = {}
    for verdict in result.verdicts:
        if verdict.framework == PRIMARY_FRAMEWORK:
            rows.setdefault(verdict.device, {})[verdict.clause] = verdict.verdict.value
    clauses = sorted({clause for row in rows.values() for clause in row},
                     key=lambda c: [int(p) if p.isdigit() else 0 for p in c.split(".")])
    return Matrix(result.meta.scan_id, clauses, sorted(rows.items()))


async def index(request: web.Request) -> web.Response:
    overview = await asyncio.to_thread(_overview, request.app[keys.STORE])
    charts = ([severity_chart(overview.results), clause_chart(overview.results)]
              if overview.results else [])
    return _page("index.html.j2", request, devices=overview.devices, scans=overview.scans,
                 charts=charts, drift=overview.drift,
                 matrix=verdict_matrix(overview.results[-1] if overview.results else None))


async def scan_page(request: web.Request) -> web.Response:
    scan_id = request.match_info["scan_id"]
    store = request.app[keys.STORE]
    try:
        result = await asyncio.to_thread(store.get_scan, scan_id)
    except LookupError:
        raise web.HTTPNotFound(text=f"no scan {scan_id!r}") from None
    drift = await asyncio.to_thread(store.get_drift, scan_id)
    return _page("scan.html.j2", request, scan_id=scan_id, meta=result.meta,
                 devices=len(result.devices), findings=len(result.findings),
                 formats=list(REPORT_FORMATS), drift=drift,
                 drift_rows=drift_counts(drift.summary) if drift else [])


async def device_page(request: web.Request) -> web.Response:
    store = request.app[keys.STORE]
    try:
        history = await asyncio.to_thread(
            lambda: store.device_history(store.find_device(request.match_info["device"])))
    except LookupError:
        raise web.HTTPNotFound(text="no such device") from None
    return _page("device.html.j2", request, history=history)


async def login_form(_request: web.Request) -> web.Response:
    return _page("login.html.j2", None, failed=False)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the token, then keep it in an HttpOnly, SameSite=Strict cookie."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != own_origin(request):
        raise web.HTTPForbidden(text="cross-site login refused")
    form = await request.post()
    secret = form.get("token")
    token = None
    if isinstance(secret, str) and 0 < len(secret.strip()) <= MAX_SECRET:
        token = await asyncio.to_thread(request.app[keys.STORE].verify_token, secret.strip())
    if token is None or not isinstance(secret, str):
        response = _page("login.html.j2", None, failed=True)
        response.set_status(401)
        return response
    redirect = web.HTTPSeeOther("/")
    redirect.set_cookie(COOKIE, secret.strip(), httponly=True, samesite="Strict", path="/",
                        secure=request.app[keys.CONFIG].secure_cookies)
    raise redirect


async def logout(_request: web.Request) -> web.StreamResponse:
    redirect = web.HTTPSeeOther("/login")
    redirect.del_cookie(COOKIE, path="/")
    raise redirect


async def stylesheet(_request: web.Request) -> web.Response:
    import importlib.resources

    css = importlib.resources.files("scanner.service").joinpath("static/style.css").read_text()
    return web.Response(text=css, content_type="text/css")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/scans/{scan_id}", scan_page)
    app.router.add_get("/devices/{device}", device_page)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/static/style.css", stylesheet)
