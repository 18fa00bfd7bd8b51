"""The shipped default-credential database: it loads, is large and attributed, and ranks well."""

from __future__ import annotations

from collections import Counter
from importlib.resources import files

import pytest

from profiles.credentials import (
    GENERIC_VENDOR,
    PROTOCOLS,
    CredentialError,
    CredentialStore,
    builtin_entries,
    load_file,
)


def _shipped_files() -> list[tuple[str, str]]:
    folder = files("profiles").joinpath("credentials")
    return sorted((r.name, r.read_text("utf-8")) for r in folder.iterdir()
                  if r.name.endswith(".yaml"))


def test_every_shipped_file_loads_and_has_entries():
    shipped = _shipped_files()
    assert len(shipped) >= 5
    total = 0
    for name, text in shipped:
        entries = load_file(text, f"credentials/{name}")
        assert entries, f"{name} has no entries"
        total += len(entries)
    assert total == len(builtin_entries())
    assert len(CredentialStore.load().entries) == total


def test_vendor_attributed_database_is_large():
    unique = {(e.vendor, e.protocol, e.username, e.password)
              for e in builtin_entries() if e.vendor.lower() != GENERIC_VENDOR}
    assert len(unique) >= 700


def test_every_protocol_has_entries():
    counts = Counter(e.protocol for e in builtin_entries())
    for protocol in PROTOCOLS:
        assert counts[protocol] >= 10, (protocol, counts[protocol])


def test_every_entry_cites_a_source():
    for e in builtin_entries():
        assert e.source.strip(), e
        assert e.vendor.strip(), e


def test_snmp_entries_carry_the_community_as_password():
    for e in builtin_entries():
        if e.protocol == "snmp":
            assert e.username == "" and e.password, e


def test_no_exact_duplicate_entries():
    keys = Counter((e.vendor, e.protocol, e.username, e.password, e.port)
                   for e in builtin_entries())
    duplicates = [key for key, count in keys.items() if count > 1]
    assert duplicates == []


def test_generic_entries_carry_no_match_words():
    for e in builtin_entries():
        if e.vendor.lower() == GENERIC_VENDOR:
            assert e.match == [], e


def test_hikvision_fingerprint_ranks_a_hikvision_pair_first():
    store = CredentialStore.load()
    found = store.candidates("http", "Hangzhou Hikvision Digital Technology DS-2CD2042WD")
    assert found[0].vendor == "Hikvision"
    assert (found[0].username, found[0].password) == ("admin", "12345")


def test_match_words_pick_the_vendor_without_its_name():
    store = CredentialStore.load()
    found = store.candidates("http", "Server: App-webs/")  # Hikvision's web server banner
    assert found[0].vendor == "Hikvision"
    found = store.candidates("ssh", "RouterOS 6.48 on CCR1009")
    assert found[0].vendor == "MikroTik"


def test_unknown_device_starts_with_generic_pairs():
    store = CredentialStore.load()
    found = store.candidates("telnet", "unknown device")
    assert found[0].vendor == GENERIC_VENDOR
    generic_pairs = {(e.username, e.password) for e in builtin_entries()
                     if e.vendor == GENERIC_VENDOR and e.protocol == "telnet"}
    leading = [(c.username, c.password) for c in found[:len(generic_pairs)]]
    assert set(leading) == generic_pairs


ENTRY = """\
entries:
  - vendor: Acme
    protocol: {protocol}
    username: admin
    password: admin
{source}"""


def test_bad_protocol_names_file_line_and_field():
    text = ENTRY.format(protocol="smtp", source="    source: Acme manual\n")
    with pytest.raises(CredentialError) as exc:
        load_file(text, "x.yaml")
    message = str(exc.value)
    assert message.startswith("x.yaml:3:")
    assert "entries.0.protocol" in message


def test_missing_source_names_file_line_and_field():
    text = ENTRY.format(protocol="ssh", source="")
    with pytest.raises(CredentialError) as exc:
        load_file(text, "x.yaml")
    message = str(exc.value)
    assert message.startswith("x.yaml:2:")
    assert "entries.0.source" in message


def test_non_mapping_entry_names_file_line_and_field():
    with pytest.raises(CredentialError) as exc:
        load_file("description: d\nentries:\n  - just a string\n", "x.yaml")
    message = str(exc.value)
    assert message.startswith("x.yaml:3:")
    assert "entries.0" in message


def test_non_mapping_file_names_file_and_top_level():
    # A top-level list has no key to point at, so the loader reports the file without a line.
    with pytest.raises(CredentialError) as exc:
        load_file("- vendor: Acme\n- vendor: Other\n", "x.yaml")
    message = str(exc.value)
    assert message.startswith("x.yaml")
    assert "(top level)" in message
