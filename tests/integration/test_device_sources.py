"""The device sync and the alert intake from the cloud (Resource Graph) and from a locally managed sensor,
through the real SDK and `requests` stack against the emulators, one generated world behind them all."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from shared.alerting.intake import Intake, IntakeState
from shared.app import servicenow_client
from shared.app.sources import cloud_source
from shared.assets.index import AssetDirectory, IndexWriter
from shared.contract.parse import parse_message
from shared.defender.cloud import DEVICES, CloudInventory
from shared.defender.model import DeviceSource
from shared.defender.sensor import SensorSource
from shared.defender.settings import CloudSourceSettings, SensorSourceSettings
from shared.devices.settings import DeviceSyncSettings
from shared.devices.state import SyncState
from shared.devices.sync import DeviceSync
from shared.http.settings import HttpSettings
from shared.platform.secrets import EnvironmentSecretStore, Secret
from shared.servicenow.settings import ServiceNowConnection
from tests.conftest import SN_PASSWORD, SN_USER
from tests.integration.test_intake import drain
from tools.emulators.console import ConsoleEmulator, Inventory, generate, mutate
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.resourcegraph.world import device_name
from tools.emulators.resourcegraph.world import documents as cloud_documents
from tools.emulators.sensor import SensorEmulator
from tools.emulators.servicenow import ServiceNowEmulator
from tools.emulators.servicenow.store import OT_CLASSES
from tools.stack.azurite import Azurite

pytestmark = pytest.mark.integration
DATA_SOURCE = "MicrosoftDefenderForIoT"
HTTP = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=1, max_attempts=2)
TOKEN = "Sensor-Token-8086"


@pytest.fixture
def world(graph: ResourceGraphEmulator) -> Inventory:
    inventory = generate(40, seed=21)
    graph.quota.per_window = 1000
    graph.load_world(inventory)
    return inventory


@pytest.fixture
def sensor(world: Inventory, tls_dir: Path) -> Iterator[SensorEmulator]:
    emulator = SensorEmulator(world, sensor="sensor-1", token=TOKEN, tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def console(world: Inventory, tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(world, token="Console-Token-7", tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


def cloud(graph: ResourceGraphEmulator) -> CloudInventory:
    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    return CloudInventory(cloud_source(settings))


def sensor_settings(emulator: SensorEmulator) -> SensorSourceSettings:
    return SensorSourceSettings(
        "line-1", emulator.url, "defender-sensor-line-1-token", emulator.ca_pem, site="Plant A", zone="Line 1"
    )


def local_sensor(emulator: SensorEmulator) -> SensorSource:
    return SensorSource.connect(sensor_settings(emulator), lambda: Secret(TOKEN), HTTP)


@pytest.fixture
def make_sync(servicenow: ServiceNowEmulator, azurite: Azurite) -> Callable[..., DeviceSync]:
    table = f"sync{uuid.uuid4().hex[:12]}"

    def make(source: DeviceSource, clock: Callable[[], datetime] | None = None, index: bool = False) -> DeviceSync:
        connection = ServiceNowConnection(
            "default", servicenow.url, "basic", username=SN_USER, ca_bundle=servicenow.ca_pem
        )
        client = servicenow_client(
            connection, EnvironmentSecretStore({"SERVICENOW_DEFAULT_PASSWORD": SN_PASSWORD}), HTTP
        )
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        state = SyncState(tables.get_table_client(table), scope=source.name)
        options: dict[str, Any] = {"clock": clock} if clock else {}
        if index:  # the asset index beside the state, as deployed
            options["index"] = IndexWriter(state.table)
        return DeviceSync(
            DeviceSyncSettings(batch_size=10, page_size=500),
            source,
            client,
            state,
            **options,
        )

    return make


def cis(servicenow: ServiceNowEmulator) -> dict[str, dict[str, str]]:
    """The OT CIs by correlation id, each manufacturer (a core_company reference) read as the company's name."""
    companies = {r["sys_id"]: r["name"] for r in servicenow.store.all("core_company")}
    return {
        r["correlation_id"]: {**r, "manufacturer": companies.get(r.get("manufacturer", ""), "")}
        for t in OT_CLASSES
        for r in servicenow.store.all(t)
    }


def vulnerable(servicenow: ServiceNowEmulator) -> dict[str, str]:
    return {r["correlation_id"]: r["state"] for r in servicenow.store.all("sn_vul_vulnerable_item")}


# -- the cloud ----------------------------------------------------------------------------------------
def test_cloud_first_sync_builds_the_ot_model_keyed_by_source(
    make_sync: Callable[..., DeviceSync], world: Inventory, graph: ResourceGraphEmulator, servicenow: ServiceNowEmulator
) -> None:
    status = make_sync(cloud(graph)).run()
    assert status.error == "" and status.counts.created == 40 + 4, status
    names = {device_name(world, i) for i in world.devices}
    assert set(cis(servicenow)) == {f"dfiot-device:{n}" for n in names}
    # Each CI carries its source and Defender id, the key ServiceNow's own connector matches by.
    keys = {r["id"] for r in servicenow.store.all("sys_object_source") if r["name"] == DATA_SOURCE}
    assert names <= keys and {"sensor:sensor-1", "sensor:sensor-4"} <= keys
    assert "connections: Resource Graph has no device connections" in status.notes
    with_cves = sum(len(e["cves"]) for e in world.cves.values())
    assert status.counts.cves_opened == with_cves > 0 and len(vulnerable(servicenow)) == with_cves
    # Sensors, devices and vulnerabilities: one page each.
    assert graph.stats["queries"] == 3


def test_cloud_rerun_without_change_writes_nothing(
    make_sync: Callable[..., DeviceSync], world: Inventory, graph: ResourceGraphEmulator, servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync(cloud(graph))
    sync.run()
    before, queries = servicenow.stats["requests"], graph.stats["queries"]
    status = sync.run()
    assert status.error == "" and status.counts.created == status.counts.updated == 0
    assert servicenow.stats["requests"] == before  # not one ServiceNow call
    assert graph.stats["queries"] - queries == 3


def test_cloud_criticality_changed_reaches_the_asset_index_without_a_servicenow_write(
    make_sync: Callable[..., DeviceSync], world: Inventory, graph: ResourceGraphEmulator, servicenow: ServiceNowEmulator
) -> None:
    """Defender's criticality is in no CMDB field (so not in the content hash), but the index shows it and a
    rule's impact follows it: a device whose criticality alone changed is put again, with no ServiceNow call."""
    sync = make_sync(cloud(graph), index=True)
    assert sync.run().error == ""
    with graph.lock:
        document = json.loads(json.dumps(min(graph.by_type[DEVICES].values(), key=lambda d: d.document["id"]).document))
    name = str(document["name"])
    assert sync.index is not None and AssetDirectory(sync.state.table).device(sync.state.scope, name) is not None
    document["properties"]["criticality"] = "Critical"
    document["properties"]["lastUpdated"] = datetime.now(UTC).isoformat()  # as Defender stamps a change
    graph.put(document)
    requests = servicenow.stats["requests"]
    status = sync.run()
    assert status.error == "" and status.counts.updated == 0 and servicenow.stats["requests"] == requests
    found = AssetDirectory(sync.state.table).device(sync.state.scope, name)
    assert found is not None and found.criticality == "Critical"
    puts = sync.index.calls
    assert sync.run().error == "" and sync.index.calls == puts  # put once: the row remembers the criticality


def test_cloud_changes_and_a_change_that_shows_late_behind_the_watermark(
    make_sync: Callable[..., DeviceSync], world: Inventory, graph: ResourceGraphEmulator, servicenow: ServiceNowEmulator
) -> None:
    sync = make_sync(cloud(graph))
    sync.run()
    touched = mutate(world, updates=3, new=2, cves_found=1, cves_fixed=1)
    graph.load_world(world)
    status = sync.run()
    assert (status.counts.updated, status.counts.created) == (3, 2)
    assert (status.counts.cves_opened, status.counts.cves_closed) >= (1, 1)
    for device_id in touched["updated"]:
        assert (
            cis(servicenow)[f"dfiot-device:{device_name(world, device_id)}"]["manufacturer"]
            == (world.devices[device_id]["u_vendor"])
        )
    # Two devices change a minute apart; the earlier change shows in Resource Graph only later, after the
    # sync has read the later one and moved its watermark past the earlier one's time.
    early, late = sorted(world.devices)[:2]
    mutate(world, advance_ms=60_000)
    for device_id, vendor in ((late, "Late Vendor"), (early, "Early Vendor")):
        world.devices[device_id]["u_vendor"] = vendor
        world.devices[device_id]["u_last_update"] = world.now_ms - (60_000 if device_id == early else 0)
    names = {device_name(world, early), device_name(world, late)}
    documents = [d for d in cloud_documents(world, graph.subscription) if d["name"] in names]
    graph.put(*[d for d in documents if d["name"] == device_name(world, late)])
    graph.consistency_seconds = 5.0  # long enough that the next run reads before it, even on a busy machine
    graph.put(*[d for d in documents if d["name"] == device_name(world, early)])
    graph.consistency_seconds = 0
    assert sync.run().counts.updated == 1  # the later change; the earlier one is not visible yet
    time.sleep(5.1)
    assert sync.run().counts.updated == 1  # the overlap reaches back: not skipped
    assert cis(servicenow)[f"dfiot-device:{device_name(world, early)}"]["manufacturer"] == "Early Vendor"


def test_cloud_devices_gone_are_retired_after_the_grace_period_never_deleted(
    make_sync: Callable[..., DeviceSync], world: Inventory, graph: ResourceGraphEmulator, servicenow: ServiceNowEmulator
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    sync = make_sync(cloud(graph), clock=lambda: clock[0])
    sync.run()
    gone = mutate(world, deletions=2)["deleted"]
    graph.load_world(world)
    clock[0] = now + timedelta(hours=13)  # a whole read is due (every half grace period): missing, not retired
    assert sync.run().counts.retired == 0
    clock[0] = now + timedelta(hours=38)  # missing for more than the 24-hour grace: retired
    status = sync.run()
    assert status.counts.retired == 2, status
    retired = {cis(servicenow)[f"dfiot-device:{device_name(world, i)}"]["install_status"] for i in gone}
    assert retired == {"7"} and len(cis(servicenow)) == 40  # retired, never deleted


# -- a locally managed sensor -------------------------------------------------------------------------
def test_sensor_sync_reads_its_devices_connections_and_cves_by_address(
    make_sync: Callable[..., DeviceSync], world: Inventory, sensor: SensorEmulator, servicenow: ServiceNowEmulator
) -> None:
    sensor.extra_cves.append({"cveId": "CVE-2024-0001", "ipAddress": "192.0.2.99", "score": "7.5"})
    plant = servicenow.store.insert("cmdb_ci_ot_isa_entity", {"name": "Plant A"}, "admin")
    status = make_sync(local_sensor(sensor)).run()
    mine = [d for d in world.devices.values() if d["u_appliance"] == "sensor-1"]
    assert status.error == "" and status.counts.created == len(mine) + 1, status
    assert set(cis(servicenow)) == {f"dfiot-device:line-1:{d['u_id']}" for d in mine}
    nids = servicenow.store.all("cmdb_ci_nids")
    assert [(n["name"], n["zone"]) for n in nids] == [("line-1", "Line 1")]
    entities = {r["ot_correlation_id"]: r for r in servicenow.store.all("cmdb_ot_entity")}
    # Where the sensor is, from its settings: the ISA entity site of that name, by reference.
    assert {e["isa_entity_site"] for e in entities.values()} == {plant["sys_id"]}
    ids = {d["u_id"] for d in mine}
    links = {(c["u_src_device_id"], c["u_dest_device_id"]) for c in world.connections}
    assert status.counts.relations >= len(mine) + len({(a, b) for a, b in links if a in ids and b in ids})
    expected = sum(len(world.cves[d["u_id"]]["cves"]) for d in mine if d["u_id"] in world.cves)
    assert status.counts.cves_opened == expected and status.counts.cves_unmatched == 1
    assert "1 CVE report(s) name an IP address no device of this source has" in status.notes
    assert any(note.startswith("deletions: a sensor has no deleted-devices feed") for note in status.notes)


def test_sensor_rerun_writes_nothing_and_a_device_gone_is_retired_after_the_grace(
    make_sync: Callable[..., DeviceSync], world: Inventory, sensor: SensorEmulator, servicenow: ServiceNowEmulator
) -> None:
    now = datetime.now(UTC)
    clock = [now]
    sync = make_sync(local_sensor(sensor), clock=lambda: clock[0])
    sync.run()
    before = servicenow.stats["requests"]
    assert sync.run().counts.created == 0 and servicenow.stats["requests"] == before
    gone = next(d for d in sensor.devices())["u_id"]
    with world.lock:
        del world.devices[gone]
    assert sync.run().counts.retired == 0  # missing: maybe a restart; not yet
    clock[0] = now + timedelta(hours=25)
    assert sync.run().counts.retired == 1
    assert cis(servicenow)[f"dfiot-device:line-1:{gone}"]["install_status"] == "7"


def test_sensor_alerts_come_in_once_and_a_handled_one_resolves(sensor: SensorEmulator, azurite: Azurite) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, f"intake{uuid.uuid4().hex[:12]}")
    queue.create_queue()
    state = IntakeState(
        TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
            f"intake{uuid.uuid4().hex[:12]}"
        )
    )
    state.ensure()
    intake = Intake(local_sensor(sensor), queue, state)
    first = sensor.raise_alert("Unauthorized PLC Programming", "Critical")
    sensor.raise_alert("Illegal MODBUS Operation", "Major", sourceDeviceAddress="10.0.0.7")
    result = intake.run()
    messages = drain(queue)
    assert result.queued == {"alert": 2, "alert_status": 0, "system": 0}, result
    assert [m["alert"]["title"] for m in messages] == ["Unauthorized PLC Programming", "Illegal MODBUS Operation"]
    # A sensor's alerts name no sensor, zone or site (its v2 adds only addresses and steps): the source's settings.
    assert messages[0]["sensor"] == {"name": "line-1", "site": "Plant A", "zone": "Line 1"}
    assert intake.run().queued == {"alert": 0, "alert_status": 0, "system": 0} and drain(queue) == []
    sensor.handle_alert(first["id"])
    assert intake.run().queued["alert_status"] == 1
    (closing,) = drain(queue)
    assert closing["kind"] == "alert_status" and closing["alert"]["id"] == str(first["id"])


# -- the relay next to a sensor -------------------------------------------------------------------------
def test_the_relay_sends_a_sensors_alerts_once_and_stops_on_sigterm(
    sensor: SensorEmulator, azurite: Azurite, tmp_path: Path
) -> None:
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    queue_name = f"relay{uuid.uuid4().hex[:12]}"
    QueueClient.from_connection_string(azurite.connection_string, queue_name).create_queue()
    source = {"name": "line-1", "kind": "sensor", "url": sensor.url, "ca_bundle": str(sensor.ca_pem), "zone": "Line 1"}
    environ = {
        "PATH": "",
        "ALERTS_QUEUE": queue_name,
        "ALERTS_STORAGE": azurite.connection_string,
        "DEFENDER_SOURCES": json.dumps([source]),
        "DEFENDER_SENSOR_LINE_1_TOKEN": TOKEN,  # no Key Vault next to the sensor: the token from the environment
    }
    state = tmp_path / "relay" / "state.sqlite"
    command = [sys.executable, "-m", "shared", "relay", "--source", "line-1", "--state", str(state)]

    def once() -> list[dict[str, Any]]:
        done = subprocess.run(  # noqa: S603
            [*command, "--once"], check=False, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return drain(QueueClient.from_connection_string(azurite.connection_string, queue_name))

    raised = sensor.raise_alert("Unauthorized PLC Programming", "Critical")
    (message,) = once()
    assert message["alert"]["title"] == "Unauthorized PLC Programming"
    assert message["sensor"] == {"name": "line-1", "zone": "Line 1"}  # the source's settings: the alert says none
    assert once() == []  # its memory is the state file: nothing is sent twice across restarts
    sensor.handle_alert(raised["id"])
    (closing,) = once()
    assert closing["kind"] == "alert_status"
    # As a service: polls until SIGTERM, then stops promptly and cleanly.
    service = subprocess.Popen([*command, "--interval", "5"], cwd=ROOT, env=environ, stderr=subprocess.PIPE, text=True)  # noqa: S603
    try:
        time.sleep(3)
        service.send_signal(signal.SIGTERM)
        _, errors = service.communicate(timeout=10)
    finally:
        service.kill()
    assert service.returncode == 0 and "relay: stopped" in errors and "Traceback" not in errors, errors


def test_the_relay_names_a_missing_source_in_one_line(azurite: Azurite, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    environ = {
        "PATH": "",
        "ALERTS_QUEUE": "alerts",
        "ALERTS_STORAGE": azurite.connection_string,
        "DEFENDER_SOURCES": "[]",
    }
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "shared", "relay", "--source", "line-9", "--once", "--state", str(tmp_path / "s")],
        check=False,
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "DEFENDER_SOURCES has no source named 'line-9' (it has: none)" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sigkill_mid_intake_loses_nothing(sensor: SensorEmulator, azurite: Azurite, tmp_path: Path) -> None:
    """The intake killed at random points of its cycles (reading, sending, remembering): every alert raised
    reaches the queue; what a killed cycle sent but did not remember is sent again (the ledger's business)."""
    import json
    import random
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    queue_name = f"kill{uuid.uuid4().hex[:12]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    queue.create_queue()
    source = {"name": "line-1", "kind": "sensor", "url": sensor.url, "ca_bundle": str(sensor.ca_pem)}
    environ = {
        "PATH": "",
        "ALERTS_QUEUE": queue_name,
        "ALERTS_STORAGE": azurite.connection_string,
        "DEFENDER_SOURCES": json.dumps([source]),
        "DEFENDER_SENSOR_LINE_1_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "shared", "relay", "--source", "line-1", "--state", str(tmp_path / "state")]
    rng = random.Random(7)
    raised: set[str] = set()
    for round_ in range(6):
        for n in range(60):
            raised.add(str(sensor.raise_alert(f"Alert {round_}-{n}", "Major")["id"]))
        relay = subprocess.Popen([*command, "--interval", "5"], cwd=ROOT, env=environ, stderr=subprocess.DEVNULL)  # noqa: S603
        time.sleep(rng.uniform(1.0, 3.0))  # the interpreter's start, then somewhere in a cycle
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
    done = subprocess.run(  # noqa: S603
        [*command, "--once"], check=False, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    sent = [str(m["alert"]["id"]) for m in drain(queue) if m["kind"] == "alert"]
    assert set(sent) == raised  # nothing lost
    assert len(sent) >= len(raised)  # and the repeats a kill caused are plain repeats of the same alerts


def test_the_intake_function_reads_a_sensor_source_from_the_settings(
    sensor: SensorEmulator, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from shared.app.intake import run_intake
    from shared.platform.storage import queue_service
    from shared.settings import load_settings
    from tests.support.settings import app_settings

    source = {"name": "line-1", "kind": "sensor", "url": sensor.url, "ca_bundle": str(sensor.ca_pem), "zone": "Line 1"}
    environ = app_settings(
        azurite.connection_string,
        DEFENDER_SOURCES=json.dumps([source]),
        ALERT_INTAKE_STATE_TABLE=f"intake{uuid.uuid4().hex[:12]}",
    )
    monkeypatch.setenv("DEFENDER_SENSOR_LINE_1_TOKEN", TOKEN)  # no KEY_VAULT_URL: secrets from app settings
    settings = load_settings(environ)
    queue = queue_service(settings.alerts_storage).get_queue_client(settings.alerts_queue)
    queue.create_queue()
    sensor.raise_alert("Unauthorized PLC Programming", "Critical")
    (result,) = run_intake(settings)
    assert (result.source, result.queued["alert"]) == ("line-1", 1)
    (message,) = drain(queue)
    assert message["sensor"]["zone"] == "Line 1"
    # A sensor that refuses the token: the cycle fails with what to check, and says so once.
    monkeypatch.setenv("DEFENDER_SENSOR_LINE_1_TOKEN", "Wrong-Token-0000")
    with pytest.raises(RuntimeError, match="alert intake failed for source\\(s\\) line-1"):
        run_intake(settings)
    assert "check the sensor's API token" in caplog.text and "Wrong-Token-0000" not in caplog.text


def test_a_sensor_that_fails_for_a_moment_is_retried_and_one_that_stays_down_fails_the_run_only(
    make_sync: Callable[..., DeviceSync], sensor: SensorEmulator, servicenow: ServiceNowEmulator
) -> None:
    sensor.faults.configure({"fail_next": [{"status": 503, "count": 1}]})
    source = local_sensor(sensor)
    assert len(source.sensors()) == 1 and sum(len(p) for p in source.device_pages(0)) > 0
    assert source.stats.attempts >= 2  # the 503 was retried
    sensor.faults.configure({"fail_next": [{"status": 503, "count": 50}]})
    status = make_sync(local_sensor(sensor)).run()
    assert status.error.startswith("SensorError: sensor 'line-1' GET /api/v1/devices") and "503" in status.error
    sensor.faults.clear()
    assert make_sync(local_sensor(sensor)).run().error == ""  # the next run resumes


def test_one_alert_stream_seen_by_the_cloud_the_sensor_and_the_console_alike(
    world: Inventory, graph: ResourceGraphEmulator, sensor: SensorEmulator, console: ConsoleEmulator, azurite: Azurite
) -> None:
    """The world's alerts, raised and handled once, come in the same through each kind of source; a sensor
    the console reports disconnected becomes a system notification."""
    from shared.defender.console import ConsoleClient
    from tools.emulators.console import handle_alert, raise_alert

    def intake(source: Any) -> tuple[Intake, QueueClient]:
        queue = QueueClient.from_connection_string(azurite.connection_string, f"both{uuid.uuid4().hex[:12]}")
        queue.create_queue()
        tables = TableServiceClient.from_connection_string(azurite.connection_string)
        state = IntakeState(tables.get_table_client(f"both{uuid.uuid4().hex[:12]}"))
        state.ensure()
        return Intake(source, queue, state), queue

    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    reader = ConsoleClient.connect(console.url, lambda: Secret("Console-Token-7"), HTTP, ca_bundle=console.ca_pem)
    views = [intake(cloud_source(settings)), intake(local_sensor(sensor)), intake(reader)]
    raised = raise_alert(world, "sensor-1", "Unauthorized PLC Programming", "Critical", zoneName="Line 1")
    graph.load_world(world)
    seen = []
    for each, queue in views:
        each.run()
        (message,) = drain(queue)
        seen.append((message["kind"], message["alert"]["title"], message["alert"]["severity"], message["sensor"]))
    assert seen[0][:3] == seen[1][:3] == seen[2][:3] == ("alert", "Unauthorized PLC Programming", "Critical")
    assert seen[0][3]["name"] == seen[2][3]["name"] == "sensor-1" and seen[2][3]["zone"] == "Line 1"
    # Resource Graph's alert names its sensor only: site and zone are the sensor's own.
    assert {k: seen[0][3][k] for k in ("site", "zone")} == {"site": "Plant-B", "zone": "Utilities"}
    handle_alert(world, "sensor-1", raised["id"])
    graph.load_world(world)
    for each, queue in views:
        each.run()
        assert [m["kind"] for m in drain(queue)] == ["alert_status"]
    world.sensors[1]["u_connection_state"] = "DISCONNECTED"
    console_intake, console_queue = views[2]
    console_intake.run()
    (notification,) = drain(console_queue)
    assert notification["kind"] == "system" and notification["system"]["status"] == "offline"
    assert notification["sensor"]["name"] == "sensor-2"


def test_each_source_names_an_alerts_devices_as_its_device_sync_names_them(
    world: Inventory, graph: ResourceGraphEmulator, sensor: SensorEmulator, console: ConsoleEmulator, azurite: Azurite
) -> None:
    """The record of an alert can point at the CIs the device sync wrote only if the alert names its devices by
    the ids the sync keys them by (their source native key): through each kind of source, both devices of an
    alert between two of the world's devices are found among the devices that source's sync reads."""
    from shared.defender.cloud import CloudInventory
    from shared.defender.console import ConsoleClient
    from tools.emulators.console import raise_alert

    mine = sorted(d["u_id"] for d in world.devices.values() if d["u_appliance"] == "sensor-1")
    between = (mine[0], mine[1])
    raise_alert(world, "sensor-1", "Unauthorized PLC Program Upload", "Critical", between=between)
    graph.load_world(world)
    settings = CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem)
    reader = ConsoleClient.connect(console.url, lambda: Secret("Console-Token-7"), HTTP, ca_bundle=console.ca_pem)
    addresses = [world.devices[d]["u_ip_address_objects"][0]["u_ip_address"] for d in between]
    cloud = cloud_source(settings)
    sensor_source = local_sensor(sensor)
    views: list[tuple[Any, DeviceSource]] = [(cloud, CloudInventory(cloud)), (sensor_source, sensor_source)]
    for source, devices in (*views, (reader, reader)):
        queue = QueueClient.from_connection_string(azurite.connection_string, f"ids{uuid.uuid4().hex[:12]}")
        queue.create_queue()
        state = IntakeState(
            TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
                f"ids{uuid.uuid4().hex[:12]}"
            )
        )
        state.ensure()
        Intake(source, queue, state).run()
        (message,) = drain(queue)
        origin = parse_message(json.dumps(message).encode()).origin
        assert origin is not None
        synced = {ip: d.id for page in devices.device_pages(0) for d in page for ip in d.ips}
        expected = [synced[ip] for ip in addresses]
        named = origin.devices
        if named.related:  # the cloud lists the devices' resources without saying which is which
            assert sorted(named.related) == sorted(expected), type(source).__name__
        else:
            assert [named.source, named.destination] == expected, type(source).__name__
