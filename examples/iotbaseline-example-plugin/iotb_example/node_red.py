"""Node-RED's editor open without authentication.

Node-RED (on gateways, PLC add-ons, Raspberry Pi images) ships with ``adminAuth`` unset: its
editor and admin API then deploy flows for anyone who reaches port 1880, and an ``exec`` or
``function`` node runs any command on the host. The check reads three documented admin API
endpoints with GET and never deploys anything:

- ``/auth/login`` names the login scheme (``{}`` when ``adminAuth`` is unset) — also how the
  service is recognised as Node-RED at all; any other web service is not applicable;
- ``/flows`` answers 200 without a token when anonymous users may read (or deploy) flows;
- ``/settings`` gives the version for the report.
"""

from __future__ import annotations

import json
from typing import Any

from probes.api import (
    Facts,
    NotApplicable,
    Observation,
    Probe,
    ProbeContext,
    ProbeMetadata,
    Target,
)
from scanner.http import HttpResponse
from scanner.models import Intrusiveness, Severity

# Node types that run code on the host: a flow readable or deployable with them is a shell.
CODE_NODE_TYPES = frozenset({"exec", "function", "python-function", "pythonshell in"})
LOGIN_SCHEMES = frozenset({"credentials", "strategy"})  # what /auth/login may name
JSON_REQUEST = {"Accept": "application/json", "Node-RED-API-Version": "v2"}


def json_body(response: HttpResponse) -> Any:
    """The body as JSON, or None: hostile bodies (not JSON, nested past the parser's recursion
    limit, truncated by the body cap) are facts, not crashes."""
    if response.status != 200 or response.truncated:
        return None
    try:
        return json.loads(response.body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None


def login_scheme(document: Any) -> str | None:
    """``none`` when Node-RED asks for no login, its scheme otherwise; None if not Node-RED."""
    if not isinstance(document, dict):
        return None
    if not document:
        return "none"
    scheme = document.get("type")
    return scheme if scheme in LOGIN_SCHEMES else None


def flow_nodes(document: Any) -> list[dict[str, Any]] | None:
    """The nodes of a /flows answer (API v2 wraps them in ``flows``, v1 is the bare list)."""
    nodes = document.get("flows") if isinstance(document, dict) else document
    if not isinstance(nodes, list):
        return None
    return [node for node in nodes if isinstance(node, dict)]


class NodeRedEditorUnauthenticated(Probe):
    metadata = ProbeMetadata(
        check_id="node-red-editor-unauthenticated",
        title="The Node-RED editor requires authentication",
        description="Node-RED's editor deploys flows, and a flow runs commands on the host "
                    "(exec and function nodes): without adminAuth, anyone who reaches the port "
                    "controls the device. With adminAuth but an anonymous read permission, "
                    "the flows (logic, endpoints, inline secrets) are readable by anyone.",
        severity=Severity.CRITICAL,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("http",),
        remediation="Set adminAuth in settings.js with users and bcrypt password hashes and no "
                    "anonymous default permission; serve the editor over HTTPS only, or not "
                    "at all (httpAdminRoot: false) on devices that do not need it.",
        references=("https://nodered.org/docs/user-guide/runtime/securing-node-red",),
        categories=("unauthenticated-access",),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        scheme = login_scheme(json_body(await ctx.http("GET", "/auth/login",
                                                       headers=JSON_REQUEST)))
        if scheme is None:
            raise NotApplicable("no Node-RED admin API on this service")
        ctx.note(f"Node-RED admin API found; /auth/login names login scheme {scheme!r}")
        flows = await ctx.http("GET", "/flows", headers=JSON_REQUEST)
        nodes = flow_nodes(json_body(flows))
        settings = json_body(await ctx.http("GET", "/settings", headers=JSON_REQUEST))
        version = settings.get("version") if isinstance(settings, dict) else None
        code_nodes = sum(node.get("type") in CODE_NODE_TYPES for node in nodes or [])
        if nodes is not None:
            ctx.note(f"/flows without a token: {len(nodes)} node(s), {code_nodes} running code")
        return {"login_scheme": scheme, "flows_status": flows.status,
                "flows_readable": nodes is not None, "nodes": len(nodes or []),
                "code_nodes": code_nodes, "version": str(version)[:40] if version else "",
                "url": flows.url}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        if not facts.get("flows_readable"):
            return []
        product = f"Node-RED {facts.get('version') or ''}".strip()
        details = {"login_scheme": str(facts.get("login_scheme")), "url": str(facts.get("url")),
                   "nodes": str(facts.get("nodes")), "code_nodes": str(facts.get("code_nodes"))}
        flows = (f"GET /flows returned {facts.get('nodes')} node(s), {facts.get('code_nodes')} "
                 f"of them running code, with no token")
        if facts.get("login_scheme") == "none":
            return [Observation(
                summary=f"{product} on port {target.port} has no adminAuth: {flows}, and "
                        "anyone who reaches the port can deploy flows that run commands.",
                key="no-admin-auth", facts=details)]
        return [Observation(
            summary=f"{product} on port {target.port} asks for a login, yet {flows}: "
                    "anonymous users may read the flows.",
            severity=Severity.MEDIUM, key="anonymous-read", facts=details)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {"login scheme": str(facts.get("login_scheme")),
                "/flows without token": f"HTTP {facts.get('flows_status')}",
                "version": str(facts.get("version") or "not disclosed")}
