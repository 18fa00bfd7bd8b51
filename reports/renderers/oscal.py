"""OSCAL 1.1.3 Assessment Results (JSON): the scan as a NIST OSCAL assessment-results document.

Mapping (the renderer evaluates nothing; it re-expresses what the ScanResult holds):

- ``metadata``: title, last-modified (the scan's end, else start), version (the tool version),
  oscal-version, scan id and profile as properties.
- ``import-ap``: a network scan has no OSCAL assessment plan, so ``href`` points at a back-matter
  resource that says so and records the scan plan (targets, ports, profile).
- ``results[0]``: start/end of the scan; ``local-definitions`` holds one inventory item per
  device (ipv4-address/ipv6-address, mac-address, fqdn, serial-number as OSCAL names; vendor,
  manufacturer, model, firmware in the iotbaseline namespace) and iotbaseline as the assessment
  tool; ``reviewed-controls`` lists every framework clause the verdicts cover; one observation
  per finding (method TEST, type finding, the device as subject, each recorded exchange as
  relevant evidence, collected at the finding's time); one OSCAL finding per FAIL or
  INCONCLUSIVE clause verdict, targeting the clause as an objective (state not-satisfied,
  reason ``fail`` or ``other``) and relating the observations behind it; probe errors go to the
  assessment log.
- Clause ids such as ``5.2.6`` are not OSCAL tokens (a token starts with a letter), so control
  and objective ids are ``<framework>_<clause>`` (``iso-iec-27402-2023_5.2.6``); the plain clause
  id is kept as a property.
- UUIDs are version 5, derived from the scan id and a key naming the object, so the same scan
  renders to the same document.

Device-chosen text is neutralised: property values (plain strings) have invisible and control
characters written as visible escapes and are cut to one line; prose fields (titles,
descriptions, remarks — Markdown in OSCAL) additionally get the Markdown punctuation that opens
inline markup backslash-escaped and ``<``, ``>``, ``&`` as entities, so an OSCAL viewer renders
them as text: no link, image, raw HTML, code span or emphasis can pass through. The JSON is written
ASCII-only, so no raw control or bidi character reaches a terminal either.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from reports.compliance import load_frameworks
from reports.renderers.base import Renderer
from reports.renderers.text import cap, visible
from scanner.models import ClauseVerdict, Device, Exchange, Finding, ScanResult, Verdict

OSCAL_VERSION = "1.1.3"
NS = "https://iotbaseline.example/ns/oscal"  # namespace of the iotbaseline property names

PROP_MAX = 200  # characters of device text in a property value
TITLE_MAX = 300
TEXT_MAX = 4000
EVIDENCE_MAX = 1000  # characters of one exchange's data
EVIDENCE_ITEMS_MAX = 40  # exchanges kept per observation
LOG_MAX = 500  # probe errors kept in the assessment log

# Markdown punctuation that can open inline markup (links and images need "[" or "<", raw HTML
# "<", code spans "`", emphasis "*" "_", GFM tables "|" and strikethrough "~").
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]")
_REPORTED = (Verdict.FAIL, Verdict.INCONCLUSIVE)




def plain(text: object, limit: int = PROP_MAX) -> str:
    """A property value: one line, no leading or trailing space, visible escapes, capped."""
    return cap(visible(str(text)[: limit * 4]).strip(), limit)


def markup(text: object, limit: int = TEXT_MAX, multiline: bool = False) -> str:
    """Prose (OSCAL markup): visible escapes, Markdown punctuation escaped, HTML as entities."""
    raw = str(text)[: limit * 4].replace("\r\n", "\n")
    safe = visible(cap(raw, limit), keep="\n" if multiline else "")
    safe = _MD_SPECIAL.sub(r"\\\1", safe)
    return safe.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def token(*parts: str) -> str:
    """An OSCAL token (XML NCName): letters, digits, ``.``, ``-``, ``_``; starts with a letter."""
    text = _NOT_TOKEN.sub("-", "_".join(parts)) or "x"
    return text if text[0].isalpha() or text[0] == "_" else "c_" + text


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, the form OSCAL's date-time-with-timezone pattern accepts."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


class _Ids:
    """Deterministic UUIDs: version 5, in a namespace derived from the scan id."""

    def __init__(self, scan_id: str) -> None:
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:iotbaseline:scan:{scan_id}")

    def __call__(self, *key: str) -> str:
        return str(uuid.uuid5(self.namespace, "\x1f".join(key)))


def _prop(name: str, value: object, ns: str | None = NS) -> dict[str, str] | None:
    text = plain(value)
    if not text:
        return None
    prop = {"name": name, "value": text}
    if ns:
        prop["ns"] = ns
    return prop


def _props(*props: dict[str, str] | None) -> dict[str, list[dict[str, str]]]:
    """``{"props": [...]}`` without the empty ones, or nothing (OSCAL arrays need an item)."""
    kept = [p for p in props if p is not None]
    return {"props": kept} if kept else {}


def _address_props(address: str) -> list[dict[str, str] | None]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [_prop("address", address)]
    return [_prop("ipv4-address" if ip.version == 4 else "ipv6-address", str(ip), ns=None)]


def _inventory_item(ids: _Ids, device: Device) -> dict[str, Any]:
    label = " ".join(part for part in (device.manufacturer, device.model) if part)
    description = f"Network device {device.address}" + (f" ({label})" if label else "") + \
        f", found by {', '.join(device.discovered_by) or 'the scan'}."
    return {
        "uuid": ids("device", device.address),
        "description": markup(description, TITLE_MAX),
        **_props(
            *_address_props(device.address),
            _prop("mac-address", device.mac, ns=None)
            if device.mac and _MAC.match(device.mac) else None,
            *(_prop("fqdn", name, ns=None) for name in device.hostnames[:5]),
            _prop("serial-number", device.serial, ns=None) if device.serial else None,
            _prop("vendor", device.vendor) if device.vendor else None,
            _prop("manufacturer", device.manufacturer) if device.manufacturer else None,
            _prop("model", device.model) if device.model else None,
            _prop("firmware", device.firmware) if device.firmware else None,
            _prop("is-scanned", "yes", ns=None),
        ),
    }


def _bare_inventory_item(ids: _Ids, address: str) -> dict[str, Any]:
    """A device named by a finding or verdict but missing from the device list."""
    return {"uuid": ids("device", address),
            "description": markup(f"Network device {address} (no inventory record).",
                                  TITLE_MAX),
            **_props(*_address_props(address), _prop("is-scanned", "yes", ns=None))}


def _evidence(exchanges: list[Exchange]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for exchange in exchanges[:EVIDENCE_ITEMS_MAX]:
        words = {"sent": "sent to", "received": "received from", "event": "event on"}
        text = f"{timestamp(exchange.at)} {words.get(exchange.direction, exchange.direction)} " \
               f"{exchange.endpoint}: {exchange.data}"
        items.append({
            "description": markup(text, EVIDENCE_MAX),
            **_props(_prop("direction", exchange.direction), _prop("at", timestamp(exchange.at)),
                     _prop("endpoint", exchange.endpoint),
                     _prop("truncated", "yes") if exchange.truncated else None),
        })
    if len(exchanges) > EVIDENCE_ITEMS_MAX:
        items.append({"description": markup(
            f"{len(exchanges) - EVIDENCE_ITEMS_MAX} further exchange(s) are in report.json.")})
    return items or [{"description": "No protocol exchange was recorded for this finding; its "
                                     "summary states what was observed."}]


def _observation(ids: _Ids, finding: Finding, tool: str) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "uuid": ids("observation", finding.id),
        "title": markup(finding.title, TITLE_MAX),
        "description": markup(finding.summary),
        **_props(_prop("finding-id", finding.id), _prop("check-id", finding.check_id),
                 _prop("severity", finding.severity.value),
                 _prop("confidence", finding.confidence.value),
                 _prop("port", finding.port) if finding.port is not None else None,
                 _prop("transport", finding.transport) if finding.transport else None,
                 _prop("protocol", finding.protocol) if finding.protocol else None),
        "methods": ["TEST"],
        "types": ["finding"],
        "origins": [{"actors": [{"type": "tool", "actor-uuid": tool}]}],
        "subjects": [{"subject-uuid": ids("device", finding.device), "type": "inventory-item",
                      "title": markup(finding.device, TITLE_MAX)}],
        "relevant-evidence": _evidence(finding.evidence),
        "collected": timestamp(finding.found_at),
    }
    if finding.remediation.strip():
        observation["remarks"] = markup(f"Remediation: {finding.remediation}")
    return observation


def _finding(ids: _Ids, verdict: ClauseVerdict, observed: set[str], tool: str) -> dict[str, Any]:
    failed = verdict.verdict is Verdict.FAIL
    related = [{"observation-uuid": ids("observation", fid)}
               for fid in verdict.findings if fid in observed]
    remarks = []
    if verdict.answer is not None:
        who = f" ({verdict.answer.assessor})" if verdict.answer.assessor else ""
        remarks.append(f"Assessor answer{who}: {verdict.answer.verdict.value} — "
                       f"{verdict.answer.justification}")
    if verdict.verdict is Verdict.INCONCLUSIVE:
        remarks.append("Inconclusive: the clause is not shown to be met; see the reason.")
    finding: dict[str, Any] = {
        "uuid": ids("finding", verdict.framework, verdict.device, verdict.clause),
        "title": markup(f"{verdict.framework} {verdict.clause} {verdict.title} on "
                        f"{verdict.device}: {verdict.verdict.value}", TITLE_MAX),
        "description": markup(verdict.reason),
        **_props(_prop("framework", verdict.framework), _prop("clause", verdict.clause),
                 _prop("device", verdict.device), _prop("verdict", verdict.verdict.value),
                 _prop("automated-verdict", verdict.automated.value)
                 if verdict.automated is not None else None,
                 _prop("coverage", verdict.coverage) if verdict.coverage else None),
        "origins": [{"actors": [{"type": "tool", "actor-uuid": tool}]}],
        "target": {
            "type": "objective-id",
            "target-id": token(verdict.framework, verdict.clause),
            "title": markup(verdict.title, TITLE_MAX),
            "status": {"state": "not-satisfied", "reason": "fail" if failed else "other"},
        },
    }
    if related:
        finding["related-observations"] = related
    if remarks:
        finding["remarks"] = markup(" ".join(remarks))
    return finding


def _reviewed_controls(result: ScanResult) -> dict[str, Any]:
    titles = {framework.id: framework.title for framework in load_frameworks()}
    clauses: dict[str, dict[str, None]] = {}
    for verdict in result.verdicts:
        clauses.setdefault(verdict.framework, {})[verdict.clause] = None
    selections: list[dict[str, Any]] = [{
        "description": markup(titles.get(framework, framework), TITLE_MAX),
        **_props(_prop("framework", framework)),
        "include-controls": [{"control-id": token(framework, clause)} for clause in clause_ids],
    } for framework, clause_ids in clauses.items()]
    if not selections:
        selections = [{"description": "This result holds no clause verdicts.",
                       "include-all": {}}]
    return {"description": "The clauses of each compliance framework iotbaseline assessed. A "
                           "control id is the framework id and the clause id joined by an "
                           "underscore.",
            "control-selections": selections}


def _log(ids: _Ids, result: ScanResult) -> dict[str, Any]:
    entries = [{
        "uuid": ids("error", str(index)),
        "title": markup(f"Probe error: {error.check_id} on {error.device}"
                        + (f":{error.port}" if error.port is not None else ""), TITLE_MAX),
        "description": markup(f"{error.kind}: {error.reason}"),
        "start": timestamp(error.at),
        **_props(_prop("check-id", error.check_id), _prop("device", error.device),
                 _prop("kind", error.kind)),
    } for index, error in enumerate(result.errors[:LOG_MAX])]
    return {"assessment-log": {"entries": entries}} if entries else {}


def _devices(ids: _Ids, result: ScanResult) -> list[dict[str, Any]]:
    items = [_inventory_item(ids, device) for device in result.devices]
    known = {device.address for device in result.devices}
    named: Iterable[str] = [*(f.device for f in result.findings),
                            *(v.device for v in result.verdicts)]
    items += [_bare_inventory_item(ids, address) for address in dict.fromkeys(named)
              if address not in known]
    return items


def build(result: ScanResult) -> dict[str, Any]:
    """The OSCAL document as plain data (``render`` serialises it)."""
    meta = result.meta
    ids = _Ids(meta.scan_id)
    tool = ids("component", "iotbaseline")
    plan = ids("resource", "assessment-plan")
    observed = {finding.id for finding in result.findings}
    observations = [_observation(ids, finding, tool) for finding in result.findings]
    findings = [_finding(ids, verdict, observed, tool) for verdict in result.verdicts
                if verdict.verdict in _REPORTED]
    end = meta.finished_at
    state = "complete" if meta.complete else \
        f"incomplete ({meta.interrupted_reason or meta.stop_reason or 'stopped early'})"
    remarks = [f"Scan {state}."] + [f"Discovery note: {note}" for note in
                                    meta.discovery_notes[:20]]
    items = _devices(ids, result)
    result_entry: dict[str, Any] = {
        "uuid": ids("result"),
        "title": markup(f"Network baseline scan with profile {meta.profile}", TITLE_MAX),
        "description": (
            "Black-box network assessment of IoT devices by iotbaseline. Each observation is a "
            "reproducible finding with its protocol transcript; each OSCAL finding is a clause "
            "that failed or could not be decided on one device. A clause without a finding here "
            "either passed (no counterexample found, which a black-box scan cannot turn into "
            "proof), did not apply, or awaits an assessor's answer."),
        "start": timestamp(meta.started_at),
        **({"end": timestamp(end)} if end is not None else {}),
        **_props(_prop("scan-id", meta.scan_id), _prop("profile", meta.profile),
                 _prop("complete", "yes" if meta.complete else "no"),
                 _prop("scope-size", meta.scope_size)),
        "local-definitions": {
            **({"inventory-items": items} if items else {}),
            "assessment-assets": {
                "components": [{
                    "uuid": tool, "type": "software", "title": "iotbaseline",
                    "description": "Network-based baseline auditing of IoT devices.",
                    **_props(_prop("version", meta.tool_version)),
                    "status": {"state": "operational"},
                }],
                "assessment-platforms": [{
                    "uuid": ids("platform", "iotbaseline"),
                    "title": markup(f"iotbaseline {meta.tool_version}", TITLE_MAX),
                    "uses-components": [{"component-uuid": tool}],
                }],
            },
        },
        "reviewed-controls": _reviewed_controls(result),
        **_log(ids, result),
        **({"observations": observations} if observations else {}),
        **({"findings": findings} if findings else {}),
        "remarks": markup(" ".join(remarks)),
    }
    ports = ", ".join(f"{transport} {','.join(map(str, numbers))}"
                      for transport, numbers in meta.ports.items() if numbers)
    return {"assessment-results": {
        "uuid": ids("assessment-results"),
        "metadata": {
            "title": markup(f"iotbaseline assessment results, scan {meta.scan_id}", TITLE_MAX),
            "last-modified": timestamp(end or meta.started_at),
            "version": plain(meta.tool_version) or "unknown",
            "oscal-version": OSCAL_VERSION,
            **_props(_prop("scan-id", meta.scan_id), _prop("profile", meta.profile),
                     _prop("tool", meta.tool)),
        },
        "import-ap": {"href": f"#{plan}",
                      "remarks": "A network scan has no OSCAL assessment plan; the back-matter "
                                 "resource records the scan plan instead."},
        "results": [result_entry],
        "back-matter": {"resources": [{
            "uuid": plan,
            "title": "Scan plan (placeholder for an assessment plan)",
            "description": markup(
                f"Profile {meta.profile}; targets {', '.join(meta.targets)}"
                + (f"; excluded {', '.join(meta.excluded)}" if meta.excluded else "")
                + f"; ports {ports or 'none'}; {meta.scope_size} address(es) in scope."),
        }]},
    }}


def render(result: ScanResult) -> str:
    return json.dumps(build(result), indent=2, ensure_ascii=True) + "\n"


RENDERER = Renderer("oscal", "oscal-assessment-results.json", render)
