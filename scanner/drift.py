"""Drift: what changed since the previous scan of the same schedule, kept and announced.

The comparison of findings and clause verdicts is ``reports.diff`` (fixed means re-checked and
gone; a finding whose check did not run again is *unverified*, not fixed). Devices are compared
by the store's device identity rather than by address, so a device that moved address is neither
new nor vanished. The summary is saved in the store's drift table and posted to the schedule's
webhooks when something changed; the delivery log is saved with it.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel, ConfigDict, Field

from reports.diff import FindingRef, VerdictChange, diff_results
from scanner.models import ScanResult
from scanner.store import ScanStore
from scanner.webhooks import (
    DEFAULT_RETRY,
    Delivery,
    RetryPolicy,
    WebhookTarget,
    deliver_all,
    not_sent,
)

DRIFT_FORMAT = "iotbaseline-drift/1"
DRIFT_EVENT = "drift"

log = logging.getLogger(__name__)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceChange(_Model):
    key: str  # the store's device identity (mac:…, serial:…, udn:…, address:…)
    address: str
    label: str = ""


class DriftSummary(_Model):
    format: str = DRIFT_FORMAT
    schedule_id: int
    schedule: str
    scan_id: str
    previous_scan_id: str
    complete: bool  # both scans ran to the end; if not, "vanished" may only mean "not reached"
    new_devices: list[DeviceChange] = Field(default_factory=list)
    vanished_devices: list[DeviceChange] = Field(default_factory=list)
    new_findings: list[FindingRef] = Field(default_factory=list)
    fixed_findings: list[FindingRef] = Field(default_factory=list)
    persisting_findings: list[FindingRef] = Field(default_factory=list)
    unverified_findings: list[FindingRef] = Field(default_factory=list)
    regressed: list[VerdictChange] = Field(default_factory=list)
    improved: list[VerdictChange] = Field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.new_devices, self.vanished_devices, self.new_findings,
                    self.fixed_findings, self.unverified_findings, self.regressed,
                    self.improved))


def compute_drift(store: ScanStore, scan_id: str) -> DriftSummary | None:
    """The drift of a scheduled scan against the schedule's previous scan; None for a scan of
    no schedule or the schedule's first scan (nothing to compare with)."""
    schedule_id = store.scan_schedule(scan_id)
    if schedule_id is None:
        return None
    previous_id = store.previous_scan(schedule_id, before=scan_id)
    if previous_id is None:
        return None
    old, new = store.get_scan(previous_id), store.get_scan(scan_id)
    diff = diff_results(old, new)
    old_keys, new_keys = store.scan_devices(previous_id), store.scan_devices(scan_id)
    return DriftSummary(
        schedule_id=schedule_id, schedule=store.get_schedule(schedule_id).name, scan_id=scan_id,
        previous_scan_id=previous_id, complete=old.meta.complete and new.meta.complete,
        new_devices=_devices(new, new_keys, set(new_keys.values()) - set(old_keys.values())),
        vanished_devices=_devices(old, old_keys,
                                  set(old_keys.values()) - set(new_keys.values())),
        new_findings=diff.new_findings, fixed_findings=diff.fixed_findings,
        persisting_findings=diff.persisting_findings,
        unverified_findings=diff.unverified_findings,
        regressed=diff.regressions, improved=diff.improvements)


def after_scan(store: ScanStore, scan_id: str,
               policy: RetryPolicy = DEFAULT_RETRY) -> DriftSummary | None:
    """Run once a scheduled scan is saved, wherever it ran: compute the drift, keep it in the
    store and, when something changed, post it to the schedule's webhooks and keep the
    delivery log beside it (``summary["deliveries"]``). Synchronous like the store (webhook
    retries sleep here): async callers use ``asyncio.to_thread``. A stored webhook that is no
    longer valid is logged as not sent; it never fails the scan."""
    drift = compute_drift(store, scan_id)
    if drift is None:
        return None
    document = drift.model_dump(mode="json")
    store.save_drift(scan_id, drift.previous_scan_id, document)
    schedule = store.get_schedule(drift.schedule_id)
    if not (drift.changed and schedule.webhooks):
        return drift
    targets: list[WebhookTarget] = []
    deliveries: list[Delivery] = []
    for hook in schedule.webhooks:
        try:
            targets.append(WebhookTarget(hook.url, hook.secret_env))
        except ValueError as exc:
            deliveries.append(not_sent(hook.url, DRIFT_EVENT, f"invalid webhook: {exc}"))
    deliveries += asyncio.run(deliver_all(targets, DRIFT_EVENT, document, policy))
    for delivery in deliveries:
        if not delivery.delivered:
            log.warning("webhook %s for schedule %s not delivered: %s", delivery.url,
                        schedule.name, delivery.error)
    store.save_drift(scan_id, drift.previous_scan_id,
                     {**document, "deliveries": [d.model_dump(mode="json") for d in deliveries]})
    return drift


def deliveries_of(store: ScanStore, scan_id: str) -> list[Delivery]:
    """The webhook delivery log kept with a scan's drift (empty when none was sent)."""
    drift = store.get_drift(scan_id)
    return [Delivery.model_validate(d) for d in (drift.summary if drift else {})
            .get("deliveries", [])]


def _devices(result: ScanResult, keys: dict[str, str], wanted: set[str]) -> list[DeviceChange]:
    """The devices of ``result`` whose store key is in ``wanted``, one per key, by address."""
    changes: dict[str, DeviceChange] = {}
    for device in sorted(result.devices, key=lambda d: d.address):
        key = keys.get(device.address)
        if key is not None and key in wanted and key not in changes:
            label = " ".join(part for part in (device.manufacturer, device.model) if part)
            changes[key] = DeviceChange(key=key, address=device.address, label=label)
    return list(changes.values())

