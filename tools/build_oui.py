"""Build scanner/data/oui.tsv.gz, the MAC prefix -> vendor table shipped with iotbaseline.

The scanner must name device vendors offline and reproducibly, so it ships a frozen copy
of the IEEE MA-L/MA-M/MA-S registries instead of fetching them at scan time. The input is
the CSV files of the Debian package ieee-data, whose version is recorded in the header so
a report can be traced back to the registry snapshot it used. The output is sorted and
gzip'd with a zero timestamp, so rebuilding from the same input gives identical bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import re
import subprocess
import sys
from pathlib import Path

# File name -> (registry name in the CSV, prefix length in hex digits).
REGISTRIES: dict[str, tuple[str, int]] = {
    "oui.csv": ("MA-L", 6),
    "mam.csv": ("MA-M", 7),
    "oui36.csv": ("MA-S", 9),
}
# Runs of whitespace and control characters (e.g. stray tabs in IEEE names) would break
# the one-line-per-entry TSV format, so each run becomes a single space.
_JUNK = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_HEX = re.compile(r"[0-9A-F]+")


def clean_name(name: str) -> str:
    return _JUNK.sub(" ", name).strip()


def read_registry(path: Path, registry: str, digits: int) -> dict[str, set[str]]:
    """Map prefix -> organisation names; a few old MA-L prefixes were assigned twice."""
    entries: dict[str, set[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f), start=2):
            prefix = row["Assignment"].strip().upper()
            name = clean_name(row["Organization Name"])
            if row["Registry"] != registry or len(prefix) != digits or not _HEX.fullmatch(prefix):
                raise ValueError(f"{path}:{lineno}: unexpected row {row!r}")
            if name:
                entries.setdefault(prefix, set()).add(name)
    return entries


def ieee_data_version() -> str:
    """The installed ieee-data version, so the header names the exact snapshot."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "ieee-data"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def build(source_dir: Path, out: Path, version: str) -> int:
    """Write the table and return the number of entries."""
    table: dict[str, set[str]] = {}
    for filename, (registry, digits) in REGISTRIES.items():
        table.update(read_registry(source_dir / filename, registry, digits))
    header = (
        "# source: IEEE Registration Authority MA-L/MA-M/MA-S via Debian package "
        f"ieee-data {version}, built by tools/build_oui.py\n"
    )
    lines = [f"{prefix}\t{' / '.join(sorted(table[prefix]))}\n" for prefix in sorted(table)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        gz.write((header + "".join(lines)).encode("utf-8"))
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=Path("/usr/share/ieee-data"))
    parser.add_argument("--out", type=Path, default=Path("scanner/data/oui.tsv.gz"))
    args = parser.parse_args(argv)
    try:
        version = ieee_data_version()
    except (OSError, subprocess.CalledProcessError) as exc:
        parser.error(
            f"cannot read the ieee-data package version (apt-get install ieee-data): {exc}"
        )
    count = build(args.source_dir, args.out, version)
    print(f"wrote {count} entries to {args.out} (ieee-data {version})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
