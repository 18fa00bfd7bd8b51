"""UPnP device descriptions, parsed with defusedxml (no entities, no DTDs, no external fetches)."""

from __future__ import annotations

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

_FIELDS = ("deviceType", "friendlyName", "manufacturer", "manufacturerURL", "modelName",
           "modelNumber", "modelDescription", "serialNumber", "UDN", "presentationURL")


class DescriptionError(ValueError):
    pass


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_description(xml: bytes) -> dict[str, str]:
    """Root device fields plus the service types and URLs the device lists."""
    try:
        root = ElementTree.fromstring(xml, forbid_dtd=True)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise DescriptionError(f"unusable device description: {exc}") from None
    device = next((el for el in root.iter() if _local(el.tag) == "device"), None)
    if device is None:
        raise DescriptionError("device description has no <device> element")
    found: dict[str, str] = {}
    for child in device:
        name = _local(child.tag)
        if name in _FIELDS and child.text:
            found[name] = " ".join(child.text.split())[:256]
    services = []
    for element in root.iter():
        if _local(element.tag) == "service":
            fields = {_local(c.tag): (c.text or "").strip() for c in element}
            if fields.get("serviceType"):
                services.append(f"{fields['serviceType']} {fields.get('controlURL', '')}".strip())
    if services:
        found["services"] = "; ".join(services[:32])[:2048]
    return found
