"""The service's configuration and the typed keys its handlers find shared objects under."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from scanner.service.runner import JobRunner
from scanner.store import ScanStore
from scanner.targets import Scope


@dataclass(frozen=True)
class ServiceConfig:
    store_url: str
    authorised: Scope
    out_root: Path
    secure_cookies: bool = False  # under TLS: the login cookie never travels in clear
    webhook_allow: Scope | None = None  # networks API-made webhooks may reach despite the rules


STORE = web.AppKey("store", ScanStore)
RUNNER = web.AppKey("runner", JobRunner)
CONFIG = web.AppKey("config", ServiceConfig)
