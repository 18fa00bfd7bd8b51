"""Scan profiles: YAML data shipped with the package, validated into typed settings.

Errors name the file, the line and the field, so a user can fix a profile without reading code.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from profiles.yamldata import DataFileError, parse_yaml, read_text, validate
from scanner.models import Intrusiveness

MAX_PROFILE_BYTES = 1024 * 1024
MAX_EXTENDS_DEPTH = 8


class ProfileError(DataFileError):
    """A scan profile cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortSet(_Strict):
    tcp: list[int] = Field(default_factory=list)
    udp: list[int] = Field(default_factory=list)

    @field_validator("tcp", "udp")
    @classmethod
    def _valid_ports(cls, ports: list[int]) -> list[int]:
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
        return sorted(set(ports))


class Timing(_Strict):
    concurrency: int = Field(256, ge=1, le=4096)
    per_host: int = Field(2, ge=1, le=64)
    rate: float = Field(25.0, gt=0, le=10000)
    connect_timeout: float = Field(2.0, gt=0, le=120)
    read_timeout: float = Field(4.0, gt=0, le=300)
    probe_budget: float = Field(30.0, gt=0, le=3600)
    host_budget: float = Field(600.0, gt=0, le=86400)


class Discovery(_Strict):
    liveness_ports: list[int] = Field(default_factory=lambda: [80, 443, 22, 23])
    arp: bool = True
    mdns: bool = True
    ssdp: bool = True
    lan_wait: float = Field(3.0, ge=0, le=60)
    nmap: bool = False


class Authentication(_Strict):
    """Budgets for credential attempts: lockout-safe by default (at most 3 per account)."""

    max_per_account: int = Field(3, ge=1, le=1000)  # passwords tried for one user name
    max_per_service: int = Field(15, ge=1, le=100000)  # attempts on one service in all
    spacing: float = Field(0.5, ge=0, le=60)  # seconds between attempts on one service
    slowdown_factor: float = Field(4.0, ge=1.5, le=100)  # an answer this much slower: back off
    extra_files: list[str] = Field(default_factory=list)  # more credential YAML files
    brute_force_attempts: int = Field(10, ge=3, le=1000)  # intrusive protection test only


class TlsTrust(_Strict):
    """Certificate authorities a scan trusts besides the system store (a site or vendor CA)."""

    ca_files: list[str] = Field(default_factory=list)  # PEM files; relative to the profile


class Checks(_Strict):
    include: list[str] = Field(default_factory=list)  # empty: every check the cap allows
    exclude: list[str] = Field(default_factory=list)
    template_dirs: list[str] = Field(default_factory=list)  # the user's declarative checks


class ScanProfile(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    extends: str | None = None
    max_intrusiveness: str = "auth_attempt"
    ports: PortSet = PortSet()
    timing: Timing = Timing()
    discovery: Discovery = Discovery()
    checks: Checks = Checks()
    authentication: Authentication = Authentication()
    tls: TlsTrust = TlsTrust()
    source: str = ""

    @field_validator("max_intrusiveness")
    @classmethod
    def _valid_intrusiveness(cls, value: str) -> str:
        Intrusiveness.parse(value)
        return value.lower()

    @property
    def intrusiveness_cap(self) -> Intrusiveness:
        return Intrusiveness.parse(self.max_intrusiveness)


def builtin_profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files("profiles").joinpath("scan")
                  .iterdir() if p.name.endswith(".yaml"))


def _read(reference: str) -> tuple[str, str]:
    """(text, where) for a built-in name or a path."""
    if reference in builtin_profile_names():
        resource = files("profiles").joinpath("scan", f"{reference}.yaml")
        return resource.read_text(encoding="utf-8"), f"built-in profile {reference}"
    path = Path(reference)
    if not path.exists():
        names = ", ".join(builtin_profile_names())
        raise ProfileError(f"no profile {reference!r}: not a built-in ({names}) "
                           "and no such file")
    try:
        return read_text(path, MAX_PROFILE_BYTES), str(path)
    except DataFileError as exc:
        raise ProfileError(str(exc)) from None


RELATIVE_PATHS = (("tls", "ca_files"), ("checks", "template_dirs"))


def _anchor_paths(data: dict[str, Any], where: str) -> None:
    """Paths in a profile file are relative to that file, so a profile travels with them."""
    if where.startswith("built-in"):
        return
    base = Path(where).parent
    for section, key in RELATIVE_PATHS:
        values = data.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), list):
            values[key] = [str(base / name) if isinstance(name, str) else name
                           for name in values[key]]


def _raw(reference: str, depth: int = 0) -> tuple[dict[str, Any], str, str]:
    text, where = _read(reference)
    try:
        data = parse_yaml(text, where)
    except DataFileError as exc:
        raise ProfileError(str(exc)) from None
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile is a mapping of settings")
    _anchor_paths(data, where)
    parent = data.get("extends")
    if parent is None:
        return data, text, where
    if depth >= MAX_EXTENDS_DEPTH or not isinstance(parent, str):
        raise ProfileError(f"{where}: 'extends' must name one profile, at most "
                           f"{MAX_EXTENDS_DEPTH} deep (a loop?)")
    base, _, _ = _raw(parent, depth + 1)
    return _deep_merge(base, data), text, where


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_profile(reference: str) -> ScanProfile:
    """A built-in profile by name, or a YAML file by path (with ``extends:`` resolved)."""
    data, text, where = _raw(reference)
    data["source"] = where
    try:
        profile = validate(ScanProfile, data, text, where)
    except DataFileError as exc:
        raise ProfileError(str(exc)) from None
    for name in profile.tls.ca_files:
        if not Path(name).is_file():
            raise ProfileError(f"{where}: tls.ca_files: no such file {name!r}")
    for name in profile.checks.template_dirs:
        if not Path(name).is_dir():
            raise ProfileError(f"{where}: checks.template_dirs: no such folder {name!r}")
    return profile
