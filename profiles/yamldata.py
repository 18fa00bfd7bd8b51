"""YAML data files read the same way everywhere: size-capped, safe-loaded, and validated with
errors that name the file, the line and the field, on one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

MAX_DATA_FILE_BYTES = 4 * 1024 * 1024
# libyaml's safe loader where PyYAML has it: the pure-Python one spent ~2 s of every scan's
# start on the credential lists and frameworks. Same safety (no object construction).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

M = TypeVar("M", bound=BaseModel)


class DataFileError(ValueError):
    """A data file cannot be used; the message is one line naming file, line and field."""


def read_text(path: Path, max_bytes: int = MAX_DATA_FILE_BYTES) -> str:
    try:
        if path.stat().st_size > max_bytes:
            raise DataFileError(f"{path}: larger than {max_bytes} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataFileError(f"{path}: not UTF-8 text") from None


def parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataFileError(f"{where}{line}: not valid YAML: {problem}") from None


def line_of(text: str, location: tuple[Any, ...]) -> int | None:
    """The 1-based line of a field path in YAML text, to point the user at it."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in location:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) \
                and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def validate(model: type[M], data: Any, text: str, where: str) -> M:
    """Validate parsed YAML into ``model``; the first error becomes a file:line: field message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = tuple(error["loc"])
        line = line_of(text, location)
        field = ".".join(str(part) for part in location) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DataFileError(f"{where}{f':{line}' if line else ''}: {field}: "
                            f"{error['msg']}{more}") from None
