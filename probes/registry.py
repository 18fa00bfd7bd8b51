"""Probe discovery through the ``iotbaseline.probes`` entry-point group.

Built-ins are registered there too, so a third-party probe is loaded by exactly the same path and
cannot silently miss out because of import order. Anything wrong with a plugin becomes a load
error that the scan reports, never an exception that stops it.

An entry point names either a Probe class (its name is the check id) or a *provider*: a callable
returning ``(where, loader)`` pairs, each loader giving a Probe class. Data-defined checks (the
declarative templates) come in that way, and a user's own template folders through
:func:`load_templates`; both pass the same validation and the same duplicate-id refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib.metadata import Distribution, EntryPoint, entry_points
from pathlib import Path

from probes.api import Probe
from probes.declarative import templates_in

ENTRY_POINT_GROUP = "iotbaseline.probes"
BUILTIN_DISTRIBUTION = "iotbaseline"


@dataclass(frozen=True)
class LoadedProbe:
    probe: Probe
    source: str  # "distribution version"
    builtin: bool


@dataclass(frozen=True)
class LoadError:
    entry_point: str
    source: str
    reason: str


def _source(entry_point: EntryPoint) -> tuple[str, bool]:
    dist = entry_point.dist
    if dist is None:
        return "unknown", False
    return _distribution_source(dist)


@functools.lru_cache(maxsize=256)
def _distribution_source(dist: Distribution) -> tuple[str, bool]:
    """("name version", built-in?) once per distribution: reading METADATA for each of a
    hundred entry points was half of the registry's start-up time."""
    name = dist.metadata["Name"] or "unknown"
    return f"{name} {dist.version}", name.lower() == BUILTIN_DISTRIBUTION


ProbeLoader = Callable[[], object]  # gives a Probe class, or raises why it cannot
Provider = Callable[[], Iterable[tuple[str, ProbeLoader]]]


def _instantiate(loaded: object, where: str, name: str | None = None) -> Probe:
    """A validated instance of a Probe class; ``name``, when given, must be its check id."""
    if not (isinstance(loaded, type) and issubclass(loaded, Probe)):
        raise TypeError(f"{where} is not a Probe subclass")
    metadata = getattr(loaded, "metadata", None)
    if metadata is None:
        raise TypeError(f"{where} has no metadata")
    problems = metadata.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if name is not None and metadata.check_id != name:
        raise ValueError(f"entry point name {name!r} differs from check id "
                         f"{metadata.check_id!r}")
    return loaded()


def _instantiate_from(loader: ProbeLoader, where: str) -> Probe:
    return _instantiate(loader(), where)


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class _Collector:
    """Probes in load order; a later one reusing a check id is refused, never replaces."""

    def __init__(self) -> None:
        self.loaded: dict[str, LoadedProbe] = {}
        self.errors: list[LoadError] = []

    def add(self, name: str, source: str, builtin: bool, make: Callable[[], Probe]) -> None:
        try:
            probe = make()
        except Exception as exc:  # a broken plugin or template must not stop the scan
            self.errors.append(LoadError(name, source, _reason(exc)))
            return
        check_id = probe.metadata.check_id
        if check_id in self.loaded:
            self.errors.append(LoadError(name, source,
                                         f"check id {check_id!r} is already provided by "
                                         f"{self.loaded[check_id].source}; refused"))
            return
        self.loaded[check_id] = LoadedProbe(probe, source, builtin)

    def add_provided(self, provider: Provider, name: str, source: str, builtin: bool) -> None:
        try:
            provided = list(provider())
        except Exception as exc:
            self.errors.append(LoadError(name, source, _reason(exc)))
            return
        for where, loader in provided:
            self.add(f"{name}:{where}" if name else where, source, builtin,
                     partial(_instantiate_from, loader, where))

    def add_entry_point(self, entry_point: EntryPoint) -> None:
        source, builtin = _source(entry_point)
        try:
            loaded = entry_point.load()
        except Exception as exc:
            self.errors.append(LoadError(entry_point.name, source, _reason(exc)))
            return
        if callable(loaded) and not isinstance(loaded, type):
            self.add_provided(loaded, entry_point.name, source, builtin)
        else:
            self.add(entry_point.name, source, builtin,
                     lambda: _instantiate(loaded, entry_point.value, entry_point.name))

    def add_template_dirs(self, dirs: Sequence[Path]) -> None:
        for folder in dirs:
            self.add_provided(partial(templates_in, folder), "", f"templates {folder}", False)


def load_probes(
    entries: list[EntryPoint] | None = None, template_dirs: Sequence[Path] = (),
) -> tuple[list[LoadedProbe], list[LoadError]]:
    """All usable probes, built-ins first, then plugins, then the templates in
    ``template_dirs``; anything reusing an id already loaded is refused."""
    found = list(entries) if entries is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    found.sort(key=lambda ep: (not _source(ep)[1], ep.name))
    collector = _Collector()
    for entry_point in found:
        collector.add_entry_point(entry_point)
    collector.add_template_dirs(template_dirs)
    return list(collector.loaded.values()), collector.errors


def load_templates(dirs: Sequence[Path]) -> tuple[list[LoadedProbe], list[LoadError]]:
    """Only the declarative checks in a user's template folders (``checks.template_dirs``)."""
    collector = _Collector()
    collector.add_template_dirs(dirs)
    return list(collector.loaded.values()), collector.errors
