"""The evidence bundle: what an assessor hands over to show how each finding was established.

Layout of the bundle folder (0700; every file 0600):

- ``findings/<finding-id>.txt`` — one transcript per finding: what the finding says, then every
  recorded exchange as ``<ISO time>  <direction>  <endpoint>`` with the data indented below;
- ``capture.pcap`` — the packet capture of the scan, when one was made; otherwise
  ``capture-note.txt`` saying why not (or what limited the capture, beside it);
- ``report.json`` — the scan result the transcripts belong to;
- ``manifest.json`` — SHA-256 and size of every other file, the tool version, scan id, profile
  and where it came from, the SHA-256 of each credential data file used, and the creation time.

``verify_evidence`` re-hashes the files and lists what is altered, missing or extra. The manifest
detects change, it does not prove origin: record its own SHA-256 (printed by the CLI) somewhere
the bundle's recipient trusts, or sign it.

Transcripts carry the redacted evidence of the report; the packet capture is raw traffic and is
not redacted (credentials tried, and whatever the devices sent back), so the bundle is as
sensitive as the network it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from scanner.models import Exchange, Finding, ScanResult, utc_now

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "iotbaseline-evidence/1"
CAPTURE_NAME = "capture.pcap"
CAPTURE_NOTE = "capture-note.txt"
REPORT_NAME = "report.json"
FINDINGS_DIR = "findings"
NO_CAPTURE = ("No packet capture was made for this scan (it was not requested, or the scanner "
              "could not open raw sockets: capturing needs root or CAP_NET_RAW).")
_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class EvidenceError(ValueError):
    """The bundle cannot be written where asked."""


def _visible(text: str) -> str:
    """Control and format characters as visible escapes (newline and tab kept): transcripts are
    read with ``cat`` and ``less``, where an escape sequence would act."""
    out = []
    for char in text:
        if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _copy_new(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with source.open("rb") as reader, os.fdopen(fd, "wb") as writer:
        shutil.copyfileobj(reader, writer, _CHUNK)


def transcript_name(finding_id: str, taken: set[str]) -> str:
    """``<finding-id>.txt`` made filesystem-safe and unique (ids come from report files)."""
    stem = _SAFE_NAME.sub("_", finding_id)[:120].lstrip(".") or "finding"
    name, counter = f"{stem}.txt", 1
    while name in taken:
        counter += 1
        name = f"{stem}-{counter}.txt"
    taken.add(name)
    return name


def _exchange(exchange: Exchange) -> list[str]:
    head = f"{_iso(exchange.at)}  {exchange.direction:<8}  {_visible(exchange.endpoint)}"
    if exchange.truncated:
        head += "  (truncated)"
    body = _visible(exchange.data).split("\n")
    return [head, *(f"    {line}" for line in body), ""]


def transcript(finding: Finding) -> str:
    """One finding as text: its statement, then every recorded exchange in order."""
    where = finding.device + (f":{finding.port}/{finding.transport}" if finding.port else "")
    lines = [
        f"Finding:    {_visible(finding.id)}",
        f"Check:      {_visible(finding.check_id)}",
        f"Title:      {_visible(finding.title)}",
        f"Target:     {_visible(where)}" + (f" ({_visible(finding.protocol)})"
                                            if finding.protocol else ""),
        f"Severity:   {finding.severity.value} (confidence {finding.confidence.value})",
        f"Found at:   {_iso(finding.found_at)}",
        f"Summary:    {_visible(finding.summary)}",
    ]
    for framework, clauses in sorted(finding.clauses.items()):
        lines.append(f"Clauses:    {_visible(framework)} {', '.join(map(_visible, clauses))}")
    if finding.remediation:
        lines.append(f"Remedy:     {_visible(finding.remediation)}")
    lines += ["", f"Exchanges ({len(finding.evidence)}): time (UTC), direction, endpoint; "
                  "data below, non-printable bytes escaped, secrets redacted", ""]
    if not finding.evidence:
        lines.append("(no exchange was recorded for this finding)")
    for exchange in finding.evidence:
        lines += _exchange(exchange)
    return "\n".join(lines).rstrip("\n") + "\n"


def _prepare(folder: Path) -> None:
    if folder.is_symlink():
        raise EvidenceError(f"evidence folder {folder} is a symbolic link")
    if folder.exists():
        if not folder.is_dir():
            raise EvidenceError(f"evidence folder {folder} exists and is not a folder")
        if any(folder.iterdir()):
            raise EvidenceError(f"evidence folder {folder} is not empty; choose a new folder")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)


def write_evidence(result: ScanResult, folder: Path, capture: Path | None,
                   credential_files: list[Path], profile_source: str, *,
                   capture_note: str | None = None,
                   capture_details: dict[str, Any] | None = None,
                   created_at: datetime | None = None) -> Path:
    """Write the bundle into ``folder`` (new or empty) and return the folder.

    ``capture`` is a pcap file to include (copied). ``capture-note.txt`` says why there is no
    capture (``capture_note``, or a generic reason), or carries ``capture_note`` beside a capture
    (for example that it hit its size bound). ``capture_details`` (interfaces, filter, counts)
    go into the manifest. ``created_at`` is for reproducible tests.
    """
    _prepare(folder)
    findings_dir = folder / FINDINGS_DIR
    findings_dir.mkdir(mode=0o700)
    findings_dir.chmod(0o700)
    taken: set[str] = set()
    transcripts = {}
    for finding in result.findings:
        name = transcript_name(finding.id, taken)
        _write_new(findings_dir / name, transcript(finding).encode("utf-8"))
        transcripts[finding.id] = f"{FINDINGS_DIR}/{name}"
    if capture is not None:
        _copy_new(capture, folder / CAPTURE_NAME)
    if capture is None or capture_note:
        note = _visible(capture_note or NO_CAPTURE).rstrip("\n") + "\n"
        _write_new(folder / CAPTURE_NOTE, note.encode("utf-8"))
    _write_new(folder / REPORT_NAME, result.model_dump_json(indent=2).encode("utf-8"))

    files = {relative: {"sha256": sha256_file(folder / relative),
                        "bytes": (folder / relative).stat().st_size}
             for relative in sorted(_bundle_files(folder))}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tool": result.meta.tool,
        "tool_version": result.meta.tool_version,
        "scan_id": result.meta.scan_id,
        "profile": result.meta.profile,
        "profile_source": profile_source,
        "created_at": _iso(created_at or utc_now()),
        "capture": CAPTURE_NAME if capture is not None else None,
        "capture_details": capture_details or {},
        "credential_files": [{"path": str(path), "sha256": sha256_file(path),
                              "bytes": path.stat().st_size} for path in credential_files],
        "transcripts": transcripts,
        "files": files,
    }
    _write_new(folder / MANIFEST,
               (json.dumps(manifest, indent=2, ensure_ascii=True) + "\n").encode("utf-8"))
    return folder


def _bundle_files(folder: Path) -> Iterable[str]:
    """Every entry below ``folder`` except the manifest, as POSIX relative paths."""
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in [*names, *(d for d in dirs if (base / d).is_symlink())]:
            relative = (base / name).relative_to(folder).as_posix()
            if relative != MANIFEST:
                yield relative


def verify_evidence(folder: Path, *, check_permissions: bool = False) -> list[str]:
    """What is wrong with the bundle: altered, missing or extra files (and, when asked, files
    readable beyond their owner). An empty list means every file is as the manifest recorded.
    Permissions are off by default: a recipient's copy legitimately has its own."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
        recorded = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(recorded, dict):
            raise ValueError("not an iotbaseline evidence manifest")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest: {MANIFEST} is missing or unreadable ({type(exc).__name__})"]
    problems = []
    for relative, entry in sorted(recorded.items()):
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            problems.append(f"manifest: unsafe path {relative!r}")
            continue
        path = folder.joinpath(*parts)
        if path.is_symlink() or not path.is_file():
            problems.append(f"missing: {relative}")
        elif not isinstance(entry, dict) or sha256_file(path) != entry.get("sha256"):
            problems.append(f"altered: {relative} (SHA-256 differs from the manifest)")
    for relative in sorted(set(_bundle_files(folder)) - set(recorded)):
        if (folder / relative).is_dir() and not (folder / relative).is_symlink():
            continue
        problems.append(f"extra: {relative} (not in the manifest)")
    if check_permissions:
        for path in [folder, *folder.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o077:
                relative = path.relative_to(folder).as_posix() or "."
                problems.append(f"permissions: {relative} is {mode:04o}, open beyond its owner")
    return problems
