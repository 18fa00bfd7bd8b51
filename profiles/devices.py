"""Device profiles: what we know about a device family, as data (one YAML file per family).

A profile says how to recognise the family (``match``), which network services the family needs
(``expected_services``, RFC 8520 MUD-style: the unneeded-interface check reports only what is
exposed beyond them) and how its web interface logs in (``login_forms``): which page to load
first, where the form posts, which fields it sends and what a successful login looks like.
Later issues add more knowledge (update endpoints, …) as further optional keys of the same
profile, so every model here forbids unknown keys (a typo is an error, not a silently ignored
setting) and every new key gets a default.

Example (``profiles/devices/openwrt-luci.yaml``)::

    id: openwrt-luci
    vendor: OpenWrt
    products: [OpenWrt and LuCI-based router firmwares]
    match:
      terms: [openwrt, luci]          # lower-case substrings of Device.fingerprint_text()
      http_title: [luci]              # … of an HTTP service's page title
      server: []                      # … of an HTTP service's Server header
      banner: []                      # … of any service's banner or product (SSH, FTP, …)
      certificate_subject: []         # … of any service's TLS certificate subject
      oui_vendor: []                  # … of the vendor the MAC address's OUI is registered to
      upnp_manufacturer: []           # … of the UPnP description's manufacturer
      upnp_model: []                  # … of its modelName, modelNumber or modelDescription
      mdns_service: []                # … of an advertised mDNS service type (_hue._tcp)
      source: https://…               # where these identifiers are documented
    expected_services:                # what the device needs exposed (optional)
      - {transport: tcp, port: 22, protocol: ssh, reason: administration over SSH}
    login_forms:
      - action: /cgi-bin/luci         # path the form is submitted to
        method: POST                  # POST (urlencoded body) or GET (query string)
        username_field: luci_username # omit for password-only forms
        password_field: luci_password
        extra_fields: {}              # constant fields the form also sends
        success:                      # every marker that is set must hold
          status: [302]
          set_cookie: [sysauth, sysauth_http, sysauth_https]
        failure:
          status: [403]
        source: https://github.com/openwrt/luci/…/dispatcher.uc

Body and header markers are plain case-insensitive substrings, never regular expressions, so a
profile cannot make the scanner spend exponential time on a hostile reply (no ReDoS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from profiles.lifecycle import DisclosureFacts, FirmwareSupport, UpdateEndpoint
from profiles.yamldata import DataFileError, parse_yaml, read_text, validate
from scanner.models import Device, Service

PROFILE_ID = r"^[a-z0-9]+(-[a-z0-9]+)*$"
PATH = re.compile(r"^/(?!/)[^\s#]*$")  # a path on the target itself, optionally with a query
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # RFC 9110 token: header/cookie names
COMPUTED_HEADERS = {"host", "content-length", "cookie"}  # set by the probe, never by a profile
MIN_TERM = 3  # shorter match terms would match nearly every fingerprint
MATCH_KEYS = ("terms", "http_title", "server", "banner", "certificate_subject", "oui_vendor",
              "upnp_manufacturer", "upnp_model", "mdns_service")
UPNP_MODEL_FIELDS = ("modelName", "modelNumber", "modelDescription")


class DeviceProfileError(DataFileError):
    """A device profile file cannot be used; one line naming file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_line_breaks(values: Iterable[str], what: str) -> None:
    for value in values:
        if "\r" in value or "\n" in value:
            raise ValueError(f"{what} must not contain line breaks")


class Markers(_Strict):
    """Facts about one HTTP reply; a set marker must hold, an empty one is not checked.

    ``status`` and ``set_cookie`` list alternatives (one status per reply; firmware versions
    rename cookies: sysauth, sysauth_http); ``contains`` and ``redirect_contains`` must all be
    found; ``not_contains`` must all be absent. Text comparisons ignore case."""

    status: list[int] = Field(default_factory=list, max_length=16)
    contains: list[str] = Field(default_factory=list, max_length=16)
    not_contains: list[str] = Field(default_factory=list, max_length=16)
    redirect_contains: list[str] = Field(default_factory=list, max_length=16)
    set_cookie: list[str] = Field(default_factory=list, max_length=16)  # cookie names

    @field_validator("status")
    @classmethod
    def _statuses(cls, values: list[int]) -> list[int]:
        for value in values:
            if not 100 <= value <= 599:
                raise ValueError(f"HTTP status {value} is outside 100-599")
        return values

    @field_validator("contains", "not_contains", "redirect_contains")
    @classmethod
    def _substrings(cls, values: list[str]) -> list[str]:
        for value in values:
            if not 1 <= len(value) <= 256:
                raise ValueError("a text marker is 1 to 256 characters of plain text")
        _no_line_breaks(values, "a text marker")
        return values

    @field_validator("set_cookie")
    @classmethod
    def _cookie_names(cls, values: list[str]) -> list[str]:
        for value in values:
            if not TOKEN.match(value):
                raise ValueError(f"{value!r} is not a cookie name")
        return values

    def is_set(self) -> bool:
        return any((self.status, self.contains, self.not_contains, self.redirect_contains,
                    self.set_cookie))


class LoginForm(_Strict):
    """How one web login form is submitted and judged."""

    page: str | None = Field(default=None, max_length=512)  # GET first: cookies, CSRF token
    action: str = Field(max_length=512)  # path submitted to (may carry a fixed query)
    method: Literal["POST", "GET"] = "POST"
    username_field: str | None = Field(default=None, min_length=1, max_length=128)
    password_field: str = Field(min_length=1, max_length=128)
    extra_fields: dict[str, str] = Field(default_factory=dict, max_length=32)
    csrf_field: str | None = Field(default=None, min_length=1, max_length=128)
    headers: dict[str, str] = Field(default_factory=dict, max_length=16)
    success: Markers
    failure: Markers = Field(default_factory=Markers)
    source: str = Field(min_length=3, max_length=400)  # where this public fact is documented

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("page", "action")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not PATH.match(value):
            raise ValueError("must be a path on the device starting with '/' "
                             "(no scheme, host, spaces or fragment)")
        return value

    @field_validator("username_field", "password_field", "csrf_field")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None:
            _no_line_breaks([value], "a field name")
        return value

    @field_validator("extra_fields")
    @classmethod
    def _extra(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if not 1 <= len(name) <= 128 or len(value) > 512:
                raise ValueError("extra field names are 1-128 characters, values at most 512")
        _no_line_breaks([*values, *values.values()], "an extra field")
        return values

    @field_validator("headers")
    @classmethod
    def _headers(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if not TOKEN.match(name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in COMPUTED_HEADERS:
                raise ValueError(f"{name} is set by the probe, not by a profile")
            if len(value) > 512:
                raise ValueError(f"header {name} is longer than 512 characters")
        _no_line_breaks(values.values(), "a header value")
        return values

    @field_validator("success")
    @classmethod
    def _success_needs_a_marker(cls, value: Markers) -> Markers:
        if not value.is_set():
            raise ValueError("set at least one success marker (status, contains, "
                             "not_contains, redirect_contains or set_cookie)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LoginForm:
        if self.csrf_field is not None and self.page is None:
            raise ValueError("csrf_field needs a page to copy the token from")
        names = [*self.extra_fields, self.password_field,
                 *(name for name in (self.username_field, self.csrf_field) if name)]
        if len(names) != len(set(names)):
            raise ValueError("a field name is used twice")
        return self


class MatchRules(_Strict):
    """A profile matches a device when any rule matches (all lower-case substrings).

    ``terms`` search every identifying string at once; the other keys each look at one field
    only, so a family can be recognised by what only it sends there (a UPnP manufacturer, an
    mDNS service type, a certificate subject) without matching every device that merely
    mentions the name somewhere."""

    terms: list[str] = Field(default_factory=list, max_length=32)  # of the fingerprint text
    http_title: list[str] = Field(default_factory=list, max_length=32)  # of a page title
    server: list[str] = Field(default_factory=list, max_length=32)  # of a Server header
    banner: list[str] = Field(default_factory=list, max_length=32)  # of any service's banner
    certificate_subject: list[str] = Field(default_factory=list, max_length=32)
    oui_vendor: list[str] = Field(default_factory=list, max_length=32)  # Device.vendor
    upnp_manufacturer: list[str] = Field(default_factory=list, max_length=32)
    upnp_model: list[str] = Field(default_factory=list, max_length=32)
    mdns_service: list[str] = Field(default_factory=list, max_length=32)
    source: str = Field(default="", max_length=600)  # where these identifiers are documented

    @field_validator(*MATCH_KEYS)
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        for value in values:
            if value != value.lower():
                raise ValueError(f"{value!r} must be lower-case (matching ignores case)")
            if not MIN_TERM <= len(value) <= 128:
                raise ValueError(f"{value!r} must be {MIN_TERM} to 128 characters")
        return values

    @model_validator(mode="after")
    def _something(self) -> MatchRules:
        if not any(getattr(self, key) for key in MATCH_KEYS):
            raise ValueError(f"give at least one of {', '.join(MATCH_KEYS)}")
        return self


class ExpectedService(_Strict):
    """A service the device family needs: the port, the protocol (an identified protocol such
    as ``ssh`` or an interface id of probes/data/interfaces.yaml such as ``upnp-ssdp``), or
    both; when both are given both must hold."""

    transport: Literal["tcp", "udp"] = "tcp"
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: str | None = Field(default=None, pattern=PROFILE_ID, max_length=64)
    reason: str = Field(min_length=3, max_length=300)
    source: str = Field(default="", max_length=400)  # where the vendor documents the need

    @model_validator(mode="after")
    def _something(self) -> ExpectedService:
        if self.port is None and self.protocol is None:
            raise ValueError("give a port, a protocol or both")
        return self

    def covers(self, service: Service, interface_id: str = "") -> bool:
        """True when this declaration allows ``service`` (identified as ``interface_id``)."""
        return service.transport == self.transport \
            and (self.port is None or self.port == service.port) \
            and (self.protocol is None or self.protocol in (service.protocol, interface_id))


class DeviceProfile(_Strict):
    id: str = Field(pattern=PROFILE_ID, max_length=64)
    vendor: str = Field(min_length=1, max_length=80)
    products: list[str] = Field(default_factory=list, max_length=32)
    description: str = Field(default="", max_length=1000)
    match: MatchRules
    expected_services: list[ExpectedService] = Field(default_factory=list, max_length=64)
    login_forms: list[LoginForm] = Field(default_factory=list, max_length=8)
    update_endpoints: list[UpdateEndpoint] = Field(default_factory=list, max_length=8)
    firmware: FirmwareSupport | None = None
    disclosure: DisclosureFacts | None = None


# --- loading -------------------------------------------------------------------------------

def load_file(text: str, where: str) -> DeviceProfile:
    try:
        return validate(DeviceProfile, parse_yaml(text, where), text, where)
    except DataFileError as exc:
        raise DeviceProfileError(str(exc)) from None


def _unique(profiles: list[tuple[DeviceProfile, str]]) -> tuple[DeviceProfile, ...]:
    seen: dict[str, str] = {}
    for profile, where in profiles:
        if profile.id in seen:
            raise DeviceProfileError(f"{where}: id: {profile.id!r} is already used by "
                                     f"{seen[profile.id]}")
        seen[profile.id] = where
    return tuple(profile for profile, _ in profiles)


def _builtin_with_origin() -> list[tuple[DeviceProfile, str]]:
    folder = files("profiles").joinpath("devices")
    found = []
    for resource in sorted(folder.iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".yaml"):
            where = f"devices/{resource.name}"
            found.append((load_file(resource.read_text("utf-8"), where), where))
    return found


@cache
def builtin_device_profiles() -> tuple[DeviceProfile, ...]:
    """The profiles shipped in ``profiles/devices`` (loaded once)."""
    return _unique(_builtin_with_origin())


def load_device_profiles(extra_files: Iterable[str] = ()) -> tuple[DeviceProfile, ...]:
    """Built-in profiles (cached) plus the user's files; an id may be defined only once."""
    extra = list(extra_files)
    if not extra:
        return builtin_device_profiles()
    found = _builtin_with_origin()
    for name in extra:
        path = Path(name)
        try:
            found.append((load_file(read_text(path), str(path)), str(path)))
        except DataFileError as exc:
            raise DeviceProfileError(str(exc)) from None
    return _unique(found)


# --- matching ------------------------------------------------------------------------------

def _http(service: Service) -> bool:
    return service.protocol == "http"


def service_matches(profile: DeviceProfile, service: Service) -> bool:
    """True when the profile's title or Server rules match this HTTP service itself."""
    if not _http(service):
        return False
    title = service.details.get("title", "").lower()
    server = f"{service.banner} {service.product}".lower()
    return any(rule in title for rule in profile.match.http_title) or \
        any(rule in server for rule in profile.match.server)


def _any_contains(rules: list[str], values: Iterable[str | None]) -> bool:
    texts = [value.lower() for value in values if value]
    return any(rule in text for rule in rules for text in texts)


def _any_service_matches(profile: DeviceProfile, service: Service) -> bool:
    rules = profile.match
    subject = service.certificate.subject if service.certificate is not None else None
    return service_matches(profile, service) or \
        _any_contains(rules.banner, (service.banner, service.product)) or \
        _any_contains(rules.certificate_subject, (subject,))


def profile_matches(profile: DeviceProfile, device: Device) -> bool:
    rules = profile.match
    return _any_contains(rules.terms, (device.fingerprint_text(),)) or \
        _any_contains(rules.oui_vendor, (device.vendor,)) or \
        _any_contains(rules.upnp_manufacturer, (device.upnp.get("manufacturer"),)) or \
        _any_contains(rules.upnp_model, (device.upnp.get(key) for key in UPNP_MODEL_FIELDS)) or \
        _any_contains(rules.mdns_service, device.mdns_services) or \
        any(_any_service_matches(profile, service) for service in device.services)


def matching_profiles(profiles: Iterable[DeviceProfile], device: Device) -> list[DeviceProfile]:
    """The profiles that match ``device``, in the order given."""
    return [profile for profile in profiles if profile_matches(profile, device)]
