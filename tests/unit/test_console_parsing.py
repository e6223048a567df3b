"""Tolerant parsing of console records: missing fields, odd MAC spellings, guessed MACs apart."""

from __future__ import annotations

from shared.defender.console import parse_device
from shared.defender.model import normalise_mac


def test_minimal_record_parses() -> None:
    device = parse_device({"u_id": "42"})
    assert device is not None and (device.id, device.name, device.macs, device.ips) == ("42", "device-42", (), ())


def test_record_without_id_is_skipped() -> None:
    assert parse_device({"u_name": "plc"}) is None
    assert parse_device({"u_id": None}) is None


def test_macs_are_normalised_and_guesses_kept_apart() -> None:
    device = parse_device(
        {
            "u_id": 1,
            "u_mac_address_objects": [{"u_mac_address": "00-1D-9C-AA-BB-CC"}, {"u_mac_address": "bogus"}, None],
            "u_ip_address_objects": [
                {"u_ip_address": "10.0.0.1", "u_guessed_mac_address": ["00:1d:9c:aa:bb:cc", "AABBCCDDEEFF"]},
                {"u_ip_address": "", "u_guessed_mac_address": None},
            ],
            "u_protocol_objects": None,
            "u_sensor_ids": [{"u_sensor_id": 3}, {"u_sensor_id": "x"}],
        }
    )
    assert device is not None
    assert device.macs == ("00:1d:9c:aa:bb:cc",)
    assert device.guessed_macs == ("aa:bb:cc:dd:ee:ff",)  # the confident MAC is not repeated as a guess
    assert device.ips == ("10.0.0.1",) and device.sensor_ids == ("3",) and device.protocols == ()


def test_normalise_mac() -> None:
    assert normalise_mac("AA:BB:CC:DD:EE:FF") == "aa:bb:cc:dd:ee:ff"
    assert normalise_mac("aabb.ccdd.eeff") == "aa:bb:cc:dd:ee:ff"
    for bad in ("", "aa:bb", "not a mac at all!", None, 12):
        assert normalise_mac(bad) is None
