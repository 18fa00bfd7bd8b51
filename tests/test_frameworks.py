"""Compliance frameworks are data: every file loads, names only real checks, covers every check,
cross-references only real clauses, and a new standard is picked up by adding a file."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from probes.registry import LoadedProbe, load_probes
from reports import compliance
from reports.compliance import Framework, FrameworkError, load_frameworks

FRAMEWORK_DIR = Path(str(files("reports").joinpath("frameworks")))
FRAMEWORK_IDS = [path.stem for path in sorted(FRAMEWORK_DIR.glob("*.yaml"))]
ISO = "iso-iec-27402-2023"
ETSI, NIST = "etsi-en-303-645", "nistir-8259a"

# Until the loader hook and the `related` field land in reports/compliance.py (and the ETSI and
# NIST files with them), the tests that need them say so instead of failing everyone's run.
needs_loader_patch = pytest.mark.skipif(
    not hasattr(compliance, "load_frameworks_from")
    or "related" not in compliance.Requirement.model_fields,
    reason="reports/compliance.py has no load_frameworks_from / Requirement.related yet")
needs_crosswalk_files = pytest.mark.skipif(
    not {ETSI, NIST} <= set(FRAMEWORK_IDS),
    reason="the ETSI EN 303 645 and NISTIR 8259A framework files are not installed yet")


@pytest.fixture(scope="module")
def frameworks() -> dict[str, Framework]:
    return {framework.id: framework for framework in load_frameworks()}


@pytest.fixture(scope="module")
def probes() -> list[LoadedProbe]:
    loaded, errors = load_probes()
    assert not [e for e in errors if e.source.startswith("iotbaseline ")], errors
    return loaded


@pytest.fixture(scope="module")
def installed_checks(probes: list[LoadedProbe]) -> set[str]:
    """The built-in checks: a third-party plugin maps itself in its own framework file."""
    return {loaded.probe.metadata.check_id for loaded in probes if loaded.builtin}


def test_every_file_loads_and_is_named_after_its_id() -> None:
    assert ISO in FRAMEWORK_IDS
    loaded = load_frameworks()
    assert loaded[0].id == ISO  # the primary standard comes first, then by file name
    assert [f.id for f in loaded] == [ISO, *(i for i in FRAMEWORK_IDS if i != ISO)]
    assert len({f.id for f in loaded}) == len(loaded)


def test_clause_ids_unique_and_requirements_answerable(frameworks: dict[str, Framework]) -> None:
    for framework in frameworks.values():
        ids = [c.id for c in framework.clauses]
        assert len(ids) == len(set(ids)), framework.id
        for clause in framework.clauses:
            where = f"{framework.id} {clause.id}"
            # a clause with neither checks nor questions could never be anything but MANUAL
            assert clause.checks or clause.questions, where
            assert clause.intent.strip() and len(clause.intent) <= 240, where
            assert len({c.id for c in clause.checks}) == len(clause.checks), where


def test_every_named_check_is_installed(frameworks: dict[str, Framework],
                                       probes: list[LoadedProbe]) -> None:
    available = {loaded.probe.metadata.check_id for loaded in probes}
    unknown = {(f.id, c.id, check.id) for f in frameworks.values() for c in f.clauses
               for check in c.checks if check.id not in available}
    assert not unknown, f"framework files name checks no probe provides: {sorted(unknown)}"


@pytest.mark.parametrize("framework_id", FRAMEWORK_IDS)
def test_every_installed_check_maps_to_a_clause(frameworks: dict[str, Framework],
                                               installed_checks: set[str],
                                               framework_id: str) -> None:
    framework = frameworks[framework_id]
    mapped = {check.id for c in framework.clauses for check in c.checks}
    declared_out = {entry.id for entry in framework.out_of_scope}
    assert not mapped & declared_out, f"{framework_id}: mapped and declared out of scope"
    assert declared_out <= installed_checks, f"{framework_id}: out_of_scope names no check"
    mapped |= declared_out
    assert installed_checks <= mapped, \
        f"{framework_id} maps no clause to {sorted(installed_checks - mapped)}"


@needs_loader_patch
def test_related_references_exist(frameworks: dict[str, Framework]) -> None:
    for framework in frameworks.values():
        for clause in framework.clauses:
            for other, ids in clause.related.items():
                assert other in frameworks, f"{framework.id} {clause.id}: unknown {other}"
                assert other != framework.id, f"{framework.id} {clause.id} relates to itself"
                known = {c.id for c in frameworks[other].clauses}
                missing = set(ids) - known
                assert not missing, f"{framework.id} {clause.id}: {other} has no {missing}"


@needs_loader_patch
@needs_crosswalk_files
def test_crosswalk_spot_checks(frameworks: dict[str, Framework]) -> None:
    etsi = {c.id: c for c in frameworks[ETSI].clauses}
    assert {c.id for c in etsi["5.1-1"].checks} >= {
        "telnet-default-credentials", "http-default-credentials", "ssh-default-credentials"}
    assert {c.id for c in etsi["5.1-5"].checks} == {
        "telnet-brute-force-protection", "http-brute-force-protection",
        "ssh-brute-force-protection", "ftp-brute-force-protection",
        "ssh-password-auth"}  # password logins offered are what brute force needs
    assert {"telnet-exposed", "mqtt-anonymous", "snmp-default-community"} <= {
        c.id for c in etsi["5.5-1"].checks}
    assert {"telnet-exposed", "adb-exposed"} <= {c.id for c in etsi["5.6-1"].checks}
    assert etsi["5.1-1"].related == {ISO: ["5.2.2", "5.2.6"]}
    assert "5.13-1a" in etsi and "6-1" in etsi and "4-1" in etsi
    assert all(etsi[i].related for i in ("5.1-1", "5.5-1", "5.6-1"))
    nist = [c.id for c in frameworks[NIST].clauses]
    assert nist == ["device-identification", "device-configuration", "data-protection",
                    "logical-access-to-interfaces", "software-update",
                    "cybersecurity-state-awareness"]


def test_iso_has_exactly_its_clauses(frameworks: dict[str, Framework]) -> None:
    assert [c.id for c in frameworks[ISO].clauses] == [
        "5.1.1", "5.1.2", "5.1.3", "5.2.1", "5.2.2", "5.2.3", "5.2.4", "5.2.5", "5.2.6",
        "5.2.7", "5.2.8"]


@needs_loader_patch
def test_a_new_framework_file_is_picked_up_without_code(tmp_path: Path) -> None:
    for path in FRAMEWORK_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "notes.txt").write_text("not a framework", "utf-8")
    (tmp_path / "zz-house-baseline.yaml").write_text(yaml.safe_dump({
        "id": "zz-house-baseline", "title": "House baseline",
        "clauses": [{"id": "HB-1", "title": "No Telnet", "intent": "Telnet is off.",
                     "checks": [{"id": "telnet-exposed", "coverage": "full"}],
                     "related": {ISO: ["5.2.6"]}}]}), "utf-8")
    loaded = {f.id: f for f in compliance.load_frameworks_from(tmp_path)}
    assert set(loaded) == {f.id for f in load_frameworks()} | {"zz-house-baseline"}
    assert loaded["zz-house-baseline"].clauses[0].related == {ISO: ["5.2.6"]}


@needs_loader_patch
def test_a_broken_framework_file_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("id: bad\ntitle: Bad\nclauses:\n  - id: x\n    "
                                       "title: X\n    intent: X\n    surprise: 1\n", "utf-8")
    with pytest.raises(FrameworkError, match=r"bad\.yaml"):
        compliance.load_frameworks_from(tmp_path)
