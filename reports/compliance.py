"""Compliance frameworks as data: each file maps requirement ids to the check ids evidencing them.

A finding's clause ids are built by reversing those files, so adding a standard is adding a file.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRIMARY_FRAMEWORK = "iso-iec-27402-2023"  # the standard iotbaseline is built around: listed first


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
    # crosswalk: framework id -> requirement ids there that cover the same ground
    related: dict[str, list[str]] = Field(default_factory=dict)


class OutOfScope(BaseModel):
    """A check this framework does not speak to, and why (not an oversight)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    reason: str = Field(min_length=10, max_length=300)


class Framework(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    title: str
    clauses: list[Requirement]
    out_of_scope: list[OutOfScope] = Field(default_factory=list)


@cache
def load_frameworks() -> tuple[Framework, ...]:
    """Every framework file shipped in ``reports/frameworks``, the primary one first."""
    loaded = load_frameworks_from(files("reports").joinpath("frameworks"))
    return tuple(sorted(loaded, key=lambda f: f.id != PRIMARY_FRAMEWORK))


def select_frameworks(ids: list[str] | None) -> tuple[Framework, ...]:
    """The frameworks to give verdicts for: the primary one unless the user names others."""
    known = {f.id: f for f in load_frameworks()}
    wanted = ids or [PRIMARY_FRAMEWORK]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise FrameworkError(f"unknown framework {unknown[0]!r} (known: "
                             f"{', '.join(known)})")
    return tuple(known[name] for name in dict.fromkeys(wanted))


def load_frameworks_from(folder: Traversable | Path) -> tuple[Framework, ...]:
    """Every ``*.yaml`` framework file in one folder, by file name: a new standard is a file."""
    loaded = []
    for resource in sorted(folder.iterdir(), key=lambda r: r.name):
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
