"""The service API: tokens and roles, the authorised scope, scans, reports in every format,
devices, schedules, drift, and the OpenAPI document checked against the running service
(schemathesis, bounded). Addresses: 127.138.0.0/16 only (service on 127.138.0.1, fakes on
127.138.1.x inside the authorised scope, 127.138.2.x outside it)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from multidict import CIMultiDictProxy
from openapi_spec_validator import validate

from scanner.service.openapi import openapi_document
from scanner.store import ScanStore
from tests import fakes
from tests.service_fixtures import SCAN_IDS, Service, serve_in_thread

TELNET = b"\xff\xfb\x01\r\nlogin: "


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from serve_in_thread(tmp_path)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def call(service: Service, method: str, path: str, token: str | None = None,
               body: Any = None) -> tuple[int, Any, CIMultiDictProxy[str]]:
    headers = bearer(token) if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
            session.request(method, service.base + path, headers=headers, json=body,
                            allow_redirects=False) as response:
        text = await response.text()
        try:
            payload: Any = json.loads(text)
        except ValueError:
            payload = text
        return response.status, payload, response.headers


async def test_every_endpoint_needs_a_known_token(service: Service) -> None:
    for path in ("/api/scans", "/api/devices", "/api/openapi.json",
                 f"/api/scans/{SCAN_IDS[0]}/report.html"):
        status, body, headers = await call(service, "GET", path)
        assert status == 401 and body["error"] and headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await call(service, "GET", path, "iotb_not-a-real-token")
        assert status == 401
    status, _, headers = await call(service, "GET", "/")
    assert status == 303 and headers["Location"] == "/login"
    status, body, _ = await call(service, "GET", "/api/scans", service.viewer)
    assert status == 200 and [s["id"] for s in body["scans"]] == SCAN_IDS[::-1]


async def test_viewers_read_but_cannot_change_anything(service: Service) -> None:
    for method, path, body in (("POST", "/api/scans", {"targets": ["127.138.1.1"]}),
                               ("POST", f"/api/scans/{SCAN_IDS[0]}/cancel", None),
                               ("POST", "/api/schedules", {"name": "x", "cron": "0 3 * * *",
                                                           "targets": ["127.138.1.1"]}),
                               ("DELETE", "/api/schedules/1", None)):
        status, answer, _ = await call(service, method, path, service.viewer, body)
        assert status == 403 and "operator" in answer["error"], path
    status, answer, _ = await call(service, "GET", "/api/devices", service.viewer)
    assert status == 200 and {d["address"] for d in answer["devices"]} == {"192.0.2.5",
                                                                          "192.0.2.7"}
    key = answer["devices"][0]["key"]
    status, history, _ = await call(service, "GET", f"/api/devices/{key}/history",
                                    service.viewer)
    assert status == 200 and len(history["entries"]) == len(SCAN_IDS)
    status, _, _ = await call(service, "GET", "/api/devices/nobody/history", service.viewer)
    assert status == 404


async def test_reports_in_every_format_render_from_the_stored_scan(service: Service) -> None:
    scan = SCAN_IDS[0]
    reports = {}
    for suffix in ("json", "html", "md", "csv", "sarif", "junit", "oscal"):
        status, body, headers = await call(service, "GET", f"/api/scans/{scan}/report.{suffix}",
                                           service.viewer)
        assert status == 200, suffix
        assert "sandbox" in headers["Content-Security-Policy"]
        reports[suffix] = body
    assert reports["json"]["meta"]["scan_id"] == scan
    assert "<html" in reports["html"] and "telnet-exposed" in reports["html"]
    assert reports["md"].startswith("#")
    assert any(row.get("check_id") == "telnet-exposed"
               for row in csv.DictReader(io.StringIO(reports["csv"])))
    assert reports["sarif"]["version"] == "2.1.0"
    assert ET.fromstring(reports["junit"]).tag in {"testsuites", "testsuite"}
    assert "assessment-results" in reports["oscal"]
    status, _, _ = await call(service, "GET", f"/api/scans/{scan}/report.exe", service.viewer)
    assert status == 404
    status, _, _ = await call(service, "GET", "/api/scans/no-such-scan/report.json",
                              service.viewer)
    assert status == 404


async def test_drift_per_scan(service: Service) -> None:
    status, drift, _ = await call(service, "GET", f"/api/scans/{SCAN_IDS[-1]}/drift",
                                  service.viewer)
    assert status == 200 and drift["previous_scan_id"] == SCAN_IDS[-2]
    assert len(drift["summary"]["fixed_findings"]) == 2
    status, _, _ = await call(service, "GET", f"/api/scans/{SCAN_IDS[0]}/drift", service.viewer)
    assert status == 404


async def test_targets_outside_the_authorised_scope_are_refused_untouched(
        service: Service) -> None:
    outside = await fakes.banner("127.138.2.1", 2323, TELNET)
    try:
        for targets in (["127.138.2.1"], ["127.138.1.250-127.138.2.3"], ["10.0.0.1"]):
            status, body, _ = await call(service, "POST", "/api/scans", service.operator,
                                         {"targets": targets, "ports": "2323",
                                          "excluded_ports": [2024]})
            assert status == 403 and "authorised scope" in body["error"]
            assert "\n" not in body["error"]
        status, body, _ = await call(service, "POST", "/api/schedules", service.operator,
                                     {"name": "wide", "cron": "0 3 * * *",
                                      "targets": ["127.138.0.0/16"]})
        assert status == 403 and "authorised scope" in body["error"]
        await asyncio.sleep(0.5)
        assert outside.connections == 0
        status, jobs, _ = await call(service, "GET", "/api/jobs", service.viewer)
        assert jobs["jobs"] == []
    finally:
        await outside.close()


async def test_bad_bodies_are_one_line_400s(service: Service) -> None:
    target = {"targets": ["127.138.1.1"]}
    bodies: list[Any] = [{"targets": []}, {**target, "surprise": 1}, [1, 2],
                         {**target, "profile": "no-such-profile"},
                         {**target, "ports": "99999"}, {**target, "ports": "22,x"},
                         {"targets": ["not a target!"]}]
    for body in bodies:
        status, answer, _ = await call(service, "POST", "/api/scans", service.operator, body)
        assert status == 400 and "\n" not in answer["error"], body
    async with aiohttp.ClientSession() as session, session.post(
            service.base + "/api/scans", data=b"{not json", headers=bearer(service.operator),
            timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 400


async def test_a_caller_names_what_to_scan_never_the_scan_or_the_schedule_it_becomes(
        service: Service) -> None:
    """job_id would overwrite a stored scan (and wipe its report folder), schedule_id would
    act as a schedule (drift, webhooks), a profile path would read any file on the server."""
    target = {"targets": ["127.138.1.1"], "ports": "2323", "excluded_ports": [2024]}
    for forged in ({"job_id": SCAN_IDS[0]}, {"schedule_id": 1}, {"requested_by": "forged"},
                   {"profile": "profiles/scan/quick.yaml"}, {"profile": "../quick"}):
        status, answer, _ = await call(service, "POST", "/api/scans", service.operator,
                                       {**target, **forged})
        assert status == 400 and "\n" not in answer["error"], forged
    status, _, _ = await call(service, "POST", "/api/schedules", service.operator, {
        "name": "by-path", "cron": "0 3 * * *", "targets": ["127.138.1.1"],
        "profile": "profiles/scan/quick.yaml"})
    assert status == 400
    status, jobs, _ = await call(service, "GET", "/api/jobs", service.viewer)
    assert jobs["jobs"] == []
    with ScanStore(service.store_url) as store:
        assert [s.id for s in store.list_scans()] == SCAN_IDS[::-1]


async def wait_for_job(service: Service, job_id: str, seconds: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, scan, _ = await call(service, "GET", f"/api/scans/{job_id}", service.viewer)
        if scan["job"]["status"] != "running":
            return dict(scan)
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} still running after {seconds} s")


async def test_an_operator_triggers_a_scan_that_lands_in_the_store(service: Service) -> None:
    device = await fakes.banner("127.138.1.1", 2323, TELNET)
    try:
        status, job, _ = await call(service, "POST", "/api/scans", service.operator, {
            "targets": ["127.138.1.1"], "ports": "2323", "profile": "quick",
            "excluded_ports": [2024], "formats": ["json"]})
        assert status == 202 and job["status"] == "running"
        assert job["requested_by"] == "api:bob"
        scan = await wait_for_job(service, job["job_id"])
    finally:
        await device.close()
    assert scan["job"]["status"] == "complete" and scan["stored"]["id"] == job["job_id"]
    assert device.connections >= 1
    status, report, _ = await call(service, "GET", f"/api/scans/{job['job_id']}/report.json",
                                   service.viewer)
    assert status == 200 and any(f["check_id"] == "telnet-exposed" for f in report["findings"])
    status, again, _ = await call(service, "POST", f"/api/scans/{job['job_id']}/cancel",
                                  service.operator)
    assert status == 409 and "ended" in again["error"]


async def test_cancel_stops_a_running_scan_and_stores_its_partial_report(
        service: Service) -> None:
    silent = await fakes.banner("127.138.1.2", 2323, b"")  # a slow device: never says a word
    try:
        status, job, _ = await call(service, "POST", "/api/scans", service.operator, {
            "targets": ["127.138.1.2"], "ports": "2323", "profile": "safe",
            "excluded_ports": [2024]})
        assert status == 202
        deadline = time.monotonic() + 60
        while silent.connections == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert silent.connections >= 1  # the scan is under way
        status, cancelled, _ = await call(service, "POST", f"/api/scans/{job['job_id']}/cancel",
                                          service.operator)
    finally:
        await silent.close()
    assert status == 200 and cancelled["status"] == "cancelled"
    assert cancelled["reason"] == "cancelled through the API; partial report stored"
    status, scan, _ = await call(service, "GET", f"/api/scans/{job['job_id']}", service.viewer)
    assert status == 200 and scan["stored"]["complete"] is False
    assert scan["stored"]["schedule_id"] is None and scan["job"]["status"] == "cancelled"
    with ScanStore(service.store_url) as store:
        meta = store.get_scan(job["job_id"]).meta
    assert (meta.complete, meta.stop_reason) == (False, "interrupted")
    assert (service.out_root / job["job_id"] / "report.json").exists()
    status, _, _ = await call(service, "POST", "/api/scans/0000-unknown-job/cancel",
                              service.operator)
    assert status == 404


async def test_schedules_crud_validated_by_the_scheduler(service: Service) -> None:
    hook = {"url": "http://192.0.2.10:8080/hook", "secret_env": "HOOK_SECRET"}  # never sent
    new = {"name": "nightly", "cron": "0 3 * * *", "targets": ["127.138.1.0/28"],
           "excludes": ["127.138.1.1"], "ports": "22,80", "profile": "quick",
           "formats": ["json", "md"], "webhooks": [hook]}
    status, created, _ = await call(service, "POST", "/api/schedules", service.operator, new)
    assert status == 201 and created["next_run"] and created["formats"] == ["json", "markdown"]
    assert (created["targets"], created["excludes"], created["ports"], created["webhooks"]) == (
        ["127.138.1.0/28"], ["127.138.1.1"], "22,80", [hook])
    status, _, _ = await call(service, "POST", "/api/schedules", service.operator, new)
    assert status == 409
    for bad in ({**new, "name": "b1", "cron": "every day"}, {**new, "name": "b2", "cron":
                "61 * * * *"}, {**new, "name": "b3", "profile": "no-such-profile"},
                {**new, "name": "b4", "webhooks": [{"url": "ftp://x", "secret_env": "S"}]},
                *({**new, "name": f"h{n}", "webhooks": [{"url": url, "secret_env": "S"}]}
                  for n, url in enumerate(("http://127.138.3.1:8080/hook", "http://[::1]/",
                                           "http://[::ffff:127.0.0.1]:22/",
                                           "http://169.254.169.254/latest/meta-data",
                                           "http://127.138.1.5:22/")))):
        status, answer, _ = await call(service, "POST", "/api/schedules", service.operator, bad)
        assert status == 400 and "\n" not in answer["error"], bad
    status, listed, _ = await call(service, "GET", "/api/schedules", service.viewer)
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    path = f"/api/schedules/{created['id']}"
    status, fetched, _ = await call(service, "GET", path, service.viewer)
    assert (status, fetched) == (200, created)
    assert (await call(service, "DELETE", path, service.operator))[0] == 204
    assert (await call(service, "GET", path, service.viewer))[0] == 404
    assert (await call(service, "DELETE", path, service.operator))[0] == 404


def test_the_openapi_document_is_valid_and_served(service: Service) -> None:
    validate(openapi_document())
    served = asyncio.run(call(service, "GET", "/api/openapi.json", service.viewer))[1]
    assert served == json.loads(json.dumps(openapi_document()))
    documented = {(method.upper(), path) for path, item in served["paths"].items()
                  for method in item if method != "parameters"}
    from scanner.service.app import create_app  # every route is documented, and only those
    from scanner.service.keys import ServiceConfig
    from scanner.targets import build_scope

    app = create_app(ServiceConfig(service.store_url, build_scope(["127.138.1.0/24"]),
                                   service.out_root))
    routed = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api/")
              and route.method != "HEAD"}
    assert routed == documented


def test_responses_match_the_openapi_document(service: Service) -> None:
    """Schemathesis generates requests from the document (a viewer's token, so nothing it
    sends can start a scan) and checks every answer's status, content type and body."""
    schema = schemathesis.openapi.from_dict(openapi_document())
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    for operation in operations:
        conforming(operation, service)()
    assert len(operations) >= 14


def conforming(operation: Any, service: Service) -> Any:
    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=service.base, headers=bearer(service.viewer), timeout=10)
        assert response.status_code < 500, (case.path, response.text[:300])
        operation.validate_response(response)

    return check


def test_webhooks_made_through_the_api_stay_off_this_machine_and_the_scanned_networks() -> None:
    from ipaddress import ip_address

    from scanner.service.webhook_hosts import refusal
    from scanner.targets import build_scope

    scanned = build_scope(["10.20.0.0/24"])
    assert refusal(ip_address("10.20.0.7"), scanned, None) == \
        "lies inside the authorised scan scope"
    assert refusal(ip_address("127.0.0.1"), scanned, None) == "is this machine"
    assert refusal(ip_address("::ffff:169.254.169.254"), scanned, None) == "is link-local"
    assert refusal(ip_address("10.30.0.7"), scanned, None) is None
    allowed = build_scope(["10.20.0.7"])  # serve --webhook-allow: the administrator's choice
    assert refusal(ip_address("10.20.0.7"), scanned, allowed) is None


def test_serve_excludes_ports_for_every_scan_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--exclude-ports (default IOTBASELINE_EXCLUDE_PORTS) lands in the authorised scope that
    the API, the scheduler and the in-process jobs all check against."""
    import scanner.service.app as app_module
    from scanner.cli import EXIT_OK, main
    from scanner.service.keys import ServiceConfig

    configs: list[ServiceConfig] = []

    async def fake_serve(config: ServiceConfig, *_: object) -> None:
        configs.append(config)

    monkeypatch.setattr(app_module, "serve", fake_serve)
    base = ["serve", "--authorised", "127.138.1.0/24", "--store",
            f"sqlite:///{tmp_path / 'store.sqlite'}", "--listen", "127.138.0.1:1"]
    monkeypatch.setenv("IOTBASELINE_EXCLUDE_PORTS", "2024")
    assert main(base) == EXIT_OK
    assert main([*base, "--exclude-ports", "2024,U:161", "--webhook-allow", "127.138.3.0/24"]) \
        == EXIT_OK
    assert [set(c.authorised.excluded_ports) for c in configs] == [{2024}, {2024, 161}]
    assert configs[0].webhook_allow is None and configs[1].webhook_allow is not None
