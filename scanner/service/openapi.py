"""The OpenAPI document (openapi.yaml), with the request bodies' schemas taken from the models
that validate them, so the document and the checks cannot drift apart."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from scanner.service.models import NewScan, NewSchedule


@cache
def openapi_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        files("scanner.service").joinpath("openapi.yaml").read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    schemas["NewScan"] = NewScan.model_json_schema()
    schemas["NewSchedule"] = NewSchedule.model_json_schema(
        ref_template="#/components/schemas/{model}")
    schemas.update(schemas["NewSchedule"].pop("$defs", {}))
    return document
