"""The device sync writes the asset index (issue 25): after a sync, each device is found by its id and by its
address within its site and zone, with the CI ServiceNow gave it, its CVEs, and retired ones too. Against
the console and ServiceNow emulators and Azurite."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from shared.app import servicenow_client
from shared.assets.index import AssetDirectory, IndexWriter
from shared.defender.console import ConsoleClient
from shared.defender.model import Device
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncState
from shared.devices.sync import DeviceSync
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore, Secret
from shared.servicenow.settings import ServiceNowConnection
from tests.conftest import SN_PASSWORD, SN_USER
from tools.emulators.console import ConsoleEmulator, generate, mutate
from tools.emulators.servicenow import ServiceNowEmulator
from tools.emulators.servicenow.store import OT_CLASSES
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration
TOKEN = "Console-Token-2525"
SCOPE = "plant-a"


@pytest.fixture
def console(tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(generate(30, seed=25), token=TOKEN, tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def reader(console: ConsoleEmulator) -> ConsoleClient:
    http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
    return ConsoleClient.connect(console.url, lambda: Secret(TOKEN), http, ca_bundle=console.ca_pem, page_size=10)


@pytest.fixture
def make_sync(
    reader: ConsoleClient, servicenow: ServiceNowEmulator, azurite: Azurite
) -> Callable[..., tuple[DeviceSync, AssetDirectory]]:
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
        f"sync{uuid.uuid4().hex[:12]}"
    )

    def make(indexed: bool = True) -> tuple[DeviceSync, AssetDirectory]:
        http = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
        connection = ServiceNowConnection(
            "default", servicenow.url, "basic", username=SN_USER, ca_bundle=servicenow.ca_pem
        )
        client = servicenow_client(
            connection, EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": SN_PASSWORD}), http
        )
        state = SyncState(table, SCOPE)
        settings = DeviceSyncSettings(batch_size=4, page_size=10, concurrency=4)
        index = IndexWriter(table) if indexed else None
        return DeviceSync(settings, reader, client, state, index=index), AssetDirectory(table)

    return make


def cmdb(servicenow: ServiceNowEmulator) -> dict[str, tuple[str, str]]:
    """Device id → (sys_id, class) of its CI."""
    return {
        r["correlation_id"].removeprefix("dfiot-device:"): (r["sys_id"], r.get("sys_class_name", table))
        for table in OT_CLASSES
        for r in servicenow.store.all(table)
    }


def every_device(reader: ConsoleClient) -> list[Device]:
    return [device for page in reader.device_pages(0) for device in page]


def test_after_a_sync_each_device_is_found_by_id_and_by_address_within_its_zone(
    make_sync: Callable[..., tuple[DeviceSync, AssetDirectory]],
    reader: ConsoleClient,
    servicenow: ServiceNowEmulator,
) -> None:
    sync, directory = make_sync()
    assert sync.run().error == ""
    cis = cmdb(servicenow)
    devices = every_device(reader)
    assert devices and len(cis) == len(devices)
    for device in devices:
        found = directory.device(SCOPE, device.id)
        assert found is not None and (found.sys_id, found.ci_class) == cis[device.id]
        assert not found.retired and found.name == device.name
        for address in device.ips:
            by_address = directory.address(device.site, device.zone, address)
            assert by_address is not None and by_address.device_id == device.id
    # The CVEs the sync wrote as vulnerable items, on the device's entry.
    with_cves = [d for d in devices if (a := directory.device(SCOPE, d.id)) is not None and a.cve_count]
    open_items = {
        r["correlation_id"].split(":")[1] for r in servicenow.store.all("sn_vul_vulnerable_item") if r["state"] == "1"
    }
    assert {d.id for d in with_cves} == open_items


def test_a_retired_device_stays_findable_and_a_reidentified_one_moves_to_its_new_ci(
    make_sync: Callable[..., tuple[DeviceSync, AssetDirectory]],
    console: ConsoleEmulator,
    servicenow: ServiceNowEmulator,
) -> None:
    sync, _ = make_sync()
    sync.run()
    touched = mutate(console.inventory, deletions=2, updates=1)
    # Someone deletes the updated device's CI in ServiceNow: the IRE identifies it under a new sys_id.
    updated = str(touched["updated"][0])
    old_sys_id, old_class = cmdb(servicenow)[updated]
    servicenow.store.delete(old_class, old_sys_id)
    status = sync.run()
    assert status.error == "" and status.counts.retired == 2
    _, directory = make_sync()  # a fresh cache: what the index holds now
    for device_id in touched["deleted"]:
        found = directory.device(SCOPE, str(device_id))
        assert found is not None and found.retired  # a record may still point at a retired CI
    moved = directory.device(SCOPE, updated)
    assert moved is not None and moved.sys_id == cmdb(servicenow)[updated][0] != old_sys_id


def test_devices_synced_before_the_index_existed_are_indexed_by_the_next_sync_once(
    make_sync: Callable[..., tuple[DeviceSync, AssetDirectory]],
    reader: ConsoleClient,
    servicenow: ServiceNowEmulator,
) -> None:
    """An upgrade: the console's sync (a deletions feed, so it never reads whole) ran without the index; the
    next sync finds every device unchanged, writes nothing to ServiceNow, and still fills the index."""
    old, _ = make_sync(indexed=False)
    assert old.run().error == ""
    sync, directory = make_sync()
    status = sync.run()
    counts = status.counts
    assert status.error == "" and counts.unchanged >= len(every_device(reader))
    assert (counts.created, counts.updated, counts.retired, counts.cves_opened) == (0, 0, 0, 0)  # nothing changed
    cis = cmdb(servicenow)
    for device in every_device(reader):
        found = directory.device(SCOPE, device.id)
        assert found is not None and (found.sys_id, found.ci_class) == cis[device.id]
    again, _ = make_sync()
    assert again.run().error == "" and again.index is not None and again.index.calls == 0  # filled once
