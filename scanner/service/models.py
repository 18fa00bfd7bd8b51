"""Request bodies the API validates (their JSON Schemas go into the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scanner.jobs import PROFILE_NAME_PATTERN, SEGMENT_PATTERN

ReportFormat = Literal["json", "html", "md", "csv", "sarif", "junit", "oscal"]


def _default_formats() -> list[ReportFormat]:
    return ["json", "html"]


class NewScan(BaseModel):
    """A scan as the API takes it: what to scan, never the job's id or schedule (the service
    sets those, so a caller cannot overwrite a stored scan or act as a schedule)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(min_length=1, max_length=256)
    excludes: list[str] = Field(default_factory=list, max_length=256)
    excluded_ports: list[int] = Field(default_factory=list, max_length=1024)
    profile: str = Field("safe", pattern=PROFILE_NAME_PATTERN)
    ports: str | None = Field(None, max_length=2000)
    formats: list[ReportFormat] = Field(default_factory=_default_formats, max_length=7)
    segment: str = Field("default", pattern=SEGMENT_PATTERN)


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    secret_env: str = Field(min_length=1, max_length=100)


class NewSchedule(BaseModel):
    """A schedule as the API takes it (openapi.yaml's NewSchedule)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    cron: str = Field(min_length=1, max_length=100)
    targets: list[str] = Field(min_length=1, max_length=256)
    excludes: list[str] = Field(default_factory=list, max_length=256)
    profile: str = Field("safe", pattern=PROFILE_NAME_PATTERN)
    ports: str | None = Field(None, max_length=2000)
    formats: list[ReportFormat] = Field(default_factory=_default_formats, max_length=7)
    segment: str | None = Field(None, pattern=SEGMENT_PATTERN)
    webhooks: list[Webhook] = Field(default_factory=list, max_length=16)
