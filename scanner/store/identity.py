"""Which stored device a sighting is: the rules that let history follow a device.

Strongest identifier first: the MAC address (seen on the link), then a serial number or UPnP UDN
(what the device says about itself), and only then the IP address. An address-only match never
claims a device known by a stronger identifier, so a new device reusing an old device's address
(a different MAC) starts its own history.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.models import Device


@dataclass(frozen=True)
class Identity:
    mac: str | None
    serial: str | None
    udn: str | None
    address: str

    @property
    def key(self) -> str:
        """The device's stable key, from the strongest identifier it was first seen with."""
        if self.mac:
            return f"mac:{self.mac}"
        if self.serial:
            return f"serial:{self.serial}"
        if self.udn:
            return f"udn:{self.udn}"
        return f"address:{self.address}"


def column_text(text: str | None, limit: int) -> str | None:
    """Device text fit for an indexed column: no NUL (PostgreSQL refuses it), bounded length.
    The untouched text stays in the scan's JSON record."""
    value = (text or "").replace("\x00", "").strip()[:limit]
    return value or None


def identify(device: Device) -> Identity:
    mac = column_text(device.mac, 32)
    udn = column_text(device.upnp.get("UDN"), 200)
    return Identity(
        mac=mac.lower().replace("-", ":") if mac else None,
        serial=column_text(device.serial or device.upnp.get("serialNumber"), 200),
        udn=udn.lower().removeprefix("uuid:") if udn else None,
        address=device.address)
