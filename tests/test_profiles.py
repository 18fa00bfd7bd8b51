"""Scan profiles: built-ins load, inheritance works, bad files give file:line: field errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles import ProfileError, builtin_profile_names, load_profile
from scanner.models import Intrusiveness


def test_builtins_load_and_never_list_port_2024() -> None:
    assert {"safe", "quick", "standard"} <= set(builtin_profile_names())
    for name in builtin_profile_names():
        profile = load_profile(name)
        assert profile.name == name
        assert 2024 not in profile.ports.tcp


def test_extends_merges_nested_settings() -> None:
    quick, safe = load_profile("quick"), load_profile("safe")
    assert quick.timing.per_host == safe.timing.per_host  # inherited
    assert quick.timing.probe_budget == 10.0  # overridden
    assert quick.intrusiveness_cap is Intrusiveness.SAFE
    assert load_profile("standard").discovery.nmap is True


def test_profile_file_with_extends(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nextends: safe\nports:\n  tcp: [23, 23, 80]\n")
    profile = load_profile(str(path))
    assert profile.ports.tcp == [23, 80]
    assert profile.ports.udp == load_profile("safe").ports.udp


@pytest.mark.parametrize("text, expected", [
    ("name: x\ntiming:\n  per_host: 0\n", r"mine\.yaml:3: timing\.per_host: "),
    ("name: x\nports:\n  tcp: [1, 99999]\n", r"mine\.yaml:3: ports\.tcp"),
    ("name: x\nmax_intrusiveness: reckless\n", r"mine\.yaml:2: max_intrusiveness: .*reckless"),
    ("name: x\nsurprise: 1\n", r"mine\.yaml:2: surprise: Extra inputs"),
    ("name: x\ntiming: [\n", r"mine\.yaml:\d+: not valid YAML"),
    ("- a list\n", r"a profile is a mapping"),
    ("name: x\nextends: nowhere\n", r"no profile 'nowhere'"),
])
def test_bad_profiles(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError, match=expected) as caught:
        load_profile(str(path))
    assert "\n" not in str(caught.value)


def test_extends_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(f"name: a\nextends: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"name: b\nextends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ProfileError, match="loop"):
        load_profile(str(tmp_path / "a.yaml"))


def test_missing_and_binary_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no profile"):
        load_profile(str(tmp_path / "absent.yaml"))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(str(binary))
