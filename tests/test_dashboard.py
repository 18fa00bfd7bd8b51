"""The dashboard: login with a token into a safe cookie, pages behind it, SVG charts with data
points, and the real thing in headless Chromium (driven over --remote-debugging-pipe: no port
opened), screenshot into the test's folder. Addresses: 127.138.0.0/16 only."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scanner.service.charts import Series, line_chart
from tests.service_fixtures import HOST, SCAN_IDS, Service, serve_in_thread

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from serve_in_thread(tmp_path)


async def login(service: Service, secret: str, origin: str | None = None
                ) -> tuple[int, aiohttp.ClientResponse, aiohttp.ClientSession]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                    cookie_jar=aiohttp.CookieJar(unsafe=True))
    headers = {"Origin": origin} if origin else {}
    response = await session.post(service.base + "/login", data={"token": secret},
                                  headers=headers, allow_redirects=False)
    await response.read()
    return response.status, response, session


async def test_login_sets_a_strict_httponly_cookie_and_pages_render(service: Service) -> None:
    status, response, session = await login(service, service.viewer, service.base)
    async with session:
        assert status == 303
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        async with session.get(service.base + "/") as page:
            html = await page.text()
            assert page.status == 200
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert html.count("<svg") == 2 and "<script" not in html
        assert html.count('class="point"') >= 2 * len(SCAN_IDS)
        assert "Findings per severity" in html and "5.2.6" in html
        assert "fixed findings: 2" in html  # drift of the last scan
        assert f"/api/scans/{SCAN_IDS[0]}/report.html" in html
        for path in (f"/scans/{SCAN_IDS[-1]}", "/devices/192.0.2.5"):
            async with session.get(service.base + path) as page:
                assert page.status == 200, path
        async with session.get(service.base + f"/api/scans/{SCAN_IDS[0]}/report.html") as rep:
            assert rep.status == 200  # the report links work with the cookie
        # The cookie never authorises a change: a cross-site POST with it is refused.
        async with session.post(service.base + "/api/scans",
                                json={"targets": ["127.138.1.1"]}) as change:
            assert change.status == 401
        async with session.post(service.base + "/logout", headers={"Origin": service.base},
                                allow_redirects=False) as out:
            assert out.status == 303
        async with session.get(service.base + "/", allow_redirects=False) as page:
            assert page.status == 303


async def test_bad_tokens_and_cross_site_logins_are_refused(service: Service) -> None:
    status, response, session = await login(service, "iotb_wrong")
    async with session:
        assert status == 401 and "Set-Cookie" not in response.headers
    status, _, session = await login(service, service.viewer, "http://evil.example")
    async with session:
        assert status == 403


def test_charts_escape_labels_and_plot_every_point() -> None:
    svg = line_chart("<t>", ["a<b", "c"], [Series("<script>", [0, 3]), Series("x", [1, 1])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="point"') == 4 and svg.count("<polyline") == 2
    assert line_chart("empty", [], []).startswith("<svg")


def _cdp(reader: dict[str, Any], message_id: int, method: str, deadline: float,
         **params: Any) -> dict[str, Any]:
    """One Chrome DevTools Protocol call over the pipe; answers are NUL-terminated JSON."""
    session = params.pop("session", None)
    request = {"id": message_id, "method": method, "params": params}
    if session:
        request["sessionId"] = session
    os.write(reader["write"], json.dumps(request).encode() + b"\0")
    while time.monotonic() < deadline:
        while b"\0" not in reader["buffer"]:
            chunk = os.read(reader["read"], 1 << 20)
            if not chunk:
                raise AssertionError("chromium closed the pipe")
            reader["buffer"] += chunk
        raw, _, reader["buffer"] = reader["buffer"].partition(b"\0")
        answer: dict[str, Any] = json.loads(raw)
        if answer.get("id") == message_id:
            assert "error" not in answer, answer
            result: dict[str, Any] = answer["result"]
            return result
    raise AssertionError(f"no answer to {method}")


def _pipes_at_3_and_4(commands: int, answers: int) -> None:
    """In the child: Chromium's --remote-debugging-pipe reads fd 3 and writes fd 4 (copied
    high first, so neither overwrites the other)."""
    commands, answers = os.dup(commands), os.dup(answers)
    os.dup2(commands, 3)
    os.dup2(answers, 4)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_dashboard_renders_in_headless_chromium(service: Service, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         "--disable-sync", "--disable-component-update", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=(3, 4), preexec_fn=lambda: _pipes_at_3_and_4(to_browser_r, from_browser_w))
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe: dict[str, Any] = {"read": from_browser_r, "write": to_browser_w, "buffer": b""}
    deadline = time.monotonic() + 60
    try:
        ids = iter(range(1, 100))

        def call(method: str, **params: Any) -> dict[str, Any]:
            return _cdp(pipe, next(ids), method, deadline, **params)

        call("Storage.setCookies", cookies=[{
            "name": "iotbaseline_token", "value": service.viewer, "domain": HOST, "path": "/",
            "httpOnly": True, "sameSite": "Strict"}])
        target = call("Target.createTarget", url="about:blank")["targetId"]
        session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        call("Page.enable", session=session)
        call("Page.navigate", session=session, url=service.base + "/")
        counts: dict[str, Any] = {}
        while time.monotonic() < deadline:
            counts = call("Runtime.evaluate", session=session, returnByValue=True, expression=(
                "JSON.stringify({ready: document.readyState, svgs: "
                "document.querySelectorAll('svg.chart').length, points: "
                "document.querySelectorAll('svg.chart circle.point').length, width: "
                "document.querySelector('svg.chart') ? "
                "document.querySelector('svg.chart').getBoundingClientRect().width : 0})"))
            counts = json.loads(counts["result"]["value"])
            if counts["ready"] == "complete" and counts["svgs"]:
                break
            time.sleep(0.2)
        assert counts["svgs"] == 2 and counts["points"] >= 2 * len(SCAN_IDS)
        assert counts["width"] > 200  # the stylesheet loaded and the charts have a size
        shot = call("Page.captureScreenshot", session=session, format="png",
                    captureBeyondViewport=True)["data"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        os.close(from_browser_r)
        os.close(to_browser_w)
    png = base64.b64decode(shot)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "dashboard.png").write_bytes(png)
    if os.environ.get("IOTBASELINE_SCREENSHOT"):
        Path(os.environ["IOTBASELINE_SCREENSHOT"]).write_bytes(png)
    assert re.search(rb"IHDR", png[:32])
