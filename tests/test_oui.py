"""MAC normalisation and vendor lookup against the shipped IEEE table (scanner/data/oui.tsv.gz)."""

import gzip
from importlib.resources import files

import pytest

from scanner.discovery.oui import lookup_vendor, normalize_mac


@pytest.mark.parametrize(
    "mac",
    [
        "24:6f:28:12:34:56",
        "24:6F:28:12:34:56",
        "24-6F-28-12-34-56",
        "246f.2812.3456",
        "246F28123456",
        " 24:6f:28:12:34:56\n",
    ],
)
def test_normalize_mac_accepts_common_notations(mac: str) -> None:
    assert normalize_mac(mac) == "24:6f:28:12:34:56"


@pytest.mark.parametrize(
    "mac",
    [
        "",
        "not a mac",
        "24:6f:28:12:34",  # five octets
        "24:6f:28:12:34:56:78",  # seven octets
        "24:6f:28:12:34:5g",  # non-hex
        "246f28123456ab",  # fourteen bare digits
        "24:6f-28:12-34:56",  # mixed separators
        "24.6f.28.12.34.56",  # dots are only valid in the Cisco 4.4.4 form
        "2:6f:28:12:34:56",  # octets must have two digits
    ],
)
def test_normalize_mac_rejects_invalid(mac: str) -> None:
    assert normalize_mac(mac) is None


@pytest.mark.parametrize(
    ("mac", "vendor"),
    [
        ("24:6f:28:aa:bb:cc", "Espressif Inc."),
        ("44-47-CC-01-02-03", "Hangzhou Hikvision Digital Technology Co.,Ltd."),
        ("2085.93b0.0001", "IOG Products LLC"),  # MA-M 20:85:93:B
        ("70:b3:d5:71:90:01", "2M Technology"),  # MA-S 70:B3:D5:71:9
    ],
)
def test_lookup_vendor_known(mac: str, vendor: str) -> None:
    assert lookup_vendor(mac) == vendor


@pytest.mark.parametrize("mac", ["20:85:93:f0:00:01", "70:b3:d5:00:00:01"])
def test_lookup_vendor_falls_back_to_ma_l_block_owner(mac: str) -> None:
    # No MA-M/MA-S entry covers these, so the 24-bit MA-L owner (the IEEE itself) answers.
    assert lookup_vendor(mac) == "IEEE Registration Authority"


@pytest.mark.parametrize(
    "mac",
    [
        "26:6f:28:12:34:56",  # Espressif 24:6F:28 with the local bit set: randomised
        "da:a1:19:00:00:01",  # typical phone privacy address
        "aa:00:04:00:00:01",  # legacy DEC MA-L entry that has the local bit set
    ],
)
def test_lookup_vendor_locally_administered_is_none(mac: str) -> None:
    assert lookup_vendor(mac) is None


@pytest.mark.parametrize("mac", ["", "garbage", "24:6f:28", "24:6f:28:12:34:56:78"])
def test_lookup_vendor_invalid_is_none(mac: str) -> None:
    assert lookup_vendor(mac) is None


def test_lookup_vendor_unassigned_prefix_is_none() -> None:
    # FC:FF:FF is not in the 2022 registry snapshot; revisit if the table is rebuilt.
    assert lookup_vendor("fc:ff:ff:00:00:01") is None


def test_shipped_table_names_its_source() -> None:
    resource = files("scanner") / "data" / "oui.tsv.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        header = text.readline()
    assert header.startswith(
        "# source: IEEE Registration Authority MA-L/MA-M/MA-S via Debian package ieee-data "
    )
    assert header.rstrip().endswith(", built by tools/build_oui.py")
