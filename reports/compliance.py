"""Compliance frameworks as data: each file maps requirement ids to the check ids evidencing them.

A finding's clause ids are built by reversing those files, so adding a standard is adding a file.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class FrameworkError(ValueError):
    pass


class CheckRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    coverage: str = Field(pattern="^(full|partial)$")


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    title: str
    intent: str
    checks: list[CheckRef] = Field(default_factory=list)
    questions: list[str] = Field(default_factory=list)


class Framework(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    title: str
    clauses: list[Requirement]


@cache
def load_frameworks() -> tuple[Framework, ...]:
    """Every framework file shipped in ``reports/frameworks``."""
    loaded = []
    for resource in sorted(files("reports").joinpath("frameworks").iterdir(),
                           key=lambda r: r.name):
        if not resource.name.endswith(".yaml"):
            continue
        try:
            loaded.append(Framework.model_validate(yaml.safe_load(resource.read_text("utf-8"))))
        except (yaml.YAMLError, ValidationError) as exc:
            raise FrameworkError(f"framework file {resource.name}: {exc}".splitlines()[0]) \
                from None
    return tuple(loaded)


@cache
def clauses_by_check() -> dict[str, dict[str, list[str]]]:
    """check id -> framework id -> requirement ids (the reverse of the framework files)."""
    mapping: dict[str, dict[str, list[str]]] = {}
    for framework in load_frameworks():
        for requirement in framework.clauses:
            for check in requirement.checks:
                mapping.setdefault(check.id, {}).setdefault(framework.id, []).append(
                    requirement.id)
    return mapping
