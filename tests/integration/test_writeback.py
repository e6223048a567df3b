"""Closing alerts at their source (the loop's other half): Azure Resource Manager for cloud alerts, the
console's alert action, and a locally managed sensor, which cannot; through the product's own HTTP
pipeline against the emulators."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.app.sources import cloud_source
from shared.defender.console import ConsoleClient
from shared.defender.model import ReadReport
from shared.defender.rest import DefenderApiError
from shared.defender.sensor import SensorSource
from shared.defender.settings import CloudSourceSettings, SensorSourceSettings
from shared.defender.writeback import CloudAlertWriter, WriteBackUnsupportedError
from shared.http.settings import HttpSettings
from shared.platform.identity import LocalEmulatorCredential
from shared.platform.secrets import Secret
from tools.emulators.console import ConsoleEmulator, Inventory, generate, raise_alert
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.sensor import SensorEmulator

pytestmark = pytest.mark.integration
HTTP = HttpSettings(connect_timeout=2, read_timeout=5, retry_budget_seconds=3, max_attempts=4)


@pytest.fixture
def world(graph: ResourceGraphEmulator) -> Inventory:
    inventory = generate(10, seed=5)
    graph.quota.per_window = 1000
    raise_alert(inventory, "sensor-1", "Unauthorized PLC Programming", "Critical")
    raise_alert(inventory, "sensor-2", "Illegal MODBUS Operation", "Major")
    graph.load_world(inventory)
    return inventory


@pytest.fixture
def console(world: Inventory, tls_dir: Path) -> Iterator[ConsoleEmulator]:
    emulator = ConsoleEmulator(world, token="Console-Token-9", tls_dir=tls_dir).start()
    yield emulator
    emulator.stop()


def writer(graph: ResourceGraphEmulator, *, learn: bool = False) -> CloudAlertWriter:
    return CloudAlertWriter.connect("cloud", graph.url, LocalEmulatorCredential(), HTTP, graph.ca_pem, learn=learn)


def open_cloud_alerts(graph: ResourceGraphEmulator) -> dict[str, str]:
    source = cloud_source(CloudSourceSettings("cloud", (graph.subscription,), graph.url, "emulator", graph.ca_pem))
    return {a.alert.title: a.resource_id for a in source.open_alerts(ReadReport())}


def test_a_cloud_alert_is_closed_through_resource_manager_and_shows_closed_after_the_delay(
    world: Inventory, graph: ResourceGraphEmulator
) -> None:
    alerts = open_cloud_alerts(graph)
    graph.consistency_seconds = 4.0  # the next query comes well before it, even on a busy machine
    assert writer(graph).close_alert(alerts["Unauthorized PLC Programming"]) == "closed"
    assert graph.writes == [("PATCH", alerts["Unauthorized PLC Programming"], "Closed")]
    assert "Unauthorized PLC Programming" in open_cloud_alerts(graph)  # Resource Graph shows it late
    time.sleep(4.1)
    assert set(open_cloud_alerts(graph)) == {"Illegal MODBUS Operation"}


def test_learning_is_opt_in_falls_back_to_closing_and_an_alert_the_cloud_no_longer_has_is_gone(
    world: Inventory, graph: ResourceGraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = open_cloud_alerts(graph)
    # Learn has no published contract: without the source's opt-in, the documented close is used.
    cloud = writer(graph)
    assert cloud.close_alert(alerts["Illegal MODBUS Operation"], learn=True) == "closed"
    assert graph.writes[-1][:1] == ("PATCH",) and graph.writes[-1][2] == "Closed"
    learner = writer(graph, learn=True)
    assert learner.close_alert(alerts["Unauthorized PLC Programming"], learn=True) == "closed"
    assert graph.writes[-1][0] == "POST"
    # Refused: closed with PATCH status=Closed instead, and said so.
    graph.faults.configure({"fail_next": [{"status": 400, "count": 1}]})
    assert learner.close_alert(alerts["Unauthorized PLC Programming"], learn=True) == "closed"
    assert graph.writes[-1][0] == "PATCH" and "closing alert" in caplog.text and "HTTP 400" in caplog.text
    missing = alerts["Illegal MODBUS Operation"].rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    assert cloud.close_alert(missing) == "gone"  # recorded as such, never retried forever
    with pytest.raises(DefenderApiError, match="is not an alert's resource id"):
        cloud.close_alert("not-an-arm-id")


def test_resource_manager_failures_are_retried_and_its_write_limit_defers(
    world: Inventory, graph: ResourceGraphEmulator
) -> None:
    alerts = open_cloud_alerts(graph)
    graph.faults.configure({"fail_next": [{"status": 503, "count": 2}]})
    cloud = writer(graph)
    assert cloud.close_alert(alerts["Unauthorized PLC Programming"]) == "closed"
    assert cloud.stats.attempts == 3 and len(graph.writes) == 1  # the failed attempts wrote nothing
    graph.write_window = [time.time(), 1200]  # the subscription's hourly writes are spent
    with pytest.raises(DefenderApiError) as info:
        cloud.close_alert(alerts["Illegal MODBUS Operation"])
    assert info.value.status == 429 and info.value.retryable  # deferred: the next cycle tries again


def test_a_console_alert_is_handled_or_handled_and_learned(world: Inventory, console: ConsoleEmulator) -> None:
    reader = ConsoleClient.connect(console.url, lambda: Secret("Console-Token-9"), HTTP, ca_bundle=console.ca_pem)
    alerts = {a.alert.title: a for a in reader.open_alerts(ReadReport())}
    uuids = {title: a.resource_id for title, a in alerts.items()}
    assert {a.id for a in alerts.values()} == {"1", "2"}  # the console's own numbers, not its UUIDs
    assert uuids["Unauthorized PLC Programming"] == f"1-{world.alerts[0]['time']}"  # <sensorId>-<time>
    assert reader.close_alert(uuids["Unauthorized PLC Programming"]) == "closed"
    assert reader.close_alert(uuids["Illegal MODBUS Operation"], learn=True) == "closed"
    assert reader.close_alert(uuids["Illegal MODBUS Operation"]) == "closed"  # 200 "already handled and learned"
    assert console.actions == [
        (uuids["Unauthorized PLC Programming"], "handle"),
        (uuids["Illegal MODBUS Operation"], "handleAndLearn"),
        (uuids["Illegal MODBUS Operation"], "handle"),
    ]
    assert list(reader.open_alerts(ReadReport())) == [] and all(a["handled"] for a in world.alerts)


def test_a_console_refusal_is_permanent_and_its_unexpected_error_is_not(
    world: Inventory, console: ConsoleEmulator
) -> None:
    """The console answers 500 for an unknown UUID as for a passing fault: only its message tells them apart."""
    reader = ConsoleClient.connect(console.url, lambda: Secret("Console-Token-9"), HTTP, ca_bundle=console.ca_pem)
    with pytest.raises(DefenderApiError, match="no alert was found for this UUID") as refused:
        reader.close_alert("9-1")
    assert refused.value.status == 500 and not refused.value.retryable
    console.faults.configure({"fail_next": [{"status": 500, "count": 1}]})
    with pytest.raises(DefenderApiError) as passing:
        reader.close_alert(next(a.resource_id for a in reader.open_alerts(ReadReport())))
    assert passing.value.status == 500 and passing.value.retryable


def test_a_locally_managed_sensor_cannot_be_written_back_to_and_says_so(world: Inventory, tls_dir: Path) -> None:
    emulator = SensorEmulator(world, tls_dir=tls_dir).start()
    try:
        source = SensorSource.connect(
            SensorSourceSettings("line-1", emulator.url, "t", emulator.ca_pem), lambda: Secret("x"), HTTP
        )
        with pytest.raises(WriteBackUnsupportedError, match="cannot handle an alert; close it on the sensor"):
            source.close_alert("1")
    finally:
        emulator.stop()
