"""Drift between two scans of a schedule, and its signed webhook deliveries (fake devices and
webhook receivers on 127.137.0.0/16 only)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from scanner.drift import after_scan, deliveries_of
from scanner.schedule import Scheduler, add_schedule
from scanner.store import ScanStore, ScheduleWebhook
from scanner.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    RetryPolicy,
    WebhookTarget,
    deliver,
)
from tests import fakes
from tests.report_fixtures import sample_result

SECRET = "s3cret-for-tests"
FAST = RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.05, total_s=10,
                   request_timeout_s=3)
SHELL = b"\xff\xfb\x01\r\n/ # "  # a root prompt, no version string
LOGIN = b"\xff\xfb\x01\r\nlogin: "
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Receiver:
    """A webhook endpoint answering with scripted statuses (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return web.Response(status=status)

    def verified_bodies(self) -> list[dict[str, object]]:
        """Each request's JSON, after checking its HMAC the way a receiver must."""
        bodies = []
        for headers, body in self.requests:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
            bodies.append(json.loads(body))
        return bodies


StartReceiver = Callable[[str, list[int]], Awaitable[Receiver]]


@pytest.fixture
async def receivers() -> AsyncIterator[StartReceiver]:
    runners: list[web.AppRunner] = []

    async def start(host: str, statuses: list[int]) -> Receiver:
        receiver = Receiver(statuses)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, 8080).start()
        runners.append(runner)
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTB_TEST_HOOK", SECRET)


async def test_receiver_failing_twice_gets_three_attempts_with_one_signed_body(
        receivers: StartReceiver) -> None:
    receiver: Receiver = await receivers("127.137.0.1", [500, 503, 204])
    delivery = await deliver(WebhookTarget("http://127.137.0.1:8080/hook", "IOTB_TEST_HOOK"),
                             "drift", {"hello": "world"}, FAST)
    assert delivery.delivered and not delivery.error
    assert [a.status for a in delivery.attempts] == [500, 503, 204]
    bodies = receiver.verified_bodies()
    assert len(bodies) == 3 and bodies[0] == bodies[2]  # a retry resends the same bytes
    assert {h[DELIVERY_HEADER] for h, _ in receiver.requests} == {delivery.delivery_id}
    assert bodies[0]["data"] == {"hello": "world"}


async def test_always_failing_receiver_stops_at_the_bound(
        receivers: StartReceiver) -> None:
    receiver: Receiver = await receivers("127.137.0.2", [502])
    target = WebhookTarget("http://127.137.0.2:8080/hook", "IOTB_TEST_HOOK")
    delivery = await deliver(target, "drift", {}, FAST)
    assert not delivery.delivered and len(receiver.requests) == 3
    assert delivery.error == "gave up after 3 attempts"
    nobody = await deliver(WebhookTarget("http://127.137.0.3:8080/hook", "IOTB_TEST_HOOK"),
                           "drift", {}, FAST)  # nothing listens there
    assert not nobody.delivered and len(nobody.attempts) == 3
    assert all(a.status is None and a.error for a in nobody.attempts)


async def test_a_refusal_is_final_and_nothing_is_sent_unsigned(
        receivers: StartReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    receiver: Receiver = await receivers("127.137.0.4", [403])
    target = WebhookTarget("http://127.137.0.4:8080/hook", "IOTB_TEST_HOOK")
    refused = await deliver(target, "drift", {}, FAST)
    assert refused.error == "refused with HTTP 403" and len(receiver.requests) == 1
    monkeypatch.delenv("IOTB_TEST_HOOK")
    unsigned = await deliver(target, "drift", {}, FAST)
    assert not unsigned.delivered and "IOTB_TEST_HOOK is not set" in unsigned.error
    assert len(receiver.requests) == 1


def test_backoff_is_bounded_full_jitter() -> None:
    policy = RetryPolicy(first_delay_s=1, max_delay_s=5)
    assert [policy.delay(n, rng=lambda: 1.0) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.delay(3, rng=lambda: 0.0) == 0


async def test_two_scans_of_a_schedule_drift_exactly_and_are_announced(
        tmp_path: Path, receivers: StartReceiver) -> None:
    """Scan 1: device A offers a Telnet shell. Scan 2: A asks for a login (fixed), B is new."""
    good: Receiver = await receivers("127.137.0.5", [200])
    broken: Receiver = await receivers("127.137.0.6", [500])
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with ScanStore(store_url) as store:
        schedule = add_schedule(
            store, "lab", "0 * * * *", ["127.137.1.1-2"], profile="quick", ports="2323",
            formats=["json"], now=T0,
            webhooks=[WebhookTarget("http://127.137.0.5:8080/hook", "IOTB_TEST_HOOK"),
                      WebhookTarget("http://127.137.0.6:8080/hook", "IOTB_TEST_HOOK")])
    scheduler = Scheduler(store_url, tmp_path / "out", None, excluded_ports=[2024],
                          webhook_policy=FAST)
    device_a = await fakes.banner("127.137.1.1", 2323, SHELL)
    try:
        [first] = await scheduler.run_due(T0 + timedelta(hours=1))
        await device_a.close()
        device_a = await fakes.banner("127.137.1.1", 2323, LOGIN)
        device_b = await fakes.banner("127.137.1.2", 2323, LOGIN)
        try:
            [second] = await scheduler.run_due(T0 + timedelta(hours=2))
            [third] = await scheduler.run_due(T0 + timedelta(hours=3))  # nothing changed
        finally:
            await device_b.close()
    finally:
        await device_a.close()
        scheduler.close()

    with ScanStore(store_url) as store:
        assert store.get_drift(first) is None  # the first scan is the baseline
        assert [s.id for s in store.list_scans(schedule=schedule.id)] == [third, second, first]
        quiet = store.get_drift(third)
        assert quiet is not None and quiet.previous_scan_id == second
        assert deliveries_of(store, third) == []  # no change, no announcement
        drift = store.get_drift(second)
        deliveries = deliveries_of(store, second)
        before = store.get_scan(first)
        b_findings = [f for f in store.get_scan(second).findings if f.device == "127.137.1.2"]
    assert drift is not None and drift.previous_scan_id == first
    summary = drift.summary
    assert [d["key"] for d in summary["new_devices"]] == ["address:127.137.1.2"]
    assert summary["vanished_devices"] == []
    assert [(f["device"], f["check_id"]) for f in summary["fixed_findings"]] == [
        ("127.137.1.1", "telnet-unauthenticated-shell")]
    assert {f["device"] for f in summary["new_findings"]} == {"127.137.1.2"}  # all of B's
    assert {f["id"] for f in summary["new_findings"]} == {f.id for f in b_findings}
    assert "telnet-exposed" in {f["check_id"] for f in summary["new_findings"]}
    assert {f["id"] for f in summary["persisting_findings"]} == {
        f.id for f in before.findings if f.check_id != "telnet-unauthenticated-shell"}
    assert "telnet-exposed" in {f["check_id"] for f in summary["persisting_findings"]}
    assert summary["unverified_findings"] == [] and summary["complete"]
    assert not any(c["device"] == "127.137.1.1" for c in summary["regressed"])

    assert all(not quiet.summary[group] for group in (
        "new_devices", "vanished_devices", "new_findings", "fixed_findings",
        "unverified_findings", "regressed", "improved"))
    [announced] = good.verified_bodies()  # once: the unchanged third scan posted nothing
    assert announced["event"] == "drift"
    data = announced["data"]
    assert isinstance(data, dict) and data["scan_id"] == second
    assert data["new_devices"] == summary["new_devices"]
    by_url = {d.url: d for d in deliveries}
    assert by_url["http://127.137.0.5:8080/hook"].delivered
    failed = by_url["http://127.137.0.6:8080/hook"]
    assert not failed.delivered and len(failed.attempts) == 3 and len(broken.requests) == 3


async def test_a_stored_webhook_that_is_no_longer_valid_is_logged_not_fatal(
        tmp_path: Path, receivers: StartReceiver) -> None:
    """Webhooks saved by an older version (or by hand) are validated only when used: an invalid
    one is recorded as not sent, the valid ones are still posted and the drift is kept."""
    good: Receiver = await receivers("127.137.0.11", [204])
    first = sample_result().model_copy(update={"meta": sample_result().meta.model_copy(
        update={"scan_id": "drift-1", "started_at": T0})})
    second = first.model_copy(update={
        "meta": first.meta.model_copy(update={"scan_id": "drift-2",
                                              "started_at": T0 + timedelta(hours=1)}),
        "findings": first.findings[:1]})  # one finding fixed: something to announce
    with ScanStore(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        schedule = store.create_schedule("legacy", "0 * * * *", ["127.137.5.0/24"], "safe",
                                         webhooks=[
            ScheduleWebhook("ftp://127.137.0.11/hook", "IOTB_TEST_HOOK"),
            ScheduleWebhook("http://127.137.0.11:8080/hook", "IOTB_TEST_HOOK"),
            ScheduleWebhook("http://127.137.0.11:8080/hook", "not a name")])
        store.save_scan(first, schedule_id=schedule.id)
        store.save_scan(second, schedule_id=schedule.id)
        drift = await asyncio.to_thread(after_scan, store, "drift-2", FAST)
        deliveries = deliveries_of(store, "drift-2")
    assert drift is not None and drift.changed
    assert len(good.verified_bodies()) == 1
    assert [d.delivered for d in deliveries] == [False, False, True]
    assert all(d.error.startswith("invalid webhook: ") and not d.attempts
               for d in deliveries[:2])
    assert "http(s)" in deliveries[0].error and "not a name" in deliveries[1].error
