"""What a device profile says about a family's life cycle: update channel, firmware, disclosure.

These are the vendor's own published facts (a manifest URL, the latest release, the end of
support, the disclosure policy), so the update-integrity and firmware-currency checks can be
added for a new family with a data file, never with code.

    update_endpoints:
      - manifest: "https://{address}:8443/fw/{model}/latest.json"  # template, see TEMPLATE_KEYS
        version_field: version        # JSON keys of the manifest
        image_field: url              # absolute or relative to the manifest URL
        digest_field: sha256          # hex digest of the image
        signature:
          scheme: ed25519             # ed25519 | ecdsa-sha256 | rsa-pkcs1-sha256 | rsa-pss-sha256
          field: signature            # base64 in the manifest …
          url: null                   # … or a detached signature URL (template)
          covers: image               # the bytes signed: image | manifest
          public_key: |               # the vendor key (PEM), when published
            -----BEGIN PUBLIC KEY-----
        source: https://vendor.example/docs/ota
    firmware:
      version_markers: ["Firmware Version:"]  # text before the version in a banner or page
      latest: "2.4.1"
      latest_released: 2026-03-01
      end_of_support: 2028-12-31
      source: https://vendor.example/support/lifecycle
    disclosure:
      policy_url: https://vendor.example/security
      support_period: "Security updates until 2028-12-31"
      source: https://vendor.example/security
"""

from __future__ import annotations

import re
import string
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TEMPLATE_KEYS = ("address", "model", "firmware", "vendor")  # Device facts usable in URL templates
URL_TEMPLATE = re.compile(r"^https?://[^\s]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(value: str) -> str:
    if not URL_TEMPLATE.match(value) or len(value) > 1000:
        raise ValueError("must be an http:// or https:// URL (template) without spaces")
    for _, key, _, _ in string.Formatter().parse(value):
        if key is not None and key not in TEMPLATE_KEYS:
            raise ValueError(f"unknown template key {{{key}}} (use {', '.join(TEMPLATE_KEYS)})")
    return value


class Signature(_Strict):
    scheme: Literal["ed25519", "ecdsa-sha256", "rsa-pkcs1-sha256", "rsa-pss-sha256"]
    field: str | None = Field(default=None, min_length=1, max_length=64)
    url: str | None = None
    covers: Literal["image", "manifest"] = "image"
    public_key: str | None = Field(default=None, max_length=8192)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return value if value is None else _check_template(value)


class UpdateEndpoint(_Strict):
    manifest: str
    format: Literal["json"] = "json"
    version_field: str = Field("version", min_length=1, max_length=64)
    image_field: str = Field("url", min_length=1, max_length=64)
    digest_field: str | None = Field("sha256", min_length=1, max_length=64)
    digest_algorithm: Literal["sha256", "sha512"] = "sha256"
    signature: Signature | None = None
    source: str = Field(min_length=3, max_length=400)

    @field_validator("manifest")
    @classmethod
    def _manifest(cls, value: str) -> str:
        return _check_template(value)


class FirmwareSupport(_Strict):
    version_markers: list[str] = Field(default_factory=list, max_length=8)
    latest: str | None = Field(default=None, max_length=64)
    latest_released: date | None = None
    end_of_support: date | None = None
    source: str = Field(min_length=3, max_length=400)

    @field_validator("version_markers")
    @classmethod
    def _markers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not 2 <= len(value) <= 64:
                raise ValueError("a version marker is 2 to 64 characters of plain text")
        return values


class DisclosureFacts(_Strict):
    policy_url: str | None = Field(default=None, max_length=400)
    support_period: str | None = Field(default=None, max_length=400)
    source: str = Field(min_length=3, max_length=400)


VERSION_NUMBERS = re.compile(r"\d{1,9}")


def version_key(version: str) -> tuple[int, ...]:
    """Firmware versions compared by their numbers in order ("V5.5.4 build 200721" →
    (5, 5, 4, 200721)): vendors' formats vary too much for PEP 440 or semver."""
    return tuple(int(number) for number in VERSION_NUMBERS.findall(version[:128])[:12])


VERSION_AFTER_MARKER = re.compile(
    r"\s*[:=]?\s*v?(\d{1,9}(?:[._-]\d{1,9}){0,6}[A-Za-z0-9._-]{0,24})")


def version_after_markers(text: str, markers: list[str]) -> str | None:
    """The version printed after one of the profile's markers, in a banner or page text."""
    lowered = text.lower()
    for marker in markers:
        where = lowered.find(marker.lower())
        if where >= 0:
            match = VERSION_AFTER_MARKER.match(text, where + len(marker))
            if match:
                return match.group(1)
    return None
