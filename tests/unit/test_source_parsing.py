"""Resource Graph and sensor records as real sources send them: missing, null or hostile fields are read
or refused with a reason, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from shared.defender.cloud_records import parse_device, parse_vulnerability


def test_a_cloud_device_keeps_certain_macs_apart_from_guesses() -> None:
    device = parse_device(
        {
            "name": "6f0c2d9e-5d55-4b3e-9d6c-2b1f0a7e4c11",
            "properties": {
                "deviceName": "plc-7",
                "lastUpdated": "2026-11-20T10:00:00.5Z",
                "deviceSubTypeDisplayName": "PLC",
                "sensor": {"name": "sensor-1", "zone": "Line 4", "site": "Plant B"},
                "hardware": {"vendor": "Siemens"},
                "nics": [
                    {"ipv4Address": "10.1.4.7", "macAddress": "00-1D-9C-AA-BB-CC", "macCertainty": "Certain"},
                    {"ipv4Address": "10.1.4.8", "macAddress": "aabb.ccdd.eeff", "macCertainty": "Guess"},
                    {"macAddress": "not a mac"},
                    "hostile",
                ],
                "protocols": [{"name": "S7"}, None, {"name": ""}],
            },
        }
    )
    assert (device.name, device.device_type, device.vendor, device.zone, device.site) == (
        "plc-7",
        "PLC",
        "Siemens",
        "Line 4",
        "Plant B",
    )
    assert device.macs == ("00:1d:9c:aa:bb:cc",) and device.guessed_macs == ("aa:bb:cc:dd:ee:ff",)
    assert device.ips == ("10.1.4.7", "10.1.4.8") and device.protocols == ("S7",)
    assert device.last_update == 1_795_168_800_500 and device.sensor_ids == ("sensor-1",)


@pytest.mark.parametrize("row", [{}, {"name": "x"}, {"name": "x", "properties": "nope"}, {"properties": {}}])
def test_a_cloud_device_without_name_or_properties_is_refused_with_a_reason(row: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no name or no properties"):
        parse_device(row)


def test_a_cloud_device_with_nothing_but_a_name_reads_as_blanks() -> None:
    device = parse_device({"name": "d1", "properties": {"sensor": None, "hardware": [], "nics": None}})
    assert (device.id, device.name, device.last_update, device.macs, device.sensor_ids) == ("d1", "d1", 0, (), ())


def test_a_cloud_vulnerability_names_its_device_by_id_or_arm_path() -> None:
    arm = "/subscriptions/s/providers/Microsoft.IoTSecurity/locations/l/deviceGroups/g/devices/d-7"
    assert parse_vulnerability({"properties": {"deviceId": arm, "vulnerabilityId": "CVE-2024-1"}})[0] == "d-7"
    for bad in ({}, {"properties": {"deviceId": "d"}}, {"properties": {"deviceId": "d", "vulnerabilityId": "nope"}}):
        with pytest.raises(ValueError, match=r"^no "):
            parse_vulnerability(bad)
