"""A new record names the CIs of the devices its alert concerns, found in the asset index (Azurite, the real Tables
SDK) and written to the ServiceNow emulator through the product's own forwarder, as it is deployed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient

from shared.alerting.intake import Intake, IntakeState
from shared.app.sources import cloud_source
from shared.assets.index import AssetDirectory, IndexWriter
from shared.assets.model import Asset
from shared.defender import cloud, cloud_records
from shared.defender.model import Cve, Device, Firmware
from shared.defender.settings import CloudSourceSettings
from tests.support.forwarding import CREATED, Stack, alert
from tests.support.metrics import count
from tools.emulators.console.inventory import generate, raise_alert
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.resourcegraph.world import alert_document, device_name, documents
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
SOURCES = [
    {
        "name": "line-3",
        "kind": "sensor",
        "url": "https://sensor-3.plant-a.internal",
        "site": "Plant A",
        "zone": "Line 3",
    },
    {"name": "cloud", "kind": "cloud", "subscriptions": [SUBSCRIPTION]},
]
ACTIONS: list[dict[str, Any]] = [
    {"name": "incident", "connection": "default", "report": "incident"},
    {
        "name": "soc",
        "connection": "default",
        "report": "full",
        "table": "sn_si_incident",
        "configuration_item": "source",
    },
    {
        "name": "ranked",
        "connection": "default",
        "report": "incident",
        "short_description": "{title} on {ci} ({ci_class}, {criticality})",
        "affected_cis": True,
        "impact_from_criticality": {"high": 1, "Low": 3},
    },
    {
        "name": "storm",
        "connection": "default",
        "report": "incident",
        "affected_cis": True,
        "group": {"key": "{sensor}:{title}", "window_minutes": 60},
    },
]


def document(*actions: str) -> dict[str, Any]:
    return {"actions": ACTIONS, "rules": [{"name": "main", "created_at": CREATED, "actions": list(actions)}]}


def device(device_id: str, ip: str, zone: str = "Line 3", kind: str = "PLC", criticality: str = "High") -> Device:
    return Device(
        id=device_id,
        name=f"{kind}-{device_id}",
        last_update=0,
        device_type=kind,
        vendor="Siemens",
        purdue_level="ProcessControl",
        criticality=criticality,
        site="Plant A",
        zone=zone,
        ips=(ip,),
        macs=("00:1b:1b:00:00:07",),
        firmware=(Firmware("S7-1500", "2.9.4", "SN1"),),
    )


class World:
    """The stack, and the index the device sync would have written, its CIs in the emulator's CMDB."""

    def __init__(self, stack: Stack, table: TableClient) -> None:
        self.stack, self.table = stack, table
        self.writer = IndexWriter(table)

    def sync(self, scope: str, item: Device, ci_class: str = "cmdb_ci_ot_control", cves: int = 0) -> Asset:
        ci = self.stack.servicenow.store.insert(ci_class, {"name": item.name}, "sync")
        asset = Asset.of(scope, item, ci["sys_id"], ci_class)
        self.writer.put(asset)
        if cves:
            self.writer.cves(scope, item.id, [Cve(f"CVE-2024-{n:04d}", score=f"{n}.0") for n in range(cves)])
        self.writer.flush()
        return asset

    def record(self, table: str = "incident") -> dict[str, str]:
        found = self.stack.records(table)
        assert len(found) == 1, found
        return found[0]

    @property
    def directory(self) -> AssetDirectory:
        assert self.stack.forwarder.assets is not None
        return self.stack.forwarder.assets.directory


@pytest.fixture
def world(make_stack: Callable[..., Stack], azurite: Azurite) -> Callable[..., World]:
    def make(*actions: str) -> World:
        state_table = f"sync{uuid.uuid4().hex[:12]}"
        stack = make_stack(
            document(*(actions or ("incident",))),
            DEVICE_SYNC_ENABLED="true",
            DEFENDER_SOURCES=json.dumps(SOURCES),
            CONSOLE_URL="https://console.plant-a.internal",
            DEVICE_SYNC_STATE_TABLE=state_table,
        )
        table = TableClient.from_connection_string(azurite.connection_string, state_table)
        table.create_table()
        return World(stack, table)

    return make


def sent(origin: dict[str, Any] | None = None, sensor: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    message = alert(alert_id=uuid.uuid4().hex[:8], **fields)
    if origin is not None:
        message["origin"] = {"ref": "ref-1", **origin}
    if sensor is not None:
        message["sensor"] = sensor
    return message


def test_a_cloud_alert_names_the_ci_of_its_destination_among_its_device_resources(world: Callable[..., World]) -> None:
    w = world()
    plc = w.sync("cloud", device("plc-9", "10.1.0.9"), cves=7)
    hmi = w.sync("cloud", device("hmi-5", "10.1.0.5", kind="HMI"), "cmdb_ci_ot_supervisory")
    origin = {"source": "cloud", "devices": {"related": ["hmi-5", "plc-9"]}}
    result = w.stack.handle(sent(origin, sourceDeviceAddress="10.1.0.5", destinationDeviceAddress="10.1.0.9"))
    assert result.status == "forwarded"
    record = w.record()
    assert record["cmdb_ci"] == plc.sys_id
    description = record["description"]
    assert "Destination: PLC-plc-9 (cmdb_ci_ot_control), 10.1.0.9 / 00:1b:1b:00:00:07; Purdue level ProcessControl" in (
        description
    )
    assert "7 open CVEs: CVE-2024-0006 (6.0), CVE-2024-0005 (5.0)" in description and "and 2 more" in description
    assert "Source: HMI-hmi-5 (cmdb_ci_ot_supervisory)" in description
    assert f"cmdb_ci_ot_supervisory.do?sys_id={hmi.sys_id}" in description  # a link to the other device's CI
    # As ServiceNow renders it: the reference's display value is the CI's name.
    client = w.stack.forwarder.clients["default"]
    shown = client.get_record("incident", record["sys_id"], fields=["cmdb_ci"], display_value="true")
    assert shown["cmdb_ci"] == "PLC-plc-9", shown


def test_a_cloud_alert_with_one_device_resource_and_no_addresses_names_that_device(world: Callable[..., World]) -> None:
    w = world()
    plc = w.sync("cloud", device("plc-9", "10.1.0.9"))
    w.stack.handle(sent({"source": "cloud", "devices": {"related": ["plc-9"]}}))
    assert w.record()["cmdb_ci"] == plc.sys_id


def test_a_sensor_alert_by_device_id_and_each_action_its_own_role(world: Callable[..., World]) -> None:
    w = world("incident", "soc")
    plc = w.sync("line-3", device("9", "10.1.0.9"))
    hmi = w.sync("line-3", device("5", "10.1.0.5", kind="HMI"), "cmdb_ci_ot_supervisory")
    w.sync("cloud", device("9", "10.1.0.9"))  # another source's device 9 is another device
    origin = {"source": "line-3", "devices": {"source": "5", "destination": "9"}}
    w.stack.handle(sent(origin, sourceDeviceAddress="10.3.0.1", destinationDeviceAddress="10.3.0.2"))
    assert w.record("incident")["cmdb_ci"] == plc.sys_id  # destination, by default
    security = w.record("sn_si_incident")
    assert security["cmdb_ci"] == hmi.sys_id  # configuration_item: source
    assert "Source: HMI-5" in security["description"] and "Destination: PLC-9" in security["description"]


def test_a_console_alert_by_address_within_its_zone_when_the_same_ip_is_in_two_zones(
    world: Callable[..., World],
) -> None:
    w = world()
    w.sync("", device("9", "10.1.0.9", zone="Line 3"))
    other = w.sync("", device("19", "10.1.0.9", zone="Line 4"))
    sensor = {"name": "sensor-4", "site": "Plant A", "zone": "Line 4"}
    w.stack.handle(sent(sensor=sensor, destinationDeviceAddress="10.1.0.9"))  # a sensor-side sender: addresses only
    assert w.record()["cmdb_ci"] == other.sys_id


def test_a_device_not_synced_is_written_at_once_without_a_ci_and_says_so(world: Callable[..., World]) -> None:
    w = world()
    before = count("alerts.assets", outcome="not_in_cmdb")
    origin = {"source": "line-3", "devices": {"source": "5", "destination": "9"}}
    started = time.monotonic()
    result = w.stack.handle(sent(origin, sourceDeviceAddress="10.1.0.5", destinationDeviceAddress="10.1.0.9"))
    assert result.status == "forwarded" and time.monotonic() - started < 30  # not a deferral, not a wait
    record = w.record()
    assert "cmdb_ci" not in record or record["cmdb_ci"] == ""
    assert "Destination device 10.1.0.9: not in the CMDB when this record was written." in record["description"]
    assert "Source device 10.1.0.5: not in the CMDB when this record was written." in record["description"]
    assert count("alerts.assets", outcome="not_in_cmdb") == before + 1


def test_a_retired_device_is_still_linked(world: Callable[..., World]) -> None:
    w = world()
    plc = w.sync("line-3", device("9", "10.1.0.9"))
    w.writer.retire("line-3", "9")
    w.writer.flush()
    w.stack.handle(sent({"source": "line-3", "devices": {"destination": "9"}}))
    record = w.record()
    assert record["cmdb_ci"] == plc.sys_id and "retired in the CMDB" in record["description"]


def test_hostile_lookup_keys_are_inert(world: Callable[..., World]) -> None:
    w = world()
    w.sync("line-3", device("9", "10.1.0.9"))
    hostile = "9' or PartitionKey ne 'x"
    origin = {"source": "line-3' or ''='", "devices": {"source": hostile, "destination": "9/#?\\"}}
    sensor = {"name": "s", "site": "Plant A' or 'a'='a", "zone": "Line 3/../#"}
    result = w.stack.handle(sent(origin, sensor, sourceDeviceAddress="10.1.0.9' or ''='", destinationDeviceAddress="*"))
    assert result.status == "forwarded"
    record = w.record()
    assert not record.get("cmdb_ci") and "not in the CMDB when this record was written" in record["description"]


def test_a_repeat_and_a_resolution_do_not_look_again(world: Callable[..., World]) -> None:
    w = world()
    w.sync("line-3", device("9", "10.1.0.9"))
    message = sent({"source": "line-3", "devices": {"destination": "9"}})
    w.stack.handle(message)
    reads = w.directory.reads
    w.directory.cache.clear()  # even with nothing cached, a repeat reads nothing
    assert [o.operation for o in w.stack.handle(message).outcomes] == ["work_note"]
    status = {"schema": message["schema"], "kind": "alert_status", "sensor": message["sensor"]}
    status["alert"] = {"id": message["alert"]["id"], "handled": True}
    assert [o.operation for o in w.stack.handle(status).outcomes] == ["resolved"]
    assert w.directory.reads == reads


def test_storage_trouble_writes_the_record_without_its_ci_and_counts_it(
    world: Callable[..., World], azurite: Azurite
) -> None:
    w = world()
    w.sync("line-3", device("9", "10.1.0.9"))
    unreachable = TableClient.from_connection_string(
        azurite.connection_string.replace(f":{azurite.table_port}/", ":1/"), w.table.table_name, retry_total=0
    )
    assert w.stack.forwarder.assets is not None
    w.stack.forwarder.assets.directory = AssetDirectory(unreachable)
    before = count("alerts.assets", outcome="failed")
    result = w.stack.handle(sent({"source": "line-3", "devices": {"destination": "9"}}))
    assert result.status == "forwarded"
    record = w.record()
    assert not record.get("cmdb_ci")
    assert "The asset index could not be read when this record was written" in record["description"]
    assert count("alerts.assets", outcome="failed") == before + 1


def test_affected_cis_and_the_impact_from_criticality(world: Callable[..., World]) -> None:
    w = world("ranked")
    plc = w.sync("line-3", device("9", "10.1.0.9", criticality="High"))
    hmi = w.sync("line-3", device("5", "10.1.0.5", kind="HMI", criticality="Low"), "cmdb_ci_ot_supervisory")
    calls = w.stack.forwarder.clients["default"].stats.calls
    w.stack.handle(sent({"source": "line-3", "devices": {"source": "5", "destination": "9"}}, severity="Minor"))
    record = w.record()
    assert record["cmdb_ci"] == plc.sys_id and record["impact"] == "1"  # High → 1, where Minor alone says 2
    assert record["short_description"] == "Illegal MODBUS Operation on PLC-9 (cmdb_ci_ot_control, High)"
    rows = w.stack.servicenow.store.all("task_ci")
    assert [(r["task"], r["ci_item"]) for r in rows] == [(record["sys_id"], hmi.sys_id)]
    assert w.stack.forwarder.clients["default"].stats.calls - calls == 2  # the record, and one task_ci row


def test_a_group_record_names_the_cis_of_the_alert_that_opened_it(world: Callable[..., World]) -> None:
    w = world("storm")
    plc = w.sync("line-3", device("9", "10.1.0.9"))
    hmi = w.sync("line-3", device("5", "10.1.0.5", kind="HMI"), "cmdb_ci_ot_supervisory")
    origin = {"source": "line-3", "devices": {"source": "5", "destination": "9"}}
    assert [o.operation for o in w.stack.handle(sent(origin)).outcomes] == ["group_opened"]
    assert [o.operation for o in w.stack.handle(sent(origin)).outcomes] == ["grouped"]  # a work note's, later
    record = w.record()
    assert record["cmdb_ci"] == plc.sys_id
    assert "Alert group:" in record["description"] and "Source: HMI-5 (cmdb_ci_ot_supervisory)" in record["description"]
    rows = w.stack.servicenow.store.all("task_ci")
    assert [(r["task"], r["ci_item"]) for r in rows] == [(record["sys_id"], hmi.sys_id)]


def test_a_group_record_the_notes_timer_writes_for_its_opener_names_its_cis_too(world: Callable[..., World]) -> None:
    w = world("storm")
    plc = w.sync("line-3", device("9", "10.1.0.9"))
    hmi = w.sync("line-3", device("5", "10.1.0.5", kind="HMI"), "cmdb_ci_ot_supervisory")
    w.stack.servicenow.faults.configure({"fail_next": [{"status": 400, "count": 1}]})  # the opener's write refused
    w.stack.handle(sent({"source": "line-3", "devices": {"source": "5", "destination": "9"}}))
    assert w.stack.records() == []
    assert w.stack.notes().records == 1
    record = w.record()
    assert record["cmdb_ci"] == plc.sys_id and "Destination: PLC-9" in record["description"]
    rows = w.stack.servicenow.store.all("task_ci")
    assert [(r["task"], r["ci_item"]) for r in rows] == [(record["sys_id"], hmi.sys_id)]


def test_a_cloud_alert_taken_in_from_resource_graph_names_its_destination_device(
    world: Callable[..., World], graph: ResourceGraphEmulator, azurite: Azurite
) -> None:
    """The whole path: the emulated cloud's alert between two of its devices (DeviceResourceIds), the real intake
    (origin.devices), the forwarder; the index holds the cloud's devices as its device sync names them."""
    w = world()
    inventory = generate(12, seed=3)
    graph.load_world(inventory)
    cis = {}
    for row in documents(inventory, graph.subscription):
        if str(row["type"]).lower() == cloud.DEVICES:
            device = cloud_records.parse_device(row)
            cis[device.id] = w.sync("cloud", device).sys_id
    raised = raise_alert(inventory, "sensor-1", "Unauthorized PLC Programming", between=(3, 7))
    graph.put(alert_document(raised, graph.subscription, inventory))
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    state = IntakeState(tables.get_table_client(f"intake{uuid.uuid4().hex[:12]}"))
    state.ensure()
    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    Intake(cloud_source(settings), w.stack.queue, state).run(datetime.now(UTC))
    (message,) = w.stack.deferred()  # what the intake queued
    assert json.loads(message[1])["origin"]["devices"]["related"]
    assert w.stack.handle(message[1]).status == "forwarded"
    record = w.record()
    assert record["cmdb_ci"] == cis[device_name(inventory, 7)]
    assert f"Source: {inventory.devices[3]['u_name']}" in record["description"]
