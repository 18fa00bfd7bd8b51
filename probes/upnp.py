"""UPnP Internet Gateway Device control: WANIPConnection/WANPPPConnection with no authentication.

An IGD whose control endpoint answers anyone lets every host on the LAN — and any malware or
web page that can reach it — open ports through the router (AddPortMapping) and read or change
its WAN connection. The probe reads the device description and the service's SCPD to list the
actions offered, then calls only the read-only ``GetExternalIPAddress``: a SOAP answer with
``NewExternalIPAddress`` proves unauthenticated control. It never calls a write action. Every
URL a device hands out (description, SCPD, control) goes through the gate, so one pointing
outside the scope is refused and never contacted. XML is parsed only with defusedxml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from probes.api import Facts, Observation, Probe, ProbeContext, ProbeMetadata, Target
from scanner.http import HttpResponse
from scanner.http import request as http_request
from scanner.models import Confidence, Intrusiveness, Severity
from scanner.net import ScopeViolation

WAN_SERVICE_PREFIXES = ("urn:schemas-upnp-org:service:WANIPConnection:",
                        "urn:schemas-upnp-org:service:WANPPPConnection:")
READ_ONLY_ACTION = "GetExternalIPAddress"  # the only action this probe ever calls
WRITE_ACTIONS = frozenset({
    "AddPortMapping", "AddAnyPortMapping", "DeletePortMapping", "DeletePortMappingRange",
    "SetConnectionType", "RequestConnection", "RequestTermination", "ForceTermination",
    "SetAutoDisconnectTime", "SetIdleDisconnectTime", "SetWarnDisconnectDelay",
    "ConfigureConnection",
})
PORT_MAPPING_ACTIONS = ("AddPortMapping", "AddAnyPortMapping", "DeletePortMapping",
                        "DeletePortMappingRange")
MAX_ACTIONS = 64
MAX_SERVICES = 4
MAX_DOCUMENT_BYTES = 128 * 1024
SOAP_ENVELOPE = ('<?xml version="1.0"?>\r\n'
                 '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
                 's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
                 '<s:Body><u:{action} xmlns:u="{service}"></u:{action}></s:Body></s:Envelope>'
                 '\r\n')


@dataclass(frozen=True)
class WanService:
    service_type: str
    control_url: str  # absolute
    scpd_url: str  # absolute, or "" when the description gave none


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _parse(xml: bytes) -> Element:
    try:
        root: Element = ElementTree.fromstring(xml, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise ValueError(f"unusable XML: {str(exc)[:120]}") from None
    return root


def _absolute(base: str, reference: str) -> str:
    return urljoin(base, reference.strip()) if reference.strip() else ""


def parse_wan_services(xml: bytes, location: str) -> list[WanService]:
    """WAN*Connection services of a device description, URLs resolved against URLBase (UPnP
    1.0) or the description's own URL."""
    root = _parse(xml)
    base = next((el.text.strip() for el in root.iter()
                 if _local(el.tag) == "URLBase" and el.text and el.text.strip()), location)
    found = []
    for element in root.iter():
        if _local(element.tag) != "service":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in element}
        service_type = fields.get("serviceType", "")
        if service_type.startswith(WAN_SERVICE_PREFIXES) and fields.get("controlURL"):
            found.append(WanService(service_type[:128], _absolute(base, fields["controlURL"]),
                                    _absolute(base, fields.get("SCPDURL", ""))))
    return found


def services_from_facts(upnp: dict[str, str]) -> list[WanService]:
    """Discovery's "type controlURL; …" summary, for when the description cannot be re-read."""
    location = upnp.get("location", "")
    found = []
    for item in upnp.get("services", "").split(";"):
        service_type, _, control = item.strip().partition(" ")
        if service_type.startswith(WAN_SERVICE_PREFIXES) and control.strip():
            found.append(WanService(service_type[:128], _absolute(location, control), ""))
    return found


def parse_actions(xml: bytes) -> list[str]:
    """Action names of an SCPD, in document order, at most ``MAX_ACTIONS``."""
    root = _parse(xml)
    names: list[str] = []
    for action in root.iter():
        if _local(action.tag) != "action":
            continue
        name = next((child.text.strip() for child in action
                     if _local(child.tag) == "name" and child.text), "")
        if name and name not in names:
            names.append(name[:64])
            if len(names) >= MAX_ACTIONS:
                break
    return names


def soap_request(service_type: str, action: str) -> tuple[dict[str, str], bytes]:
    if action != READ_ONLY_ACTION:  # a guard, not a feature: nothing else is ever sent
        raise ValueError(f"refusing to call UPnP action {action!r}")
    headers = {"Content-Type": 'text/xml; charset="utf-8"',
               "SOAPAction": f'"{service_type}#{action}"'}
    return headers, SOAP_ENVELOPE.format(action=action, service=service_type).encode()


def parse_soap_reply(xml: bytes) -> dict[str, str]:
    """``external_ip`` from a GetExternalIPAddress answer, or ``fault_code``/``fault``."""
    root = _parse(xml)
    found: dict[str, str] = {}
    for element in root.iter():
        name = _local(element.tag)
        text = (element.text or "").strip()[:128]
        if name == "NewExternalIPAddress":
            found["external_ip"] = text
        elif name == "errorCode":
            found["fault_code"] = text
        elif name == "errorDescription":
            found["fault"] = text
    return found


def _usable(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


async def _request(ctx: ProbeContext, method: str, url: str, *,
                   headers: dict[str, str] | None = None,
                   data: bytes | None = None) -> HttpResponse:
    """Through the gate: the URL's host and port are scope-checked (ScopeViolation if not)."""
    return await http_request(ctx.network, method, url, transcript=ctx.transcript,
                              headers=headers, data=data, follow_redirects=False,
                              max_body=MAX_DOCUMENT_BYTES)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ScopeViolation):
        return "outside the scope; not contacted"
    return f"error: {type(exc).__name__}: {str(exc)[:160]}"


class UpnpControlUnauthenticated(Probe):
    metadata = ProbeMetadata(
        check_id="upnp-control-unauthenticated",
        title="UPnP IGD control does not answer unauthenticated requests",
        description="A router's UPnP Internet Gateway Device service lets any LAN host, "
                    "malware or script add port mappings that expose internal devices to the "
                    "internet, with no authentication; botnets and proxy networks abuse it.",
        severity=Severity.HIGH,
        intrusiveness=Intrusiveness.SAFE,
        protocols=("ssdp",),
        remediation="Disable UPnP IGD on the router, or restrict it (UPnP IGD:2 with "
                    "DeviceProtection, or a secure-mode allow list limiting mappings to the "
                    "requesting host) and never expose it on the WAN side.",
        references=("https://openconnectivity.org/developer/specifications/upnp-resources/"
                    "upnp/internet-gateway-device-igd-v-2-0/",
                    "https://www.akamai.com/blog/security/upnproxy-eternalsilence",
                    "https://www.kb.cert.org/vuls/id/357851"),
        max_connections=1,
        categories=("unauthenticated-access", "unneeded-interface"),
    )

    async def collect(self, ctx: ProbeContext) -> Facts:
        upnp = dict(ctx.target.device.upnp)
        location = upnp.get("location", "")
        facts: dict[str, Any] = {"location": location[:512], "services": []}
        if not _usable(location):
            facts["description"] = "no usable description URL"
            return facts
        services: list[WanService] = []
        try:
            response = await _request(ctx, "GET", location)
            if response.status != 200:
                facts["description"] = f"HTTP {response.status}"
            else:
                services = parse_wan_services(response.body, location)
                facts["description"] = "read"
        except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
            facts["description"] = _reason(exc)
        if facts["description"] != "read":
            services = services_from_facts(upnp)  # control URLs as discovery saw them
        for service in services[:MAX_SERVICES]:
            facts["services"].append(await self._check_service(ctx, service))
        return facts

    async def _check_service(self, ctx: ProbeContext, service: WanService) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": service.service_type,
                                 "control_url": service.control_url[:512]}
        host = urlsplit(service.control_url).hostname
        if host and host != ctx.target.address:
            entry["control_host_differs"] = True
        if _usable(service.scpd_url):
            try:
                scpd = await _request(ctx, "GET", service.scpd_url)
                if scpd.status == 200:
                    entry["actions"] = parse_actions(scpd.body)
                    entry["scpd"] = "read"
                else:
                    entry["scpd"] = f"HTTP {scpd.status}"
            except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
                entry["scpd"] = _reason(exc)
        if not _usable(service.control_url):
            entry["control"] = "unusable control URL"
            return entry
        headers, body = soap_request(service.service_type, READ_ONLY_ACTION)
        try:
            reply = await _request(ctx, "POST", service.control_url, headers=headers, data=body)
        except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
            entry["control"] = _reason(exc)
            return entry
        entry["control"] = f"HTTP {reply.status}"
        entry["status"] = reply.status
        try:
            entry.update(parse_soap_reply(reply.body) if reply.body.strip() else {})
        except ValueError as exc:
            entry["soap"] = str(exc)[:160]
        entry["answered"] = reply.status == 200 and bool(entry.get("external_ip") is not None)
        return entry

    def evaluate(self, target: Target, facts: Facts) -> list[Observation]:
        exposed = [entry for entry in facts.get("services", []) if entry.get("answered")]
        if not exposed:
            return []
        actions: list[str] = []
        for entry in exposed:
            actions += [name for name in entry.get("actions", []) if name not in actions]
        writes = [name for name in actions if name in WRITE_ACTIONS]
        mapping = [name for name in PORT_MAPPING_ACTIONS if name in actions]
        urls = ", ".join(entry["control_url"] for entry in exposed)
        summary = (f"The UPnP IGD control endpoint {urls} answered {READ_ONLY_ACTION} with no "
                   "authentication")
        if mapping:
            summary += (f" and offers {', '.join(mapping)}: any host on the network can open "
                        "ports through this router to internal devices.")
        elif writes:
            summary += f" and offers write actions ({', '.join(writes[:6])})."
        else:
            summary += "."
        return [Observation(
            summary=summary, confidence=Confidence.CONFIRMED, key="upnp-control-unauthenticated",
            facts={"services": "; ".join(entry["type"] for entry in exposed)[:512],
                   "control_urls": urls[:1024],
                   "external_ip": str(exposed[0].get("external_ip", ""))[:64],
                   "actions": ", ".join(actions)[:2048] or "SCPD not read",
                   "write_actions": ", ".join(writes)[:1024] or "none listed",
                   "port_mapping_actions": ", ".join(mapping) or "none listed"})]

    def summarize(self, facts: Facts) -> dict[str, str]:
        summary = {"description": str(facts.get("description", ""))[:128]}
        for index, entry in enumerate(facts.get("services", [])[:MAX_SERVICES]):
            summary[f"service_{index}"] = (f"{entry.get('type', '')}: control "
                                           f"{entry.get('control', 'not called')}, SCPD "
                                           f"{entry.get('scpd', 'not read')}, "
                                           f"{len(entry.get('actions', []))} actions")[:256]
        return summary
