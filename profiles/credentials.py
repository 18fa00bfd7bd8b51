"""Default-credential data: vendor-attributed YAML files, each entry citing its public source.

Credentials are data (as in changeme), so adding a vendor is adding lines, never code. A device's
fingerprint picks vendor lists first; generic pairs follow.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from profiles.yamldata import DataFileError, parse_yaml, read_text, validate

PROTOCOLS = ("ssh", "telnet", "http", "ftp", "mqtt", "rtsp", "snmp")
GENERIC_VENDOR = "generic"


class CredentialError(DataFileError):
    """A credential file cannot be used."""


class CredentialEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str = Field(min_length=1, max_length=80)  # "generic" for cross-vendor defaults
    product: str = Field(default="", max_length=160)
    protocol: str = Field(pattern="^(" + "|".join(PROTOCOLS) + ")$")
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(max_length=128)  # empty for SNMP communities
    password: str = Field(max_length=128)  # the community string for SNMP
    source: str = Field(min_length=3, max_length=300)  # where this public fact is documented
    match: list[str] = Field(default_factory=list)  # extra fingerprint words for this vendor


class CredentialFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    entries: list[CredentialEntry]


@dataclass(frozen=True)
class Credential:
    username: str
    password: str
    vendor: str
    product: str
    source: str


def load_file(text: str, where: str) -> list[CredentialEntry]:
    try:
        return validate(CredentialFile, parse_yaml(text, where), text, where).entries
    except DataFileError as exc:
        raise CredentialError(str(exc)) from None


@cache
def builtin_entries() -> tuple[CredentialEntry, ...]:
    found: list[CredentialEntry] = []
    folder = files("profiles").joinpath("credentials")
    for resource in sorted(folder.iterdir(), key=lambda r: r.name):
        if resource.name.endswith(".yaml"):
            found += load_file(resource.read_text("utf-8"), f"credentials/{resource.name}")
    return tuple(found)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class CredentialStore:
    """Candidate credentials per protocol, ordered for a given device fingerprint."""

    def __init__(self, entries: Iterable[CredentialEntry]) -> None:
        self.entries = tuple(entries)
        # A vendor's match terms, gathered from all its entries, apply to every one of them;
        # terms are matched as substrings so model prefixes such as "ds-2cd" work.
        self._vendor_terms: dict[str, set[str]] = {}
        for entry in self.entries:
            if entry.vendor.lower() != GENERIC_VENDOR:
                self._vendor_terms.setdefault(entry.vendor, set()).update(
                    term.lower() for term in entry.match if len(term) >= 3)
        self._vendor_words = {vendor: _words(vendor) for vendor in self._vendor_terms}

    @classmethod
    def load(cls, extra_files: Iterable[str] = ()) -> CredentialStore:
        entries = list(builtin_entries())
        for name in extra_files:
            path = Path(name)
            try:
                entries += load_file(read_text(path), str(path))
            except DataFileError as exc:
                raise CredentialError(str(exc)) from None
        return cls(entries)

    def candidates(self, protocol: str, fingerprint: str, port: int | None = None
                   ) -> list[Credential]:
        """Unique pairs for ``protocol``: the device's vendor first, then generic, then others;
        within each, entries for this port first (services move ports, so none is dropped).

        ``fingerprint`` is every identifying string we have for the device (OUI vendor, UPnP
        manufacturer and model, banners, titles); a vendor matches when all words of its name
        appear in it, or any of its ``match`` terms is part of it.
        """
        seen = _words(fingerprint)
        lowered = fingerprint.lower()
        matched = frozenset(
            vendor for vendor, terms in self._vendor_terms.items()
            if (self._vendor_words[vendor] and self._vendor_words[vendor] <= seen)
            or any(term in lowered for term in terms))
        return list(self._ordered(protocol, port, matched))

    @functools.lru_cache(maxsize=512)  # noqa: B019 (stores live as long as a scan)
    def _ordered(self, protocol: str, port: int | None, matched: frozenset[str]
                 ) -> tuple[Credential, ...]:
        """The ordering for one protocol, port and set of matched vendors: the same for every
        device that looks alike, so it is computed once per scan, not once per device."""

        def rank(entry: CredentialEntry) -> int:
            if entry.vendor.lower() == GENERIC_VENDOR:
                return 1
            return 0 if entry.vendor in matched else 2

        def port_mismatch(entry: CredentialEntry) -> int:
            return int(entry.port is not None and port is not None and entry.port != port)

        relevant = [e for e in self.entries if e.protocol == protocol]
        ordered = sorted(enumerate(relevant),
                         key=lambda item: (rank(item[1]), port_mismatch(item[1]), item[0]))
        unique: dict[tuple[str, str], Credential] = {}
        for _, entry in ordered:
            key = (entry.username, entry.password)
            if key not in unique:
                unique[key] = Credential(entry.username, entry.password, entry.vendor,
                                         entry.product, entry.source)
        return tuple(unique.values())
