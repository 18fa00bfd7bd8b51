"""Progress for people: a live rich display on a terminal, plain log lines otherwise.

Everything goes to stderr; stdout is reserved for report payloads.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from scanner.models import Device

log = logging.getLogger("iotbaseline")


class ScanProgress:
    """Counts hosts, devices, probes and findings; renders live when stderr is a terminal."""

    def __init__(self, scope_size: int, live: bool | None = None) -> None:
        self.scope_size = scope_size
        self.hosts_done = self.hosts_alive = self.devices = 0
        self.probes_total = self.probes_done = self.findings = 0
        self.live = sys.stderr.isatty() if live is None else live
        self._progress: Progress | None = None
        self._hosts_task: TaskID | None = None
        self._probes_task: TaskID | None = None

    def __enter__(self) -> ScanProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False)
            self._progress.start()
            self._hosts_task = self._progress.add_task("hosts ", total=self.scope_size,
                                                       extra="")
            self._probes_task = self._progress.add_task("probes", total=0, extra="")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _refresh(self) -> None:
        if self._progress is None or self._hosts_task is None or self._probes_task is None:
            return
        self._progress.update(self._hosts_task, completed=self.hosts_done,
                              extra=f"{self.devices} devices")
        self._progress.update(self._probes_task, total=self.probes_total,
                              completed=self.probes_done, extra=f"{self.findings} findings")

    def host_done(self, alive: bool, device: Device | None) -> None:
        self.hosts_done += 1
        self.hosts_alive += alive
        if device is not None:
            self.devices += 1
            if not self.live:
                services = ", ".join(f"{s.port}/{s.transport} {s.label}"
                                     for s in device.services[:12])
                log.info("device %s: %s", device.address, services or "no open services")
        self._refresh()

    def probes_planned(self, count: int) -> None:
        self.probes_total += count
        self._refresh()

    def probe_done(self, check_id: str, findings: int) -> None:
        self.probes_done += 1
        self.findings += findings
        if findings and not self.live:
            log.info("%s: %d finding(s)", check_id, findings)
        self._refresh()
