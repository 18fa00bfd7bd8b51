"""Request bodies the API validates (their JSON Schemas go into the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ReportFormat = Literal["json", "html", "md", "csv", "sarif", "junit", "oscal"]


def _default_formats() -> list[ReportFormat]:
    return ["json", "html"]

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
    profile: str = Field("safe", min_length=1, max_length=200)
    ports: str | None = Field(None, max_length=2000)
    formats: list[ReportFormat] = Field(default_factory=_default_formats, max_length=7)
    segment: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    webhooks: list[Webhook] = Field(default_factory=list, max_length=16)
