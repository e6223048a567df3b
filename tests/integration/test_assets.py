"""The asset index against Azurite with the real Tables SDK: what the sync writes, the forwarder finds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.data.tables import TableClient

from shared.assets.index import ADDRESSES, DEVICES, PARTITIONS, AssetDirectory, AssetLookupError, IndexWriter
from shared.assets.model import TOP_CVES, Asset
from shared.defender.model import Cve, Device, Firmware
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    client = TableClient.from_connection_string(azurite.connection_string, f"assets{uuid.uuid4().hex[:12]}")
    client.create_table()
    yield client
    client.delete_table()


def plc(device_id: str = "7", ip: str = "10.1.0.9", zone: str = "Line 3") -> Device:
    return Device(
        id=device_id,
        name=f"PLC-{device_id}",
        last_update=0,
        device_type="PLC",
        vendor="Siemens",
        purdue_level="ProcessControl",
        criticality="High",
        site="Plant A",
        zone=zone,
        ips=(ip,),
        macs=("00:1b:1b:00:00:07",),
        firmware=(Firmware("S7-1500", "2.9.4", "SN1"),),
    )


def test_a_written_device_is_found_by_its_id_and_by_its_address_within_its_zone(table: TableClient) -> None:
    writer = IndexWriter(table)
    writer.put(Asset.of("sensor-a", plc(), "a" * 32, "cmdb_ci_ot_plc"))
    writer.put(Asset.of("sensor-a", plc("8", zone="Line 4"), "b" * 32, "cmdb_ci_ot_plc"))  # same IP, other zone
    writer.flush()
    rows = [(r["PartitionKey"]) for r in table.query_entities("PartitionKey ge 'asset-' and PartitionKey lt 'asset.'")]
    assert len(rows) == 4 and writer.calls == len(set(rows))  # one transaction per partition written

    directory = AssetDirectory(table)
    found = directory.device("sensor-a", "7")
    assert found is not None and found.sys_id == "a" * 32 and found.ci_class == "cmdb_ci_ot_plc"
    assert (found.name, found.criticality, found.model, found.firmware) == ("PLC-7", "High", "S7-1500", "2.9.4")
    assert directory.address("Plant A", "Line 3", "10.1.0.9").sys_id == "a" * 32  # type: ignore[union-attr]
    assert directory.address("plant a", "LINE 4", "10.1.0.9").sys_id == "b" * 32  # type: ignore[union-attr]
    assert directory.address("Plant A", "Line 5", "10.1.0.9") is None
    assert directory.device("sensor-b", "7") is None  # another source's device 7 is another device


def test_cves_merge_onto_the_device_and_show_the_top_ones_by_score(table: TableClient) -> None:
    writer = IndexWriter(table)
    writer.cves("cloud", "dev-1", [Cve(f"CVE-2024-{n:04d}", score=str(n / 2)) for n in range(12)])
    writer.flush()
    directory = AssetDirectory(table)
    assert directory.device("cloud", "dev-1") is None  # CVEs before the device: not an asset yet
    writer.put(Asset.of("cloud", plc("dev-1"), "c" * 32, "cmdb_ci_ot_plc"))
    writer.flush()
    found = AssetDirectory(table).device("cloud", "dev-1")
    assert found is not None and found.cve_count == 12 and len(found.cves) == TOP_CVES
    assert [v.id for v in found.cves] == [f"CVE-2024-{n:04d}" for n in (11, 10, 9, 8, 7)]


def test_a_retired_device_stays_findable_and_a_re_identified_one_takes_its_new_ci(table: TableClient) -> None:
    writer = IndexWriter(table)
    writer.put(Asset.of("console", plc(), "a" * 32, "cmdb_ci_ot_plc"))
    writer.retire("console", "7")  # combined with the put into one operation of the transaction
    writer.flush()
    found = AssetDirectory(table).device("console", "7")
    assert found is not None and found.retired and found.sys_id == "a" * 32
    writer.put(Asset.of("console", plc(), "d" * 32, "cmdb_ci_ot_plc"))
    writer.flush()
    found = AssetDirectory(table).device("console", "7")
    assert found is not None and not found.retired and found.sys_id == "d" * 32


def test_an_address_taken_by_another_device_points_at_it_and_a_moved_device_is_not_found_at_its_old_one(
    table: TableClient,
) -> None:
    writer = IndexWriter(table)
    writer.put(Asset.of("s", plc("1", ip="10.0.0.1"), "a" * 32, "cmdb_ci_ot_plc"))
    writer.flush()
    writer.put(Asset.of("s", plc("1", ip="10.0.0.2"), "a" * 32, "cmdb_ci_ot_plc"))  # 1 moved to .2
    writer.flush()
    directory = AssetDirectory(table)
    assert directory.address("Plant A", "Line 3", "10.0.0.1") is None
    writer.put(Asset.of("s", plc("2", ip="10.0.0.1"), "b" * 32, "cmdb_ci_ot_plc"))  # 2 took .1
    writer.flush()
    assert AssetDirectory(table).address("Plant A", "Line 3", "10.0.0.1").device_id == "2"  # type: ignore[union-attr]


def test_many_devices_go_in_transactions_of_100(table: TableClient) -> None:
    writer = IndexWriter(table)
    for n in range(250):
        writer.put(Asset.of("s", plc(str(n), ip=f"10.2.{n // 200}.{n % 200}"), f"{n:032x}", "cmdb_ci_ot_plc"))
    writer.flush()
    rows = [dict(e) for e in table.query_entities("PartitionKey ge 'asset-' and PartitionKey lt 'asset.'")]
    for family in (DEVICES, ADDRESSES):
        mine = [r for r in rows if r["PartitionKey"].startswith(f"{family}-")]
        assert len(mine) == 250 and len({r["PartitionKey"] for r in mine}) <= PARTITIONS
    # One transaction per partition and 100 rows (no partition here gets more than 100 of the 500 rows).
    assert writer.calls == len({r["PartitionKey"] for r in rows})


def test_hostile_keys_are_inert_and_reads_are_cached(table: TableClient) -> None:
    hostile = "7' or PartitionKey ne '\u0000/#?\\"
    writer = IndexWriter(table)
    writer.put(Asset.of("s/#?", plc(hostile), "e" * 32, "cmdb_ci_ot_plc"))
    writer.flush()
    now = [0.0]
    directory = AssetDirectory(table, clock=lambda: now[0])
    assert directory.device("s/#?", hostile) is not None
    assert directory.device("s", "7") is None and directory.address("x", "y", "not an address") is None
    reads = directory.reads
    assert directory.device("s/#?", hostile) is not None and directory.device("s", "7") is None
    assert directory.reads == reads  # both answers, found and not found, come from the cache
    now[0] += 61  # past the time a device not found is remembered, within the time a found one is
    directory.device("s", "7")
    directory.device("s/#?", hostile)
    assert directory.reads == reads + 1


def test_storage_trouble_is_one_typed_error(azurite: Azurite) -> None:
    unreachable = TableClient.from_connection_string(
        azurite.connection_string.replace(f":{azurite.table_port}/", ":1/"), "assets", retry_total=0
    )
    with pytest.raises(AssetLookupError, match="could not be read: ServiceRequestError"):
        AssetDirectory(unreachable).device("s", "7")
