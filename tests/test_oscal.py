"""OSCAL Assessment Results: golden output, validation against NIST's JSON schema, references
that resolve, deterministic UUIDs, and hostile device text rendered inert.

``UPDATE_GOLDEN=1 pytest tests/test_oscal.py`` rewrites the golden (review the diff); it holds
the ISO/IEC 27402 verdicts only, so it does not change when a framework file is added.

The schema is NIST's OSCAL 1.1.3 assessment-results JSON schema (tests/schemas/oscal/README.md).
Its token pattern uses ``\\p{L}`` and ``\\p{N}``, which Python's ``re`` lacks, so the
``validator`` fixture swaps in a ``pattern`` keyword that translates them (``\\p{L}`` to
``[^\\W\\d_]``, ``\\p{N}`` to ``\\d``, the latter Nd only). Formats (date-time, uri) are not
checked, there is no format checker, but every OSCAL date-time also carries a pattern, which is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import validators

from reports.renderers import RENDERERS, oscal
from reports.verdicts import assess
from scanner.models import ScanResult, Verdict
from tests.report_fixtures import hostile_result, sample_result

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "sample.oscal-assessment-results.json"
SCHEMA = HERE / "schemas" / "oscal" / "oscal_assessment-results_schema.json"
SCHEMA_SHA256 = "d9e34757f0c12aff61f52b821f0b8f83ba0ba75b3a149a202b08ba82f82bc4c3"
INVISIBLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
ISO = "iso-iec-27402-2023"


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    translated = pattern.replace(r"\p{L}", r"[^\W\d_]").replace(r"\p{N}", r"\d")
    if not re.search(translated, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    text = SCHEMA.read_text("utf-8")
    assert hashlib.sha256(text.encode()).hexdigest() == SCHEMA_SHA256, \
        "the committed OSCAL schema changed; see tests/schemas/oscal/README.md"
    schema = json.loads(text)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    cls = validators.extend(jsonschema.Draft7Validator, {"pattern": _pattern})
    return cls(schema)


def _errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(document)]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _uuids(node: Any, key: str) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, str):
                yield value
            yield from _uuids(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _uuids(value, key)


@pytest.fixture(scope="module")
def sample() -> ScanResult:
    return sample_result()


@pytest.fixture(scope="module")
def document(sample: ScanResult) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(oscal.render(sample))
    return parsed


def test_golden(sample: ScanResult) -> None:
    """On the ISO/IEC 27402 verdicts only, so adding a framework file elsewhere does not change
    it; the other tests take every framework present."""
    text = oscal.render(sample.model_copy(update={
        "verdicts": [v for v in sample.verdicts if v.framework == ISO],
        "device_verdicts": [d for d in sample.device_verdicts if d.framework == ISO]}))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, "utf-8")
    assert GOLDEN.exists(), f"no golden {GOLDEN.name}: run with UPDATE_GOLDEN=1"
    assert text == GOLDEN.read_text("utf-8"), \
        "OSCAL output changed: rerun with UPDATE_GOLDEN=1 and review the diff"


def test_registration() -> None:
    assert oscal.RENDERER.name == "oscal"
    assert oscal.RENDERER.filename == "oscal-assessment-results.json"
    if "oscal" in RENDERERS:  # once the line is added to reports/renderers/__init__.py
        assert RENDERERS["oscal"] is oscal.RENDERER


def test_sample_validates(validator: jsonschema.protocols.Validator,
                          document: dict[str, Any]) -> None:
    assert _errors(validator, document) == []


def test_the_validator_rejects_what_nist_forbids(validator: jsonschema.protocols.Validator,
                                                 document: dict[str, Any]) -> None:
    result = document["assessment-results"]["results"][0]
    finding = result["findings"][0]
    for field, bad in (("target-id", "5.2.6"), ("type", "clause")):
        broken = json.loads(json.dumps(document))
        broken["assessment-results"]["results"][0]["findings"][0]["target"][field] = bad
        assert _errors(validator, broken), field
    broken = json.loads(json.dumps(document))
    broken["assessment-results"]["results"][0]["start"] = "29/11/2026"
    assert _errors(validator, broken)
    assert finding["target"]["target-id"].startswith(("iso-", "etsi-", "nistir-"))


def test_hostile_and_empty_results_validate(validator: jsonschema.protocols.Validator) -> None:
    hostile = json.loads(oscal.render(hostile_result()))
    assert _errors(validator, hostile) == []
    bare = sample_result().model_copy(update={
        "devices": [], "findings": [], "errors": [], "check_runs": [], "verdicts": [],
        "device_verdicts": [], "meta": sample_result().meta.model_copy(
            update={"finished_at": None, "complete": False, "stop_reason": "interrupted"})})
    empty = json.loads(oscal.render(bare))
    assert _errors(validator, empty) == []
    selections = empty["assessment-results"]["results"][0]["reviewed-controls"]
    assert selections["control-selections"][0]["include-all"] == {}


def test_metadata_and_plan(document: dict[str, Any], sample: ScanResult) -> None:
    root = document["assessment-results"]
    assert root["metadata"]["oscal-version"] == oscal.OSCAL_VERSION == "1.1.3"
    assert root["metadata"]["last-modified"] == "2026-11-29T09:01:35Z"
    assert root["metadata"]["version"] == sample.meta.tool_version
    plan = root["import-ap"]["href"]
    resources = {r["uuid"] for r in root["back-matter"]["resources"]}
    assert plan.startswith("#") and plan[1:] in resources
    result = root["results"][0]
    assert (result["start"], result["end"]) == ("2026-11-29T09:00:00Z", "2026-11-29T09:01:35Z")


def test_one_observation_per_finding(document: dict[str, Any], sample: ScanResult) -> None:
    result = document["assessment-results"]["results"][0]
    observations = result["observations"]
    assert len(observations) == len(sample.findings)
    by_id = {next(p["value"] for p in o["props"] if p["name"] == "finding-id"): o
             for o in observations}
    for finding in sample.findings:
        observation = by_id[finding.id]
        assert observation["methods"] == ["TEST"] and observation["types"] == ["finding"]
        assert observation["collected"] == oscal.timestamp(finding.found_at)
        assert len(observation["relevant-evidence"]) == len(finding.evidence)
        assert observation["subjects"][0]["type"] == "inventory-item"


def test_one_oscal_finding_per_failed_or_inconclusive_verdict(document: dict[str, Any],
                                                             sample: ScanResult) -> None:
    result = document["assessment-results"]["results"][0]
    wanted = [v for v in sample.verdicts if v.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)]
    assert len(result["findings"]) == len(wanted) > 0
    states = Counter((f["target"]["status"]["state"], f["target"]["status"]["reason"])
                     for f in result["findings"])
    assert states == Counter({("not-satisfied", "fail"): sum(
        v.verdict is Verdict.FAIL for v in wanted), ("not-satisfied", "other"): sum(
        v.verdict is Verdict.INCONCLUSIVE for v in wanted)})
    iso_526 = next(f for f in result["findings"]
                   if f["target"]["target-id"] == "iso-iec-27402-2023_5.2.6")
    assert iso_526["target"]["type"] == "objective-id"
    assert len(iso_526["related-observations"]) == 2  # the telnet findings on 192.0.2.5
    answered = next(f for f in result["findings"]
                    if f["target"]["target-id"] == "iso-iec-27402-2023_5.1.3")
    assert "No disclosure policy is published." in answered["remarks"]


def test_reviewed_controls_list_every_assessed_clause(document: dict[str, Any],
                                                     sample: ScanResult) -> None:
    selections = document["assessment-results"]["results"][0]["reviewed-controls"][
        "control-selections"]
    listed = {c["control-id"] for s in selections for c in s["include-controls"]}
    assert listed == {oscal.token(v.framework, v.clause) for v in sample.verdicts}
    assert len(selections) == len({v.framework for v in sample.verdicts})


def test_references_resolve_and_uuids_are_unique(document: dict[str, Any]) -> None:
    root = document["assessment-results"]
    result = root["results"][0]
    local = result["local-definitions"]
    inventory = {item["uuid"] for item in local["inventory-items"]}
    components = {c["uuid"] for c in local["assessment-assets"]["components"]}
    observations = {o["uuid"] for o in result["observations"]}
    assert set(_uuids(result["observations"], "subject-uuid")) <= inventory
    assert set(_uuids(result, "actor-uuid")) <= components
    assert set(_uuids(result["findings"], "observation-uuid")) <= observations
    assert set(_uuids(local, "component-uuid")) <= components
    defined = list(_uuids(root, "uuid"))
    assert len(defined) == len(set(defined))
    for value in defined:
        assert uuid.UUID(value).version == 5


def test_inventory_items_carry_device_properties(document: dict[str, Any]) -> None:
    items = document["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
    camera = next(i for i in items if {"name": "ipv4-address", "value": "192.0.2.5"}
                  in i["props"])
    props = {p["name"]: p for p in camera["props"]}
    assert props["mac-address"]["value"] == "24:6f:28:aa:bb:cc"
    assert "ns" not in props["mac-address"] and "ns" not in props["ipv4-address"]
    assert {name: props[name]["value"] for name in ("vendor", "model", "firmware")} == {
        "vendor": "Espressif Inc.", "model": "CAM-9000", "firmware": "2.1.7"}
    assert props["model"]["ns"] == oscal.NS


def test_deterministic_and_scoped_to_the_scan(sample: ScanResult) -> None:
    assert oscal.render(sample) == oscal.render(sample)
    other = sample.model_copy(update={"meta": sample.meta.model_copy(
        update={"scan_id": "00000000-0000-4000-8000-000000000002"})})
    first = set(_uuids(json.loads(oscal.render(sample)), "uuid"))
    second = set(_uuids(json.loads(oscal.render(other)), "uuid"))
    assert first.isdisjoint(second)


def test_renderer_evaluates_nothing(sample: ScanResult) -> None:
    """With every verdict removed the document has no OSCAL findings: it presents, never
    judges."""
    stripped = sample.model_copy(update={"verdicts": [], "device_verdicts": []})
    result = json.loads(oscal.render(stripped))["assessment-results"]["results"][0]
    assert "findings" not in result
    assert len(result["observations"]) == len(sample.findings)
    again = assess(stripped)
    assert len(json.loads(oscal.render(again))["assessment-results"]["results"][0]
               ["findings"]) > 0


def _prose(node: Any) -> Iterator[str]:
    """Values of OSCAL markup fields (rendered as Markdown by OSCAL viewers)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("title", "description", "remarks") and isinstance(value, str):
                yield value
            else:
                yield from _prose(value)
    elif isinstance(node, list):
        for value in node:
            yield from _prose(value)


def test_hostile_text_is_inert() -> None:
    text = oscal.render(hostile_result())
    assert text.isascii()  # no raw control or bidi character can reach a terminal
    document = json.loads(text)
    for value in _strings(document):
        bad = [c for c in value if unicodedata.category(c) in INVISIBLE and c != "\n"]
        assert not bad, f"invisible characters {bad!r} in {value[:80]!r}"
        assert len(value) < 6000
    prose = list(_prose(document))
    for value in prose:  # Markdown fields: no raw HTML, link or image can open
        assert "<" not in value and re.search(r"(?<!\\)\[", value) is None, value[:120]
    joined = "\n".join(prose)
    assert "&lt;script&gt;" in joined and "\\x1b" in joined and "\\u202e" in joined
    items = document["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
    model = next(p["value"] for i in items for p in i.get("props", []) if p["name"] == "model")
    # property values are plain text (not Markdown): kept readable, one line, escapes visible
    assert model.startswith('=HYPERLINK("http://x")<script>')
    assert "\\x1b" in model and "\n" not in model and model == model.strip()


def test_markup_and_plain_helpers() -> None:
    assert oscal.markup("[x](javascript:alert(1)) *em* `code` <b>&") == \
        "\\[x\\](javascript:alert(1)) \\*em\\* \\`code\\` &lt;b&gt;&amp;"
    assert oscal.markup("a\nb") == "a\\\\x0ab" and oscal.markup("a\nb", multiline=True) == "a\nb"
    assert oscal.plain("  x\x1b[31m\n ") == "x\\x1b[31m\\x0a"
    assert oscal.plain("\u200b") == "\\u200b"
    assert oscal.plain("A" * 500).endswith("more characters in report.json]")
    assert oscal.token("iso-iec-27402-2023", "5.2.6") == "iso-iec-27402-2023_5.2.6"
    assert oscal.token("5", "x y") == "c_5_x-y"
