"""The service for tests: a seeded store, a viewer and an operator token, and the app served in
a thread of its own on 127.138.0.1 (any free port) so both async clients and synchronous tools
(schemathesis, Chromium) can reach it. Addresses: 127.138.0.0/16 only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from reports.verdicts import assess
from scanner.models import Finding, ScanResult, Severity
from scanner.service.app import create_app
from scanner.service.keys import ServiceConfig
from scanner.store import ScanStore
from scanner.targets import build_scope
from tests.report_fixtures import T0, sample_result

HOST = "127.138.0.1"
AUTHORISED = "127.138.1.0/24"
SCAN_IDS = [f"00000000-0000-4000-8000-00000000010{n}" for n in range(4)]


@dataclass
class Service:
    base: str
    store_url: str
    viewer: str
    operator: str
    out_root: Path


def seeded_scans() -> list[ScanResult]:
    """Four scans a day apart: the same two devices, findings rising then one fixed."""
    base = sample_result()
    scans = []
    for number, scan_id in enumerate(SCAN_IDS):
        extra = [finding.model_copy(update={
            "id": f"{finding.id}-{number}-{k}", "severity": [Severity.MEDIUM, Severity.LOW][k % 2]})
            for k in range(number % 3) for finding in base.findings[:1]]
        findings: list[Finding] = [*base.findings[: 1 + (number < 3)], *extra]
        meta = base.meta.model_copy(update={
            "scan_id": scan_id, "started_at": T0 + timedelta(days=number),
            "finished_at": T0 + timedelta(days=number, minutes=2)})
        scans.append(assess(base.model_copy(update={"meta": meta, "findings": findings,
                                                    "verdicts": [], "device_verdicts": []})))
    return scans


def seed(store_url: str) -> tuple[str, str]:
    """Saves the scans and a drift for the last one; returns (viewer, operator) secrets."""
    with ScanStore(store_url) as store:
        for result in seeded_scans():
            store.save_scan(result)
        store.save_drift(SCAN_IDS[-1], SCAN_IDS[-2], {
            "new_findings": [{"id": "x"}], "fixed_findings": [{"id": "a"}, {"id": "b"}],
            "new_devices": [], "regressions": 0})
        _, viewer = store.create_token("alice", "viewer")
        _, operator = store.create_token("bob", "operator")
    return viewer, operator


def serve_in_thread(tmp_path: Path) -> Iterator[Service]:
    """Serve until the generator is closed; every wait is bounded."""
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    viewer, operator = seed(store_url)
    config = ServiceConfig(store_url=store_url, authorised=build_scope([AUTHORISED]),
                           out_root=tmp_path / "out")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(config))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        server = site._server  # the bound port of a port-0 site
        assert isinstance(server, asyncio.Server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield Service(f"http://{HOST}:{port}", store_url, viewer, operator, tmp_path / "out")
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
