"""Compliance frameworks as data: each file maps requirement ids to the check ids evidencing them.

A finding's clause ids are built by reversing those files, so adding a standard is adding a file.
A probe plugin maps its own checks without touching ours: it registers a mapping file under the
``iotbaseline.frameworks`` entry-point group, and that file's checks are merged into the
frameworks' clauses, so verdicts and every report format treat them like built-in checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from probes.registry import LoadError, load_probes
from profiles.yamldata import DataFileError, parse_yaml

PRIMARY_FRAMEWORK = "iso-iec-27402-2023"  # the standard iotbaseline is built around: listed first
MAPPING_ENTRY_POINT_GROUP = "iotbaseline.frameworks"


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


class PluginMapping(RootModel[dict[str, dict[str, list[CheckRef]]]]):
    """A plugin's mapping file: framework id -> requirement id -> the plugin's checks for it."""


ClauseKey = tuple[str, str]  # (framework id, requirement id)


@cache
def _frameworks_and_mapping_errors() -> tuple[tuple[Framework, ...], tuple[LoadError, ...]]:
    shipped = load_frameworks_from(files("reports").joinpath("frameworks"))
    entries = list(entry_points(group=MAPPING_ENTRY_POINT_GROUP))
    provided: dict[str, set[str]] = {}
    if entries:  # which plugin loaded which checks: only then worth importing every probe
        for loaded in load_probes()[0]:
            if not loaded.builtin:
                provided.setdefault(loaded.source, set()).add(loaded.probe.metadata.check_id)
    merged, errors = with_plugin_mappings(shipped, entries, provided)
    return tuple(sorted(merged, key=lambda f: f.id != PRIMARY_FRAMEWORK)), tuple(errors)


def load_frameworks() -> tuple[Framework, ...]:
    """Every framework file shipped in ``reports/frameworks`` with the installed plugins'
    mappings merged in, the primary one first."""
    return _frameworks_and_mapping_errors()[0]


def mapping_errors() -> tuple[LoadError, ...]:
    """Plugin mapping files that were refused, and why (``iotbaseline plugins`` shows them)."""
    return _frameworks_and_mapping_errors()[1]


def with_plugin_mappings(frameworks: Iterable[Framework], entries: Iterable[EntryPoint],
                         provided: Mapping[str, set[str]],
                         ) -> tuple[tuple[Framework, ...], list[LoadError]]:
    """The frameworks with each plugin mapping file's checks added to their clauses.

    ``provided`` is, per source ("distribution version"), the check ids the probe registry
    loaded from it. A plugin maps only those (never a built-in check, nor one it lost to an id
    collision: either would silently change verdicts), and only to clauses that exist. A file
    breaking a rule is refused whole, as a load error; the scan goes on without it.
    """
    frameworks = tuple(frameworks)
    known = {f.id: {r.id for r in f.clauses} for f in frameworks}
    added: dict[ClauseKey, list[CheckRef]] = {}
    errors = []
    for entry_point in entries:
        dist = entry_point.dist
        source = f"{dist.name} {dist.version}" if dist is not None else "unknown"
        try:
            mapping = _plugin_mapping(entry_point, known, provided.get(source, set()))
        except Exception as exc:  # a broken plugin must not stop the scan
            errors.append(LoadError(entry_point.name, source,
                                    f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        for key, checks in mapping.items():
            added.setdefault(key, []).extend(checks)
    return tuple(_with_checks(f, added) for f in frameworks), errors


def _plugin_mapping(entry_point: EntryPoint, known: Mapping[str, set[str]], own: set[str],
                    ) -> dict[ClauseKey, list[CheckRef]]:
    resource = entry_point.load()
    if not isinstance(resource, Traversable):
        raise TypeError(f"{entry_point.value} is not a file; point it at "
                        "importlib.resources.files(__package__) / 'frameworks.yaml'")
    mapping = PluginMapping.model_validate(
        parse_yaml(resource.read_text("utf-8"), entry_point.value)).root
    found: dict[ClauseKey, list[CheckRef]] = {}
    for framework_id, clauses in mapping.items():
        if framework_id not in known:
            raise ValueError(f"unknown framework {framework_id!r}")
        for clause_id, checks in clauses.items():
            if clause_id not in known[framework_id]:
                raise ValueError(f"{framework_id} has no clause {clause_id!r}")
            foreign = [check.id for check in checks if check.id not in own]
            if foreign:
                raise ValueError(f"check {foreign[0]!r} is not a probe this package provides; "
                                 "a plugin maps only its own checks")
            found[(framework_id, clause_id)] = checks
    return found


def _with_checks(framework: Framework, added: Mapping[ClauseKey, list[CheckRef]]) -> Framework:
    clauses = []
    for requirement in framework.clauses:
        extra = added.get((framework.id, requirement.id), [])
        present = {check.id for check in requirement.checks}
        new = [check for check in extra if check.id not in present]
        if new:
            requirement = requirement.model_copy(update={
                "checks": [*requirement.checks, *{c.id: c for c in new}.values()]})
        clauses.append(requirement)
    return framework.model_copy(update={"clauses": clauses})


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
            loaded.append(Framework.model_validate(
                parse_yaml(resource.read_text("utf-8"), resource.name)))
        except (DataFileError, ValidationError) as exc:
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
