"""The service: one aiohttp application serving the REST API and the dashboard over one store.

``create_app`` builds it (tests run it on a loopback address); ``serve`` runs it with the
scheduler loop until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from scanner.schedule import Scheduler
from scanner.service import api, dashboard
from scanner.service.auth import token_middleware
from scanner.service.keys import CONFIG, RUNNER, STORE, ServiceConfig
from scanner.service.runner import JobRunner
from scanner.store import ScanStore

log = logging.getLogger("iotbaseline.service")
MAX_BODY = 256 * 1024  # a ScanJob or a schedule is a few KB at most
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update({k: v for k, v in SECURITY_HEADERS.items() if k not in exc.headers})
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(config: ServiceConfig) -> web.Application:
    store = ScanStore(config.store_url)
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[_security_headers, token_middleware(store)])
    app[CONFIG] = config
    app[STORE] = store
    app[RUNNER] = JobRunner(config.out_root, config.store_url, config.authorised)
    api.add_routes(app)
    dashboard.add_routes(app)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[RUNNER].close()
    app[STORE].close()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(config: ServiceConfig, host: str, port: int,
                tls: ssl.SSLContext | None = None) -> None:
    """Run the API, the dashboard and the scheduler loop until SIGINT or SIGTERM."""
    runner = web.AppRunner(create_app(config), access_log=log)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    log.info("serving on %s://%s:%d", "https" if tls else "http", host, port)
    try:
        await asyncio.gather(stop.wait(), run_scheduler(config, stop))
    finally:
        await runner.cleanup()


async def run_scheduler(config: ServiceConfig, stop: asyncio.Event) -> None:
    """The scheduler loop (``scanner.schedule``) over the same store and authorised scope."""
    scheduler = Scheduler(config.store_url, config.out_root, config.authorised)
    try:
        await scheduler.run_forever(stop)
    finally:
        scheduler.close()
