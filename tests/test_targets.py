"""Targets and scope: parsing every accepted form, refusing what must be refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.targets import TargetError, build_scope, parse_ports


def addresses(*targets: str, **kwargs: object) -> list[str]:
    return list(build_scope(list(targets), **kwargs).addresses())  # type: ignore[arg-type]


def test_single_address_cidr_and_range() -> None:
    assert addresses("127.0.0.5") == ["127.0.0.5"]
    assert addresses("127.1.2.0/30") == ["127.1.2.1", "127.1.2.2"]  # no network/broadcast
    assert addresses("127.1.2.0/31") == ["127.1.2.0", "127.1.2.1"]
    assert addresses("10.0.0.5-7") == ["10.0.0.5", "10.0.0.6", "10.0.0.7"]
    assert addresses("10.0.0.254-10.0.1.1") == ["10.0.0.254", "10.0.0.255", "10.0.1.0",
                                                 "10.0.1.1"]


def test_ipv6_and_hostname() -> None:
    assert addresses("::1") == ["::1"]
    assert addresses("::ffff:127.0.0.1") == ["::ffff:7f00:1"]
    assert addresses("fd00::1-fd00::2") == ["fd00::1", "fd00::2"]
    scope = build_scope(["localhost"])
    assert scope.allows("127.0.0.1")
    assert scope.hostnames.get("127.0.0.1") == "localhost"


def test_overlaps_merge_and_excludes_subtract() -> None:
    scope = build_scope(["127.0.0.1-10", "127.0.0.5-20"], ["127.0.0.8", "127.0.0.15-30"])
    assert scope.size == 13
    assert not scope.allows("127.0.0.8")
    assert scope.allows("127.0.0.7") and scope.allows("127.0.0.14")
    assert not scope.allows("127.0.0.21")


def test_scope_refuses_outside_and_excluded_ports() -> None:
    scope = build_scope(["127.5.0.0/24"], excluded_ports=[2024])
    assert scope.allows("127.5.0.9", 23)
    assert not scope.allows("127.5.0.9", 2024)
    assert not scope.allows("127.6.0.9")
    assert not scope.allows("not an address")
    assert not scope.allows("::1")


def test_target_file(tmp_path: Path) -> None:
    listing = tmp_path / "targets.txt"
    listing.write_text("# lab\n127.0.0.1\n\n127.0.0.3-4  # two more\n")
    assert addresses(f"@{listing}") == ["127.0.0.1", "127.0.0.3", "127.0.0.4"]


@pytest.mark.parametrize("spec, message", [
    ("", "empty target"),
    ("999.1.1.1", "not an address"),
    ("127.0.0.1/33", "not a network"),
    ("127.0.0.9-3", "ends before it starts"),
    ("127.0.0.1-300", "not an octet"),
    ("127.0.0.1-::1", "mixes IPv4 and IPv6"),
    ("no_such_host.invalid", "not an address"),
    ("bad host name!", "not an address"),
    ("224.0.0.1", "multicast"),
    ("8.8.8.8", "globally routable"),
    ("0.0.0.0/0", "this machine"),
    ("0.0.0.5", "this machine"),
    ("::", "this machine"),
    ("1.0.0.0/8", "globally routable"),
    ("::ffff:8.8.8.8", "globally routable"),
    ("@/nonexistent/targets.txt", "cannot read target file"),
])
def test_bad_targets_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        build_scope([spec])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unresolvable_hostname() -> None:
    with pytest.raises(TargetError, match="cannot resolve"):
        build_scope(["nonexistent.invalid"])


def test_public_needs_allow_public_and_big_scopes_need_force() -> None:
    assert build_scope(["8.8.8.8"], allow_public=True).size == 1
    with pytest.raises(TargetError, match="--force"):
        build_scope(["10.0.0.0/15"])
    assert build_scope(["10.0.0.0/15"], force=True).size > 65_536


def test_everything_excluded() -> None:
    with pytest.raises(TargetError, match="every target is excluded"):
        build_scope(["127.0.0.1"], ["127.0.0.0/24"])


def test_target_file_errors_name_the_line(tmp_path: Path) -> None:
    listing = tmp_path / "t.txt"
    listing.write_text("127.0.0.1\nnonsense!!\n")
    with pytest.raises(TargetError, match=r"t\.txt:2: "):
        build_scope([f"@{listing}"])
    listing.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TargetError, match="not UTF-8"):
        build_scope([f"@{listing}"])


def test_ports() -> None:
    assert parse_ports("22,80,8000-8002,U:161") == {"tcp": [22, 80, 8000, 8001, 8002],
                                                   "udp": [161]}
    for bad in ("0", "70000", "abc", "5-1", ",,"):
        with pytest.raises(TargetError):
            parse_ports(bad)
