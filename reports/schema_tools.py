"""The JSON report schema: generated from the models, committed, and checked for drift."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from scanner.models import SCHEMA_VERSION, ScanResult

SCHEMA_FILE = "report.schema.json"


def generated_schema() -> dict[str, Any]:
    schema = ScanResult.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://iotbaseline.example/schema/report-{SCHEMA_VERSION}.json"
    schema["title"] = "iotbaseline scan report"
    return schema


def committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        files("reports").joinpath("schema", SCHEMA_FILE).read_text("utf-8"))
    return schema


if __name__ == "__main__":  # python -m reports.schema_tools > reports/schema/report.schema.json
    print(json.dumps(generated_schema(), indent=2, sort_keys=True))
