"""Probe contract: broken plugins isolated, framework data consistent, evaluation pure."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from probes.api import Observation, Probe, ProbeMetadata, Target
from probes.registry import ENTRY_POINT_GROUP, load_probes
from probes.telnet import TelnetExposed
from reports.compliance import clauses_by_check, load_frameworks
from reports.schema_tools import committed_schema, generated_schema
from scanner.models import Device, Intrusiveness, Service, Severity


def _metadata(check_id: str = "demo-check") -> ProbeMetadata:
    return ProbeMetadata(check_id=check_id, title="A demo condition holds", description="d",
                         severity=Severity.LOW, intrusiveness=Intrusiveness.SAFE,
                         protocols=("http",), remediation="r")


class _Good(Probe):
    metadata = _metadata()

    async def collect(self, ctx):  # type: ignore[no-untyped-def]
        return {}

    def evaluate(self, target, facts):  # type: ignore[no-untyped-def]
        return []


class _Clash(_Good):
    metadata = _metadata("telnet-exposed")


class _BadId(_Good):
    metadata = _metadata("Bad_ID")


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("iotb_test_plugins")
    module.Good, module.Clash, module.BadId = _Good, _Clash, _BadId  # type: ignore[attr-defined]
    module.NotAProbe = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "iotb_test_plugins", module)
    return "iotb_test_plugins"


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_builtins_load_through_entry_points() -> None:
    probes, errors = load_probes()
    assert not errors
    ids = {lp.probe.metadata.check_id for lp in probes}
    assert "telnet-exposed" in ids
    assert all(lp.builtin for lp in probes if lp.source.startswith("iotbaseline "))


def test_broken_plugins_become_load_errors(plugin_module: str) -> None:
    entries = [
        *entry_points(group=ENTRY_POINT_GROUP),
        _ep("demo-check", f"{plugin_module}:Good"),
        _ep("telnet-exposed", f"{plugin_module}:Clash"),
        _ep("Bad_ID", f"{plugin_module}:BadId"),
        _ep("not-a-probe", f"{plugin_module}:NotAProbe"),
        _ep("missing-module", "iotb_no_such_module:Thing"),
        _ep("wrong-name", f"{plugin_module}:Good"),
    ]
    probes, errors = load_probes(entries)
    ids = [lp.probe.metadata.check_id for lp in probes]
    assert ids.count("telnet-exposed") == 1
    telnet = next(lp for lp in probes if lp.probe.metadata.check_id == "telnet-exposed")
    assert isinstance(telnet.probe, TelnetExposed)  # the built-in wins
    assert "demo-check" in ids
    reasons = {e.entry_point: e.reason for e in errors}
    assert "already provided" in reasons["telnet-exposed"]
    assert "kebab-case" in reasons["Bad_ID"]
    assert "not a Probe subclass" in reasons["not-a-probe"]
    assert "ModuleNotFoundError" in reasons["missing-module"]
    assert "differs from check id" in reasons["wrong-name"]


def test_every_framework_check_exists_and_every_check_maps() -> None:
    known = {lp.probe.metadata.check_id for lp in load_probes()[0]}
    frameworks = load_frameworks()
    assert any(f.id == "iso-iec-27402-2023" for f in frameworks)
    for framework in frameworks:
        for clause in framework.clauses:
            for check in clause.checks:
                assert check.id in known, f"{framework.id} {clause.id} names unknown {check.id}"
    for check_id in known:
        assert clauses_by_check().get(check_id), f"{check_id} maps to no clause"


def test_iso_27402_lists_every_clause() -> None:
    iso = next(f for f in load_frameworks() if f.id == "iso-iec-27402-2023")
    expected = [f"5.1.{n}" for n in range(1, 4)] + [f"5.2.{n}" for n in range(1, 9)]
    assert [c.id for c in iso.clauses] == expected
    for clause in iso.clauses:
        assert clause.checks or clause.questions, f"{clause.id} has neither checks nor questions"


def test_committed_schema_matches_models() -> None:
    assert committed_schema() == generated_schema(), \
        "run: python -m reports.schema_tools > reports/schema/report.schema.json"


def _telnet_target() -> Target:
    device = Device(address="127.0.0.9")
    return Target(device, Service(port=23, transport="tcp", protocol="telnet"))


@pytest.mark.parametrize("facts, expected", [
    ({"answered": True, "prompt": "login", "text": "login: "}, "asks for a login"),
    ({"answered": True, "prompt": "shell", "text": "# "}, "offers a command prompt"),
    ({"answered": True, "prompt": None, "text": "hello"}, "cleartext session"),
])
def test_telnet_evaluate(facts: dict[str, object], expected: str) -> None:
    observations = TelnetExposed().evaluate(_telnet_target(), facts)
    assert len(observations) == 1 and isinstance(observations[0], Observation)
    assert expected in observations[0].summary


def test_telnet_evaluate_passes_when_nothing_answered() -> None:
    assert TelnetExposed().evaluate(_telnet_target(), {"answered": False}) == []


def test_telnet_applies_only_to_telnet() -> None:
    probe = TelnetExposed()
    assert probe.applies_to(_telnet_target())
    http = Target(Device(address="127.0.0.9"), Service(port=80, transport="tcp",
                                                        protocol="http"))
    assert not probe.applies_to(http)


def test_readme_lists_every_check() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for loaded in load_probes()[0]:
        assert f"`{loaded.probe.metadata.check_id}`" in readme, loaded.probe.metadata.check_id
