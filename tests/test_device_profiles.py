"""Vendor device profiles: every shipped profile is well-formed and cites its sources, and each
match key recognises the device field it names and nothing else (a near miss does not match).

Pure tests: no traffic is sent (address block 127.131.0.0/16 is used only as device labels)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest

from profiles.devices import (
    MATCH_KEYS,
    DeviceProfile,
    DeviceProfileError,
    builtin_device_profiles,
    load_file,
    matching_profiles,
    profile_matches,
)
from scanner.models import Certificate, Device, Service

ADDRESS = "127.131.0.10"
NEW_KEYS = ("banner", "certificate_subject", "oui_vendor", "upnp_manufacturer", "upnp_model",
            "mdns_service")


def _profile(**match: list[str]) -> DeviceProfile:
    lines = "".join(f"  {key}: {values!r}\n" for key, values in match.items())
    return load_file(f"id: acme\nvendor: Acme\nmatch:\n{lines}", "acme.yaml")


def _ids(device: Device) -> list[str]:
    return [profile.id for profile in matching_profiles(builtin_device_profiles(), device)]


def _https(url: str) -> bool:
    return url.startswith("https://") and " " not in url


# --- the shipped data ------------------------------------------------------------------------

def test_shipped_profiles_load_with_unique_ids_and_cover_twenty_vendor_families() -> None:
    profiles = builtin_device_profiles()
    assert len({p.id for p in profiles}) == len(profiles)
    vendors = {p.vendor for p in profiles}
    assert len(vendors) >= 20, sorted(vendors)
    for family in ("Hikvision", "Dahua", "Axis Communications", "Reolink", "TP-Link", "Netgear",
                   "ASUS", "MikroTik", "AVM", "QNAP", "HP", "Brother", "Signify (Philips Hue)",
                   "Shelly", "Tasmota", "Home Assistant", "Sonos", "Synology"):
        assert family in vendors, family


def test_every_profile_cites_https_sources_for_what_it_claims() -> None:
    for profile in builtin_device_profiles():
        rules = profile.match
        if any(getattr(rules, key) for key in NEW_KEYS):
            assert "https://" in rules.source or "IEEE OUI" in rules.source, profile.id
        if profile.disclosure is not None:
            assert "https://" in profile.disclosure.source, profile.id
            assert profile.disclosure.policy_url is None or \
                _https(profile.disclosure.policy_url), profile.id
            assert profile.disclosure.policy_url or profile.disclosure.support_period, profile.id
        if profile.firmware is not None:
            assert "https://" in profile.firmware.source, profile.id
        for service in profile.expected_services:
            assert service.source == "" or _https(service.source), profile.id
        for form in profile.login_forms:
            assert "https://" in form.source, profile.id


def test_expected_services_are_well_formed() -> None:
    declared = [(p.id, s) for p in builtin_device_profiles() for s in p.expected_services]
    assert len(declared) >= 20
    for profile_id, service in declared:
        assert service.transport in ("tcp", "udp"), profile_id
        assert service.port is not None or service.protocol is not None, profile_id
        assert len(service.reason) >= 3, profile_id
    per_profile = [(pid, s.transport, s.port, s.protocol) for pid, s in declared]
    assert len(per_profile) == len(set(per_profile)), "a profile declares a service twice"


@pytest.mark.parametrize("profile_id, port, transport", [
    ("philips-hue-bridge", 443, "tcp"), ("philips-hue-bridge", 1900, "udp"),
    ("hp-printer", 631, "tcp"), ("hp-printer", 9100, "tcp"),
    ("brother-printer", 9100, "tcp"), ("sonos", 1400, "tcp"), ("tp-link-kasa", 9999, "udp"),
    ("mikrotik-routeros", 8291, "tcp"), ("home-assistant", 8123, "tcp"),
])
def test_documented_needs_are_declared(profile_id: str, port: int, transport: str) -> None:
    [profile] = [p for p in builtin_device_profiles() if p.id == profile_id]
    service = Service(port=port, transport=transport)
    assert any(expected.port == port and expected.transport == transport
               for expected in profile.expected_services)
    other = Service(port=port + 1, transport=transport)
    assert not any(expected.covers(other) for expected in profile.expected_services
                   if expected.port == service.port)


def test_hue_bridge_v1_is_past_its_end_of_support_and_v2_is_not() -> None:
    v1 = Device(address=ADDRESS, upnp={"manufacturer": "Royal Philips Electronics",
                                       "modelName": "Philips hue bridge 2012",
                                       "modelNumber": "929000226503"})
    v2 = Device(address=ADDRESS, upnp={"manufacturer": "Signify",
                                       "modelName": "Philips hue bridge 2015",
                                       "modelNumber": "BSB002"})
    assert _ids(v1) == ["philips-hue-bridge-v1", "philips-hue-bridge"]
    assert _ids(v2) == ["philips-hue-bridge"]
    [v1_profile] = [p for p in builtin_device_profiles() if p.id == "philips-hue-bridge-v1"]
    assert v1_profile.firmware is not None
    assert v1_profile.firmware.end_of_support == date(2020, 4, 30)


# --- the new match keys ----------------------------------------------------------------------

def _http(server: str = "", title: str = "") -> Service:
    return Service(port=80, transport="tcp", protocol="http", banner=server, product=server,
                   details={"title": title} if title else {})


def _tls(subject: str) -> Service:
    certificate = Certificate(subject=subject, issuer="CN=other", sha256="00" * 32)
    return Service(port=443, transport="tcp", protocol="http", tls=True, certificate=certificate)


# key, rule, a device holding the value in that field, a near miss (the value elsewhere or a
# neighbouring value in the same field)
MatchCase = tuple[str, str, Callable[[], Device], Callable[[], Device]]
CASES: list[MatchCase] = [
    ("oui_vendor", "axis communications",
     lambda: Device(address=ADDRESS, vendor="Axis Communications AB"),
     lambda: Device(address=ADDRESS, vendor="Espressif Inc.",
                    upnp={"friendlyName": "Axis Communications AB camera"})),
    ("upnp_manufacturer", "sonos",
     lambda: Device(address=ADDRESS, upnp={"manufacturer": "Sonos, Inc."}),
     lambda: Device(address=ADDRESS, upnp={"friendlyName": "Sonos room",
                                          "manufacturer": "Denon"})),
    ("upnp_model", "philips hue bridge",
     lambda: Device(address=ADDRESS, upnp={"modelName": "Philips hue bridge 2015"}),
     lambda: Device(address=ADDRESS, upnp={"friendlyName": "Philips hue bridge",
                                          "modelName": "Hue Emulator"})),
    ("upnp_model", "bsb002",
     lambda: Device(address=ADDRESS, upnp={"modelNumber": "BSB002"}),
     lambda: Device(address=ADDRESS, upnp={"serialNumber": "BSB002"})),
    ("mdns_service", "_hue._tcp",
     lambda: Device(address=ADDRESS, mdns_services=["_http._tcp", "_hue._tcp"]),
     lambda: Device(address=ADDRESS, mdns_services=["_http._tcp"], hostnames=["_hue._tcp"])),
    ("banner", "rosssh",
     lambda: Device(address=ADDRESS, services=[
         Service(port=22, transport="tcp", protocol="ssh", banner="SSH-2.0-ROSSSH")]),
     lambda: Device(address=ADDRESS, services=[
         Service(port=22, transport="tcp", protocol="ssh", banner="SSH-2.0-OpenSSH_9.2"),
         _http(title="ROSSSH notes")], hostnames=["rosssh.example"])),
    ("certificate_subject", "fritz!box",
     lambda: Device(address=ADDRESS, services=[_tls("CN=fritz.box,O=FRITZ!Box")]),
     lambda: Device(address=ADDRESS, services=[_http(title="FRITZ!Box"),
                                               _tls("CN=router.local")])),
]


@pytest.mark.parametrize("key, rule, holder, near_miss", CASES,
                         ids=[f"{case[0]}:{case[1]}" for case in CASES])
def test_each_match_key_reads_only_its_own_field(key: str, rule: str,
                                                 holder: Callable[[], Device],
                                                 near_miss: Callable[[], Device]) -> None:
    profile = _profile(**{key: [rule]})
    assert profile_matches(profile, holder())
    assert not profile_matches(profile, near_miss())
    # the same value as a plain term matches both: the field keys are the precise ones
    assert profile_matches(_profile(terms=[rule]), holder())


def test_banner_rules_see_every_service_but_server_rules_only_http() -> None:
    ftp = Service(port=21, transport="tcp", protocol="ftp", banner="220 MikroTik FTP server")
    device = Device(address=ADDRESS, services=[ftp])
    assert profile_matches(_profile(banner=["mikrotik ftp"]), device)
    assert not profile_matches(_profile(server=["mikrotik ftp"]), device)


def test_matching_ignores_case_and_missing_fields() -> None:
    profile = _profile(oui_vendor=["hikvision"], upnp_manufacturer=["hikvision"],
                       certificate_subject=["hikvision"])
    assert profile_matches(profile, Device(address=ADDRESS,
                                           vendor="Hangzhou HIKVISION Digital Technology"))
    assert not profile_matches(profile, Device(address=ADDRESS))  # no vendor, upnp, services


@pytest.mark.parametrize("key", NEW_KEYS)
def test_new_keys_are_validated_like_terms(key: str) -> None:
    assert key in MATCH_KEYS
    with pytest.raises(DeviceProfileError, match=rf"acme.yaml:4: match\.{key}"):
        _profile(**{key: ["UPPER"]})
    with pytest.raises(DeviceProfileError, match=rf"acme.yaml:4: match\.{key}"):
        _profile(**{key: ["ab"]})  # shorter than MIN_TERM
    assert getattr(_profile(**{key: ["abc"]}).match, key) == ["abc"]


def test_a_profile_needs_some_match_rule() -> None:
    with pytest.raises(DeviceProfileError, match="give at least one of terms"):
        load_file("id: acme\nvendor: Acme\nmatch:\n  source: https://example.invalid/\n",
                  "acme.yaml")


# --- the shipped profiles recognise what their vendors publish -------------------------------

@pytest.mark.parametrize("device, expected", [
    (Device(address=ADDRESS, vendor="Hangzhou Hikvision Digital Technology Co.,Ltd."),
     ["hikvision"]),
    (Device(address=ADDRESS, services=[_http(server="DNVRS-Webs")]),
     ["hikvision"]),
    (Device(address=ADDRESS, vendor="Zhejiang Dahua Technology Co., Ltd."), ["dahua"]),
    (Device(address=ADDRESS, mdns_services=["_axis-video._tcp"]), ["axis"]),
    (Device(address=ADDRESS, hostnames=["reolink-front-door"]), ["reolink"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "TP-LINK", "modelName": "Archer C6"}),
     ["tp-link"]),
    (Device(address=ADDRESS, vendor="TP-LINK TECHNOLOGIES CO.,LTD.", hostnames=["HS110"]),
     ["tp-link-kasa", "tp-link"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "NETGEAR, Inc."}), ["netgear"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "ASUSTeK Computer Inc."}), ["asus-router"]),
    (Device(address=ADDRESS, vendor="ASUSTek COMPUTER INC."), []),  # a laptop, not a router
    (Device(address=ADDRESS, vendor="Routerboard.com"), ["mikrotik-routeros"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "AVM Berlin"}), ["avm-fritzbox"]),
    (Device(address=ADDRESS, mdns_services=["_qdiscover._tcp"]), ["qnap-nas"]),
    (Device(address=ADDRESS, model="HP Color LaserJet MFP M283fdw"), ["hp-printer"]),
    (Device(address=ADDRESS, vendor="Hewlett Packard"), []),  # HP's OUI is on PCs too
    (Device(address=ADDRESS, vendor="Brother industries, LTD."), ["brother-printer"]),
    (Device(address=ADDRESS, mdns_services=["_shelly._tcp"]), ["shelly"]),
    (Device(address=ADDRESS, services=[_http(title="Kitchen - Tasmota")]),
     ["tasmota"]),
    (Device(address=ADDRESS, mdns_services=["_home-assistant._tcp"]), ["home-assistant"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "Sonos, Inc."}), ["sonos"]),
    (Device(address=ADDRESS, upnp={"manufacturer": "Synology"}), ["synology-dsm"]),
    (Device(address=ADDRESS, vendor="Espressif Inc."), []),
])
def test_shipped_profiles_recognise_vendor_identifiers(device: Device,
                                                       expected: list[str]) -> None:
    assert sorted(_ids(device)) == sorted(expected)
