"""Resource Graph's Defender for IoT documents as Microsoft publishes them (tests/fixtures/cloud): every
published document reads, and each published field lands where the product uses it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerting.enqueue import validate
from shared.alerting.intake import alert_message
from shared.contract.parse import parse_message
from shared.defender.cloud import (
    SENSORS,
    SITE_SENSORS,
    CloudInventory,
    CloudSource,
    query,
)
from shared.defender.cloud_records import parse_alert, parse_device, parse_sensor, parse_vulnerability
from shared.defender.model import Firmware, ReadReport
from shared.devices.vulnerabilities import CveChange
from shared.platform.settings import SettingsError
from shared.settings import load_settings
from tests.support.fixtures import all_in, load
from tests.support.settings import app_settings

NOW = datetime(2020, 11, 17, 12, 33, tzinfo=UTC)


def documents(*names: str) -> list[dict[str, Any]]:
    return [d for name in names for d in load("cloud", name).documents]


def test_every_published_cloud_document_reads() -> None:
    parsers = {
        "alerts": lambda d: parse_alert(d, "cloud"),
        "devices": parse_device,
        "sensors": lambda d: parse_sensor(d, NOW),
        "vulnerabilities": parse_vulnerability,
    }
    fixtures = all_in("cloud")
    assert {f.path.stem.split("-")[0] for f in fixtures} == set(parsers)
    for fixture in fixtures:
        for document in fixture.documents:
            parsers[fixture.path.stem.split("-")[0]](document)  # raises on any it cannot read


def test_a_published_vulnerability_row_carries_its_cve_severity_and_description() -> None:
    read = [parse_vulnerability(d) for d in documents("vulnerabilities")]
    device, cve = read[0]
    assert device == "0418f897-937b-4cb5-92dc-dd31d3da7911" and cve.id == "CVE-2017-7791"
    assert [c.severity for _, c in read] == ["Critical", "High", "Medium", "Low", "None"]
    assert cve.description.startswith("This vulnerability affects")
    # The REST API's per-device listing: the device from the id, the CVE from the name.
    device, cve = parse_vulnerability(documents("vulnerabilities-rest")[1])
    assert (device, cve.id, cve.severity, cve.score) == (
        "0418f897-937b-4cb5-92dc-dd31d3da7911",
        "CVE-2017-5447",
        "High",
        "8.8",
    )


def test_a_vulnerable_item_carries_the_cves_severity_and_description() -> None:
    change = CveChange("d", "sys", "CVE-2017-7791", "", True, "Critical", "Affects the firmware.")
    item = change.request(None, "0")
    assert item is not None and item.body is not None
    assert item.body["short_description"] == "CVE-2017-7791: severity Critical (Defender for IoT)"
    assert item.body["description"] == "Affects the firmware."


def test_a_published_ot_alert_keeps_its_engine_sensor_devices_and_management_uri() -> None:
    alerts = [parse_alert(d, "cloud") for d in documents("alerts-ot")]
    assert [a.alert.engine for a in alerts] == [  # Defender's MALWARE …, in the contract's spelling
        "Malware",
        "Anomaly",
        "Protocol Violation",
        "Policy Violation",
        "Operational",
    ]
    assert {a.sensor.name for a in alerts} == {"mySensor"}
    assert [a.status for a in alerts] == ["New", "InProgress", "Closed", "New", "Closed"]
    # DeviceResourceIds as a list and as one id read alike.
    assert all(len(a.alert.extra["deviceResourceIds"]) == 1 for a in alerts)
    assert alerts[0].alert.extra["deviceResourceIds"][0].endswith("/devices/0418f897-937b-4cb5-92dc-dd31d3da7911")
    assert alerts[0].alert.extra["alertManagementUri"].startswith("https://management.azure.com/subscriptions/")
    assert alerts[0].protocol == "Modbus"
    validate(alert_message(alerts[0], "cloud").to_document())  # still a valid message with the new fields
    # The device sync names a cloud device by its resource's name: the alert names its devices so.
    assert alerts[0].devices.related == ("0418f897-937b-4cb5-92dc-dd31d3da7911",)
    message = parse_message(json.dumps(alert_message(alerts[0], "cloud").to_document()).encode())
    assert message.origin is not None and message.origin.devices.related == alerts[0].devices.related


def test_a_spec_alert_without_display_name_is_titled_by_its_type() -> None:
    alert = parse_alert(documents("alerts")[0], "cloud")
    assert (alert.alert.title, alert.alert.engine, alert.status) == ("IoT_PrivilegedContainer", "IoT Hub", "New")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/d/1", ["/d/1"]), (["/d/1", "/d/2"], ["/d/1", "/d/2"]), ('["/d/1", "/d/2"]', ["/d/1", "/d/2"]), (7, None)],
)
def test_device_resource_ids_are_read_as_one_id_a_list_or_a_list_in_a_string(value: Any, expected: Any) -> None:
    row = documents("alerts-ot")[0]
    row["properties"]["extendedProperties"]["DeviceResourceIds"] = value
    assert parse_alert(row, "cloud").alert.extra.get("deviceResourceIds") == expected


def test_an_alert_status_azure_does_not_publish_is_refused_with_a_reason() -> None:
    row = documents("alerts-ot")[0]
    row["properties"]["status"] = "Active"
    with pytest.raises(ValueError, match="status 'Active' is not New, InProgress or Closed"):
        parse_alert(row, "cloud")


def test_published_firmware_slots_and_serial_number_reach_the_device() -> None:
    device = parse_device(documents("devices-model")[0])
    assert device.firmware == (Firmware("S7-1500", "2.9.4", "S C-X0001"), Firmware("CPU 1516-3", "2.9.4", "S C-Y0001"))
    # A device with slots and no hardware of its own: a module's serial never stands for the device's.
    row = documents("devices-model")[0]
    del row["properties"]["hardware"], row["properties"]["firmwares"]
    assert parse_device(row).firmware[0] == Firmware()
    assert parse_device(documents("devices")[0]).firmware == ()


def test_a_guessed_mac_is_never_an_identifier() -> None:
    device = parse_device(documents("devices-model")[1])
    assert device.macs == () and device.guessed_macs == ("00:1d:9c:aa:bb:02",)


def test_a_sensor_silent_for_five_minutes_is_offline_whatever_its_status_says() -> None:
    ok = documents("sensors")[0]
    assert parse_sensor(ok, NOW).online
    late = parse_sensor(ok, NOW + timedelta(minutes=6))
    assert not late.online and late.connection_state.startswith("Disconnected")
    assert not parse_sensor(documents("sensors")[1], NOW).online
    assert parse_sensor(ok, NOW).site == "mySite" and parse_sensor(ok, NOW).learning_mode


def test_sensors_are_read_from_both_sensor_types_in_one_query() -> None:
    assert "| where type in~ ('microsoft.iotsecurity/locations/sites/sensors', 'microsoft.iotsecurity/sensors')" in (
        query(SITE_SENSORS, SENSORS)
    )


class Rows:
    """A Resource Graph stand-in for the inventory's filtering: the rows of each type, as one page."""

    def __init__(self, by_type: dict[str, list[dict[str, Any]]]) -> None:
        self.by_type = by_type

    def resources(self, request: Any, cls: Any) -> Any:
        rows = [r for t, rs in self.by_type.items() if f"'{t}'" in request.query for r in rs]

        class Response:
            data = rows
            skip_token = None

        return Response(), {}


def test_only_ot_sensors_devices_of_validated_sensors_become_cis_and_the_rest_is_counted() -> None:
    sensors = documents("sensors")
    for sensor in sensors:
        sensor["properties"]["connectivityTime"] = NOW.isoformat()
    devices = documents("devices-model")
    devices[1]["properties"]["sensor"] = {"name": "mySensor"}  # mySensor is in learning mode
    for device in devices:
        device["properties"]["sensor"] = {"name": "otherSensor"}
    devices[0]["properties"]["sensor"] = {"name": "mySensor"}
    client = Rows({SITE_SENSORS: sensors, "microsoft.iotsecurity/locations/devicegroups/devices": devices})
    inventory = CloudInventory(CloudSource("cloud", client, ("s",), clock=lambda: NOW))
    read = [d.id for page in inventory.device_pages(0) for d in page]
    assert read == [devices[1]["name"]]  # OtSensor, Inactive, of a validated sensor
    assert inventory.skipped_reasons() == [
        "left out 1 device(s): deviceDataSource CorpSensor (DEVICE_SYNC_CLOUD_DATA_SOURCES=OtSensor)",
        "left out 1 device(s): deviceDataSource Mde (DEVICE_SYNC_CLOUD_DATA_SOURCES=OtSensor)",
        "left out 1 device(s): deviceDataSource Other (DEVICE_SYNC_CLOUD_DATA_SOURCES=OtSensor)",
        "left out 1 device(s): deviceStatus Removed or Deleted (treated as gone)",
        "left out 1 device(s): its sensor is in learning mode",
    ]
    wider = CloudInventory(CloudSource("cloud", client, ("s",), clock=lambda: NOW), data_sources=("OtSensor", "Mde"))
    assert len([d for page in wider.device_pages(0) for d in page]) == 2
    assert ReadReport().skipped == []


def test_the_cloud_data_sources_setting_widens_the_sync_and_refuses_unknown_values_by_name() -> None:
    base = app_settings("UseDevelopmentStorage=true")
    assert load_settings(base).device_sync.cloud_data_sources == ("OtSensor",)
    wide = load_settings({**base, "DEVICE_SYNC_CLOUD_DATA_SOURCES": "otsensor, Mde"})
    assert wide.device_sync.cloud_data_sources == ("OtSensor", "Mde")
    with pytest.raises(SettingsError, match=r"DEVICE_SYNC_CLOUD_DATA_SOURCES='Defender' is invalid"):
        load_settings({**base, "DEVICE_SYNC_CLOUD_DATA_SOURCES": "Defender"})
