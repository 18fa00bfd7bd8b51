"""The example third-party plugin (examples/iotbaseline-example-plugin) as a user meets it:
installed by pip, listed by ``iotbaseline plugins`` with its package and version, run in a scan
against Node-RED-like aiohttp apps on 127.132.0.x, its findings carrying the clauses its own
mapping file names in every report format. Then what a plugin can get wrong, beyond what
tests/test_probe_api.py (import errors, bad metadata, id collisions) and tests/test_engine.py
(raise in collect, hang, 10k observations, scope escape) already cover: raising in evaluate or
applies_to, huge strings, a collision seen on stderr by a user, and mapping files that try to
remap built-in checks or name clauses that do not exist.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from probes.registry import LoadedProbe, load_probes
from reports.compliance import (
    MAPPING_ENTRY_POINT_GROUP,
    clauses_by_check,
    load_frameworks,
    load_frameworks_from,
    with_plugin_mappings,
)
from reports.renderers import RENDERERS
from scanner.engine import ScanEngine, ScanPlan
from scanner.models import CheckStatus, Intrusiveness, ScanResult, Severity, Verdict
from scanner.storage import REPORT_NAME, ResultStore
from tests import fakes
from tests.helpers import ScanRunner, fast_profile, safe_scope, validate_report

PLUGIN = "iotbaseline-example-plugin"
CHECK = "node-red-editor-unauthenticated"
ISO, ETSI, NIST = "iso-iec-27402-2023", "etsi-en-303-645", "nistir-8259a"
EXPECTED_CLAUSES = {ISO: ["5.2.2", "5.2.6"], ETSI: ["5.5-5"],
                    NIST: ["device-configuration", "logical-access-to-interfaces"]}
OPEN, SECURED, ANONYMOUS_READ, NOT_NODE_RED = (f"127.132.0.{n}" for n in range(1, 5))
NODE_RED_PORT = 1880
TELNET = b"\xff\xfb\x01\r\nlogin: "


def _plugin_version() -> str | None:
    try:
        return version(PLUGIN)
    except PackageNotFoundError:
        return None


needs_plugin = pytest.mark.skipif(
    _plugin_version() is None,
    reason=f"{PLUGIN} is not installed: run `make test-install` "
           f"(or `pip install -e examples/{PLUGIN}`)")


def run_cli(*args: str, pythonpath: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOTBASELINE_EXCLUDE_PORTS": "2024"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                           env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True,
                          text=True, timeout=90, env=env)


# --- Node-RED-like devices ------------------------------------------------------------------


FLOWS = [{"id": "t1", "type": "tab", "label": "Flow 1"},
         {"id": "n1", "type": "inject", "z": "t1"},
         {"id": "n2", "type": "exec", "z": "t1", "command": "uptime"},
         {"id": "n3", "type": "function", "z": "t1", "func": "return msg;"}]


def node_red_app(admin_auth: bool, anonymous_read: bool = False) -> web.Application:
    """Node-RED's admin API as documented: /auth/login names the scheme ({} without
    adminAuth); /flows and /settings need a bearer token unless reads are anonymous."""
    async def login(request: web.Request) -> web.Response:
        if not admin_auth:
            return web.json_response({})
        return web.json_response({"type": "credentials", "prompts": [
            {"id": "username", "type": "text", "label": "Username"},
            {"id": "password", "type": "password", "label": "Password"}]})

    def readable(request: web.Request) -> bool:
        return not admin_auth or anonymous_read or request.headers.get(
            "Authorization") == "Bearer valid-token"

    async def flows(request: web.Request) -> web.Response:
        if not readable(request):
            return web.Response(status=401, text="Unauthorized")
        if request.headers.get("Node-RED-API-Version") == "v2":
            return web.json_response({"rev": "7f3c", "flows": FLOWS})
        return web.json_response(FLOWS)

    async def settings(request: web.Request) -> web.Response:
        if not readable(request):
            return web.Response(status=401, text="Unauthorized")
        return web.json_response({"httpNodeRoot": "/", "version": "3.1.9"})

    async def editor(request: web.Request) -> web.Response:
        return web.Response(text="<html><title>Node-RED</title></html>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/", editor)
    app.router.add_get("/auth/login", login)
    app.router.add_get("/flows", flows)
    app.router.add_get("/settings", settings)
    return app


def plain_web_app() -> web.Application:
    """A web UI whose /auth/login is an ordinary page: not Node-RED, so not applicable."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html><title>Camera</title>Login</html>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


@asynccontextmanager
async def serving(apps: dict[str, web.Application]) -> AsyncIterator[None]:
    runners = []
    try:
        for address, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, address, NODE_RED_PORT).start()
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


# --- the installed plugin -------------------------------------------------------------------


@needs_plugin
@pytest.mark.parametrize("command", [["plugins"], ["plugins", "list"]])
def test_plugins_lists_the_example_with_its_package_and_version(command: list[str]) -> None:
    completed = run_cli(*command)
    assert completed.returncode == 0, completed.stderr
    [line] = [line for line in completed.stdout.splitlines() if line.startswith(CHECK + " ")]
    assert f"{PLUGIN} {_plugin_version()}" in line
    assert line.split()[3:6] == ["safe", "critical", "5.2.2,5.2.6"]
    assert line.endswith("The Node-RED editor requires authentication")
    assert "not loaded" not in completed.stderr  # neither the probe nor its mapping refused
    assert "telnet-exposed" in completed.stdout and "iotbaseline " in completed.stdout


@needs_plugin
def test_the_plugin_maps_its_check_without_editing_our_files() -> None:
    assert clauses_by_check()[CHECK] == EXPECTED_CLAUSES
    shipped = load_frameworks_from(Path(__file__).parents[1] / "reports" / "frameworks")
    assert not any(check.id == CHECK for framework in shipped for clause in framework.clauses
                   for check in clause.checks)  # the mapping lives in the plugin alone


@pytest.fixture
async def node_red_scan(tmp_path: Path) -> AsyncIterator[tuple[ScanResult, Path]]:
    """One scan of four devices with only the plugin's check, every format and framework."""
    probes = [lp for lp in load_probes()[0] if lp.probe.metadata.check_id == CHECK]
    assert probes and not probes[0].builtin
    apps = {OPEN: node_red_app(admin_auth=False), SECURED: node_red_app(admin_auth=True),
            ANONYMOUS_READ: node_red_app(admin_auth=True, anonymous_read=True),
            NOT_NODE_RED: plain_web_app()}
    plan = ScanPlan.build(safe_scope("127.132.0.1-4"), fast_profile(), probes,
                          ports={"tcp": [NODE_RED_PORT], "udp": []})
    plan.formats = list(RENDERERS)
    plan.frameworks = [ISO, ETSI, NIST]
    async with serving(apps):
        result = await ScanEngine(plan, ResultStore(tmp_path)).run()
    validate_report(tmp_path / REPORT_NAME)
    yield result, tmp_path


@needs_plugin
async def test_open_editor_fails_secured_passes_other_web_is_not_applicable(
        node_red_scan: tuple[ScanResult, Path]) -> None:
    result, _ = node_red_scan
    assert result.meta.complete and not result.errors
    runs = {r.device: r for r in result.check_runs if r.check_id == CHECK}
    assert runs[OPEN].status is CheckStatus.FAIL
    assert runs[ANONYMOUS_READ].status is CheckStatus.FAIL
    assert runs[SECURED].status is CheckStatus.PASS  # the negative control
    assert runs[SECURED].details["/flows without token"] == "HTTP 401"
    assert NOT_NODE_RED not in runs  # NotApplicable: no PASS claimed for a camera UI
    findings = {f.device: f for f in result.findings}
    assert set(findings) == {OPEN, ANONYMOUS_READ}
    assert findings[OPEN].severity is Severity.CRITICAL
    assert "no adminAuth" in findings[OPEN].summary and "Node-RED 3.1.9" in findings[OPEN].summary
    assert findings[OPEN].facts["code_nodes"] == "2"
    assert findings[ANONYMOUS_READ].severity is Severity.MEDIUM
    for finding in findings.values():
        assert finding.clauses == EXPECTED_CLAUSES
        sent = [e.data for e in finding.evidence if e.direction == "sent"]
        assert any("/flows" in data for data in sent)  # reproducible: the request is there
        assert any('"flows"' in e.data for e in finding.evidence if e.direction == "received")
    verdicts = {(v.framework, v.clause, v.device): v.verdict for v in result.verdicts}
    assert verdicts[(ETSI, "5.5-5", OPEN)] is Verdict.FAIL
    assert verdicts[(ETSI, "5.5-5", SECURED)] is Verdict.PASS
    assert verdicts[(NIST, "device-configuration", OPEN)] is Verdict.FAIL


def _report(out: Path, name: str) -> str:
    return (out / RENDERERS[name].filename).read_text("utf-8")


@needs_plugin
async def test_the_finding_and_its_clauses_are_in_every_report_format(
        node_red_scan: tuple[ScanResult, Path]) -> None:
    result, out = node_red_scan
    [finding] = [f for f in result.findings if f.device == OPEN]
    flat = [f"{framework}:{clause}" for framework, ids in EXPECTED_CLAUSES.items()
            for clause in ids]

    document = json.loads(_report(out, "json"))
    [mine] = [f for f in document["findings"] if f["id"] == finding.id]
    assert mine["check_id"] == CHECK and mine["clauses"] == EXPECTED_CLAUSES

    rows = list(csv.DictReader(io.StringIO(_report(out, "csv"))))
    [row] = [r for r in rows if r["device"] == OPEN]
    assert row["check_id"] == CHECK and row["clauses"].split(";") == flat

    sarif = json.loads(_report(out, "sarif"))
    [run] = sarif["runs"]
    rule = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == CHECK)
    assert all(ref in json.dumps(rule) for ref in flat)
    [sarif_result] = [r for r in run["results"]
                      if r["ruleId"] == CHECK and r["properties"]["clauses"] == EXPECTED_CLAUSES
                      and OPEN in json.dumps(r["locations"])]
    assert sarif_result["level"] == "error"

    failed = {(suite.get("name"), case.get("classname"), str(case.get("name")).split()[0])
              for suite in ET.fromstring(_report(out, "junit")).iter("testsuite")
              for case in suite.iter("testcase") for failure in case.iter("failure")
              if CHECK in f"{failure.get('message')} {failure.text}"}
    assert {(framework, OPEN, clause) for framework, ids in EXPECTED_CLAUSES.items()
            for clause in ids} <= failed

    markdown = _report(out, "markdown")
    [section] = [part for part in markdown.split("\n#### ") if f"ID: {finding.id};" in part]
    for framework, ids in EXPECTED_CLAUSES.items():
        assert f"- Clauses ({framework}): {', '.join(ids)}" in section

    html = _report(out, "html")
    start = html.index(f'<code class="check">{CHECK}</code>')
    card = html[start:html.index("</article>", start)]
    assert finding.id in card
    for framework, ids in EXPECTED_CLAUSES.items():
        assert f"{', '.join(ids)} <span class=\"muted small\">({framework})" in card

    [oscal] = json.loads(_report(out, "oscal"))["assessment-results"]["results"]
    [observation] = [o for o in oscal["observations"]
                     if {"name": "finding-id", "value": finding.id} in _props(o)]
    assert {"name": "check-id", "value": CHECK} in _props(observation)
    judged = {(_prop(f, "framework"), _prop(f, "clause")) for f in oscal["findings"]
              if _prop(f, "device") == OPEN and _prop(f, "verdict") == "FAIL"
              and {"observation-uuid": observation["uuid"]} in f["related-observations"]}
    assert judged == {(framework, clause) for framework, ids in EXPECTED_CLAUSES.items()
                      for clause in ids}


def _props(element: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": p["name"], "value": p["value"]} for p in element.get("props", [])]


def _prop(element: dict[str, Any], name: str) -> str | None:
    return next((p["value"] for p in _props(element) if p["name"] == name), None)


# --- what a plugin can get wrong ------------------------------------------------------------


def _meta(check_id: str) -> ProbeMetadata:
    return ProbeMetadata(check_id=check_id, title="A plugin condition holds", description="t",
                         severity=Severity.MEDIUM, intrusiveness=Intrusiveness.SAFE,
                         protocols=("telnet",), remediation="none")


class EvaluateRaises(Probe):
    metadata = _meta("plugin-evaluate-raises")

    async def collect(self, ctx: ProbeContext) -> Facts:
        return {}

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        raise KeyError("facts['missing']")


class AppliesToRaises(EvaluateRaises):
    metadata = _meta("plugin-applies-to-raises")

    def applies_to(self, target: Target) -> bool:
        raise AttributeError("'Service' object has no attribute 'vendor'")


HUGE = 1_000_000


class HugeStrings(EvaluateRaises):
    metadata = _meta("plugin-huge-strings")

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        return [Observation(summary="x" * HUGE, key=str(n), facts={"k" * 1000: "v" * HUGE})
                for n in range(3)]

    def summarize(self, facts: Facts) -> dict[str, str]:
        return {f"key {n}": "s" * HUGE for n in range(1000)}


def _with_builtins(*probes: Probe) -> list[LoadedProbe]:
    return [LoadedProbe(p, "tests 0", False) for p in probes] + [
        lp for lp in load_probes()[0] if lp.probe.metadata.check_id == "telnet-exposed"]


async def test_evaluate_and_applies_to_bugs_are_contained(run_scan: ScanRunner) -> None:
    device = await fakes.banner("127.132.1.1", 2323, TELNET)
    try:
        result = await run_scan("127.132.1.1", tcp=[2323],
                                probes=_with_builtins(EvaluateRaises(), AppliesToRaises()))
    finally:
        await device.close()
    errors = {e.check_id: e for e in result.errors}
    assert errors["plugin-evaluate-raises"].kind == "plugin"
    assert "KeyError" in errors["plugin-evaluate-raises"].reason
    assert errors["plugin-applies-to-raises"].kind == "plugin"
    assert "no attribute 'vendor'" in errors["plugin-applies-to-raises"].reason
    statuses = {r.check_id: r.status for r in result.check_runs}
    assert statuses["plugin-evaluate-raises"] is CheckStatus.ERROR
    assert "plugin-applies-to-raises" not in statuses  # skipped, with the error recorded
    assert statuses["telnet-exposed"] is CheckStatus.FAIL  # the built-in still ran


async def test_huge_strings_from_a_plugin_are_capped(run_scan: ScanRunner,
                                                      tmp_path: Path) -> None:
    device = await fakes.banner("127.132.1.2", 2323, TELNET)
    try:
        result = await run_scan("127.132.1.2", tcp=[2323], probes=_with_builtins(HugeStrings()))
    finally:
        await device.close()
    [run] = [r for r in result.check_runs if r.check_id == "plugin-huge-strings"]
    assert len(run.details) <= 16 and all(len(v) <= 256 for v in run.details.values())
    report = next(tmp_path.glob(f"scan-*/{REPORT_NAME}"))
    assert report.stat().st_size < 2_000_000, f"report is {report.stat().st_size} bytes"


# --- third-party packages that misbehave, installed the way pip would -----------------------


def fake_plugin(root: Path, name: str, entry_points: str, module: str) -> Path:
    """A distribution on ``root`` as pip lays it out: a dist-info folder and a module."""
    package = name.replace("-", "_")
    info = root / f"{package}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (root / f"{package}.py").write_text(textwrap.dedent(module))
    return root


PROBE_MODULE = """
    from pathlib import Path

    from probes.api import Probe, ProbeMetadata
    from scanner.models import Intrusiveness, Severity

    MAPPING = Path(__file__).with_name("{package}.yaml")

    class Mine(Probe):
        metadata = ProbeMetadata(
            check_id="{check_id}", title="A third-party condition holds", description="d",
            severity=Severity.LOW, intrusiveness=Intrusiveness.SAFE, protocols=("http",),
            remediation="r")

        async def collect(self, ctx):
            return {{}}

        def evaluate(self, target, facts):
            return []
"""


def _plugin_with_mapping(root: Path, name: str, check_id: str, mapping: str) -> Path:
    package = name.replace("-", "_")
    fake_plugin(root, name, f"""
        [iotbaseline.probes]
        {check_id} = {package}:Mine
        [{MAPPING_ENTRY_POINT_GROUP}]
        {name} = {package}:MAPPING
    """, PROBE_MODULE.format(package=package, check_id=check_id))
    (root / f"{package}.yaml").write_text(textwrap.dedent(mapping))
    return root


ACME_PROVIDES = {"acme-probes 1.0": {"acme-check"}}  # what the probe registry loaded from it


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """``tmp_path`` importable for one test; its modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.mark.parametrize("mapping, reason", [
    ("iso-iec-27402-2023:\n  '5.2.6': [{id: telnet-exposed, coverage: full}]\n",
     "'telnet-exposed' is not a probe this package provides"),
    ("iso-iec-27402-2023:\n  '9.9.9': [{id: acme-check, coverage: partial}]\n",
     "has no clause '9.9.9'"),
    ("acme-house-rules:\n  'R1': [{id: acme-check, coverage: partial}]\n",
     "unknown framework 'acme-house-rules'"),
    ("iso-iec-27402-2023:\n  '5.2.6': [{id: acme-check, coverage: total}]\n",
     "ValidationError"),
    ("iso-iec-27402-2023: [unclosed\n", "MAPPING:2: not valid YAML"),
])
def test_a_bad_mapping_is_refused_whole_and_changes_nothing(on_path: Path, mapping: str,
                                                            reason: str) -> None:
    _plugin_with_mapping(on_path, "acme-probes", "acme-check",
                         mapping + "nistir-8259a:\n  device-configuration: "
                                   "[{id: acme-check, coverage: partial}]\n")
    [dist] = distributions(path=[str(on_path)])
    shipped = load_frameworks()
    merged, errors = with_plugin_mappings(
        shipped, dist.entry_points.select(group=MAPPING_ENTRY_POINT_GROUP), ACME_PROVIDES)
    assert merged == shipped  # not even the valid NIST half was taken
    [error] = errors
    assert error.entry_point == "acme-probes" and error.source == "acme-probes 1.0"
    assert reason in error.reason


def test_a_good_mapping_adds_only_its_own_check(on_path: Path) -> None:
    _plugin_with_mapping(on_path, "acme-probes", "acme-check", """
        iso-iec-27402-2023:
          "5.2.6": [{id: acme-check, coverage: partial}]
    """)
    [dist] = distributions(path=[str(on_path)])
    shipped = load_frameworks()
    merged, errors = with_plugin_mappings(
        shipped, dist.entry_points.select(group=MAPPING_ENTRY_POINT_GROUP), ACME_PROVIDES)
    assert not errors
    before = {(f.id, c.id): [k.id for k in c.checks] for f in shipped for c in f.clauses}
    after = {(f.id, c.id): [k.id for k in c.checks] for f in merged for c in f.clauses}
    assert {key for key in before if before[key] != after[key]} == {(ISO, "5.2.6")}
    assert after[(ISO, "5.2.6")] == [*before[(ISO, "5.2.6")], "acme-check"]


def test_a_mapping_that_is_not_a_file_is_refused(on_path: Path) -> None:
    fake_plugin(on_path, "acme-dict", f"""
        [{MAPPING_ENTRY_POINT_GROUP}]
        acme-dict = acme_dict:MAPPING
    """, "MAPPING = {'iso-iec-27402-2023': {}}\n")
    [dist] = distributions(path=[str(on_path)])
    _, [error] = with_plugin_mappings(
        load_frameworks(), dist.entry_points.select(group=MAPPING_ENTRY_POINT_GROUP), {})
    assert "is not a file" in error.reason


def test_a_user_sees_collisions_and_bad_mappings_on_stderr(tmp_path: Path) -> None:
    root = _plugin_with_mapping(tmp_path, "acme-clash", "telnet-exposed", """
        iso-iec-27402-2023:
          "5.2.6": [{id: telnet-exposed, coverage: full}]
    """)
    listing = run_cli("plugins", pythonpath=root)
    assert listing.returncode == 0
    assert ("not loaded: probe telnet-exposed (acme-clash 1.0): check id 'telnet-exposed' is "
            "already provided by iotbaseline") in listing.stderr
    assert ("not loaded: framework mapping acme-clash (acme-clash 1.0): ValueError: check "
            "'telnet-exposed' is not a probe this package provides") in listing.stderr
    [telnet] = [line for line in listing.stdout.splitlines()
                if line.startswith("telnet-exposed ")]
    assert "iotbaseline " in telnet and "acme-clash" not in listing.stdout

    scan = run_cli("scan", "127.132.2.1", "--ports", "2323", "--profile", "quick",
                   "--timeout", "1", "--out", str(tmp_path / "out"), pythonpath=root)
    assert scan.returncode == 0, scan.stderr
    assert "probe telnet-exposed from acme-clash 1.0 not loaded" in scan.stderr
    assert "already provided by iotbaseline" in scan.stderr
