"""Probe discovery through the ``iotbaseline.probes`` entry-point group.

Built-ins are registered there too, so a third-party probe is loaded by exactly the same path and
cannot silently miss out because of import order. Anything wrong with a plugin becomes a load
error that the scan reports, never an exception that stops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from probes.api import Probe

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
    name = dist.metadata["Name"] or "unknown"
    return f"{name} {dist.version}", name.lower() == BUILTIN_DISTRIBUTION


def _instantiate(entry_point: EntryPoint) -> Probe:
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, Probe)):
        raise TypeError(f"{entry_point.value} is not a Probe subclass")
    metadata = getattr(loaded, "metadata", None)
    if metadata is None:
        raise TypeError(f"{entry_point.value} has no metadata")
    problems = metadata.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if metadata.check_id != entry_point.name:
        raise ValueError(f"entry point name {entry_point.name!r} differs from check id "
                         f"{metadata.check_id!r}")
    return loaded()


def load_probes(
    entries: list[EntryPoint] | None = None,
) -> tuple[list[LoadedProbe], list[LoadError]]:
    """All usable probes, built-ins first; a plugin reusing a built-in id is refused."""
    found = list(entries) if entries is not None else list(entry_points(group=ENTRY_POINT_GROUP))
    found.sort(key=lambda ep: (not _source(ep)[1], ep.name))
    loaded: dict[str, LoadedProbe] = {}
    errors: list[LoadError] = []
    for entry_point in found:
        source, builtin = _source(entry_point)
        try:
            probe = _instantiate(entry_point)
        except Exception as exc:  # a broken plugin must not stop the scan
            errors.append(LoadError(entry_point.name, source,
                                    f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        check_id = probe.metadata.check_id
        if check_id in loaded:
            errors.append(LoadError(entry_point.name, source,
                                    f"check id {check_id!r} is already provided by "
                                    f"{loaded[check_id].source}; refused"))
            continue
        loaded[check_id] = LoadedProbe(probe, source, builtin)
    return list(loaded.values()), errors
