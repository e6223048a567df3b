"""Which CI each device of an alert is, and what its record says of it: the rules, over an in-memory table
(the index's storage itself is tested against Azurite in tests/integration/test_assets.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.assets.index import AssetDirectory, IndexWriter
from shared.assets.involved import Sighting, describe, find
from shared.assets.model import Asset
from shared.defender.model import AlertDevices, Cve, Device, Firmware


class MemoryTable:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def get_entity(self, partition_key: str, row_key: str, **_: Any) -> dict[str, Any]:
        if (partition_key, row_key) not in self.rows:
            raise ResourceNotFoundError("not found")
        return dict(self.rows[(partition_key, row_key)])

    def submit_transaction(self, operations: Iterable[Any], **_: Any) -> None:
        for _verb, entity, options in operations:
            self.upsert_entity(entity, mode=options["mode"])

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE, **_: Any) -> None:
        key = (entity["PartitionKey"], entity["RowKey"])
        self.rows[key] = {**(self.rows.get(key, {}) if mode is UpdateMode.MERGE else {}), **entity}


def device(device_id: str, ip: str, *, zone: str = "Line 3", name: str = "") -> Device:
    return Device(
        id=device_id,
        name=name or f"dev-{device_id}",
        last_update=0,
        purdue_level="ProcessControl",
        criticality="High",
        site="Plant A",
        zone=zone,
        vendor="Siemens",
        ips=(ip,),
        firmware=(Firmware("S7-1500", "2.9.4"),),
    )


@pytest.fixture
def directory() -> AssetDirectory:
    table = MemoryTable()
    writer = IndexWriter(table)
    writer.put(Asset.of("line-1", device("line-1:4", "10.1.0.5", name="EWS-4"), "a" * 32, "cmdb_ci_ot_ews"))
    writer.put(Asset.of("line-1", device("line-1:8", "10.1.0.9", name="PLC-8"), "b" * 32, "cmdb_ci_ot_plc"))
    writer.put(Asset.of("line-1", device("line-1:9", "10.1.0.9", zone="Line 4"), "c" * 32, "cmdb_ci_ot_plc"))
    writer.cves("line-1", "line-1:8", [Cve(f"CVE-2023-{n:04d}", str(n)) for n in range(1, 8)])
    writer.flush()
    return AssetDirectory(table)


def sighting(**values: Any) -> Sighting:
    defaults: dict[str, Any] = {
        "scope": "line-1",
        "devices": AlertDevices(),
        "source_address": "10.1.0.5",
        "destination_address": "10.1.0.9",
        "site": "Plant A",
        "zone": "Line 3",
    }
    return Sighting(**{**defaults, **values})


def test_a_sensor_alert_finds_both_devices_by_their_ids(directory: AssetDirectory) -> None:
    found = find(directory, sighting(devices=AlertDevices("line-1:4", "line-1:8")))
    assert (found.source and found.source.name, found.destination and found.destination.name) == ("EWS-4", "PLC-8")
    assert found.missing == ()


def test_a_console_alert_by_address_finds_the_device_of_its_own_zone(directory: AssetDirectory) -> None:
    assert find(directory, sighting()).destination.sys_id == "b" * 32  # type: ignore[union-attr]
    assert find(directory, sighting(zone="Line 4")).destination.sys_id == "c" * 32  # type: ignore[union-attr]


def test_a_cloud_alerts_devices_take_the_role_of_their_address(directory: AssetDirectory) -> None:
    found = find(directory, sighting(devices=AlertDevices(related=("line-1:8", "line-1:4"))))
    assert (found.source.name, found.destination.name) == ("EWS-4", "PLC-8")  # type: ignore[union-attr]


def test_two_devices_of_a_cloud_alert_with_the_same_address_take_one_role_each(directory: AssetDirectory) -> None:
    seen = sighting(devices=AlertDevices(related=("line-1:8", "line-1:9")), source_address="10.1.0.9")
    found = find(directory, seen)
    assert {found.source.sys_id, found.destination.sys_id} == {"b" * 32, "c" * 32}  # type: ignore[union-attr]


def test_a_device_not_synced_is_named_as_missing_and_said_so(directory: AssetDirectory) -> None:
    seen = sighting(devices=AlertDevices("line-1:4", "line-1:99"), destination_address="10.1.0.99")
    found = find(directory, seen)
    assert found.source is not None and found.destination is None and found.missing == ("destination",)
    text = describe(found, seen, lambda a: f"https://sn/{a.sys_id}")
    assert "Destination device 10.1.0.99: not in the CMDB when this record was written." in text
    assert "Source: EWS-4 (cmdb_ci_ot_ews), 10.1.0.5; Purdue level ProcessControl; criticality High" in text
    assert f"https://sn/{'a' * 32}" in text


def test_the_description_lists_the_top_cves_and_counts_the_rest(directory: AssetDirectory) -> None:
    seen = sighting(devices=AlertDevices(None, "line-1:8"), source_address=None)
    found = find(directory, seen)
    assert found.named == ("destination",)
    text = describe(found, seen, lambda a: a.sys_id)
    expected = "7 open CVEs: CVE-2023-0007 (7), CVE-2023-0006 (6), CVE-2023-0005 (5), CVE-2023-0004 (4)"
    assert expected + ", CVE-2023-0003 (3) and 2 more" in text
    assert "Plant A / Line 3; Siemens S7-1500; firmware 2.9.4" in text


def test_an_alert_that_names_no_device_concerns_none(directory: AssetDirectory) -> None:
    found = find(directory, sighting(source_address=None, destination_address="not an address"))
    assert found.named == ("destination",) and found.destination is None
    assert find(directory, sighting(source_address=None, destination_address=None)).named == ()
